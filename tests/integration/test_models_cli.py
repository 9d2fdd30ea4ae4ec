"""`dropflow models rollback | list` on a local home, and the predict function following the
rollback: its answers change back to the earlier champion's (issue 5, acceptance)."""

from __future__ import annotations

import json
import os
from http import HTTPStatus
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from dropflow import wiring
from dropflow.promotion.gate import promote
from dropflow_dev import cli
from dropflow_dev.lambda_context import LambdaContext
from dropflow_dev.local.runtime import configure
from tests.fakes_serving import ProxyAnswer, load_handler, publish, version_id

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

ROOT = Path(__file__).resolve().parents[2]
V1, V2 = version_id(1), version_id(2)
ROW = [0.5, -1.0, 2.0, 0.3]


@pytest.fixture
def home(tmp_path, restored_environ) -> Path:
    """A local home whose model `m` had two champions: V1, then V2 (the better one)."""
    os.environ["DROPFLOW_CHAMPION_TTL_SECONDS"] = "0"  # the function follows the pointer at once
    configure(tmp_path)  # as the CLI does with --home
    store, registry = wiring.store(), wiring.registry()
    publish(store, registry, "m", V1, value=0.90, seed=0)
    publish(store, registry, "m", V2, value=0.95, seed=1)
    assert promote("m", V1, store, registry).decision == "approved"
    assert promote("m", V2, store, registry).decision == "approved"
    return tmp_path


def predict(app: ModuleType, version: str | None = None) -> dict[str, Any]:
    event = json.loads((ROOT / "events" / "apigw-predict.json").read_text())
    event["path"] = "/models/m/predict"
    event["body"] = json.dumps({"instances": [ROW], **({"version": version} if version else {})})
    answer = ProxyAnswer(app.lambda_handler(event, LambdaContext()))
    assert answer.status == HTTPStatus.OK, answer.json
    return answer.json


def test_models_rollback_restores_the_previous_champion_and_the_answers_change_back(home, capsys):
    app = load_handler(ROOT / "functions" / "predict" / "app.py")
    first_champion = predict(app, version=V1)
    before = predict(app)

    code = cli.main(["models", "rollback", "m", "--home", str(home)])

    assert code == 0
    assert f"m: champion {V2} -> {V1}" in capsys.readouterr().out
    after = predict(app)
    assert (before["version"], after["version"]) == (V2, V1)
    assert after["probabilities"] != before["probabilities"]
    assert after["probabilities"] == first_champion["probabilities"]


def test_models_list_marks_the_rolled_back_champion(home, capsys):
    assert cli.main(["models", "rollback", "m", "--home", str(home)]) == 0
    capsys.readouterr()

    assert cli.main(["models", "list", "m", "--home", str(home)]) == 0

    champion = [line for line in capsys.readouterr().out.splitlines() if line.startswith("*")]
    assert len(champion) == 1
    assert V1 in champion[0]


def test_models_list_says_in_full_why_a_version_was_rejected(home, capsys):
    store, registry = wiring.store(), wiring.registry()
    renamed = ["f0", "f1", "f2", "f3_renamed"]
    publish(store, registry, "m", version_id(3), features=renamed, value=0.99, seed=2)
    rejected = promote("m", version_id(3), store, registry)
    assert rejected.decision == "rejected"

    assert cli.main(["models", "list", "m", "--home", str(home)]) == 0

    (line,) = [row for row in capsys.readouterr().out.splitlines() if version_id(3) in row]
    assert "rejected" in line
    assert line.endswith(rejected.reason)
    assert "feature 'f3' is gone; feature 'f3_renamed' is new" in line


def test_models_show_prints_a_readable_card(home, capsys):
    assert cli.main(["models", "show", "m", "--home", str(home)]) == 0

    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"m {V2} (champion)"
    fields = {line.split()[0]: line for line in lines[1:]}
    assert fields["decision"].split()[1] == "approved:"
    assert "accuracy=0.95" in fields["holdout"]
    assert "baseline" in fields
    assert fields["features"].split()[1:3] == ["4:", "f0"]
    assert "model.onnx" in fields["sizes"]
    digests = dict(entry.split() for entry in fields["sha256"].split(None, 1)[1].split(", "))
    assert "model.onnx" in digests
    assert {len(d) for d in digests.values()} == {12}  # short: --json has them whole
    assert not any(line.lstrip().startswith("{") for line in lines)


def test_models_show_json_prints_the_card_and_decision_whole(home, capsys):
    assert cli.main(["models", "show", "m", "--version", V1, "--home", str(home), "--json"]) == 0

    shown = json.loads(capsys.readouterr().out)
    assert (shown["model"], shown["version"], shown["champion"]) == ("m", V1, False)
    assert shown["card"]["metrics"]["holdout"]["accuracy"] == pytest.approx(0.90)
    assert all(len(d) == 64 for d in shown["record"]["digests"].values())
