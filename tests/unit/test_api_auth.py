"""ApiAuth (#11 point 11): who may call the HTTP API, for each of the parameter's values.

SAM cannot decide this (its Auth properties do not follow a Condition), so the template leaves
it to CloudFormation: the OpenAPI body carries each operation's security as an Fn::If on
ApiAuth, and the usage plan, the key and the IAM policy carry a Condition. These tests expand
the template with the real samtranslator (tools/sam_transform.py, run with the SAM venv's
python, as `make lint` does), then apply ApiAuth's value the way CloudFormation does (conditions
evaluated, Fn::If chosen, AWS::NoValue dropped, resources of a false condition left out), and
read the security of each route as API Gateway's OpenAPI import would: an apiKey scheme on the
x-api-key header is a required API key, one with x-amazon-apigateway-authtype awsSigv4 is IAM.
"""

from __future__ import annotations

import copy
import json
import subprocess
from typing import Any

import pytest

from dropflow_dev.invoke import load_template
from tests.cfn_apply import (
    CFN_LINT,
    REQUIRED_PARAMETERS,
    ROOT,
    SAM_PYTHON,
    TEMPLATE,
    as_applied,
    needs_sam,
    sam_transform,
)
from tests.net import TOOL_SECONDS, TOOL_TEST_SECONDS

EVENTS = ROOT / "events"

MODES = ("api-key", "iam", "none")
# What every route but GET /health requires, by ApiAuth.
REQUIRED = {"api-key": "API_KEY", "iam": "AWS_IAM", "none": "NONE"}
HEALTH = ("GET", "/health")
OPERATION_KEYS = {
    "get": "GET",
    "put": "PUT",
    "post": "POST",
    "delete": "DELETE",
    "patch": "PATCH",
    "head": "HEAD",
    "options": "OPTIONS",
    "x-amazon-apigateway-any-method": "ANY",
}
KEY_RESOURCES = {
    "AWS::ApiGateway::UsagePlan",
    "AWS::ApiGateway::ApiKey",
    "AWS::ApiGateway::UsagePlanKey",
}

# Each test may run samtranslator, cfn-lint, checkov or sam local (tests/net.py).
pytestmark = pytest.mark.timeout(TOOL_TEST_SECONDS)


# --------------------------------------------------------------------------- expanding
@pytest.fixture(scope="module")
def source() -> dict[str, Any]:
    return load_template(TEMPLATE)


@pytest.fixture(scope="module")
def expanded(tmp_path_factory) -> dict[str, dict[str, Any]]:
    """The expanded template for each ApiAuth value, the value given to the transform as
    `sam deploy --parameter-overrides` gives it to CloudFormation's."""
    folder = tmp_path_factory.mktemp("api-auth")
    return {mode: sam_transform(TEMPLATE, folder / f"{mode}.json", ApiAuth=mode) for mode in MODES}


@pytest.fixture(scope="module")
def applied(expanded) -> dict[str, dict[str, Any]]:
    return {mode: as_applied(expanded[mode], ApiAuth=mode) for mode in MODES}


# --------------------------------------------------------------------------- reading the API
def rest_api_body(template: dict[str, Any]) -> dict[str, Any]:
    return template["Resources"]["DropflowApi"]["Properties"]["Body"]


# What an OpenAPI 3 path item may hold besides its operations.
PATH_ITEM_FIELDS = {"summary", "description", "servers", "parameters"}


def operations(body: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """Each (METHOD, path) of an OpenAPI body and its operation object. A key that is neither
    an operation nor a path item field (e.g. "any" for ANY) fails: API Gateway would make no
    method of it."""
    out = {}
    for path, item in body["paths"].items():
        for key, operation in item.items():
            if key in PATH_ITEM_FIELDS:
                continue
            assert key in OPERATION_KEYS, f"{path}: {key!r} is no operation API Gateway knows"
            out[(OPERATION_KEYS[key], path)] = operation
    return out


def auth_of(body: dict[str, Any], operation: dict[str, Any]) -> str:
    """What API Gateway requires of a caller of `operation`: API_KEY, AWS_IAM or NONE."""
    schemes = body.get("components", {}).get("securitySchemes", {})
    kinds = set()
    for requirement in operation.get("security") or []:
        for name in requirement:
            if name == "NONE" and name not in schemes:  # SAM's word for "no authorizer"
                continue
            scheme = schemes[name]
            if scheme.get("x-amazon-apigateway-authtype") == "awsSigv4":
                kinds.add("AWS_IAM")
            elif scheme == {"type": "apiKey", "name": "x-api-key", "in": "header"}:
                kinds.add("API_KEY")
            else:
                kinds.add(f"unknown scheme {name}: {scheme}")
    return "+".join(sorted(kinds)) or "NONE"


def route_auth(template: dict[str, Any]) -> dict[tuple[str, str], str]:
    body = rest_api_body(template)
    return {route: auth_of(body, operation) for route, operation in operations(body).items()}


def event_routes(template: dict[str, Any]) -> set[tuple[str, str]]:
    """Every (METHOD, path) a function's Api event puts on DropflowApi."""
    return {
        (event["Properties"]["Method"].upper(), event["Properties"]["Path"])
        for resource in template["Resources"].values()
        if resource["Type"] == "AWS::Serverless::Function"
        for event in resource["Properties"].get("Events", {}).values()
        if event["Type"] == "Api" and event["Properties"].get("RestApiId") == {"Ref": "DropflowApi"}
    }


def of_type(template: dict[str, Any], *types: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] in types}


# --------------------------------------------------------------------------- the parameter
def test_api_auth_is_api_key_unless_the_owner_chooses_iam_or_none(source):
    parameter = source["Parameters"]["ApiAuth"]

    assert parameter["Default"] == "api-key"
    assert parameter["AllowedValues"] == list(MODES)


# --------------------------------------------------------------------------- each route
@pytest.mark.parametrize("mode", MODES)
def test_every_route_but_health_requires_what_api_auth_names(applied, source, mode):
    auth = route_auth(applied[mode])

    assert set(auth) == event_routes(source)
    assert {route: a for route, a in auth.items() if route != HEALTH} == {
        route: REQUIRED[mode] for route in auth if route != HEALTH
    }


@pytest.mark.parametrize("mode", MODES)
def test_health_answers_a_probe_without_a_key_or_a_signature(applied, mode):
    assert route_auth(applied[mode])[HEALTH] == "NONE"


def test_the_body_and_the_api_events_name_the_same_routes(source):
    # A route added to the Events alone would not exist on AWS (SAM adds nothing to a
    # DefinitionBody of its own) yet answer under `sam local start-api`; one added to the
    # body alone would have no permission to invoke the function.
    written = operations(source["Resources"]["DropflowApi"]["Properties"]["DefinitionBody"])

    assert set(written) == event_routes(source)
    for route, operation in written.items():
        assert ("security" in operation) == (route != HEALTH), route


@pytest.mark.parametrize("mode", MODES)
def test_every_operation_is_a_proxy_to_the_predict_function(applied, mode):
    for route, operation in operations(rest_api_body(applied[mode])).items():
        integration = operation["x-amazon-apigateway-integration"]
        assert integration["type"] == "aws_proxy", route
        assert integration["httpMethod"] == "POST", route  # how Lambda is invoked, any route
        assert "functions/${PredictFunction.Arn}/invocations" in integration["uri"]["Fn::Sub"]


def _with_sam_auth(source: dict[str, Any], api_auth: Any, health_auth: Any) -> dict[str, Any]:
    """The template as it would read with SAM's own Auth instead of the OpenAPI body."""
    variant = copy.deepcopy(source)
    api = variant["Resources"]["DropflowApi"]["Properties"]
    del api["DefinitionBody"]  # SAM writes the body from the events, as before ApiAuth
    if api_auth is not None:
        api["Auth"] = api_auth
    if health_auth is not None:
        events = variant["Resources"]["PredictFunction"]["Properties"]["Events"]
        events["Health"]["Properties"]["Auth"] = health_auth
    return variant


def _integrations(template: dict[str, Any]) -> dict[tuple[str, str], Any]:
    # SAM writes the partition it was given (arn:aws:); the body leaves it to CloudFormation.
    text = json.dumps(
        {
            " ".join(route): operation["x-amazon-apigateway-integration"]
            for route, operation in operations(rest_api_body(template)).items()
        }
    )
    return json.loads(text.replace("arn:${AWS::Partition}:apigateway:", "arn:aws:apigateway:"))


@pytest.mark.parametrize(
    ("mode", "sam_auth", "health_auth"),
    [
        ("api-key", {"ApiKeyRequired": True}, {"ApiKeyRequired": False}),
        # InvokeRole NONE: API Gateway invokes the function under its resource policy (the
        # Lambda permissions SAM makes of the events), not with the caller's credentials, so a
        # caller needs execute-api:Invoke only, not lambda:InvokeFunction as well.
        ("iam", {"DefaultAuthorizer": "AWS_IAM", "InvokeRole": "NONE"}, {"Authorizer": "NONE"}),
        ("none", None, None),  # the API as it was: SAM's body from the events, no Auth
    ],
)
def test_the_body_is_what_sam_writes_for_its_own_auth(
    source, applied, tmp_path, mode, sam_auth, health_auth
):
    variant = tmp_path / "variant.json"
    variant.write_text(json.dumps(_with_sam_auth(source, sam_auth, health_auth)))
    sams = sam_transform(variant, tmp_path / "out.json")
    ours = applied[mode]

    assert route_auth(ours) == route_auth(sams)
    assert _integrations(ours) == _integrations(sams)
    ours_by_name = rest_api_body(ours)["components"]["securitySchemes"]
    sams_by_name = rest_api_body(sams).get("components", {}).get("securitySchemes", {})
    for name, scheme in sams_by_name.items():
        assert ours_by_name[name] == scheme, name


def test_sam_auth_would_require_a_key_whatever_the_condition_says(source, tmp_path):
    # Why the body carries the security: SAM reads an Fn::If in ApiKeyRequired as true.
    conditional = {"Fn::If": ["ApiAuthIsApiKey", True, False]}
    variant = tmp_path / "variant.json"
    variant.write_text(json.dumps(_with_sam_auth(source, {"ApiKeyRequired": conditional}, None)))
    sams = as_applied(sam_transform(variant, tmp_path / "out.json", ApiAuth="none"), ApiAuth="none")

    assert route_auth(sams)[("POST", "/models/{name}/predict")] == "API_KEY"


def test_a_changed_api_auth_reaches_the_stage(source, expanded):
    # The body's Fn::If is the same text whatever ApiAuth says, and SAM names the deployment
    # after that text: only a deployment made on every update serves the new security.
    assert source["Resources"]["DropflowApi"]["Properties"]["AlwaysDeploy"] is True
    for template in expanded.values():
        (deployment,) = of_type(template, "AWS::ApiGateway::Deployment")
        stage = template["Resources"]["DropflowApiStage"]["Properties"]
        assert stage["DeploymentId"] == {"Ref": deployment}


# --------------------------------------------------------------------------- api-key mode
def test_api_key_mode_binds_the_stacks_own_key_to_the_stage_through_a_usage_plan(applied):
    template = applied["api-key"]
    (plan_id,) = of_type(template, "AWS::ApiGateway::UsagePlan")
    (key_id,) = of_type(template, "AWS::ApiGateway::ApiKey")
    ((_, binding),) = of_type(template, "AWS::ApiGateway::UsagePlanKey").items()
    plan = template["Resources"][plan_id]["Properties"]

    assert plan["ApiStages"] == [
        {"ApiId": {"Ref": "DropflowApi"}, "Stage": {"Ref": "DropflowApiStage"}}
    ]
    assert template["Resources"]["DropflowApiStage"]["Type"] == "AWS::ApiGateway::Stage"
    assert binding["Properties"] == {
        "KeyId": {"Ref": key_id},
        "KeyType": "API_KEY",
        "UsagePlanId": {"Ref": plan_id},
    }
    assert template["Resources"][key_id]["Properties"]["Enabled"] is True


def test_one_key_is_throttled_below_the_stage_and_has_a_daily_quota(applied, source):
    template = applied["api-key"]
    ((_, plan),) = of_type(template, "AWS::ApiGateway::UsagePlan").items()
    props = plan["Properties"]
    (stage_limits,) = source["Resources"]["DropflowApi"]["Properties"]["MethodSettings"]
    quota = source["Parameters"]["ApiKeyDailyQuota"]

    assert 0 < props["Throttle"]["RateLimit"] < stage_limits["ThrottlingRateLimit"]
    assert props["Throttle"]["RateLimit"] <= props["Throttle"]["BurstLimit"]
    assert props["Throttle"]["BurstLimit"] < stage_limits["ThrottlingBurstLimit"]
    assert props["Quota"] == {"Limit": {"Ref": "ApiKeyDailyQuota"}, "Period": "DAY"}
    assert quota["Type"] == "Number" and quota["MinValue"] >= 1


@pytest.mark.parametrize("mode", ["iam", "none"])
def test_no_usage_plan_or_key_exists_outside_api_key_mode(applied, mode):
    assert of_type(applied[mode], *KEY_RESOURCES) == {}


def test_the_key_value_is_generated_and_never_an_output(applied):
    template = applied["api-key"]
    (key_id,) = of_type(template, "AWS::ApiGateway::ApiKey")
    command = template["Outputs"]["ApiKeyValueCommand"]["Value"]["Fn::Sub"]

    assert "Value" not in template["Resources"][key_id]["Properties"]
    assert template["Outputs"]["ApiKeyId"]["Value"] == {"Ref": key_id}
    assert command.startswith(
        f"aws apigateway get-api-key --api-key ${{{key_id}}} --include-value"
        " --query value --output text"
    )
    # Only the key's id reaches the outputs (Ref), nothing read from the key itself.
    assert f'"Fn::GetAtt": ["{key_id}"' not in json.dumps(template["Outputs"])


# --------------------------------------------------------------------------- iam mode
def test_iam_callers_get_a_policy_to_invoke_this_stage_only(applied):
    template = applied["iam"]
    policy_id = "DropflowApiInvokePolicy"
    policy = template["Resources"][policy_id]
    (statement,) = policy["Properties"]["PolicyDocument"]["Statement"]

    assert policy["Type"] == "AWS::IAM::ManagedPolicy"
    assert all(policy_id not in applied[mode]["Resources"] for mode in ("api-key", "none"))

    assert statement["Effect"] == "Allow"
    assert statement["Action"] == "execute-api:Invoke"
    assert statement["Resource"] == {
        "Fn::Sub": "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:"
        "${DropflowApi}/${Stage}/*"
    }
    assert template["Outputs"]["ApiInvokePolicyArn"]["Value"] == {"Ref": policy_id}


@pytest.mark.parametrize(
    ("mode", "outputs"),
    [
        ("api-key", {"ApiKeyId", "ApiKeyValueCommand"}),
        ("iam", {"ApiInvokePolicyArn"}),
        ("none", set()),
    ],
)
def test_the_outputs_say_how_to_call_the_api_in_each_mode(applied, mode, outputs):
    for_callers = {"ApiKeyId", "ApiKeyValueCommand", "ApiInvokePolicyArn"}
    assert for_callers & set(applied[mode]["Outputs"]) == outputs
    assert "ApiUrl" in applied[mode]["Outputs"]


# --------------------------------------------------------------------------- tools agree
@pytest.mark.parametrize("mode", MODES)
def test_the_expanded_template_lints_clean_with_each_mode(expanded, tmp_path, mode):
    if not CFN_LINT.is_file():
        pytest.skip("no .venv-sam (make sam-venv): cfn-lint is not installed")
    template = tmp_path / "template.json"
    template.write_text(json.dumps(expanded[mode]))
    values = {**REQUIRED_PARAMETERS, "ApiAuth": mode}
    parameters = tmp_path / "parameters.json"
    parameters.write_text(
        json.dumps([{"ParameterKey": k, "ParameterValue": v} for k, v in values.items()])
    )
    result = subprocess.run(
        [str(CFN_LINT), str(template), "--parameter-files", str(parameters)],
        capture_output=True,
        text=True,
        timeout=TOOL_SECONDS,
    )

    assert result.returncode == 0, result.stdout + result.stderr


# SAM CLI's own route discovery (`sam local start-api`): it resolves the template's
# intrinsics itself, so the Fn::If in each operation's security must not trip it.
_LOCAL_ROUTES = """
import json, sys
from samcli.lib.providers.api_provider import ApiProvider
from samcli.lib.providers.sam_stack_provider import SamLocalStackProvider

stacks, _ = SamLocalStackProvider.get_stacks(
    sys.argv[1], parameter_overrides={"ApiAuth": sys.argv[2]},
    global_parameter_overrides={"AWS::Region": "us-east-1"})
print(json.dumps(sorted([r.path, sorted(r.methods), r.function_name]
                        for r in ApiProvider(stacks).routes)))
"""


@pytest.mark.parametrize("mode", MODES)
def test_sam_local_serves_every_route_to_the_predict_function_in_each_mode(source, mode):
    needs_sam()
    result = subprocess.run(
        [str(SAM_PYTHON), "-c", _LOCAL_ROUTES, str(TEMPLATE), mode],
        capture_output=True,
        text=True,
        timeout=TOOL_SECONDS,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    routes = json.loads(result.stdout.strip().splitlines()[-1])

    assert {function for _, _, function in routes} == {"PredictFunction"}
    assert {path for path, _, _ in routes} == {path for _, path in event_routes(source)}


# --------------------------------------------------------------------------- sample events
@pytest.mark.parametrize("path", sorted(EVENTS.glob("apigw-*.json")), ids=lambda p: p.name)
def test_a_sample_event_carries_the_key_exactly_where_its_route_needs_one(applied, path):
    # What API Gateway hands the function in the default mode: the caller's key, its id.
    event = json.loads(path.read_text())
    route = (event["httpMethod"], event["resource"])
    identity = event["requestContext"]["identity"]
    keyed = route_auth(applied["api-key"])[route] == "API_KEY"

    assert bool(identity.get("apiKeyId")) == keyed
    assert bool(identity.get("apiKey")) == keyed
    assert ("x-api-key" in event["headers"]) == keyed
