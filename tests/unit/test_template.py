"""template.yaml keeps its promises: runtime, least privilege, a private TLS-only bucket,
EventBridge instead of bucket notifications, spot + IMDSv2 training, and sample events that
the rules would actually deliver.

The template is read with the CloudFormation-aware loader of dropflow_dev.invoke, so !Ref, !Sub
and !GetAtt come back as {"Ref": ...}, {"Fn::Sub": ...}, {"Fn::GetAtt": [...]}.
"""

from __future__ import annotations

import ast
import fnmatch
import importlib
import json
import re
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from botocore.stub import Stubber

from dropflow.observability import SERVICE
from dropflow.records.catalog import MODELS_PK, model_pk
from dropflow.records.jobs import jobs_pk
from dropflow.serving.api import IMAGE_MEDIA_TYPES
from dropflow.serving.service import FILE_MISMATCH_METRIC
from dropflow.vocabulary.limits import (
    DEFAULT_BUDGET_USD,
    DEFAULT_INSTANCE_TYPES,
    DEFAULT_MAX_BUDGET_USD,
    DEFAULT_MAX_CONCURRENT_JOBS,
)
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
def outside_key_policies(template: dict[str, Any]) -> dict[str, Any]:
    """The template's resources but its KMS keys: a key policy follows the shapes the KMS and
    SNS guides document (the account's kms:*, a service's kms:GenerateDataKey*), and
    test_the_alarm_topic_key_lets_only_the_account_and_the_stacks_alarms_use_it pins it."""
    return {k: v for k, v in template["Resources"].items() if v["Type"] != "AWS::KMS::Key"}


def test_every_allow_statement_names_its_actions(template):
    for statement in statements(outside_key_policies(template)):
        if statement["Effect"] != "Allow":
            continue
        assert "NotAction" not in statement, statement
        for action in as_list(statement["Action"]):
            assert "*" not in action, f"wildcard action {action!r} in {statement}"


def test_the_only_wildcard_action_is_the_deny_of_plain_http(template):
    # A Deny must name every action to close every door; that is the one place for s3:*.
    for statement in statements(outside_key_policies(template)):
        actions = as_list(statement.get("Action", []))
        if any("*" in action for action in actions):
            assert statement["Effect"] == "Deny"
            assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_launching_is_limited_to_the_training_template_and_role(template):
    policy = template["Resources"]["TrainingLauncherPolicy"]["Properties"]["PolicyDocument"]
    by_sid = {s["Sid"]: s for s in policy["Statement"]}

    runs = [s for s in policy["Statement"] if s["Action"] == "ec2:RunInstances"]
    assert len(runs) == 2
    for run in runs:
        assert run["Condition"]["ArnEquals"]["ec2:LaunchTemplate"] == {
            "Fn::Sub": "arn:${AWS::Partition}:ec2:${AWS::Region}:${AWS::AccountId}:"
            "launch-template/${TrainingLaunchTemplate}"
        }
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


# The resource types the Service Authorization Reference lists for each action ("Actions,
# resources, and condition keys for Amazon EC2"). A resource of another type in a statement
# grants nothing and misleads a reader; one missing from RunInstances fails the launch.
CREATE_FLEET_TYPES = {
    "fleet",
    "image",
    "instance",
    "launch-template",
    "placement-group",
    "subnet",
    "volume",
}
RUN_INSTANCES_TYPES = {
    "capacity-reservation",
    "elastic-gpu",
    "elastic-inference",
    "group",
    "image",
    "instance",
    "key-pair",
    "launch-template",
    "license-configuration",
    "network-interface",
    "placement-group",
    "security-group",
    "snapshot",
    "spot-instances-request",
    "subnet",
    "volume",
}


def resource_types(statement: dict[str, Any]) -> set[str]:
    return {r["Fn::Sub"].rsplit(":", 1)[1].split("/", 1)[0] for r in statement["Resource"]}


def granted_types(policy: dict[str, Any], action: str) -> set[str]:
    """The resource types the policy's statements allow `action` on, all together."""
    return {
        kind
        for statement in policy["Statement"]
        if action in as_list(statement["Action"])
        for kind in resource_types(statement)
    }


def test_fleet_and_launch_permissions_name_only_the_actions_resource_types(template):
    policy = template["Resources"]["TrainingLauncherPolicy"]["Properties"]["PolicyDocument"]
    fleet = granted_types(policy, "ec2:CreateFleet")
    run = granted_types(policy, "ec2:RunInstances")

    assert fleet <= CREATE_FLEET_TYPES
    assert {"fleet", "instance", "launch-template"} <= fleet  # fleet and instance required
    assert run <= RUN_INSTANCES_TYPES
    # RunInstances' required types, and the spot request a spot launch makes.
    assert {"image", "instance", "network-interface", "security-group", "subnet"} <= run
    assert "spot-instances-request" in run


def test_the_launcher_may_launch_only_the_owners_instance_types(template):
    # The condition sits on the instance resource (the one type ec2:InstanceType applies
    # to), alone in its statement, for both actions: a StringEquals on a key that a resource's
    # request lacks denies that resource, so a mixed statement would refuse every launch.
    policy = template["Resources"]["TrainingLauncherPolicy"]["Properties"]["PolicyDocument"]
    launching = [
        s
        for s in policy["Statement"]
        if {"ec2:CreateFleet", "ec2:RunInstances"} & set(as_list(s["Action"]))
    ]
    typed = [s for s in launching if "instance" in resource_types(s)]

    assert sorted(as_list(s["Action"])[0] for s in typed) == ["ec2:CreateFleet", "ec2:RunInstances"]
    for statement in typed:
        assert resource_types(statement) == {"instance"}
        assert statement["Condition"]["StringEquals"] == {
            "ec2:InstanceType": {"Ref": "TrainingInstanceTypes"}
        }
    for statement in launching:
        if statement not in typed:
            assert "ec2:InstanceType" not in json.dumps(statement.get("Condition", {}))


def test_the_launching_functions_get_the_owners_limits_and_the_defaults_agree(template):
    params = template["Parameters"]
    expected = {
        "DROPFLOW_TRAINING_INSTANCE_TYPES": {"Fn::Join": [",", {"Ref": "TrainingInstanceTypes"}]},
        "DROPFLOW_DEFAULT_BUDGET_USD": {"Ref": "TrainingDefaultBudgetUSD"},
        "DROPFLOW_MAX_BUDGET_USD": {"Ref": "TrainingMaxBudgetUSD"},
        "DROPFLOW_MAX_CONCURRENT_JOBS": {"Ref": "TrainingMaxConcurrentJobs"},
    }
    for function in ("LaunchTrainingFunction", "TrackTrainingFunction"):
        env = template["Resources"][function]["Properties"]["Environment"]["Variables"]
        assert {name: env.get(name) for name in expected} == expected

    # The stack's defaults are the code's (which the local runtime uses).
    assert tuple(params["TrainingInstanceTypes"]["Default"].split(",")) == DEFAULT_INSTANCE_TYPES
    assert params["TrainingDefaultBudgetUSD"]["Default"] == DEFAULT_BUDGET_USD
    assert params["TrainingMaxBudgetUSD"]["Default"] == DEFAULT_MAX_BUDGET_USD
    assert params["TrainingMaxConcurrentJobs"]["Default"] == DEFAULT_MAX_CONCURRENT_JOBS
    assert params["TrainingMaxConcurrentJobs"]["MinValue"] >= 1


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
        # A text model's checkpoint uploaded for instances without internet.
        ("s3:GetObject", f"{BUCKET}/weights/*"),
        ("s3:GetObject", f"{BUCKET}/code/*"),
        # Pretrained backbones the owner uploaded (image models without internet).
        ("s3:GetObject", f"{BUCKET}/weights/*"),
        ("s3:GetObject", f"{BUCKET}/jobs/*"),
        ("s3:PutObject", f"{BUCKET}/jobs/*"),
        # Pruning old checkpoints is the only delete.
        ("s3:DeleteObject", f"{BUCKET}/jobs/*/*/checkpoints/step-*.pt"),
        # The files a job publishes, and a look at the model it uploaded.
        *(
            ("s3:PutObject", f"{BUCKET}/models/*/*/{name}")
            for name in ("model.onnx", "reference.npz", "curve.png", "tokenizer.json", "card.json")
        ),
        ("s3:GetObject", f"{BUCKET}/models/*/*/model.onnx"),
        ("s3:ListBucket", BUCKET),
        ("dynamodb:GetItem", "${RegistryTable.Arn}"),
        ("dynamodb:PutItem", "${RegistryTable.Arn}"),
    }


def test_the_training_role_touches_only_job_records_in_the_registry(template):
    (policy,) = template["Resources"]["TrainingRole"]["Properties"]["Policies"]
    (statement,) = [
        s
        for s in policy["PolicyDocument"]["Statement"]
        if any(a.startswith("dynamodb:") for a in as_list(s["Action"]))
    ]

    # Every item a call touches must sit in a jobs partition (dropflow.records.jobs), never
    # in a model's catalog: an instance cannot record a decision or move the champion.
    assert statement["Condition"] == {
        "ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["JOBS#*"]}
    }
    assert fnmatch.fnmatchcase(jobs_pk("iris"), "JOBS#*")
    assert not fnmatch.fnmatchcase(model_pk("iris"), "JOBS#*")
    assert not fnmatch.fnmatchcase(MODELS_PK, "JOBS#*")
    # Conditional writes (compare-and-set) need no more than PutItem; no query, no scan.
    assert set(as_list(statement["Action"])) == {"dynamodb:GetItem", "dynamodb:PutItem"}


def test_the_training_role_may_list_the_bucket_so_a_missing_key_reads_as_404(template):
    (policy,) = template["Resources"]["TrainingRole"]["Properties"]["Policies"]
    (listing,) = [
        s for s in policy["PolicyDocument"]["Statement"] if s["Action"] == "s3:ListBucket"
    ]
    # A condition on s3:prefix would make S3 answer 403 for a first attempt's missing
    # manifest.json, which the job reads as "no checkpoint yet".
    assert "Condition" not in listing


def test_failed_jobs_and_abandoned_events_raise_alarms(template):
    resources = template["Resources"]
    jobs = resources["FailedJobsAlarm"]["Properties"]
    events = resources["FailedEventsAlarm"]["Properties"]

    assert (jobs["Namespace"], jobs["MetricName"]) == ("dropflow", "JobsFailed")
    assert jobs["Dimensions"] == [{"Name": "service", "Value": "dropflow"}]
    assert jobs["AlarmActions"] == [{"Ref": "AlarmTopic"}] == events["AlarmActions"]
    assert events["Dimensions"][0]["Value"] == {"Fn::GetAtt": ["FailedEventsQueue", "QueueName"]}


def test_a_model_file_that_is_not_its_jobs_raises_an_alarm(template):
    alarm = template["Resources"]["ModelFileMismatchAlarm"]["Properties"]

    # What dropflow.serving.service counts, at both tiers, under the service dimension.
    assert (alarm["Namespace"], alarm["MetricName"]) == ("dropflow", FILE_MISMATCH_METRIC)
    assert alarm["Dimensions"] == [{"Name": "service", "Value": SERVICE}]
    assert (alarm["Threshold"], alarm["ComparisonOperator"]) == (
        1,
        "GreaterThanOrEqualToThreshold",
    )
    assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}]


ALARM_ACTIONS = ("AlarmActions", "OKActions", "InsufficientDataActions")


def test_the_alarm_topic_is_encrypted_with_a_key_of_its_own_not_the_aws_managed_one(template):
    # CloudWatch cannot use alias/aws/sns (its policy cannot grant cloudwatch.amazonaws.com):
    # alarms on such a topic never notify, with a KMS AccessDenied in their history.
    topic = template["Resources"]["AlarmTopic"]["Properties"]

    assert topic["KmsMasterKeyId"] == {"Fn::GetAtt": ["AlarmTopicKey", "Arn"]}
    assert template["Resources"]["AlarmTopicKey"]["Type"] == "AWS::KMS::Key"


def test_the_alarm_topic_key_lets_only_the_account_and_the_stacks_alarms_use_it(template):
    key = template["Resources"]["AlarmTopicKey"]["Properties"]
    by_sid = {s["Sid"]: s for s in key["KeyPolicy"]["Statement"]}

    assert key["EnableKeyRotation"] is True
    assert set(by_sid) == {
        "AccountAdministersTheKeyThroughIam",
        "CloudWatchAlarmsOfThisStackPublish",
    }
    admin = by_sid["AccountAdministersTheKeyThroughIam"]
    assert admin["Principal"] == {
        "AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}
    }
    assert (admin["Effect"], admin["Action"], admin["Resource"]) == ("Allow", "kms:*", "*")
    alarms = by_sid["CloudWatchAlarmsOfThisStackPublish"]
    assert alarms["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    assert sorted(alarms["Action"]) == ["kms:Decrypt", "kms:GenerateDataKey*"]
    assert alarms["Condition"] == {
        "StringEquals": {"aws:SourceAccount": {"Ref": "AWS::AccountId"}},
        "ArnLike": {
            "aws:SourceArn": {
                "Fn::Sub": "arn:${AWS::Partition}:cloudwatch:${AWS::Region}:${AWS::AccountId}"
                ":alarm:${AWS::StackName}-*"
            }
        },
    }


def _refers_to(node: Any, logical_id: str) -> bool:
    if isinstance(node, dict):
        if node.get("Ref") == logical_id or node.get("Fn::GetAtt", [None])[0] == logical_id:
            return True
        sub = node.get("Fn::Sub")
        if isinstance(sub, str) and "${" + logical_id + "}" in sub:
            return True
        return any(_refers_to(value, logical_id) for value in node.values())
    if isinstance(node, list):
        return any(_refers_to(value, logical_id) for value in node)
    return False


def test_every_publisher_of_the_alarm_topic_is_an_alarm_the_topic_key_admits(template):
    # A new publisher (an EventBridge target, a function) needs its own principal on the key.
    resources = template["Resources"]
    referrers = {k for k, v in resources.items() if _refers_to(v, "AlarmTopic")}
    alarms = {k for k in referrers if resources[k]["Type"] == "AWS::CloudWatch::Alarm"}
    key_policy = resources["AlarmTopicKey"]["Properties"]["KeyPolicy"]["Statement"]
    (admitted,) = [
        s for s in key_policy if s["Principal"] == {"Service": "cloudwatch.amazonaws.com"}
    ]
    pattern = admitted["Condition"]["ArnLike"]["aws:SourceArn"]["Fn::Sub"].rsplit(":alarm:", 1)[1]

    assert referrers - alarms == {"AlarmEmailSubscription"}
    assert alarms == {
        "FailedJobsAlarm",
        "FailedEventsAlarm",
        "ServingBootFailedAlarm",
        "ModelFileMismatchAlarm",
    }
    for name in alarms:
        props = resources[name]["Properties"]
        assert any({"Ref": "AlarmTopic"} in props.get(field, []) for field in ALARM_ACTIONS)
        # CloudFormation fills ${AWS::StackName} in both the same way.
        assert fnmatch.fnmatchcase(props["AlarmName"]["Fn::Sub"], pattern), name


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


def test_the_training_ami_is_a_documented_dlami_parameter_and_its_root_device_its_own(template):
    # "Finding the ID of a DLAMI": /aws/service/deeplearning/ami/<arch>/<name without deep,
    # learning, ami>/latest/ami-id; the x86_64 PyTorch 2.13 DLAMI exists for Amazon Linux 2023.
    default = template["Parameters"]["TrainingAmiId"]["Default"]
    data = template["Resources"]["TrainingLaunchTemplate"]["Properties"]["LaunchTemplateData"]
    image = template["Resources"]["TrainingImage"]["Properties"]

    assert default == (
        "/aws/service/deeplearning/ami/x86_64/"
        "oss-nvidia-driver-gpu-pytorch-2.13-amazon-linux-2023/latest/ami-id"
    )
    assert "TrainingRootDeviceName" not in template["Parameters"]
    # The mapping names the root device the AMI itself declares (read at deploy time).
    assert data["BlockDeviceMappings"][0]["DeviceName"] == {
        "Fn::GetAtt": ["TrainingImage", "RootDeviceName"]
    }
    assert image["ImageId"] == {"Ref": "TrainingAmiId"}
    assert image["VolumeGiB"] == {"Ref": "TrainingVolumeGiB"}
    assert image["ServiceToken"] == {"Fn::GetAtt": ["TrainingImageFunction", "Arn"]}


def test_the_bucket_and_table_are_named_by_cloudformation_so_a_redeploy_after_delete_works(
    template,
):
    # Both are retained on delete; a fixed name would still be taken by the retained one.
    resources = template["Resources"]
    for logical_id, name_key in (("DataBucket", "BucketName"), ("RegistryTable", "TableName")):
        assert resources[logical_id]["DeletionPolicy"] == "Retain"
        assert name_key not in resources[logical_id]["Properties"], logical_id
    assert template["Outputs"]["BucketName"]["Value"] == {"Ref": "DataBucket"}
    assert template["Outputs"]["RegistryTableName"]["Value"] == {"Ref": "RegistryTable"}


def test_the_training_bundle_ships_with_the_deploy_and_reaches_the_instance_through_s3(template):
    resources = template["Resources"]
    layer = resources["TrainingCodeLayer"]
    bundle = resources["TrainingBundle"]["Properties"]
    data = resources["TrainingLaunchTemplate"]["Properties"]["LaunchTemplateData"]
    script = data["UserData"]["Fn::Base64"]["Fn::Sub"]

    assert layer["Type"] == "AWS::Serverless::LayerVersion"
    assert layer["Metadata"]["BuildMethod"] == "makefile"
    content = ROOT / layer["Properties"]["ContentUri"]
    assert (content / "__main__.py").is_file()
    assert "build-TrainingCodeLayer:" in (content / "Makefile").read_text()
    assert bundle["LayerArn"] == {"Ref": "TrainingCodeLayer"}
    assert bundle["Bucket"] == {"Ref": "DataBucket"}
    assert bundle["Prefix"] == "code/"
    # The instance fetches the bundle from S3 and installs only from the wheels inside it:
    # no Lambda API, no package index.
    assert "s3://${DataBucket}/${TrainingBundle.Key}" in script
    assert "lambda" not in script.lower().replace("lambda api", "")
    pip = [line for line in script.splitlines() if "pip install" in line]
    assert pip and all("--no-index" in line for line in pip)
    assert "shutdown -h now" in script
    assert not any(
        {"Ref": "TrainingCodeLayer"} in resources[f]["Properties"].get("Layers", [])
        for f in FUNCTIONS
    ), "no function needs the training code"


def test_the_bundle_step_may_read_only_the_bundle_layer_and_write_only_code(template):
    (policy,) = template["Resources"]["TrainingBundleRole"]["Properties"]["Policies"]

    assert granted([policy["PolicyDocument"]]) == {
        ("lambda:GetLayerVersion", "${TrainingCodeLayer}"),
        ("s3:PutObject", f"{BUCKET}/code/*"),
        ("s3:DeleteObject", f"{BUCKET}/code/*"),
        ("logs:CreateLogStream", "${DeployStepsLogGroup.Arn}"),
        ("logs:PutLogEvents", "${DeployStepsLogGroup.Arn}"),
    }


def test_the_deploy_checks_read_ec2_descriptions_only(template):
    (policy,) = template["Resources"]["DeployChecksRole"]["Properties"]["Policies"]

    assert granted([policy["PolicyDocument"]]) == {
        *(
            (f"ec2:{action}", "*")
            for action in (
                "DescribeImages",
                "DescribeSubnets",
                "DescribeRouteTables",
                "DescribePrefixLists",
                "DescribeVpcEndpoints",
            )
        ),
        ("logs:CreateLogStream", "${DeployStepsLogGroup.Arn}"),
        ("logs:PutLogEvents", "${DeployStepsLogGroup.Arn}"),
    }


def test_each_subnet_parameter_is_checked_for_what_its_parts_call(template):
    resources = template["Resources"]
    training = resources["TrainingSubnetReach"]["Properties"]
    serving = resources["ServingSubnetReach"]

    assert training["Subnets"] == {"Ref": "TrainingSubnetIds"}
    assert training["Services"] == ["s3", "dynamodb"]
    assert training["PublicIp"] == "true"
    assert serving["Condition"] == "HasContainerTier"
    # The predict function in the VPC needs S3 and DynamoDB; the serving instances also ECR
    # (API and registry) and CloudWatch Logs for the awslogs driver. Lambda gets no public IP.
    assert serving["Properties"]["Services"] == ["s3", "dynamodb", "ecr.api", "ecr.dkr", "logs"]
    assert serving["Properties"]["PublicIp"] == "false"
    assert serving["Properties"]["Subnets"] == {"Ref": "ServingSubnetIds"}
    # What is launched there waits for the check.
    assert resources["TrainingLaunchTemplate"]["DependsOn"] == "TrainingSubnetReach"
    assert resources["ServingLaunchTemplate"]["DependsOn"] == "ServingSubnetReach"


def test_every_deploy_step_runs_code_from_functions_deploy(template):
    steps = {
        "ControlPlaneConcurrencyFunction": "concurrency",
        "TrainingImageFunction": "training_image",
        "SubnetReachFunction": "network",
        "TrainingBundleFunction": "training_bundle",
    }
    for logical_id, module in steps.items():
        props = template["Resources"][logical_id]["Properties"]
        assert props["Code"] == "functions/deploy", logical_id
        assert props["Handler"] == f"{module}.handler", logical_id
        assert (ROOT / "functions" / "deploy" / f"{module}.py").is_file()
        assert props["LoggingConfig"] == {"LogGroup": {"Ref": "DeployStepsLogGroup"}}
        assert "ZipFile" not in json.dumps(props)


# The bootstrap scripts, run by bash in a sandbox: the !Sub names get dummy values, the paths
# a real instance writes move into a temporary folder, and curl, aws, shutdown and python3 are
# fakes on PATH that record each call (and answer the metadata service as an instance would).
_SUB = re.compile(r"\$\{([^}]+)\}")
TRAINING_SUB = {
    "AWS::Region": "us-east-1",
    "AWS::URLSuffix": "amazonaws.com",
    "DataBucket": "dropflow-data",
    "RegistryTable": "dropflow-registry",
    "TrainingBundle.Key": "code/training-7-0011223344556677.zip",
}
FAKES = {
    "curl": r"""
echo "curl $*" >> "$SANDBOX_CALLS"
out=""; url=""
while [ $# -gt 0 ]; do
  case "$1" in
    -o) out=$2; shift 2 ;;
    -X|-H|--retry) shift 2 ;;
    http*) url=$1; shift ;;
    *) shift ;;
  esac
done
if [ -n "${FAIL_URL:-}" ] && [[ "$url" == *"$FAIL_URL" ]]; then
  echo "curl: (22) The requested URL returned error: 403" >&2
  exit 22
fi
case "$url" in
  */api/token) printf token ;;
  */meta-data/instance-id) printf i-0123456789abcdef0 ;;
  */meta-data/tags/instance/) printf 'Name\nDROPFLOW_JOB_ID\nDROPFLOW_MODEL\nDROPFLOW_ATTEMPT\n' ;;
  */meta-data/tags/instance/DROPFLOW_JOB_ID) printf job-42 ;;
  */meta-data/tags/instance/DROPFLOW_MODEL) printf iris ;;
  */meta-data/tags/instance/DROPFLOW_ATTEMPT) printf 2 ;;
  */meta-data/*) exit 22 ;;
  *) if [ -n "$out" ]; then : > "$out"; fi ;;
esac
""",
    "aws": r"""
echo "aws $*" >> "$SANDBOX_CALLS"
case "$1 $2" in
  "s3 cp")
    if [[ "$4" == s3://*/code/* ]]; then exit "${BUNDLE_EXIT:-0}"; fi
    if [[ "$4" == */tmp/dropflow-failure.txt ]]; then cp "$4" "$SANDBOX_FAILURE"; fi
    exit "${S3_EXIT:-0}" ;;
esac
""",
    "python3": r"""
echo "python3 $*" >> "$SANDBOX_CALLS"
case "$1 $2" in
  "-m zipfile") mkdir -p "$5/code/training" "$5/wheels"; echo 3.12 > "$5/python-version" ;;
  "-c import"*) echo "${AMI_PYTHON:-3.12}" ;;
  "-m pip") exit "${PIP_EXIT:-0}" ;;
  "-m training") exit "${TRAINING_EXIT:-0}" ;;
  "-m torch.distributed.run") exit "${TRAINING_EXIT:-0}" ;;
esac
""",
    "nvidia-smi": r"""
echo "nvidia-smi $*" >> "$SANDBOX_CALLS"
[ -n "${GPU_COUNT:-}" ] || exit 9
for i in $(seq 0 $((GPU_COUNT - 1))); do echo "GPU $i: NVIDIA A10G (UUID: GPU-$i)"; done
""",
    "shutdown": 'echo "shutdown $*" >> "$SANDBOX_CALLS"\n',
    "poweroff": 'echo "poweroff $*" >> "$SANDBOX_CALLS"\n',
}


def substituted(text: str, values: dict[str, str]) -> str:
    """An Fn::Sub string as CloudFormation renders it: ${Name} from `values` (a name missing
    there is a KeyError, so a new variable is noticed), ${!X} as a literal ${X}."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        return "${" + name[1:] + "}" if name.startswith("!") else values[name]

    return _SUB.sub(one, text)


def run_user_data(
    script: str,
    sandbox: Path,
    moved: list[str],
    *,
    fakes: dict[str, str] | None = None,
    **env: str,
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    """Run `script` with bash in `sandbox`: each path of `moved` (each must occur in the
    script) goes under the sandbox, the fakes (FAKES, then `fakes` in place of or beside
    them) come first on PATH. Returns the finished process and the recorded calls, in order."""
    for path in moved:
        assert path in script, f"the script no longer uses {path}"
        script = script.replace(path, f"{sandbox}{path}")
        # What the image has: the folders (not the files) the script writes into.
        (sandbox / path.strip("/")).parent.mkdir(parents=True, exist_ok=True)
    bin_dir = sandbox / "bin"
    bin_dir.mkdir(parents=True)
    for name, body in {**FAKES, **(fakes or {})}.items():
        fake = bin_dir / name
        fake.write_text("#!/bin/bash\n" + body)
        fake.chmod(0o755)
    calls = sandbox / "calls"
    calls.touch()
    (sandbox / "script.sh").write_text(script)
    done = subprocess.run(
        ["bash", str(sandbox / "script.sh")],
        env={
            "PATH": f"{bin_dir}:/usr/bin:/bin",
            "HOME": str(sandbox),
            "SANDBOX_CALLS": str(calls),
            "SANDBOX_FAILURE": str(sandbox / "failure.txt"),
            **env,
        },
        cwd=sandbox,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    return done, calls.read_text().splitlines()


def run_training_bootstrap(
    template: dict[str, Any], sandbox: Path, **env: str
) -> tuple[subprocess.CompletedProcess[str], list[str]]:
    data = template["Resources"]["TrainingLaunchTemplate"]["Properties"]["LaunchTemplateData"]
    script = substituted(data["UserData"]["Fn::Base64"]["Fn::Sub"], TRAINING_SUB)
    return run_user_data(
        script,
        sandbox,
        [
            "/var/log/dropflow-bootstrap.log",
            "/opt/",
            "/tmp/bundle.zip",
            "/tmp/dropflow-failure.txt",
        ],
        **env,
    )


UPLOAD = "aws s3 cp --only-show-errors"
LOG_KEY = "s3://dropflow-data/jobs/iris/job-42/bootstrap.log"


@pytest.mark.parametrize(
    "failing",
    [
        "/api/token",
        "/meta-data/instance-id",
        "/meta-data/tags/instance/",
        "/meta-data/tags/instance/DROPFLOW_JOB_ID",
    ],
)
def test_a_failing_metadata_call_ends_the_bootstrap_in_a_shutdown_before_training(
    template, tmp_path, failing
):
    done, calls = run_training_bootstrap(template, tmp_path, FAIL_URL=failing)

    assert done.returncode != 0, done.stdout
    assert calls[-1] == "shutdown -h now", calls
    assert calls.count("shutdown -h now") == 1
    assert not any(call.startswith("python3 -m training") for call in calls), calls
    # Nothing names the job yet, so there is nowhere to put the log.
    assert not any(call.startswith(UPLOAD) for call in calls), calls


FAILURE_KEY = "s3://dropflow-data/jobs/iris/job-42/attempts/2/bootstrap-failure.txt"


def uploads(calls: list[str]) -> list[str]:
    return [call for call in calls if call.startswith(UPLOAD)]


@pytest.mark.parametrize(
    ("env", "code"),
    [({"BUNDLE_EXIT": "1"}, 1), ({"PIP_EXIT": "1"}, 1), ({"TRAINING_EXIT": "3"}, 3), ({}, 0)],
    ids=["bundle-download-fails", "install-fails", "training-fails", "training-succeeds"],
)
def test_once_the_job_is_known_the_bootstrap_uploads_its_log_then_shuts_down(
    template, tmp_path, env, code
):
    done, calls = run_training_bootstrap(template, tmp_path, **env)
    logs = [call for call in uploads(calls) if call.endswith(LOG_KEY)]

    assert done.returncode == code, done.stdout
    assert len(logs) == 1, calls
    assert calls[-1] == "shutdown -h now", calls
    assert calls.count("shutdown -h now") == 1
    assert (
        f"dropflow bootstrap: exit code {code}"
        in (tmp_path / "var/log/dropflow-bootstrap.log").read_text()
    )


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"BUNDLE_EXIT": "1"}, "downloading the training bundle s3://dropflow-data/code/"),
        ({"PIP_EXIT": "1"}, "installing the training requirements from the bundle failed"),
        (
            {"FAIL_URL": "dynamodb.us-east-1.amazonaws.com/"},
            "cannot reach dynamodb.us-east-1.amazonaws.com (HTTPS): each of TrainingSubnetIds",
        ),
        ({"FAIL_URL": "s3.us-east-1.amazonaws.com/"}, "cannot reach s3.us-east-1.amazonaws.com"),
        (
            {"AMI_PYTHON": "3.11"},
            "wheels for Python 3.12 and this AMI's python3 is Python 3.11: build for it "
            "(make build TRAINING_PYTHON=3.11)",
        ),
    ],
    ids=["bundle", "install", "no-dynamodb", "no-s3", "python-mismatch"],
)
def test_a_failure_before_training_leaves_its_reason_beside_the_job(
    template, tmp_path, env, reason
):
    done, calls = run_training_bootstrap(template, tmp_path, **env)

    assert done.returncode != 0
    assert any(call.endswith(FAILURE_KEY) for call in uploads(calls)), calls
    assert reason in (tmp_path / "failure.txt").read_text()
    assert not any(" -m training" in call for call in calls), calls
    assert calls[-1] == "shutdown -h now", calls


def test_a_failing_job_leaves_no_bootstrap_reason_the_job_records_its_own(template, tmp_path):
    done, calls = run_training_bootstrap(template, tmp_path, TRAINING_EXIT="2")

    assert done.returncode == 2
    assert not any(call.endswith(FAILURE_KEY) for call in uploads(calls)), calls


def test_the_instance_installs_from_the_bundle_and_never_from_an_index(template, tmp_path):
    done, calls = run_training_bootstrap(template, tmp_path)

    assert done.returncode == 0, done.stdout
    (pip,) = [call for call in calls if " -m pip " in call]
    assert "--no-index" in pip and f"--find-links {tmp_path}/opt/dropflow/bundle/wheels" in pip
    assert not any(call.startswith("aws lambda") for call in calls), calls
    bundle = [c for c in calls if c.startswith("aws s3 cp") and "/code/" in c]
    assert bundle == [
        f"aws s3 cp --only-show-errors s3://dropflow-data/code/training-7-0011223344556677.zip "
        f"{tmp_path}/tmp/bundle.zip"
    ]


@pytest.mark.parametrize(
    ("gpus", "command"),
    [
        (None, "python3 -m training"),
        ("1", "python3 -m training"),
        (
            "4",
            "python3 -m torch.distributed.run --standalone --nnodes 1 --nproc-per-node 4 "
            "-m training",
        ),
    ],
    ids=["cpu", "one-gpu", "four-gpus"],
)
def test_the_job_runs_one_process_per_gpu(template, tmp_path, gpus, command):
    env = {"GPU_COUNT": gpus} if gpus else {}
    done, calls = run_training_bootstrap(template, tmp_path, **env)

    assert done.returncode == 0, done.stdout
    (run,) = [call for call in calls if call.endswith("-m training")]
    assert run == command


def test_the_bootstrap_shuts_down_even_when_its_log_cannot_be_uploaded(template, tmp_path):
    done, calls = run_training_bootstrap(template, tmp_path, TRAINING_EXIT="1", S3_EXIT="1")

    assert done.returncode == 1
    assert calls[-1] == "shutdown -h now", calls


def test_the_training_instance_requirements_leave_the_amis_torch_alone():
    lines = (ROOT / "training" / "requirements.txt").read_text().splitlines()
    pins = [line.split("==")[0].lower() for line in lines if line and not line.startswith("#")]

    assert "torch" not in pins
    assert {"onnx", "onnxscript", "onnxruntime", "pyarrow", "pydantic"} <= set(pins)
    assert all("==" in line for line in lines if line and not line.startswith("#"))
    # Packages built on torch are bundled without their dependencies (no second torch).
    on_torch = {line.split("==")[0] for line in lines if line.endswith("# on torch")}
    assert {"tabm", "rtdl_num_embeddings"} <= on_torch
    makefile = (ROOT / "training" / "Makefile").read_text()
    assert "--no-deps" in makefile and "# on torch" in makefile


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


RULE_EVENT_TYPES = {"EventBridgeRule", "Schedule"}


def _rule_events(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every function event that SAM turns into an EventBridge rule, by the logical id SAM
    gives that rule (<function><event>)."""
    return {
        f"{function}{name}": event
        for function in FUNCTIONS
        for name, event in template["Resources"][function]["Properties"].get("Events", {}).items()
        if event["Type"] in RULE_EVENT_TYPES
    }


@pytest.mark.parametrize("rule", sorted(_rule_events(load_template(TEMPLATE))))
def test_every_rule_target_retries_then_dead_letters_to_the_failed_events_queue(template, rule):
    # Without a dead-letter queue, an event EventBridge gives up on is dropped unseen.
    props = _rule_events(template)[rule]["Properties"]
    retry = props["RetryPolicy"]

    assert props["DeadLetterConfig"] == {"Arn": {"Fn::GetAtt": ["FailedEventsQueue", "Arn"]}}
    assert 60 <= retry["MaximumEventAgeInSeconds"] <= 86_400  # EventBridge's range
    assert 0 <= retry["MaximumRetryAttempts"] <= 185


def test_only_the_stacks_rules_may_send_dead_letters_to_the_failed_events_queue(template):
    resources = template["Resources"]
    (policy,) = [
        r["Properties"]
        for r in resources_of_type(template, "AWS::SQS::QueuePolicy").values()
        if {"Ref": "FailedEventsQueue"} in r["Properties"]["Queues"]
    ]
    (statement,) = policy["PolicyDocument"]["Statement"]

    assert statement["Principal"] == {"Service": "events.amazonaws.com"}
    assert statement["Action"] == "sqs:SendMessage"
    assert statement["Resource"] == {"Fn::GetAtt": ["FailedEventsQueue", "Arn"]}
    assert set(statement["Condition"]) == {"ArnEquals"}
    sources = statement["Condition"]["ArnEquals"]["aws:SourceArn"]
    assert sorted(s["Fn::GetAtt"][0] for s in sources) == sorted(_rule_events(template))
    assert all(s["Fn::GetAtt"][1] == "Arn" for s in sources)
    # What lands there raises the failed-events alarm.
    dimension = resources["FailedEventsAlarm"]["Properties"]["Dimensions"][0]
    assert dimension["Value"] == {"Fn::GetAtt": ["FailedEventsQueue", "QueueName"]}


SAM_PYTHON = ROOT / ".venv-sam" / "bin" / "python"


@pytest.fixture(scope="module")
def deployed(tmp_path_factory) -> dict[str, Any]:
    """The CloudFormation that SAM makes of template.yaml (tools/sam_transform.py, run with
    the SAM venv's python: samtranslator lives there, as in `make lint`)."""
    if not SAM_PYTHON.is_file():
        pytest.skip("no .venv-sam (make sam-venv): samtranslator is not installed")
    out = tmp_path_factory.mktemp("sam") / "template.json"
    subprocess.run(
        [
            str(SAM_PYTHON),
            str(ROOT / "tools" / "sam_transform.py"),
            str(out),
            "--template",
            str(TEMPLATE),
            "--region",
            "us-east-1",
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return json.loads(out.read_text())


def test_each_rule_sam_generates_dead_letters_where_the_queue_policy_lets_it(deployed):
    # The queue policy names rules by the logical ids SAM generates: SAM must agree.
    rules = resources_of_type(deployed, "AWS::Events::Rule")
    (policy,) = resources_of_type(deployed, "AWS::SQS::QueuePolicy").values()
    (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]
    allowed = {s["Fn::GetAtt"][0] for s in statement["Condition"]["ArnEquals"]["aws:SourceArn"]}

    assert set(rules) == allowed
    for name, rule in rules.items():
        for target in rule["Properties"]["Targets"]:
            assert target["DeadLetterConfig"] == {
                "Arn": {"Fn::GetAtt": ["FailedEventsQueue", "Arn"]}
            }, name
            assert "RetryPolicy" in target, name


# --------------------------------------------------------------------------- concurrency
CONTROL_FUNCTIONS = ["LaunchTrainingFunction", "TrackTrainingFunction", "PromoteModelFunction"]


def test_the_control_functions_and_not_predict_get_reserved_concurrency(template):
    resources = template["Resources"]
    guard = resources["ControlPlaneConcurrency"]["Properties"]
    parameter = template["Parameters"]["ControlPlaneReservedConcurrency"]

    assert guard["ServiceToken"] == {"Fn::GetAtt": ["ControlPlaneConcurrencyFunction", "Arn"]}
    assert guard["FunctionNames"] == [{"Ref": f} for f in CONTROL_FUNCTIONS]
    assert guard["PerFunction"] == {"Ref": "ControlPlaneReservedConcurrency"}
    # A default that reserves: 0 would mean "throttle every call" to Lambda.
    assert parameter["MinValue"] >= 1 and parameter["Default"] >= parameter["MinValue"]
    # Never set on the functions themselves: that fails the deploy where the limit is low.
    assert all("ReservedConcurrentExecutions" not in resources[f]["Properties"] for f in FUNCTIONS)
    assert template["Outputs"]["ControlPlaneConcurrencyStatus"]["Value"] == {
        "Fn::GetAtt": ["ControlPlaneConcurrency", "Status"]
    }


def test_the_concurrency_step_may_touch_only_the_control_functions(template):
    (policy,) = template["Resources"]["ControlPlaneConcurrencyRole"]["Properties"]["Policies"]

    assert granted([policy["PolicyDocument"]]) == {
        ("lambda:GetAccountSettings", "*"),
        *(
            (f"lambda:{action}", f"${{{function}.Arn}}")
            for action in (
                "GetFunctionConcurrency",
                "PutFunctionConcurrency",
                "DeleteFunctionConcurrency",
            )
            for function in CONTROL_FUNCTIONS
        ),
        ("logs:CreateLogStream", "${DeployStepsLogGroup.Arn}"),
        ("logs:PutLogEvents", "${DeployStepsLogGroup.Arn}"),
    }


NAMES = ["stack-LaunchTraining-a1", "stack-TrackTraining-b2", "stack-PromoteModel-c3"]


@pytest.fixture
def concurrency_step(template, monkeypatch):
    """The handler of ControlPlaneConcurrencyFunction (functions/deploy/concurrency.py, its
    folder on sys.path as Lambda puts it), with a Stubber'd Lambda client (answers shaped as
    Lambda's) and the answer to CloudFormation captured."""
    monkeypatch.syspath_prepend(str(ROOT / "functions" / "deploy"))
    module = importlib.import_module("concurrency")
    client = boto3.client("lambda", region_name="us-east-1")
    stubber = Stubber(client)
    monkeypatch.setattr(module, "boto3", SimpleNamespace(client=lambda service: client))
    answers: list[dict[str, Any]] = []

    class Answered:
        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def urlopen(request, timeout):
        assert request.get_method() == "PUT" and request.full_url == "https://cfn.example/answer"
        answers.append(json.loads(request.data))
        return Answered()

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)

    def run(request_type: str) -> dict[str, Any]:
        event = {
            "RequestType": request_type,
            "ResponseURL": "https://cfn.example/answer",
            "StackId": "arn:aws:cloudformation:us-east-1:123456789012:stack/s/1",
            "RequestId": "r-1",
            "LogicalResourceId": "ControlPlaneConcurrency",
            "ResourceProperties": {"FunctionNames": NAMES, "PerFunction": "5"},
        }
        with stubber:
            module.handler(event, SimpleNamespace(log_stream_name="stream"))
            stubber.assert_no_pending_responses()
        (answer,) = answers
        # One id for the life of the stack; a Create that failed has none yet, so it answers
        # its logical id (and CloudFormation's rollback deletes nothing real).
        expected = (
            "control-plane-concurrency"
            if answer["Status"] == "SUCCESS"
            else "ControlPlaneConcurrency"
        )
        assert answer["PhysicalResourceId"] == expected
        return answer

    return SimpleNamespace(stubber=stubber, run=run)


def _account(limit: int, unreserved: int) -> dict[str, Any]:
    return {
        "AccountLimit": {
            "TotalCodeSize": 80_530_636_800,
            "CodeSizeUnzipped": 262_144_000,
            "CodeSizeZipped": 52_428_800,
            "ConcurrentExecutions": limit,
            "UnreservedConcurrentExecutions": unreserved,
        },
        "AccountUsage": {"TotalCodeSize": 0, "FunctionCount": 4},
    }


def _nothing_held(stubber) -> None:
    for name in NAMES:
        stubber.add_response("get_function_concurrency", {}, {"FunctionName": name})


def test_an_account_with_the_default_limit_reserves_for_each_control_function(
    concurrency_step,
):
    stubber = concurrency_step.stubber
    _nothing_held(stubber)
    stubber.add_response("get_account_settings", _account(1000, 1000), {})
    for name in NAMES:
        stubber.add_response(
            "put_function_concurrency",
            {"ReservedConcurrentExecutions": 5},
            {"FunctionName": name, "ReservedConcurrentExecutions": 5},
        )

    answer = concurrency_step.run("Create")

    assert answer["Status"] == "SUCCESS"
    assert answer["Data"]["Status"].startswith("reserved 5 for each of 3 functions")


@pytest.mark.parametrize(("limit", "needed"), [(10, 115), (110, 115)])
def test_a_new_account_with_a_low_limit_deploys_without_reserving_and_says_what_it_needs(
    concurrency_step, limit, needed
):
    stubber = concurrency_step.stubber
    _nothing_held(stubber)
    stubber.add_response("get_account_settings", _account(limit, limit), {})

    answer = concurrency_step.run("Create")

    assert answer["Status"] == "SUCCESS"  # the stack deploys
    status = answer["Data"]["Status"]
    assert status.startswith("not reserved")
    assert f"limit is {limit}" in status and f"needs a limit of {needed}" in status
    assert "L-B99A9384" in status


def test_reservations_the_account_can_no_longer_keep_are_released(concurrency_step):
    # A limit lowered (or other functions reserving more) since the last deploy.
    stubber = concurrency_step.stubber
    for name in NAMES:
        stubber.add_response(
            "get_function_concurrency",
            {"ReservedConcurrentExecutions": 5},
            {"FunctionName": name},
        )
    stubber.add_response("get_account_settings", _account(110, 95), {})
    for name in NAMES:
        stubber.add_response("delete_function_concurrency", {}, {"FunctionName": name})

    answer = concurrency_step.run("Update")

    assert answer["Status"] == "SUCCESS"
    assert "needs a limit of 115" in answer["Data"]["Status"]


def test_lambdas_refusal_releases_what_was_reserved_and_the_deploy_goes_on(concurrency_step):
    # Lambda's rule, not the step's copy of it, has the last word: never half reserved.
    stubber = concurrency_step.stubber
    _nothing_held(stubber)
    stubber.add_response("get_account_settings", _account(1000, 1000), {})
    stubber.add_response(
        "put_function_concurrency",
        {"ReservedConcurrentExecutions": 5},
        {"FunctionName": NAMES[0], "ReservedConcurrentExecutions": 5},
    )
    message = (
        "Specified ReservedConcurrentExecutions for function decreases account's "
        "UnreservedConcurrentExecution below its minimum value of [100]."
    )
    stubber.add_client_error(
        "put_function_concurrency",
        service_error_code="InvalidParameterValueException",
        service_message=message,
        http_status_code=400,
    )
    for name in NAMES:
        stubber.add_response("delete_function_concurrency", {}, {"FunctionName": name})

    answer = concurrency_step.run("Update")

    assert answer["Status"] == "SUCCESS"
    assert answer["Data"]["Status"] == f"not reserved: {message}"


def test_deleting_the_stack_releases_the_reservations(concurrency_step):
    stubber = concurrency_step.stubber
    for name in NAMES:
        stubber.add_response("delete_function_concurrency", {}, {"FunctionName": name})

    assert concurrency_step.run("Delete")["Status"] == "SUCCESS"


def test_a_step_that_cannot_read_the_account_fails_the_deploy_with_the_reason(concurrency_step):
    stubber = concurrency_step.stubber
    _nothing_held(stubber)
    stubber.add_client_error(
        "get_account_settings",
        service_error_code="AccessDeniedException",
        service_message="not authorized to perform: lambda:GetAccountSettings",
        http_status_code=403,
    )

    answer = concurrency_step.run("Create")

    assert answer["Status"] == "FAILED"
    assert "lambda:GetAccountSettings" in answer["Reason"]


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
        # A failed boot leaves its group, lowering the desired capacity (no replacement loop).
        ("autoscaling:DescribeAutoScalingInstances", "*"),
        (
            "autoscaling:DetachInstances",
            "arn:${AWS::Partition}:autoscaling:${AWS::Region}:${AWS::AccountId}:"
            "autoScalingGroup:*:autoScalingGroupName/*",
        ),
    }
    (detach,) = [
        st
        for st in policy["PolicyDocument"]["Statement"]
        if st["Action"] == "autoscaling:DetachInstances"
    ]
    assert detach["Condition"] == {
        "StringEquals": {"aws:ResourceTag/dropflow:stack": {"Ref": "AWS::StackName"}}
    }


# --------------------------------------------------------------------------- audit
def test_who_writes_the_data_bucket_is_logged_to_a_private_bucket_only_s3_may_write(template):
    resources = template["Resources"]
    logging = resources["DataBucket"]["Properties"]["LoggingConfiguration"]
    logs = resources["AccessLogsBucket"]
    (deliver, deny) = resources["AccessLogsBucketPolicy"]["Properties"]["PolicyDocument"][
        "Statement"
    ]

    assert logging == {
        "DestinationBucketName": {"Ref": "AccessLogsBucket"},
        "LogFilePrefix": "data-bucket/",
    }
    assert logs["DeletionPolicy"] == "Retain"
    props = logs["Properties"]
    assert all(props["PublicAccessBlockConfiguration"].values())
    # Server access logs are delivered only to an SSE-S3 bucket.
    (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    (expiry,) = [r for r in props["LifecycleConfiguration"]["Rules"] if "ExpirationInDays" in r]
    assert expiry["ExpirationInDays"] == {"Ref": "AccessLogRetentionDays"}
    assert deliver["Principal"] == {"Service": "logging.s3.amazonaws.com"}
    assert deliver["Action"] == "s3:PutObject"
    assert deliver["Condition"]["ArnLike"]["aws:SourceArn"] == {"Fn::GetAtt": ["DataBucket", "Arn"]}
    assert deliver["Condition"]["StringEquals"]["aws:SourceAccount"] == {"Ref": "AWS::AccountId"}
    assert deny["Effect"] == "Deny" and deny["Condition"]["Bool"]["aws:SecureTransport"] == "false"


def test_launching_may_create_only_the_spot_service_linked_role(template):
    # Instant fleets need no AWSServiceRoleForEC2Fleet; the first spot instance needs Spot's.
    document = template["Resources"]["TrainingLauncherPolicy"]["Properties"]["PolicyDocument"]
    (statement,) = [
        s for s in document["Statement"] if s["Action"] == "iam:CreateServiceLinkedRole"
    ]

    assert statement["Condition"] == {"StringEquals": {"iam:AWSServiceName": "spot.amazonaws.com"}}
    assert statement["Resource"]["Fn::Sub"].endswith("aws-service-role/spot.amazonaws.com/*")


def test_the_launching_functions_price_from_the_price_list_or_the_owners_table(template):
    resources = template["Resources"]
    document = resources["TrainingLauncherPolicy"]["Properties"]["PolicyDocument"]
    (pricing,) = [s for s in document["Statement"] if s["Action"] == "pricing:GetProducts"]

    assert pricing["Resource"] == "*"  # GetProducts has no resource-level permission
    for function in ("LaunchTrainingFunction", "TrackTrainingFunction"):
        env = resources[function]["Properties"]["Environment"]["Variables"]
        assert env["DROPFLOW_ON_DEMAND_PRICES"] == {"Ref": "TrainingOnDemandPrices"}
    assert template["Parameters"]["TrainingOnDemandPrices"]["Default"] == ""


def test_the_api_passes_raw_image_bodies_base64_encoded_and_nothing_else(template):
    # A raw image to the predict route must reach the function as bytes (base64 in the event);
    # JSON bodies must stay text, so no wildcard.
    body = template["Resources"]["DropflowApi"]["Properties"]["DefinitionBody"]

    binary = body["x-amazon-apigateway-binary-media-types"]

    assert set(binary) == IMAGE_MEDIA_TYPES
    assert not any("*" in media_type for media_type in binary)
