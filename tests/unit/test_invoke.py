"""dropflow_dev.invoke: the Docker-free `sam local invoke`.

Small templates and handlers written into a temporary folder keep these tests independent of
the real handlers; only the module-name test reads the project's template.yaml.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from dropflow_dev.invoke import (
    InvokeError,
    describe_function,
    environment_for,
    invoke,
    load_function,
    load_template,
    main,
    read_env_vars,
)
from dropflow_dev.lambda_context import LambdaContext

ROOT = Path(__file__).resolve().parents[2]

TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  Level:
    Type: String
    Default: DEBUG
  Subnets:
    Type: List<AWS::EC2::Subnet::Id>
  BetaMemory:
    Type: Number
    Default: 1536
Globals:
  Function:
    Runtime: python3.12
    Handler: app.lambda_handler
    Timeout: 20
    Environment:
      Variables:
        PLAIN: from-template
        LEVEL: !Ref Level
        SUBNETS: !Join [",", !Ref Subnets]
        DROPFLOW_STORE_URL: !Sub s3://${Bucket}
        DROPFLOW_STAGE: template-stage
Resources:
  Bucket:
    Type: AWS::S3::Bucket
  AlphaFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/alpha
      MemorySize: 256
      Environment:
        Variables:
          PLAIN: alpha-only
          ARN: !GetAtt Bucket.Arn
  BetaFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/beta
      MemorySize: !Ref BetaMemory
  NodeFunction:
    Type: AWS::Serverless::Function
    Properties:
      CodeUri: functions/node
      Runtime: nodejs20.x
"""

# The same file name in both functions, as in the project: each must load as its own module.
HANDLER = """\
import os

import helper

NAME = {name!r}
COLD_STARTS = 0
COLD_STARTS += 1


def lambda_handler(event, context):
    return {{
        "function": NAME,
        "module": __name__,
        "cold_starts": COLD_STARTS,
        "sibling": helper.WHO,
        "event": event,
        "env": {{k: os.environ.get(k) for k in event.get("show", [])}},
        "memory": context.memory_limit_in_mb,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "function_name": context.function_name,
    }}
"""


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A checkout-like folder with template.yaml and two python functions; returns the
    template path."""
    (tmp_path / "template.yaml").write_text(TEMPLATE)
    for name in ("alpha", "beta"):
        code = tmp_path / "functions" / name
        code.mkdir(parents=True)
        (code / "app.py").write_text(HANDLER.format(name=name))
        (code / "helper.py").write_text(f"WHO = {name!r}\n")
    return tmp_path / "template.yaml"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # The names the template sets must start unset, whatever the developer's shell has.
    for name in ("PLAIN", "LEVEL", "SUBNETS", "ARN", "DROPFLOW_STORE_URL", "DROPFLOW_STAGE"):
        monkeypatch.delenv(name, raising=False)


# --------------------------------------------------------------------------- template
def test_short_tags_load_as_their_long_form(project):
    template = load_template(project)
    variables = template["Globals"]["Function"]["Environment"]["Variables"]
    alpha = template["Resources"]["AlphaFunction"]["Properties"]["Environment"]["Variables"]

    assert variables["LEVEL"] == {"Ref": "Level"}
    assert variables["SUBNETS"] == {"Fn::Join": [",", {"Ref": "Subnets"}]}
    assert variables["DROPFLOW_STORE_URL"] == {"Fn::Sub": "s3://${Bucket}"}
    assert alpha["ARN"] == {"Fn::GetAtt": ["Bucket", "Arn"]}


def test_load_function_finds_the_handler_through_globals(project):
    handler, info = load_function(project, "AlphaFunction")

    assert callable(handler)
    assert info.code_dir == project.parent / "functions" / "alpha"
    assert info.handler == "app.lambda_handler"
    assert (info.memory_size, info.timeout) == (256, 20.0)


def test_an_unknown_logical_id_names_the_functions_there_are(project):
    with pytest.raises(InvokeError) as error:
        load_function(project, "GammaFunction")

    assert "GammaFunction" in str(error.value)
    assert "AlphaFunction, BetaFunction, NodeFunction" in str(error.value)


def test_a_resource_that_is_not_a_function_is_refused(project):
    with pytest.raises(InvokeError, match="Bucket is a AWS::S3::Bucket, not a function"):
        describe_function(project, "Bucket")


def test_a_non_python_function_is_refused(project):
    with pytest.raises(InvokeError, match=r"runs nodejs20\.x; only python runs here"):
        describe_function(project, "NodeFunction")


def test_a_missing_template_is_named(tmp_path):
    with pytest.raises(InvokeError, match="template not found"):
        load_function(tmp_path / "nope.yaml", "AlphaFunction")


def test_a_missing_handler_function_is_named(project):
    (project.parent / "functions" / "beta" / "app.py").write_text(
        "def other(event, ctx):\n    pass\n"
    )

    with pytest.raises(InvokeError, match="has no function 'lambda_handler'"):
        load_function(project, "BetaFunction")


def test_two_app_py_files_load_as_two_modules(project):
    alpha, alpha_info = load_function(project, "AlphaFunction")
    beta, beta_info = load_function(project, "BetaFunction")

    assert alpha_info.module_name != beta_info.module_name
    assert alpha({}, LambdaContext())["function"] == "alpha"  # not replaced by beta's app.py
    assert beta({}, LambdaContext())["function"] == "beta"


def test_the_project_functions_get_unique_module_names():
    template = ROOT / "template.yaml"
    names = {
        describe_function(template, logical_id).module_name
        for logical_id in (
            "LaunchTrainingFunction",
            "TrackTrainingFunction",
            "PromoteModelFunction",
            "PredictFunction",
        )
    }
    assert len(names) == 4


# --------------------------------------------------------------------------- environment
def test_plain_values_and_parameter_defaults_are_set_and_aws_only_values_left_out(project):
    info = describe_function(project, "AlphaFunction")

    values, unresolved = environment_for(info, environ={})

    assert values == {
        "PLAIN": "alpha-only",  # the function's value wins over Globals
        "LEVEL": "DEBUG",  # !Ref to a parameter with a Default
        "DROPFLOW_STAGE": "template-stage",
    }
    assert sorted(unresolved) == ["ARN", "DROPFLOW_STORE_URL", "SUBNETS"]


def test_dropflow_variables_already_set_win_over_the_template(project):
    info = describe_function(project, "AlphaFunction")
    environ = {"DROPFLOW_STAGE": "local", "DROPFLOW_STORE_URL": "file:///tmp/bucket", "PLAIN": "x"}

    values, unresolved = environment_for(info, environ=environ)

    assert "DROPFLOW_STAGE" not in values  # the process keeps its own value
    assert "DROPFLOW_STORE_URL" not in unresolved  # it is set, so nothing is missing
    assert values["PLAIN"] == "alpha-only"  # only DROPFLOW_* names are taken from the process


def test_overrides_win_over_everything(project):
    info = describe_function(project, "AlphaFunction")

    values, unresolved = environment_for(
        info,
        {"ARN": "arn:aws:s3:::b", "DROPFLOW_STAGE": "override"},
        environ={"DROPFLOW_STAGE": "p"},
    )

    assert values["ARN"] == "arn:aws:s3:::b"
    assert values["DROPFLOW_STAGE"] == "override"
    assert "ARN" not in unresolved


def test_invoke_runs_the_handler_with_the_function_environment_and_restores_it(
    project, monkeypatch
):
    monkeypatch.setenv("DROPFLOW_STORE_URL", "file:///tmp/bucket")
    event = {"show": ["PLAIN", "LEVEL", "ARN", "DROPFLOW_STORE_URL", "AWS_LAMBDA_FUNCTION_NAME"]}

    result = invoke(project, "AlphaFunction", event, env={"LEVEL": "ERROR"})

    assert result["env"] == {
        "PLAIN": "alpha-only",
        "LEVEL": "ERROR",
        "ARN": None,
        "DROPFLOW_STORE_URL": "file:///tmp/bucket",
        "AWS_LAMBDA_FUNCTION_NAME": "AlphaFunction",
    }
    assert "PLAIN" not in os.environ
    assert "AWS_LAMBDA_FUNCTION_NAME" not in os.environ
    assert os.environ["DROPFLOW_STORE_URL"] == "file:///tmp/bucket"


def test_the_handler_gets_a_context_sized_like_the_function(project):
    result = invoke(project, "AlphaFunction", {})

    assert result["memory"] == 256
    assert result["function_name"] == "AlphaFunction"
    assert 0 < result["remaining_ms"] <= 20_000


def test_a_memory_size_given_by_a_parameter_takes_its_default(project):
    result = invoke(project, "BetaFunction", {})

    assert result["memory"] == 1536


def test_the_handler_can_import_its_sibling_modules(project):
    assert invoke(project, "BetaFunction", {})["sibling"] == "beta"


def test_every_invoke_is_a_cold_start(project):
    first = invoke(project, "AlphaFunction", {})
    second = invoke(project, "AlphaFunction", {})

    assert first["cold_starts"] == second["cold_starts"] == 1


def test_every_invoke_reads_dropflow_settings_afresh(project, monkeypatch, tmp_path):
    from dropflow.config import settings

    monkeypatch.setenv("DROPFLOW_STORE_URL", f"file://{tmp_path}/before")
    monkeypatch.setenv("DROPFLOW_REGISTRY_URL", f"sqlite://{tmp_path}/r.db")
    settings.cache_clear()
    assert settings().store_url.endswith("/before")  # cached, as at a warm start
    (project.parent / "functions" / "beta" / "app.py").write_text(
        "from dropflow.config import settings\n"
        "def lambda_handler(event, context):\n"
        "    return settings().store_url\n"
    )

    url = invoke(
        project, "BetaFunction", {}, env={"DROPFLOW_STORE_URL": f"file://{tmp_path}/after"}
    )

    assert url.endswith("/after")
    settings.cache_clear()


# --------------------------------------------------------------------------- files and CLI
def test_env_vars_file_in_sam_format_merges_parameters_and_the_function(tmp_path):
    path = tmp_path / "env.json"
    path.write_text(
        json.dumps({"Parameters": {"A": "all", "B": "all"}, "AlphaFunction": {"B": "alpha"}})
    )

    assert read_env_vars(path, "AlphaFunction") == {"A": "all", "B": "alpha"}
    assert read_env_vars(path, "BetaFunction") == {"A": "all", "B": "all"}


def test_env_vars_file_may_be_a_flat_object(tmp_path):
    path = tmp_path / "env.json"
    path.write_text(json.dumps({"DROPFLOW_STORE_URL": "file:///x", "N": 3}))

    assert read_env_vars(path, "AlphaFunction") == {"DROPFLOW_STORE_URL": "file:///x", "N": "3"}


def test_main_prints_the_result_as_json(project, tmp_path, capsys):
    event = tmp_path / "event.json"
    event.write_text(json.dumps({"hello": "world"}))

    code = main(["BetaFunction", "-e", str(event), "--template", str(project)])

    assert code == 0
    result = json.loads(capsys.readouterr().out)
    assert result["event"] == {"hello": "world"}
    assert result["function"] == "beta"


def test_main_names_a_missing_event_file(project, tmp_path, capsys):
    code = main(["BetaFunction", "-e", str(tmp_path / "nope.json"), "--template", str(project)])

    assert code == 2
    assert f"event file not found: {tmp_path / 'nope.json'}" in capsys.readouterr().err


def test_main_names_the_file_and_line_of_invalid_json(project, tmp_path, capsys):
    event = tmp_path / "broken.json"
    event.write_text('{\n  "a": 1,\n  "b": \n}\n')

    code = main(["BetaFunction", "-e", str(event), "--template", str(project)])

    assert code == 2
    assert f"{event}:4:1: event file is not valid JSON" in capsys.readouterr().err


def test_main_names_an_unknown_function(project, tmp_path, capsys):
    event = tmp_path / "event.json"
    event.write_text("{}")

    code = main(["Nope", "-e", str(event), "--template", str(project)])

    assert code == 2
    assert "functions: AlphaFunction, BetaFunction, NodeFunction" in capsys.readouterr().err


def test_main_reports_a_handler_error_like_lambda(project, tmp_path, capsys):
    (project.parent / "functions" / "beta" / "app.py").write_text(
        "def lambda_handler(event, context):\n    raise ValueError('bad input: x')\n"
    )
    event = tmp_path / "event.json"
    event.write_text("{}")

    code = main(["BetaFunction", "-e", str(event), "--template", str(project)])

    assert code == 1
    error = json.loads(capsys.readouterr().out)
    assert error["errorType"] == "ValueError"
    assert error["errorMessage"] == "bad input: x"
