"""dropflow_dev.event_shapes: which source an event comes from, and whether the project's
template ever sends it to a function. `dropflow invoke` refuses a wrong pairing before it
imports the handler, so these run no handler at all.

SAM's own generated events are kept in tests/fixtures/sam-events (made by `sam local
generate-event`; the last test checks that they still are what SAM makes, where SAM is here).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from dropflow_dev import event_shapes
from dropflow_dev.event_shapes import (
    EVENTBRIDGE,
    HTTP_API,
    REST_PROXY,
    S3_NOTIFICATION,
    UNKNOWN,
    check,
    matches,
    refusal,
    shape_of,
)
from dropflow_dev.invoke import load_template, main

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
SAM_EVENTS = ROOT / "tests" / "fixtures" / "sam-events"
TEMPLATE = load_template(ROOT / "template.yaml")
FUNCTIONS = (
    "LaunchTrainingFunction",
    "PredictFunction",
    "PromoteModelFunction",
    "TrackTrainingFunction",
)
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


def load(path: Path) -> dict:
    return json.loads(path.read_text())


# --------------------------------------------------------------------------- shapes
@pytest.mark.parametrize(
    ("path", "kind"),
    [
        (EVENTS / "apigw-predict.json", REST_PROXY),
        (EVENTS / "s3-dataset-created.json", EVENTBRIDGE),
        (SAM_EVENTS / "apigateway-aws-proxy.json", REST_PROXY),
        (SAM_EVENTS / "apigateway-http-api-proxy.json", HTTP_API),
        (SAM_EVENTS / "s3-put.json", S3_NOTIFICATION),
        (SAM_EVENTS / "cloudwatch-scheduled-event.json", EVENTBRIDGE),
    ],
    ids=lambda v: v.name if isinstance(v, Path) else v,
)
def test_each_source_is_recognised_by_the_keys_it_always_sends(path, kind):
    assert shape_of(load(path)).kind == kind


def test_an_event_of_no_known_shape_is_described_by_its_keys():
    shape = shape_of({"httpmethod": "GET", "Path": "/x"})
    assert shape.kind == UNKNOWN
    assert shape.description == "no event shape dropflow knows (its keys: Path, httpmethod)"
    assert shape_of([1, 2]).description == "a JSON list, not an object"


# --------------------------------------------------------------------------- patterns
@pytest.mark.parametrize(
    ("pattern", "event", "matched"),
    [
        ({"source": ["aws.s3"]}, {"source": "aws.s3"}, True),
        ({"source": ["aws.s3"]}, {"source": "aws.ec2"}, False),
        ({"source": ["aws.s3"]}, {}, False),
        ({"detail": {"key": [{"prefix": "datasets/"}]}}, {"detail": {"key": "datasets/a"}}, True),
        ({"detail": {"key": [{"prefix": "datasets/"}]}}, {"detail": {"key": "models/a"}}, False),
        ({"detail": {"key": [{"prefix": "datasets/"}]}}, {"detail": "text"}, False),
        ({"k": [{"wildcard": "models/*/card.json"}]}, {"k": "models/m/v/card.json"}, True),
        ({"k": [{"wildcard": "models/*/card.json"}]}, {"k": "models/m/v/card.jsonx"}, False),
        ({"k": [{"suffix": ".csv"}]}, {"k": "a.csv"}, True),
        ({"k": [{"anything-but": ["a", "b"]}]}, {"k": "c"}, True),
        ({"k": [{"anything-but": ["a", "b"]}]}, {"k": "a"}, False),
        ({"k": [{"exists": False}]}, {}, True),
        ({"k": [{"exists": True}]}, {}, False),
        # An array in the event matches when one of its elements does.
        ({"k": ["x"]}, {"k": ["w", "x"]}, True),
        # What only CloudFormation knows (the stack's bucket name) matches any value.
        ({"bucket": {"name": [{"Ref": "DataBucket"}]}}, {"bucket": {"name": "mine"}}, True),
        ({"bucket": {"name": {"Ref": "DataBucket"}}}, {"bucket": {"name": "mine"}}, True),
    ],
)
def test_patterns_match_as_eventbridge_matches_them(pattern, event, matched):
    assert matches(pattern, event) is matched


# --------------------------------------------------------------------------- the template
# A Scheduled Event carries nothing but its rule's ARN: both scheduled functions take one.
SCHEDULED = ("LaunchTrainingFunction", "TrackTrainingFunction")


@pytest.mark.parametrize("name", sorted(FUNCTION_OF))
def test_each_sample_event_is_taken_by_its_function_and_no_other(name):
    event = load(EVENTS / name)
    takers = SCHEDULED if name.startswith("schedule-") else (FUNCTION_OF[name],)
    for function in FUNCTIONS:
        verdict = check(TEMPLATE, function, event)
        assert verdict.accepted is (function in takers), function
        if not verdict.accepted:
            assert verdict.others == takers


def test_every_sample_event_has_a_kind_of_the_same_shape():
    samples = {k.sample: k.function for k in event_shapes.KINDS.values() if k.sample}
    assert samples == FUNCTION_OF


def test_an_eventbridge_event_for_the_wrong_function_names_the_right_one():
    verdict = check(TEMPLATE, "PredictFunction", load(EVENTS / "s3-dataset-created.json"))

    assert refusal("PredictFunction", verdict) == (
        "PredictFunction takes an API Gateway REST (v1) proxy event; this looks like an "
        "EventBridge event (aws.s3 'Object Created' for datasets/breast-cancer/data.csv): use "
        "LaunchTrainingFunction, or `dropflow events predict --model M` (or health, models, "
        "model, predict-image, metadata, infer)"
    )


def test_a_card_event_sent_to_the_launch_function_is_pointed_at_promotion():
    verdict = check(TEMPLATE, "LaunchTrainingFunction", load(EVENTS / "s3-model-card-created.json"))

    message = refusal("LaunchTrainingFunction", verdict)
    assert "with detail.object.key starting datasets/" in message
    assert "use PromoteModelFunction" in message


def test_an_eventbridge_event_missing_envelope_keys_is_refused_naming_them():
    event = load(EVENTS / "ec2-state-change.json")
    del event["id"], event["account"]

    verdict = check(TEMPLATE, "TrackTrainingFunction", event)

    assert not verdict.accepted
    assert verdict.missing == ("id", "account")
    assert "lacks id, account, which EventBridge always sends" in refusal(
        "TrackTrainingFunction", verdict
    )


def test_a_function_without_triggers_takes_any_event():
    template = {"Resources": {"F": {"Type": "AWS::Serverless::Function", "Properties": {}}}}
    assert check(template, "F", {"anything": 1}).accepted


# --------------------------------------------------------------------------- SAM's events
@pytest.mark.parametrize("function", ["LaunchTrainingFunction", "TrackTrainingFunction"])
def test_sams_scheduled_event_is_taken_with_the_version_eventbridge_always_sends(function):
    event = load(SAM_EVENTS / "cloudwatch-scheduled-event.json")
    assert "version" not in event

    verdict = check(TEMPLATE, function, event)

    assert verdict.accepted
    assert verdict.event == {"version": "0", **event}
    assert verdict.notes == (
        'the event has no "version"; EventBridge always sends "0", so it is invoked with that',
    )


def test_sams_http_api_event_is_refused_naming_the_rest_proxy_event():
    verdict = check(
        TEMPLATE, "PredictFunction", load(SAM_EVENTS / "apigateway-http-api-proxy.json")
    )

    message = refusal("PredictFunction", verdict)
    assert message.startswith(
        "PredictFunction takes an API Gateway REST (v1) proxy event; this looks like an API "
        "Gateway HTTP API (v2) event, payload format 2.0"
    )
    assert "the stack's API is a REST API" in message
    assert "`sam local generate-event apigateway aws-proxy`" in message
    assert "make one with `dropflow events predict --model M`" in message


@pytest.mark.parametrize(
    ("function", "kind"),
    [("LaunchTrainingFunction", "dataset-created"), ("PromoteModelFunction", "card-created")],
)
def test_sams_s3_notification_is_refused_saying_the_stack_uses_eventbridge(function, kind):
    verdict = check(TEMPLATE, function, load(SAM_EVENTS / "s3-put.json"))

    message = refusal(function, verdict)
    assert not verdict.accepted
    assert "this looks like an S3 bucket notification (Records[], ObjectCreated:Put" in message
    assert "the stack's bucket sends its events through EventBridge" in message
    assert f"make one with `dropflow events {kind} --model M`" in message


def test_invoke_refuses_a_wrong_pairing_before_running_anything(tmp_path, capsys):
    event = tmp_path / "http.json"
    event.write_text((SAM_EVENTS / "apigateway-http-api-proxy.json").read_text())

    code = main(["PredictFunction", "-e", str(event), "--template", str(ROOT / "template.yaml")])

    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == ""
    assert captured.err.startswith("dropflow invoke: PredictFunction takes an API Gateway REST")
    assert "Traceback" not in captured.err


SAM = ROOT / ".venv-sam" / "bin" / "sam"


@pytest.mark.skipif(not SAM.exists(), reason="SAM CLI not installed (.venv-sam)")
@pytest.mark.parametrize(
    ("service", "event"),
    [
        ("cloudwatch", "scheduled-event"),
        ("apigateway", "http-api-proxy"),
        ("apigateway", "aws-proxy"),
        ("s3", "put"),
    ],
)
def test_the_sam_fixtures_are_what_sam_generates(service, event):
    made = subprocess.run(
        [str(SAM), "local", "generate-event", service, event],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert json.loads(made.stdout) == load(SAM_EVENTS / f"{service}-{event}.json")
