"""Every sample event in events/ runs through `dropflow invoke` against the real handlers.

The events are played in the order a deployment sees them: a dataset drop launches training
(a real child process on the local Compute port), the schedule finds nothing new, EC2 events
about a foreign instance are ignored, a card event for an unknown version is refused without
harm, and the API events answer from the promoted model.
"""

from __future__ import annotations

import json
import os
from http import HTTPStatus
from pathlib import Path

import pytest

from dropflow import wiring
from dropflow.ports import InstanceState
from dropflow_dev import cli
from dropflow_dev.demo import breast_cancer_csv
from tests.net import wait_until

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"

FUNCTION_OF = {
    "s3-dataset-created.json": "LaunchTrainingFunction",
    "schedule-retrain.json": "LaunchTrainingFunction",
    "schedule-watchdog.json": "TrackTrainingFunction",
    "ec2-state-change.json": "TrackTrainingFunction",
    "ec2-spot-interruption.json": "TrackTrainingFunction",
    "ec2-rebalance-recommendation.json": "TrackTrainingFunction",
    "s3-model-card-created.json": "PromoteModelFunction",
    "apigw-health.json": "PredictFunction",
    "apigw-models.json": "PredictFunction",
    "apigw-predict.json": "PredictFunction",
}

# Training the sample drop's model takes seconds here and minutes on a loaded machine.
TRAINING_SECONDS = 600
TERMINATED = InstanceState.TERMINATED
pytestmark = [pytest.mark.slow, pytest.mark.timeout(TRAINING_SECONDS + 300)]


@pytest.fixture
def home(tmp_path, restored_environ) -> Path:
    # `dropflow invoke` configures the local adapters itself when none are set.
    for var in ("DROPFLOW_STORE_URL", "DROPFLOW_REGISTRY_URL", "DROPFLOW_COMPUTE_URL"):
        os.environ.pop(var, None)
    return tmp_path / "home"


def invoke(capsys, home: Path, event_file: str, event_path: Path | None = None):
    code = cli.main(
        [
            "invoke",
            FUNCTION_OF[event_file],
            "-e",
            str(event_path or EVENTS / event_file),
            "--home",
            str(home),
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    return json.loads(out)


def test_every_event_file_is_played_by_this_suite():
    assert sorted(p.name for p in EVENTS.glob("*.json")) == sorted(FUNCTION_OF)


def test_the_sample_events_drive_the_whole_loop(capsys, home, tmp_path):
    # Given the dataset the sample drop event names
    store_root = home / "bucket" / "datasets" / "breast-cancer"
    store_root.mkdir(parents=True)
    (store_root / "dropflow.yaml").write_text("target: diagnosis\n")  # the label's column
    (store_root / "data.csv").write_bytes(breast_cancer_csv())

    launched = invoke(capsys, home, "s3-dataset-created.json")
    [outcome] = launched["results"]
    assert outcome["action"] == "launched", outcome

    # The attempt trains in a child process; wait for it to end (bounded for a loaded machine).
    compute = wiring.compute()
    [launched] = compute.list_instances()
    log = home / "compute" / f"{launched.instance_id}.log"
    ended = wait_until(
        lambda: (i := compute.describe(launched.instance_id)) and i.state == TERMINATED and i,
        TRAINING_SECONDS,
        interval=0.2,
        what=lambda: f"the training process to end; its log:\n{log.read_text()}",
    )
    assert ended.exit_code == 0, log.read_text()

    # The model's spec has no schedule section: the schedule leaves it to drops.
    again = invoke(capsys, home, "schedule-retrain.json")
    assert [r["action"] for r in again["results"]] == ["skipped"]
    # No state-change event for the job's own instance was played: the watchdog notices that
    # the published job still holds its model's slot, and frees it.
    swept = invoke(capsys, home, "schedule-watchdog.json")["results"]
    assert [(r["action"], r["message"]) for r in swept] == [("finished", "job published")]
    assert invoke(capsys, home, "schedule-watchdog.json")["results"] == []

    for name in (
        "ec2-state-change.json",
        "ec2-spot-interruption.json",
        "ec2-rebalance-recommendation.json",
    ):
        assert invoke(capsys, home, name)["action"] == "ignored"

    # The sample card event names a version that was never published: refused, nothing served.
    refused = invoke(capsys, home, "s3-model-card-created.json")
    assert refused["decision"] == "rejected"
    assert (
        invoke(capsys, home, "apigw-predict.json")["statusCode"] == HTTPStatus.SERVICE_UNAVAILABLE
    )

    # The same event for the version the job published promotes it.
    [card] = (home / "bucket" / "models" / "breast-cancer").glob("*/card.json")
    event = json.loads((EVENTS / "s3-model-card-created.json").read_text())
    event["detail"]["object"]["key"] = card.relative_to(home / "bucket").as_posix()
    real_event = tmp_path / "card-created.json"
    real_event.write_text(json.dumps(event))
    promoted = invoke(capsys, home, "s3-model-card-created.json", real_event)
    assert promoted["decision"] == "approved", promoted

    health = invoke(capsys, home, "apigw-health.json")
    assert health["statusCode"] == HTTPStatus.OK
    models = json.loads(invoke(capsys, home, "apigw-models.json")["body"])
    assert "breast-cancer" in json.dumps(models)
    predicted = invoke(capsys, home, "apigw-predict.json")
    assert predicted["statusCode"] == HTTPStatus.OK, predicted
    body = json.loads(predicted["body"])
    assert body["version"] == card.parent.name
    assert set(body["predictions"]) <= {"malignant", "benign"}
    assert len(body["predictions"]) == 2
