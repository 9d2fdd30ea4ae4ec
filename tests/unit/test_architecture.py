"""The dependency rules of docs/architecture.md hold, and breaking one fails `make lint`.

Each case copies the code into a temporary tree, plants one import there, and runs the same
import-linter contracts (pyproject.toml) over the copy, as `make lint` runs them over the tree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CODE = ("functions", "serving", "training", "dropflow_dev", "layers/dropflow/dropflow")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _copy_of_the_code(into: Path) -> Path:
    for part in CODE:
        shutil.copytree(
            ROOT / part, into / part, ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
        )
    shutil.copy(ROOT / "pyproject.toml", into / "pyproject.toml")
    return into


def _lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    # The copy comes first on the path, before the editable install of the checkout.
    env = {**os.environ, "PYTHONPATH": f"{tree}{os.pathsep}{tree / 'layers' / 'dropflow'}"}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def _plant(tree: Path, module: str, line: str) -> None:
    path = tree / module
    path.write_text(path.read_text() + f"\n{line}\n")


def test_the_code_keeps_every_contract(tmp_path: Path) -> None:
    result = _lint_imports(_copy_of_the_code(tmp_path))

    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        (
            "layers/dropflow/dropflow/vocabulary/names.py",
            "import boto3",
            "Only adapters/aws imports boto3 BROKEN",
        ),
        (
            "layers/dropflow/dropflow/serving/service.py",
            "from dropflow_dev import invoke",
            "Nothing that ships imports the dev package BROKEN",
        ),
        (
            "layers/dropflow/dropflow/records/jobs.py",
            "from dropflow.control import launcher",
            "Dependencies point down the layers BROKEN",
        ),
        (
            "layers/dropflow/dropflow/control/tracker.py",
            "from dropflow.adapters.aws import ec2_compute",
            "Only the wiring chooses adapters BROKEN",
        ),
        (
            "training/loop.py",
            "from dropflow.promotion import gate",
            "Training imports only what it shares with the layer BROKEN",
        ),
    ],
    ids=[
        "boto3 outside adapters/aws",
        "dev package in the layer",
        "records above control",
        "a service picks an adapter",
        "training imports promotion",
    ],
)
def test_a_planted_violation_fails_the_lint_naming_its_contract(
    tmp_path: Path, module: str, line: str, contract: str
) -> None:
    tree = _copy_of_the_code(tmp_path)
    _plant(tree, module, line)

    result = _lint_imports(tree)

    assert result.returncode != 0
    assert contract in result.stdout, result.stdout
