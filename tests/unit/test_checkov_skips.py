"""Every checkov check that template.yaml skips says why, beside its resource, and `make lint`
fails on every check that is not skipped (issue #11: a checkov scan of the SAM-transformed
template, no unexplained failure).

A skip is CloudFormation resource Metadata that checkov reads:

    Metadata:
      checkov:
        skip:
          - id: CKV_AWS_117
            comment: Why this check is wrong for this resource.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
from pathlib import Path
from typing import Any

import pytest

from dropflow_dev.invoke import load_template
from tests.net import TOOL_SECONDS, TOOL_TEST_SECONDS

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "template.yaml"
MAKEFILE = ROOT / "Makefile"
SAM_PYTHON = ROOT / ".venv-sam" / "bin" / "python"
CHECKOV = ROOT / ".venv-checkov" / "bin" / "checkov"
CHECK_ID = re.compile(r"CKV2?_AWS_\d+")
# A reason names the fact that makes the check wrong here; "not needed" is not one.
MIN_REASON = 40

# Each test may run samtranslator, cfn-lint, checkov or sam local (tests/net.py).
pytestmark = pytest.mark.timeout(TOOL_TEST_SECONDS)


def checkov_skips() -> list[tuple[str, dict[str, Any]]]:
    """(logical id, skip) for every checkov skip in template.yaml."""
    resources = load_template(TEMPLATE)["Resources"]
    return [
        (logical_id, skip)
        for logical_id, resource in resources.items()
        for skip in ((resource.get("Metadata") or {}).get("checkov") or {}).get("skip", [])
    ]


SKIPS = checkov_skips()
SKIP_IDS = [f"{logical_id}-{skip.get('id')}" for logical_id, skip in SKIPS]


def recipe(target: str) -> list[list[str]]:
    """The commands of a Makefile target, each split into words (continuations joined)."""
    lines = MAKEFILE.read_text().replace("\\\n", " ").splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{target}:"))
    commands = []
    for line in lines[start + 1 :]:
        if not line.startswith("\t"):
            break
        commands.append(shlex.split(line.strip()))
    return commands


def test_the_template_skips_some_checks():
    # The tests below pass vacuously on an empty list; the template does skip checks.
    assert SKIPS


@pytest.mark.parametrize(("logical_id", "skip"), SKIPS, ids=SKIP_IDS)
def test_every_skip_names_a_checkov_aws_check(logical_id, skip):
    assert CHECK_ID.fullmatch(str(skip.get("id"))), f"{logical_id}: {skip}"


@pytest.mark.parametrize(("logical_id", "skip"), SKIPS, ids=SKIP_IDS)
def test_every_skip_gives_its_reason(logical_id, skip):
    # checkov reads only `id` and `comment`: a reason under any other key would be lost, and
    # checkov would report "No comment provided".
    assert set(skip) == {"id", "comment"}, f"{logical_id}: {skip}"
    assert len(str(skip["comment"]).strip()) >= MIN_REASON, f"{logical_id}: {skip}"


def test_no_resource_skips_a_check_twice():
    pairs = [(logical_id, skip["id"]) for logical_id, skip in SKIPS]

    assert len(pairs) == len(set(pairs))


def test_lint_scans_the_sam_transformed_template_with_checkov():
    commands = recipe("lint")
    transform = next(i for i, c in enumerate(commands) if "tools/sam_transform.py" in c)
    scan = next(i for i, c in enumerate(commands) if c[0].endswith("/bin/checkov"))
    checkov = commands[scan]

    # The template checkov reads is the one the transform just wrote, with the skips carried
    # onto what SAM generates (API stage, layer versions).
    assert transform < scan
    assert "lint-out/template.json" in commands[transform]
    assert "--pass-metadata" in commands[transform]
    assert checkov[checkov.index("--file") + 1] == "lint-out/template.json"
    assert checkov[checkov.index("--framework") + 1] == "cloudformation"
    # A failed check must fail lint.
    assert not {"--soft-fail", "--soft-fail-on"} & set(checkov)
    assert "checkov-venv" in MAKEFILE.read_text().split("\nlint:", 1)[1].splitlines()[0]


def test_every_skip_silences_a_check_that_checkov_runs(tmp_path):
    # A skip left behind after a fix (or on the wrong resource) explains nothing.
    if not (SAM_PYTHON.is_file() and CHECKOV.is_file()):
        pytest.skip("needs .venv-sam and .venv-checkov (make sam-venv checkov-venv)")
    transformed = tmp_path / "template.json"
    transform = [str(SAM_PYTHON), str(ROOT / "tools" / "sam_transform.py"), str(transformed)]
    subprocess.run(
        [*transform, "--template", str(TEMPLATE), "--pass-metadata"],
        check=True,
        capture_output=True,
        timeout=TOOL_SECONDS,
    )
    checkov = [str(CHECKOV), "--file", str(transformed), "--framework", "cloudformation"]
    scan = subprocess.run(
        [*checkov, "--skip-download", "--output", "json"],
        capture_output=True,
        text=True,
        timeout=TOOL_SECONDS,
    )
    skipped = json.loads(scan.stdout)["results"]["skipped_checks"]
    # checkov names a resource TYPE.LogicalId of the transformed template. A skip on a SAM
    # resource silences the resources SAM generates from it, whose ids start with its id
    # (DropflowApi -> DropflowApiStage).
    declared = sorted(load_template(TEMPLATE)["Resources"], key=len, reverse=True)

    def declared_as(logical_id: str) -> str:
        return next(d for d in declared if logical_id.startswith(d))

    used = {(declared_as(r["resource"].split(".", 1)[1]), r["check_id"]) for r in skipped}

    assert {(logical_id, skip["id"]) for logical_id, skip in SKIPS} <= used
