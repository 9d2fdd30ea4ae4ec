"""tools/sam_transform.py --pass-metadata: a checkov skip written beside a SAM resource in
template.yaml reaches every resource SAM generates from it, so that the checkov scan of the
transformed template in `make lint` honours it.

The transform runs with the SAM venv's python (samtranslator lives there) and checkov with
its own venv's, as in `make lint`; each test is skipped where its venv is not installed.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.net import TOOL_SECONDS, TOOL_TEST_SECONDS

# Each test may run samtranslator, cfn-lint, checkov or sam local (tests/net.py).
pytestmark = pytest.mark.timeout(TOOL_TEST_SECONDS)


ROOT = Path(__file__).resolve().parents[2]
SAM_PYTHON = ROOT / ".venv-sam" / "bin" / "python"
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"

# One of each SAM resource type template.yaml uses, each with a skip of its own.
SAM_TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Resources:
  Layer:
    Type: AWS::Serverless::LayerVersion
    Properties:
      ContentUri: layers/shared
    Metadata:
      BuildMethod: makefile
      checkov:
        skip:
          - id: CKV_AWS_1
            comment: the layer's reason
  Handler:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: python3.12
      Handler: app.lambda_handler
      CodeUri: functions/handler
      Layers: [!Ref Layer]
      Events:
        Nightly:
          Type: Schedule
          Properties:
            Schedule: rate(1 day)
        Get:
          Type: Api
          Properties:
            RestApiId: !Ref Api
            Path: /
            Method: GET
    Metadata:
      checkov:
        skip:
          - id: CKV_AWS_117
            comment: the function's reason
  Api:
    Type: AWS::Serverless::Api
    Properties:
      StageName: v1
    Metadata:
      checkov:
        skip:
          - id: CKV_AWS_120
            comment: the API's reason
"""


def transformed(tmp_path: Path, *flags: str) -> dict[str, Any]:
    if not SAM_PYTHON.is_file():
        pytest.skip("no .venv-sam (make sam-venv): samtranslator is not installed")
    template = tmp_path / "template.yaml"
    template.write_text(SAM_TEMPLATE)
    out = tmp_path / "template.json"
    command = [str(SAM_PYTHON), str(ROOT / "tools" / "sam_transform.py"), str(out)]
    subprocess.run(
        [*command, "--template", str(template), "--region", "us-east-1", *flags],
        check=True,
        capture_output=True,
        timeout=TOOL_SECONDS,
    )
    return json.loads(out.read_text())


@pytest.fixture(scope="module")
def passed(tmp_path_factory) -> dict[str, Any]:
    return transformed(tmp_path_factory.mktemp("passed"), "--pass-metadata")


def skips(resource: dict[str, Any]) -> list[dict[str, str]]:
    return resource.get("Metadata", {}).get("checkov", {}).get("skip", [])


def types_skipping(template: dict[str, Any], comment: str) -> set[str]:
    return {
        resource["Type"]
        for resource in template["Resources"].values()
        if any(skip["comment"] == comment for skip in skips(resource))
    }


def test_a_functions_skips_reach_its_role_rule_and_permissions(passed):
    assert types_skipping(passed, "the function's reason") == {
        "AWS::Lambda::Function",
        "AWS::IAM::Role",
        "AWS::Events::Rule",
        "AWS::Lambda::Permission",
    }


def test_an_apis_skips_reach_its_stage_and_deployment(passed):
    assert types_skipping(passed, "the API's reason") == {
        "AWS::ApiGateway::RestApi",
        "AWS::ApiGateway::Deployment",
        "AWS::ApiGateway::Stage",
    }


def test_a_layers_skips_reach_the_layer_version_sam_renames(passed):
    (name,) = [
        name
        for name, resource in passed["Resources"].items()
        if resource["Type"] == "AWS::Lambda::LayerVersion"
    ]

    assert name != "Layer"  # SAM adds a content hash to a layer's logical id
    layer = passed["Resources"][name]
    assert skips(layer) == [{"id": "CKV_AWS_1", "comment": "the layer's reason"}]
    assert layer["Metadata"]["BuildMethod"] == "makefile"


def test_without_the_flag_sam_keeps_no_skip_on_the_stage_or_the_layer(tmp_path):
    # Why make lint passes the flag: SAM's own default leaves them bare.
    plain = transformed(tmp_path)

    assert types_skipping(plain, "the API's reason") == {"AWS::ApiGateway::RestApi"}
    assert types_skipping(plain, "the layer's reason") == set()


def test_checkov_skips_the_stage_check_written_beside_the_sam_api(passed, tmp_path):
    if not CHECKOV.is_file():
        pytest.skip("no .venv-checkov (make checkov-venv): checkov is not installed")
    scanned = tmp_path / "template.json"
    scanned.write_text(json.dumps(passed))
    command = [str(CHECKOV), "--file", str(scanned), "--framework", "cloudformation"]
    run = subprocess.run(
        [*command, "--check", "CKV_AWS_120", "--skip-download", "--output", "json"],
        capture_output=True,
        text=True,
        timeout=TOOL_SECONDS,
    )
    results = json.loads(run.stdout)["results"]

    assert run.returncode == 0, run.stdout
    assert results["failed_checks"] == []
    (skipped,) = results["skipped_checks"]
    assert skipped["check_id"] == "CKV_AWS_120"
    assert skipped["resource"].startswith("AWS::ApiGateway::Stage.")
    assert skipped["check_result"]["suppress_comment"] == "the API's reason"
