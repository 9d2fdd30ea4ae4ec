"""dropflow_dev.sample_events with no dropflow state to read: what can be built from the
command line alone, and what is refused saying what to pass. tests/integration/
test_sample_events.py fills events in from a local home and runs them through the handlers."""

from __future__ import annotations

from pathlib import Path

import pytest

from dropflow.errors import InvalidName
from dropflow_dev import cli
from dropflow_dev.event_shapes import KINDS, check
from dropflow_dev.invoke import load_template
from dropflow_dev.sample_events import EventError, Request, build

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = load_template(ROOT / "template.yaml")
SCHEDULED = {"LaunchTrainingFunction", "TrackTrainingFunction"}
# The kinds whose rows come from a published version: tests/integration/test_sample_events.py.
NEED_STATE = {"predict", "predict-image", "infer"}


@pytest.mark.parametrize("kind", sorted(set(KINDS) - NEED_STATE))
def test_each_kind_is_taken_by_its_function_and_no_other(kind):
    request = Request(kind, model="iris", version="v20261123T101500Z-3f9a0c", instance="i-1")
    event, _ = build(request, None)

    takers = SCHEDULED if kind.startswith("schedule-") else {KINDS[kind].function}
    for function in (
        "LaunchTrainingFunction",
        "PredictFunction",
        "PromoteModelFunction",
        "TrackTrainingFunction",
    ):
        assert check(TEMPLATE, function, event).accepted is (function in takers), function


def test_events_that_need_no_state_are_built_without_it():
    health, notes = build(Request("health"), None)
    assert (health["httpMethod"], health["path"], health["resource"]) == (
        "GET",
        "/health",
        "/health",
    )
    assert notes == []

    schedule, _ = build(Request("schedule-watchdog"), None)
    assert (schedule["source"], schedule["detail-type"]) == ("aws.events", "Scheduled Event")

    notice, _ = build(Request("spot-interruption", instance="i-0abc"), None)
    assert notice["detail-type"] == "EC2 Spot Instance Interruption Warning"
    assert notice["detail"] == {"instance-id": "i-0abc", "instance-action": "terminate"}


def test_a_drop_without_state_names_a_default_file_and_says_so():
    event, notes = build(Request("dataset-created", model="iris"), None)

    assert event["detail"]["object"]["key"] == "datasets/iris/data.csv"
    assert event["detail"]["bucket"]["name"] == "dropflow-local"
    assert notes == [
        "no .csv or .parquet file under datasets/iris/ in dropflow's state: the event names "
        "datasets/iris/data.csv, and the function answers no-data until a file is there"
    ]


@pytest.mark.parametrize("kind", sorted(NEED_STATE))
def test_rows_without_state_are_refused_saying_where_state_comes_from(kind):
    with pytest.raises(EventError) as raised:
        build(Request(kind, model="iris"), None)

    assert str(raised.value).startswith(
        "nothing to fill in the rows of 'iris' with: there is no dropflow state here"
    )
    assert "`dropflow local up --home DIR` makes one" in str(raised.value)


@pytest.mark.parametrize(
    ("request_", "message"),
    [
        (Request("model"), "model names a model: pass --model M"),
        (
            Request("state-change"),
            "state-change names an instance: pass --job J, --model M or --instance I",
        ),
        (
            Request("state-change", instance="i-1", state="pending"),
            "state 'pending' is not one TrackTrainingFunction is sent; use one of running, "
            "shutting-down, terminated, stopped",
        ),
        (Request("nope"), "unknown kind 'nope'; kinds: health, models, model, predict"),
    ],
)
def test_what_is_missing_is_named(request_, message):
    with pytest.raises(EventError) as raised:
        build(request_, None)
    assert str(raised.value).startswith(message)


def test_a_bad_model_name_is_refused_with_the_rule():
    with pytest.raises(InvalidName, match="invalid model name 'Iris!'"):
        build(Request("model", model="Iris!"), None)


def test_the_cli_writes_nothing_into_a_home_that_does_not_exist(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DROPFLOW_STORE_URL", raising=False)
    home = tmp_path / "nowhere"

    code = cli.main(["events", "predict", "--model", "iris", "--home", str(home)])

    assert code == 2
    assert "dropflow: nothing to fill in the rows of 'iris'" in capsys.readouterr().err
    assert not home.exists()
