"""The template as SAM expands it and as CloudFormation then applies it, for template tests.

`sam_transform` expands template.yaml with the real samtranslator (tools/sam_transform.py, run
with the SAM venv's python, as `make lint` does). `as_applied` then does what CloudFormation
does with given parameter values: conditions that rest on parameters alone are evaluated, each
Fn::If takes its branch, AWS::NoValue is dropped and resources and outputs of a false condition
are left out. Everything else stays as written.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.net import TOOL_SECONDS

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "template.yaml"
SAM_BIN = ROOT / ".venv-sam" / "bin"
SAM_PYTHON = SAM_BIN / "python"
CFN_LINT = SAM_BIN / "cfn-lint"

# The parameters without a default, as an owner would give them to `sam deploy`.
REQUIRED_PARAMETERS = {
    "TrainingVpcId": "vpc-12345678",
    "TrainingSubnetIds": ["subnet-12345678", "subnet-87654321"],
}


def needs_sam() -> None:
    if not SAM_PYTHON.is_file():
        pytest.skip("no .venv-sam (make sam-venv): samtranslator is not installed")


def sam_transform(template: Path, out: Path, **overrides: str) -> dict[str, Any]:
    """What SAM makes of `template` with these parameter values (the others left as Ref)."""
    needs_sam()
    pairs = [f"{key}={value}" for key, value in overrides.items()]
    subprocess.run(
        [str(SAM_PYTHON), str(ROOT / "tools" / "sam_transform.py"), str(out)]
        + ["--template", str(template), "--region", "us-east-1"]
        + (["--parameter-overrides", *pairs] if pairs else []),
        check=True,
        capture_output=True,
        timeout=TOOL_SECONDS,
    )
    return json.loads(out.read_text())


class Unknown(Exception):
    """A condition whose value depends on more than the known parameters."""


NO_VALUE = object()


def parameter_values(template: dict[str, Any], **given: Any) -> dict[str, Any]:
    defaults = {
        name: spec["Default"]
        for name, spec in template.get("Parameters", {}).items()
        if "Default" in spec
    }
    return {**defaults, **REQUIRED_PARAMETERS, **given}


def _value(node: Any, params: dict[str, Any]) -> Any:
    if isinstance(node, str):
        return node
    if isinstance(node, dict) and set(node) == {"Ref"} and node["Ref"] in params:
        return params[node["Ref"]]
    raise Unknown(node)


def _truth(node: Any, template: dict[str, Any], params: dict[str, Any]) -> bool:
    (function, args), *_ = node.items()
    if function == "Fn::Equals":
        return _value(args[0], params) == _value(args[1], params)
    if function == "Fn::Not":
        return not _truth(args[0], template, params)
    if function == "Fn::And":
        return all(_truth(arg, template, params) for arg in args)
    if function == "Fn::Or":
        return any(_truth(arg, template, params) for arg in args)
    if function == "Condition":
        return _truth(template["Conditions"][args], template, params)
    raise Unknown(node)


def as_applied(template: dict[str, Any], **given: Any) -> dict[str, Any]:
    """`template` as CloudFormation applies it with these parameter values (the defaults for
    the others): what each condition that rests on parameters alone decides (other conditions
    and their Fn::If left as they are)."""
    params = parameter_values(template, **given)
    conditions: dict[str, bool] = {}
    for name, expression in template.get("Conditions", {}).items():
        with contextlib.suppress(Unknown):
            conditions[name] = _truth(expression, template, params)

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            if node == {"Ref": "AWS::NoValue"}:
                return NO_VALUE
            if set(node) == {"Fn::If"} and node["Fn::If"][0] in conditions:
                name, if_true, if_false = node["Fn::If"]
                return walk(if_true if conditions[name] else if_false)
            out = {key: walk(value) for key, value in node.items()}
            return {key: value for key, value in out.items() if value is not NO_VALUE}
        if isinstance(node, list):
            return [v for v in (walk(value) for value in node) if v is not NO_VALUE]
        return node

    def kept(section: str) -> dict[str, Any]:
        return {
            name: walk(body)
            for name, body in template.get(section, {}).items()
            if conditions.get(body.get("Condition", ""), True)
        }

    return {**template, "Resources": kept("Resources"), "Outputs": kept("Outputs")}
