"""The API's access log (#11 point 13), for each value of ApiAccessLogs.

API Gateway writes a stage's access log only through the CloudWatch role set on the account
(one per account and region): a stage with AccessLogSetting is refused until it is set. These
tests expand the template with samtranslator and apply each value of ApiAccessLogs as
CloudFormation would (tests/cfn_apply.py), then read what the stage logs, where, and what it
waits for.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from dropflow_dev.invoke import load_template
from tests.cfn_apply import TEMPLATE, as_applied, sam_transform
from tests.net import TOOL_TEST_SECONDS

pytestmark = pytest.mark.timeout(TOOL_TEST_SECONDS)

MODES = ("stack-role", "account-role", "off")
LOGGING = {"AWS::Logs::LogGroup", "AWS::IAM::Role", "AWS::ApiGateway::Account"}
PUSH_POLICY = (
    "arn:${AWS::Partition}:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs"
)
# Of API Gateway's $context variables for REST API access logging, those a line may carry
# ("Variables for access logging for REST APIs", API Gateway developer guide).
DOCUMENTED_VARIABLES = {
    "requestId",
    "extendedRequestId",
    "requestTime",
    "requestTimeEpoch",
    "httpMethod",
    "resourcePath",
    "path",
    "protocol",
    "status",
    "responseLength",
    "responseLatency",
    "integration.status",
    "integration.latency",
    "integration.error",
    "integrationStatus",
    "integrationLatency",
    "error.message",
    "error.responseType",
    "identity.sourceIp",
    "identity.userAgent",
    "identity.apiKeyId",
    "identity.caller",
    "identity.user",
    "identity.userArn",
    "identity.accountId",
    "authorizer.error",
    "waf.status",
}


@pytest.fixture(scope="module")
def source() -> dict[str, Any]:
    return load_template(TEMPLATE)


@pytest.fixture(scope="module")
def expanded(tmp_path_factory) -> dict[str, Any]:
    # ApiAccessLogs acts through Conditions and Fn::If only, which SAM passes on untouched:
    # one expansion serves every value.
    return sam_transform(TEMPLATE, tmp_path_factory.mktemp("access-log") / "template.json")


@pytest.fixture(scope="module")
def applied(expanded) -> dict[str, dict[str, Any]]:
    return {mode: as_applied(expanded, ApiAccessLogs=mode) for mode in MODES}


def stage_of(template: dict[str, Any]) -> dict[str, Any]:
    (stage,) = [
        resource
        for resource in template["Resources"].values()
        if resource["Type"] == "AWS::ApiGateway::Stage"
    ]
    return stage


def referenced(node: Any) -> set[str]:
    """The logical ids a node names through Ref, Fn::GetAtt or Fn::Sub."""
    if isinstance(node, list):
        return set().union(*(referenced(value) for value in node)) if node else set()
    if not isinstance(node, dict):
        return set()
    if set(node) == {"Ref"}:
        return {node["Ref"]}
    if set(node) == {"Fn::GetAtt"}:
        target = node["Fn::GetAtt"]
        return {target[0] if isinstance(target, list) else target.split(".")[0]}
    if set(node) == {"Fn::Sub"}:
        text, variables = (
            (node["Fn::Sub"], {}) if isinstance(node["Fn::Sub"], str) else node["Fn::Sub"]
        )
        names = {name.split(".")[0] for name in re.findall(r"\$\{([^}!]+)\}", text)}
        return (names - set(variables)) | referenced(list(variables.values()))
    return set().union(*(referenced(value) for value in node.values())) if node else set()


def select(node: Any) -> Any:
    """Fn::Select of a literal list, as CloudFormation resolves it."""
    if isinstance(node, dict) and set(node) == {"Fn::Select"}:
        index, values = node["Fn::Select"]
        return values[int(index)]
    return node


def logging_resources(template: dict[str, Any]) -> dict[str, str]:
    return {
        name: resource["Type"]
        for name, resource in template["Resources"].items()
        if name in {"ApiAccessLogGroup", "ApiGatewayCloudWatchRole", "ApiGatewayAccount"}
    }


# --------------------------------------------------------------------------- the parameter
def test_access_logs_are_on_by_default_with_a_role_the_stack_sets(source):
    parameter = source["Parameters"]["ApiAccessLogs"]

    assert parameter["Default"] == "stack-role"
    assert parameter["AllowedValues"] == list(MODES)
    # An owner whose account has a role already is told how to see it.
    assert "aws apigateway get-account" in parameter["Description"]


def test_access_logs_are_kept_for_a_retention_cloudwatch_accepts(source):
    parameters = source["Parameters"]
    kept = parameters["AccessLogRetentionDays"]

    assert kept["AllowedValues"] == parameters["LogRetentionDays"]["AllowedValues"]
    assert kept["Default"] in kept["AllowedValues"]


# --------------------------------------------------------------------------- each mode
def test_stack_role_sets_the_accounts_role_and_the_stage_waits_for_it(applied):
    template = applied["stack-role"]
    stage = stage_of(template)
    setting = stage["Properties"]["AccessLogSetting"]

    assert logging_resources(template) == {
        "ApiAccessLogGroup": "AWS::Logs::LogGroup",
        "ApiGatewayCloudWatchRole": "AWS::IAM::Role",
        "ApiGatewayAccount": "AWS::ApiGateway::Account",
    }
    assert select(setting["DestinationArn"]) == {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}
    # The stage names the account setting, so CloudFormation creates it only after that.
    assert "ApiGatewayAccount" in referenced(stage)
    account = template["Resources"]["ApiGatewayAccount"]
    assert account["Properties"]["CloudWatchRoleArn"] == {
        "Fn::GetAtt": ["ApiGatewayCloudWatchRole", "Arn"]
    }
    # In an account that never had an API Gateway resource, the setting waits for one.
    assert account["DependsOn"] == "DropflowApi"


def test_the_role_lets_api_gateway_push_logs_and_nothing_else(applied):
    role = applied["stack-role"]["Resources"]["ApiGatewayCloudWatchRole"]["Properties"]
    (statement,) = role["AssumeRolePolicyDocument"]["Statement"]

    assert statement == {
        "Effect": "Allow",
        "Principal": {"Service": "apigateway.amazonaws.com"},
        "Action": "sts:AssumeRole",
    }
    assert role["ManagedPolicyArns"] == [{"Fn::Sub": PUSH_POLICY}]
    assert "Policies" not in role


def test_the_account_setting_and_its_role_outlive_the_stack(applied):
    # Other APIs of the account log through the same setting after sam delete.
    resources = applied["stack-role"]["Resources"]
    for name in ("ApiGatewayCloudWatchRole", "ApiGatewayAccount"):
        assert resources[name]["DeletionPolicy"] == "Retain", name
        assert resources[name]["UpdateReplacePolicy"] == "Retain", name


def test_account_role_logs_through_the_role_the_account_has(applied):
    template = applied["account-role"]
    stage = stage_of(template)

    assert logging_resources(template) == {"ApiAccessLogGroup": "AWS::Logs::LogGroup"}
    assert stage["Properties"]["AccessLogSetting"]["DestinationArn"] == {
        "Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]
    }
    assert "ApiGatewayAccount" not in referenced(stage)


def test_off_logs_nothing_and_touches_no_account_setting(applied):
    template = applied["off"]

    assert logging_resources(template) == {}
    assert "AccessLogSetting" not in stage_of(template)["Properties"]


@pytest.mark.parametrize("mode", MODES)
def test_nothing_names_a_resource_the_mode_leaves_out(applied, source, mode):
    template = applied[mode]
    known = set(template["Resources"]) | set(source["Parameters"])
    for name, resource in template["Resources"].items():
        dangling = {
            target
            for target in referenced(resource.get("Properties", {}))
            if not target.startswith("AWS::")
        } - known
        assert not dangling, f"{name} names {dangling} with ApiAccessLogs={mode}"
        depends = resource.get("DependsOn", [])
        assert set([depends] if isinstance(depends, str) else depends) <= known, name


# --------------------------------------------------------------------------- the log
def test_the_log_group_expires_is_kept_after_delete_and_has_no_fixed_name(applied):
    group = applied["stack-role"]["Resources"]["ApiAccessLogGroup"]

    assert group["Properties"]["RetentionInDays"] == {"Ref": "AccessLogRetentionDays"}
    assert group["DeletionPolicy"] == "Retain"
    # A fixed name would collide with the kept group when the stack is deployed again.
    assert "LogGroupName" not in group["Properties"]


def test_a_line_is_one_json_object_of_documented_variables(applied):
    line = stage_of(applied["stack-role"])["Properties"]["AccessLogSetting"]["Format"]

    assert "\n" not in line
    fields = json.loads(line)
    variables = {}
    for key, value in fields.items():
        match = re.fullmatch(r"\$context\.([A-Za-z.]+)", value)
        assert match, f"{key}: {value!r} is not one $context variable"
        variables[key] = match.group(1)
    assert set(variables.values()) <= DOCUMENTED_VARIABLES
    # API Gateway refuses a format without the request id.
    assert "requestId" in variables.values()
    # Who called, in each ApiAuth mode, and what became of the call.
    for needed in ("identity.apiKeyId", "identity.userArn", "identity.sourceIp", "status"):
        assert needed in variables.values(), needed
    assert len(set(variables.values())) == len(variables)


def test_no_body_is_logged(applied):
    line = stage_of(applied["stack-role"])["Properties"]["AccessLogSetting"]["Format"]
    assert "body" not in line.lower()


@pytest.mark.parametrize("mode", MODES)
def test_the_log_groups_name_is_an_output_where_there_is_one(applied, mode):
    outputs = applied[mode]["Outputs"]
    if mode == "off":
        assert "ApiAccessLogGroupName" not in outputs
    else:
        assert outputs["ApiAccessLogGroupName"]["Value"] == {"Ref": "ApiAccessLogGroup"}
