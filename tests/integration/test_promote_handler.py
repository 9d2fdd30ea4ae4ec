"""functions/promote_model/app.py with the EventBridge S3 event of events/, on local adapters."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from dropflow.catalog import Catalog
from dropflow.lambda_context import LambdaContext
from tests.fakes_serving import load_handler, publish

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

ROOT = Path(__file__).resolve().parents[2]
EVENT = json.loads((ROOT / "events" / "s3-model-card-created.json").read_text())
VERSION = "v20261123T101500Z-3f9a0c"  # the version in the sample event's key


@pytest.fixture
def app(adapters) -> ModuleType:
    return load_handler(ROOT / "functions" / "promote_model" / "app.py")


def with_key(key: str) -> dict[str, Any]:
    event = copy.deepcopy(EVENT)
    event["detail"]["object"]["key"] = key
    return event


def test_the_sample_card_event_promotes_its_version(app, adapters):
    store, registry = adapters
    publish(store, "breast-cancer", VERSION, n_features=30, classes=[0, 1])

    result = app.lambda_handler(EVENT, LambdaContext(function_name="PromoteModelFunction"))

    assert result["decision"] == "approved"
    assert (result["model"], result["version"]) == ("breast-cancer", VERSION)
    assert result["champion_after"] == VERSION
    assert Catalog(registry).champion("breast-cancer").version == VERSION


def test_the_event_delivered_twice_gives_the_recorded_decision(app, adapters):
    store, _ = adapters
    publish(store, "breast-cancer", VERSION, n_features=30)
    first = app.lambda_handler(EVENT, LambdaContext())

    second = app.lambda_handler(EVENT, LambdaContext())

    assert second["replayed"] is True
    assert second["decision"] == first["decision"]


def test_a_broken_version_is_answered_as_rejected_not_raised(app, adapters):
    store, registry = adapters
    publish(store, "breast-cancer", VERSION, n_features=30, model_bytes=b"garbage")

    result = app.lambda_handler(EVENT, LambdaContext())

    assert result["decision"] == "rejected"
    assert "model.onnx cannot be loaded" in result["reason"]
    assert Catalog(registry).champion("breast-cancer") is None


@pytest.mark.parametrize(
    "key",
    [f"models/breast-cancer/{VERSION}/model.onnx", "datasets/breast-cancer/data.csv"],
)
def test_objects_other_than_cards_are_skipped(app, key):
    result = app.lambda_handler(with_key(key), LambdaContext())

    assert "is not a model card" in result["skipped"]


def test_a_card_under_a_malformed_name_is_skipped_with_the_reason(app):
    result = app.lambda_handler(
        with_key(f"models/Breast Cancer/{VERSION}/card.json"), LambdaContext()
    )

    assert "invalid model name 'Breast Cancer'" in result["skipped"]
