"""template.yaml keeps its promises: runtime, least privilege, a private TLS-only bucket,
EventBridge instead of bucket notifications, spot + IMDSv2 training, and sample events that
the rules would actually deliver.

The template is read with the CloudFormation-aware loader of dropflow_dev.invoke, so !Ref, !Sub
and !GetAtt come back as {"Ref": ...}, {"Fn::Sub": ...}, {"Fn::GetAtt": [...]}.
"""

from __future__ import annotations

import ast
import fnmatch
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dropflow_dev.invoke import describe_function, function_ids, load_template

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
EVENTS = ROOT / "events"
FUNCTIONS = [
    "LaunchTrainingFunction",
    "TrackTrainingFunction",
    "PromoteModelFunction",
    "PredictFunction",
]


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(TEMPLATE)


def resources_of_type(template: dict[str, Any], type_: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v.get("Type") == type_}


def statements(node: Any) -> Iterator[dict[str, Any]]:
    """Every IAM policy statement anywhere in the template (roles, managed policies, bucket
    policies, SAM inline Policies), found by its shape: a dict with Effect and an action."""
    if isinstance(node, dict):
        if "Effect" in node and ("Action" in node or "NotAction" in node):
            yield node
        for value in node.values():
            yield from statements(value)
    elif isinstance(node, list):
        for value in node:
            yield from statements(value)


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# --------------------------------------------------------------------------- functions
def test_the_template_declares_exactly_the_four_functions(template):
    assert function_ids(template) == sorted(FUNCTIONS)


@pytest.mark.parametrize("logical_id", FUNCTIONS)
def test_every_function_runs_python312_on_arm64(template, logical_id):
    info = describe_function(TEMPLATE, logical_id)
    architectures = template["Resources"][logical_id]["Properties"].get(
        "Architectures", template["Globals"]["Function"]["Architectures"]
    )

    assert info.runtime == "python3.12"
    assert architectures == ["arm64"]


@pytest.mark.parametrize("logical_id", FUNCTIONS)
def test_every_function_code_uri_has_an_app_py_with_lambda_handler(logical_id):
    info = describe_function(TEMPLATE, logical_id)
    assert info.handler == "app.lambda_handler"
    assert info.module_file == info.code_dir / "app.py"
    assert info.module_file.is_file(), f"{logical_id}: {info.module_file} is missing"

    # Read, not imported: the handler's imports are its author's business, not this test's.
    tree = ast.parse(info.module_file.read_text())
    top_level = {
        node.name for node in tree.body if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
    } | {
        target.id
        for node in tree.body
        if isinstance(node, ast.Assign)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    assert "lambda_handler" in top_level, f"{info.module_file} defines no lambda_handler"


@pytest.mark.parametrize("logical_id", FUNCTIONS)
def test_every_function_logs_to_its_own_group_with_a_retention(template, logical_id):
    props = template["Resources"][logical_id]["Properties"]
    group_id = props["LoggingConfig"]["LogGroup"]["Ref"]
    group = template["Resources"][group_id]

    assert group["Type"] == "AWS::Logs::LogGroup"
    assert "RetentionInDays" in group["Properties"]


def test_every_function_gets_the_adapter_urls(template):
    variables = template["Globals"]["Function"]["Environment"]["Variables"]

    assert variables["DROPFLOW_STORE_URL"] == {"Fn::Sub": "s3://${DataBucket}"}
    assert variables["DROPFLOW_REGISTRY_URL"] == {"Fn::Sub": "dynamodb://${RegistryTable}"}
    assert variables["DROPFLOW_COMPUTE_URL"] == {"Fn::Sub": "ec2://${TrainingLaunchTemplate}"}


def test_serving_functions_carry_the_onnxruntime_layer(template):
    for logical_id in ("PredictFunction", "PromoteModelFunction"):
        layers = template["Resources"][logical_id]["Properties"]["Layers"]
        assert {"Ref": "OnnxRuntimeLayer"} in layers, logical_id


@pytest.mark.parametrize("layer_id", ["DropflowLayer", "OnnxRuntimeLayer"])
def test_layers_build_for_python312_on_arm64_from_a_requirements_file(template, layer_id):
    # sam build runs `make build-<LogicalId>` in the layer's Makefile, which installs the
    # pinned requirements for CPython 3.12 on manylinux aarch64, then trims the layer.
    layer = template["Resources"][layer_id]
    content = ROOT / layer["Properties"]["ContentUri"]
    makefile = (content / "Makefile").read_text()
    pins = [
        line
        for line in (content / "requirements.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]

    assert layer["Metadata"]["BuildMethod"] == "makefile"
    assert layer["Properties"]["CompatibleRuntimes"] == ["python3.12"]
    assert layer["Properties"]["CompatibleArchitectures"] == ["arm64"]
    assert f"\nbuild-{layer_id}:" in makefile
    assert '-r "$(HERE)/requirements.txt"' in makefile
    assert "--python-version 3.12" in makefile
    assert "ARCH ?= aarch64" in makefile
    assert '--target "$(SITE)"' in makefile and "SITE = $(ARTIFACTS_DIR)/python" in makefile
    assert pins and all("==" in line for line in pins)


# --------------------------------------------------------------------------- IAM
def test_every_allow_statement_names_its_actions(template):
    for statement in statements(template):
        if statement["Effect"] != "Allow":
            continue
        assert "NotAction" not in statement, statement
        for action in as_list(statement["Action"]):
            assert "*" not in action, f"wildcard action {action!r} in {statement}"


def test_the_only_wildcard_action_is_the_deny_of_plain_http(template):
    # A Deny must name every action to close every door; that is the one place for s3:*.
    for statement in statements(template):
        actions = as_list(statement.get("Action", []))
        if any("*" in action for action in actions):
            assert statement["Effect"] == "Deny"
            assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_launching_is_limited_to_the_training_template_and_role(template):
    policy = template["Resources"]["TrainingLauncherPolicy"]["Properties"]["PolicyDocument"]
    by_sid = {s["Sid"]: s for s in policy["Statement"]}

    run = by_sid["RunInstancesFromTheTrainingTemplate"]
    assert "ec2:LaunchTemplate" in run["Condition"]["ArnEquals"]
    fleet = by_sid["CreateFleetFromTheTrainingTemplate"]
    templates = [r for r in fleet["Resource"] if ":launch-template/" in r["Fn::Sub"]]
    assert [t["Fn::Sub"].rsplit("/", 1)[1] for t in templates] == ["${TrainingLaunchTemplate}"]
    passing = by_sid["PassOnlyTheTrainingRole"]
    assert passing["Resource"] == {"Fn::GetAtt": ["TrainingRole", "Arn"]}
    assert passing["Condition"] == {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}}
    tagging = by_sid["TagOnlyWhileLaunching"]
    assert set(tagging["Condition"]["StringEquals"]["ec2:CreateAction"]) == {
        "CreateFleet",
        "RunInstances",
    }


# Exactly what each function's role may do: a permission missing here fails the function in
# AWS, one added without a need fails this test. SAM policy templates and managed policies are
# named as a whole; inline statements as (action, resource) pairs.
BUCKET = "${DataBucket.Arn}"
CRUD = "DynamoDBCrudPolicy:RegistryTable"
LAUNCHER = "policy:TrainingLauncherPolicy"
NEEDS: dict[str, set[Any]] = {
    # Reads the drop (data version, spec) and launches.
    "LaunchTrainingFunction": {
        LAUNCHER,
        CRUD,
        ("s3:GetObject", f"{BUCKET}/datasets/*"),
        ("s3:ListBucket", BUCKET),
    },
    # Relaunches (so it reads the spec) and reads job heartbeats.
    "TrackTrainingFunction": {
        LAUNCHER,
        CRUD,
        ("s3:GetObject", f"{BUCKET}/jobs/*"),
        ("s3:GetObject", f"{BUCKET}/datasets/*"),
        ("s3:ListBucket", BUCKET),
    },
    # Reads the candidate and champion models, records the decision, announces it.
    "PromoteModelFunction": {
        CRUD,
        (
            "events:PutEvents",
            "arn:${AWS::Partition}:events:${AWS::Region}:${AWS::AccountId}:event-bus/default",
        ),
        ("s3:GetObject", f"{BUCKET}/models/*"),
        ("s3:ListBucket", BUCKET),
        # Retention: tags retired versions' files (the lifecycle rule expires them), untags
        # the champion's; under models/ only.
        ("s3:PutObjectTagging", f"{BUCKET}/models/*"),
        ("s3:DeleteObjectTagging", f"{BUCKET}/models/*"),
        # Routing: the spec's `serving` section, and the container tier's scale-out.
        ("s3:GetObject", f"{BUCKET}/datasets/*/dropflow.yaml"),
        (
            "autoscaling:SetDesiredCapacity",
            "arn:${AWS::Partition}:autoscaling:${AWS::Region}:${AWS::AccountId}:"
            "autoScalingGroup:*:autoScalingGroupName/${ServingAutoScalingGroup}",
        ),
        ("autoscaling:DescribeAutoScalingGroups", "*"),
    },
    # Serving only reads.
    "PredictFunction": {
        "DynamoDBReadPolicy:RegistryTable",
        ("s3:GetObject", f"{BUCKET}/models/*"),
        ("s3:ListBucket", BUCKET),
    },
}


def rendered(value: Any) -> str:
    """A resource as text: Sub strings as written, GetAtt/Ref as ${X.Attr} / ${X}."""
    if isinstance(value, str):
        return value
    if "Fn::Sub" in value:
        return value["Fn::Sub"]
    if "Fn::GetAtt" in value:
        return "${" + ".".join(value["Fn::GetAtt"]) + "}"
    return "${" + value["Ref"] + "}"


def granted(policies: list[Any]) -> set[Any]:
    out: set[Any] = set()
    for policy in policies:
        if "Fn::If" in policy:  # a conditional grant: what it gives where the condition holds
            out |= granted([policy["Fn::If"][1]])
        elif "Ref" in policy:
            out.add(f"policy:{policy['Ref']}")
        elif "Statement" in policy:
            for statement in policy["Statement"]:
                assert statement["Effect"] == "Allow"
                for action in as_list(statement["Action"]):
                    for resource in as_list(statement["Resource"]):
                        out.add((action, rendered(resource)))
        else:
            ((name, args),) = policy.items()
            out.add(f"{name}:{args['TableName']['Ref']}")
    return out


@pytest.mark.parametrize("logical_id", FUNCTIONS)
def test_each_function_role_grants_exactly_what_that_function_needs(template, logical_id):
    props = template["Resources"][logical_id]["Properties"]

    assert "Role" not in props, "a shared role would give one function another's permissions"
    assert granted(props.get("Policies", [])) == NEEDS[logical_id]


def test_only_the_functions_that_launch_training_hold_the_launcher_policy(template):
    holders = {
        f
        for f in FUNCTIONS
        if LAUNCHER in granted(template["Resources"][f]["Properties"].get("Policies", []))
    }
    assert holders == {"LaunchTrainingFunction", "TrackTrainingFunction"}


def test_the_training_role_reads_its_inputs_and_writes_only_jobs_and_models(template):
    role = template["Resources"]["TrainingRole"]["Properties"]
    (policy,) = role["Policies"]

    assert "ManagedPolicyArns" not in role
    assert granted([policy["PolicyDocument"]]) == {
        ("s3:GetObject", f"{BUCKET}/datasets/*"),
        ("lambda:GetLayerVersion", "${TrainingCodeLayer}"),
        ("lambda:GetLayerVersion", "${DropflowLayer}"),
        ("s3:GetObject", f"{BUCKET}/jobs/*"),
        ("s3:PutObject", f"{BUCKET}/jobs/*"),
        ("s3:DeleteObject", f"{BUCKET}/jobs/*"),
        ("s3:GetObject", f"{BUCKET}/models/*"),
        ("s3:PutObject", f"{BUCKET}/models/*"),
        ("s3:ListBucket", BUCKET),
        *(
            (f"dynamodb:{action}", "${RegistryTable.Arn}")
            for action in (
                "GetItem",
                "PutItem",
                "UpdateItem",
                "DeleteItem",
                "Query",
                "ConditionCheckItem",
            )
        ),
    }


def test_failed_jobs_and_abandoned_events_raise_alarms(template):
    resources = template["Resources"]
    jobs = resources["FailedJobsAlarm"]["Properties"]
    events = resources["FailedEventsAlarm"]["Properties"]

    assert (jobs["Namespace"], jobs["MetricName"]) == ("dropflow", "JobsFailed")
    assert jobs["Dimensions"] == [{"Name": "service", "Value": "dropflow"}]
    assert jobs["AlarmActions"] == [{"Ref": "AlarmTopic"}] == events["AlarmActions"]
    assert events["Dimensions"][0]["Value"] == {"Fn::GetAtt": ["FailedEventsQueue", "QueueName"]}


# --------------------------------------------------------------------------- storage
def test_data_bucket_blocks_public_access(template):
    block = template["Resources"]["DataBucket"]["Properties"]["PublicAccessBlockConfiguration"]
    assert block == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }


def test_data_bucket_is_encrypted_and_sends_events_to_eventbridge(template):
    props = template["Resources"]["DataBucket"]["Properties"]
    encryption = props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]

    assert encryption["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in {"AES256", "aws:kms"}
    assert props["NotificationConfiguration"] == {
        "EventBridgeConfiguration": {"EventBridgeEnabled": True}
    }


def test_data_bucket_policy_denies_requests_without_tls(template):
    policy = template["Resources"]["DataBucketPolicy"]["Properties"]
    deny = [
        s
        for s in policy["PolicyDocument"]["Statement"]
        if s["Effect"] == "Deny" and s.get("Condition", {}).get("Bool")
    ]

    assert policy["Bucket"] == {"Ref": "DataBucket"}
    assert deny and deny[0]["Condition"]["Bool"]["aws:SecureTransport"] == "false"
    assert deny[0]["Principal"] == "*"


def expiring_rules(bucket: dict[str, Any], key: str, tags: dict[str, str]) -> list[str]:
    """Ids of the enabled lifecycle rules that would expire the current version of an object
    at `key` carrying `tags` (a rule matches when its prefix and all its tag filters do)."""
    found = []
    for rule in bucket["Properties"]["LifecycleConfiguration"]["Rules"]:
        if rule["Status"] != "Enabled":
            continue
        if "ExpirationInDays" not in rule and "ExpirationDate" not in rule:
            continue  # noncurrent versions or incomplete uploads only
        assert "Filter" not in rule, "the evaluator below reads Prefix and TagFilters only"
        wanted = {t["Key"]: t["Value"] for t in rule.get("TagFilters", [])}
        if key.startswith(rule.get("Prefix", "")) and wanted.items() <= tags.items():
            found.append(rule["Id"])
    return found


RETIRED = {"dropflow:retired": "true"}
MODEL_FILES = [
    f"models/iris/v20261123T101500Z-ab12cd/{name}"
    for name in (
        "model.onnx",
        "reference.npz",
        "curve.png",
        "card.json",
    )
]


@pytest.mark.parametrize("key", MODEL_FILES)
def test_retired_model_files_expire_after_the_retention_parameter(template, key):
    bucket = template["Resources"]["DataBucket"]
    (rule,) = [
        r
        for r in bucket["Properties"]["LifecycleConfiguration"]["Rules"]
        if r["Id"] in expiring_rules(bucket, key, RETIRED)
    ]

    assert rule["ExpirationInDays"] == {"Ref": "RetiredModelRetentionDays"}
    assert rule["Prefix"] == "models/"
    assert template["Parameters"]["RetiredModelRetentionDays"]["Default"] == 90
    assert template["Parameters"]["RetiredModelRetentionDays"]["MinValue"] >= 1


@pytest.mark.parametrize("key", MODEL_FILES)
@pytest.mark.parametrize(
    "tags",
    [{}, {"dropflow:retired": "false"}, {"owner": "ml-team"}],
    ids=["untagged", "retired-false", "other-tag"],
)
def test_model_files_without_the_retired_tag_never_expire(template, key, tags):
    # The champion and the versions kept for rollback carry no retired tag.
    assert expiring_rules(template["Resources"]["DataBucket"], key, tags) == []


@pytest.mark.parametrize(
    "key", ["datasets/iris/iris.csv", "datasets/iris/dropflow.yaml", "code/bundle.zip"]
)
def test_the_retired_tag_expires_nothing_outside_models(template, key):
    assert expiring_rules(template["Resources"]["DataBucket"], key, RETIRED) == []


def test_no_bucket_notification_or_s3_event_targets_a_function(template):
    # Either one makes SAM's circular dependency; EventBridge rules carry the S3 events.
    for name, bucket in resources_of_type(template, "AWS::S3::Bucket").items():
        notifications = bucket["Properties"].get("NotificationConfiguration", {})
        assert "LambdaConfigurations" not in notifications, name
    for logical_id in FUNCTIONS:
        events = template["Resources"][logical_id]["Properties"].get("Events", {})
        assert all(event["Type"] != "S3" for event in events.values()), logical_id


def test_registry_table_has_the_single_table_keys_ttl_and_pitr(template):
    props = template["Resources"]["RegistryTable"]["Properties"]

    assert props["KeySchema"] == [
        {"AttributeName": "pk", "KeyType": "HASH"},
        {"AttributeName": "sk", "KeyType": "RANGE"},
    ]
    assert props["BillingMode"] == "PAY_PER_REQUEST"
    assert props["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}
    assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert props["SSESpecification"]["SSEEnabled"] is True


# --------------------------------------------------------------------------- training
def test_launch_template_requires_imdsv2_and_leaves_the_market_to_the_fleet(template):
    data = template["Resources"]["TrainingLaunchTemplate"]["Properties"]["LaunchTemplateData"]

    # Each CreateFleet call picks spot or on-demand; a template forcing spot would contradict
    # the on-demand fallback.
    assert "InstanceMarketOptions" not in data
    assert "KeyName" not in data  # no SSH key: the instance is never logged into
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["MetadataOptions"]["InstanceMetadataTags"] == "enabled"
    assert data["InstanceInitiatedShutdownBehavior"] == "terminate"
    assert data["BlockDeviceMappings"][0]["Ebs"]["VolumeType"] == "gp3"
    assert template["Parameters"]["TrainingAmiId"]["Default"].startswith("/aws/service/")


def test_training_code_ships_with_the_deploy_as_a_layer_the_instance_downloads(template):
    layer = template["Resources"]["TrainingCodeLayer"]
    data = template["Resources"]["TrainingLaunchTemplate"]["Properties"]["LaunchTemplateData"]
    script = data["UserData"]["Fn::Base64"]["Fn::Sub"]

    assert layer["Type"] == "AWS::Serverless::LayerVersion"
    assert (ROOT / layer["Properties"]["ContentUri"] / "__main__.py").is_file()
    assert (ROOT / layer["Properties"]["ContentUri"] / "requirements.txt").is_file()
    assert 'fetch_layer "${TrainingCodeLayer}"' in script
    assert 'fetch_layer "${DropflowLayer}"' in script
    assert '"$PYTHON" -m training' in script
    assert "shutdown -h now" in script
    assert not any(
        {"Ref": "TrainingCodeLayer"} in template["Resources"][f]["Properties"].get("Layers", [])
        for f in FUNCTIONS
    ), "no function needs the training code"


def test_the_training_instance_requirements_leave_the_amis_torch_alone():
    lines = (ROOT / "training" / "requirements.txt").read_text().splitlines()
    pins = [line.split("==")[0].lower() for line in lines if line and not line.startswith("#")]

    assert "torch" not in pins
    assert {"onnx", "onnxscript", "onnxruntime", "pandas", "pydantic"} <= set(pins)
    assert all("==" in line for line in lines if line and not line.startswith("#"))


def test_training_security_group_has_no_inbound_rule(template):
    group = template["Resources"]["TrainingSecurityGroup"]["Properties"]
    assert "SecurityGroupIngress" not in group


def test_outputs_name_the_api_bucket_and_table(template):
    assert {"ApiUrl", "BucketName", "RegistryTableName"} <= set(template["Outputs"])


# --------------------------------------------------------------------------- events
def _matches(pattern: Any, value: Any) -> bool:
    """EventBridge content matching, for the subset this template uses: exact values,
    prefix, wildcard and nested objects. A CloudFormation reference matches anything (its
    value is only known once deployed)."""
    if isinstance(pattern, dict):
        return isinstance(value, dict) and all(
            key in value and _matches(sub, value[key]) for key, sub in pattern.items()
        )
    # A list of alternatives: any may match.
    return any(_matches_one(alternative, value) for alternative in pattern)


def _matches_one(alternative: Any, value: Any) -> bool:
    if isinstance(alternative, dict) and "prefix" in alternative:
        return isinstance(value, str) and value.startswith(alternative["prefix"])
    if isinstance(alternative, dict) and "wildcard" in alternative:
        return isinstance(value, str) and fnmatch.fnmatchcase(value, alternative["wildcard"])
    if isinstance(alternative, dict):  # a CloudFormation reference, e.g. the bucket's name
        return True
    return alternative == value


def _rule_patterns(template: dict[str, Any], logical_id: str) -> list[dict[str, Any]]:
    events = template["Resources"][logical_id]["Properties"]["Events"]
    return [e["Properties"]["Pattern"] for e in events.values() if e["Type"] == "EventBridgeRule"]


def _event_files() -> list[Path]:
    return sorted(EVENTS.glob("*.json"))


def test_the_event_samples_this_template_needs_exist():
    names = {path.name for path in _event_files()}
    assert {
        "s3-dataset-created.json",
        "schedule-retrain.json",
        "ec2-state-change.json",
        "ec2-spot-interruption.json",
        "ec2-rebalance-recommendation.json",
    } <= names


@pytest.mark.parametrize("path", _event_files(), ids=lambda p: p.name)
def test_every_event_file_is_a_json_object_shaped_for_its_source(path):
    event = json.loads(path.read_text())
    source = path.name.split("-", 1)[0]

    assert isinstance(event, dict)
    if source == "s3":  # S3 through EventBridge
        assert event["source"] == "aws.s3"
        assert event["detail-type"] == "Object Created"
        assert event["detail"]["bucket"]["name"]
        assert event["detail"]["object"]["key"]
    elif source == "schedule":
        assert event["source"] == "aws.events"
        assert event["detail-type"] == "Scheduled Event"
    elif source == "ec2":
        assert event["source"] == "aws.ec2"
        assert event["detail"]["instance-id"].startswith("i-")
    elif source == "apigw":  # REST API proxy integration
        assert event["httpMethod"] in {"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"}
        assert event["path"].startswith("/")
        assert "requestContext" in event
    else:
        pytest.fail(f"{path.name}: name it <source>-<what>.json (s3, schedule, ec2, apigw)")


@pytest.mark.parametrize(
    ("event_file", "logical_id"),
    [
        ("s3-dataset-created.json", "LaunchTrainingFunction"),
        ("s3-model-card-created.json", "PromoteModelFunction"),
        ("ec2-state-change.json", "TrackTrainingFunction"),
        ("ec2-spot-interruption.json", "TrackTrainingFunction"),
        ("ec2-rebalance-recommendation.json", "TrackTrainingFunction"),
    ],
)
def test_sample_events_match_a_rule_of_their_function(template, event_file, logical_id):
    path = EVENTS / event_file
    if not path.is_file():
        pytest.skip(f"{event_file} is not written yet")
    event = json.loads(path.read_text())

    assert any(_matches(p, event) for p in _rule_patterns(template, logical_id))


def test_a_dataset_drop_does_not_wake_the_promoter(template):
    event = json.loads((EVENTS / "s3-dataset-created.json").read_text())
    assert not any(_matches(p, event) for p in _rule_patterns(template, "PromoteModelFunction"))


# --------------------------------------------------------------------------- container tier
SERVING = [
    "ServingRepository",
    "ServingLogGroup",
    "PredictSecurityGroup",
    "ServingBalancerSecurityGroup",
    "ServingBalancerFromPredict",
    "ServingInstanceSecurityGroup",
    "ServingInstancesFromBalancer",
    "ServingLoadBalancer",
    "ServingTargetGroup",
    "ServingListener",
    "ServingRole",
    "ServingInstanceProfile",
    "ServingLaunchTemplate",
    "ServingAutoScalingGroup",
]


@pytest.mark.parametrize("logical_id", SERVING)
def test_the_container_tier_exists_only_with_its_subnets(template, logical_id):
    assert template["Resources"][logical_id]["Condition"] == "HasContainerTier"


def test_the_serving_group_starts_empty_and_is_scaled_by_promotion(template):
    group = template["Resources"]["ServingAutoScalingGroup"]["Properties"]

    assert group["MinSize"] == "0"
    assert "DesiredCapacity" not in group  # a stack update must not undo a scale-out
    assert group["HealthCheckType"] == "ELB"
    assert group["TargetGroupARNs"] == [{"Ref": "ServingTargetGroup"}]


def test_the_serving_balancer_is_internal_and_checks_readiness(template):
    resources = template["Resources"]
    balancer = resources["ServingLoadBalancer"]["Properties"]
    targets = resources["ServingTargetGroup"]["Properties"]

    assert balancer["Scheme"] == "internal"
    assert targets["HealthCheckPath"] == "/v2/health/ready"
    assert targets["Matcher"] == {"HttpCode": "200"}


def test_only_the_predict_function_reaches_the_balancer_and_only_it_the_instances(template):
    ingress = {
        rule["Properties"]["GroupId"]["Ref"]: rule["Properties"]
        for rule in resources_of_type(template, "AWS::EC2::SecurityGroupIngress").values()
    }
    groups = resources_of_type(template, "AWS::EC2::SecurityGroup")

    assert ingress["ServingBalancerSecurityGroup"]["SourceSecurityGroupId"] == {
        "Ref": "PredictSecurityGroup"
    }
    assert ingress["ServingInstanceSecurityGroup"]["SourceSecurityGroupId"] == {
        "Ref": "ServingBalancerSecurityGroup"
    }
    assert all("CidrIp" not in rule for rule in ingress.values())
    assert all("SecurityGroupIngress" not in g["Properties"] for g in groups.values())


def test_serving_instances_require_imdsv2(template):
    data = template["Resources"]["ServingLaunchTemplate"]["Properties"]["LaunchTemplateData"]

    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["BlockDeviceMappings"][0]["Ebs"]["Encrypted"] is True


def test_the_predict_function_forwards_to_the_balancer_from_inside_the_vpc(template):
    props = template["Resources"]["PredictFunction"]["Properties"]
    url = props["Environment"]["Variables"]["DROPFLOW_CONTAINER_URL"]["Fn::If"]
    vpc = props["VpcConfig"]["Fn::If"]

    assert url[0] == "HasContainerTier"
    assert url[1] == {"Fn::Sub": "http://${ServingLoadBalancer.DNSName}"}
    assert vpc[0] == "HasContainerTier"
    assert vpc[1]["SecurityGroupIds"] == [{"Ref": "PredictSecurityGroup"}]


def test_promotion_routes_with_the_predict_functions_memory_and_scales_the_group(template):
    resources = template["Resources"]
    variables = resources["PromoteModelFunction"]["Properties"]["Environment"]["Variables"]

    assert variables["DROPFLOW_LAMBDA_MEMORY_MB"] == str(
        resources["PredictFunction"]["Properties"]["MemorySize"]
    )
    assert variables["DROPFLOW_CONTAINER_TIER_URL"]["Fn::If"][1] == {
        "Fn::Sub": "asg://${ServingAutoScalingGroup}"
    }


def test_the_serving_role_reads_models_and_the_registry_and_pulls_its_image(template):
    (policy,) = template["Resources"]["ServingRole"]["Properties"]["Policies"]

    assert granted([policy["PolicyDocument"]]) == {
        ("s3:GetObject", f"{BUCKET}/models/*"),
        ("s3:ListBucket", BUCKET),
        ("dynamodb:GetItem", "${RegistryTable.Arn}"),
        ("dynamodb:Query", "${RegistryTable.Arn}"),
        ("ecr:BatchGetImage", "${ServingRepository.Arn}"),
        ("ecr:GetDownloadUrlForLayer", "${ServingRepository.Arn}"),
        ("ecr:BatchCheckLayerAvailability", "${ServingRepository.Arn}"),
        ("ecr:GetAuthorizationToken", "*"),
        ("logs:CreateLogStream", "${ServingLogGroup.Arn}"),
        ("logs:PutLogEvents", "${ServingLogGroup.Arn}"),
    }
