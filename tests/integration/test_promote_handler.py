"""functions/promote_model/app.py with the EventBridge S3 event of events/, on local adapters."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from moto import mock_aws

from dropflow import wiring
from dropflow.promotion.rollback import rollback
from dropflow.records.catalog import Catalog
from dropflow_dev.lambda_context import LambdaContext
from tests.fakes_serving import load_handler, publish, version_id

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
    publish(store, registry, "breast-cancer", VERSION, n_features=30, classes=[0, 1])

    result = app.lambda_handler(EVENT, LambdaContext(function_name="PromoteModelFunction"))

    assert result["decision"] == "approved"
    assert (result["model"], result["version"]) == ("breast-cancer", VERSION)
    assert result["champion_after"] == VERSION
    assert Catalog(registry).champion("breast-cancer").version == VERSION


def test_the_event_delivered_twice_gives_the_recorded_decision(app, adapters):
    store, registry = adapters
    publish(store, registry, "breast-cancer", VERSION, n_features=30)
    first = app.lambda_handler(EVENT, LambdaContext())

    second = app.lambda_handler(EVENT, LambdaContext())

    assert second["replayed"] is True
    assert second["decision"] == first["decision"]


def test_a_broken_version_is_answered_as_rejected_not_raised(app, adapters):
    store, registry = adapters
    publish(store, registry, "breast-cancer", VERSION, n_features=30, model_bytes=b"garbage")

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


# ---------------------------------------------------------------------- retention on S3
BUCKET = "dropflow-data"


@pytest.fixture
def on_s3(tmp_path, monkeypatch):
    """The handler on a versioned S3 bucket (moto) keeping one version besides the champion;
    yields (app, store, registry, s3 client)."""
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
        monkeypatch.setenv("DROPFLOW_STORE_URL", f"s3://{BUCKET}")
        monkeypatch.setenv("DROPFLOW_REGISTRY_URL", f"sqlite://{tmp_path / 'registry.db'}")
        monkeypatch.setenv("DROPFLOW_EVENT_LOG", str(tmp_path / "events.jsonl"))
        monkeypatch.setenv("DROPFLOW_KEEP_VERSIONS", "1")
        monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "WARNING")
        wiring.reset()
        app = load_handler(ROOT / "functions" / "promote_model" / "app.py")
        yield app, wiring.store(), wiring.registry(), s3
        wiring.reset()


def tags_of(s3, model: str, version: str) -> dict[str, list[dict[str, str]]]:
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=f"models/{model}/{version}/")
    return {
        obj["Key"].rsplit("/", 1)[1]: s3.get_object_tagging(Bucket=BUCKET, Key=obj["Key"])["TagSet"]
        for obj in listed["Contents"]
    }


def test_promotions_tag_the_files_of_retired_versions_for_the_lifecycle_rule(on_s3):
    app, store, registry, s3 = on_s3
    versions = [version_id(n) for n in range(1, 5)]
    values = {versions[0]: 0.90, versions[1]: 0.91, versions[2]: 0.50, versions[3]: 0.92}

    for version in versions:  # the third is rejected: worse than the champion
        publish(store, registry, "iris", version, value=values[version])
        result = app.lambda_handler(with_key(f"models/iris/{version}/card.json"), LambdaContext())
    replay = app.lambda_handler(with_key(f"models/iris/{versions[3]}/card.json"), LambdaContext())

    retired = [[{"Key": "dropflow:retired", "Value": "true"}]] * 3  # model, reference, card
    assert result["retired"] == [versions[0]] and replay["replayed"]
    assert list(tags_of(s3, "iris", versions[0]).values()) == retired
    assert list(tags_of(s3, "iris", versions[2]).values()) == retired  # rejected
    assert list(tags_of(s3, "iris", versions[1]).values()) == [[]] * 3  # kept for rollback
    assert list(tags_of(s3, "iris", versions[3]).values()) == [[]] * 3  # the champion
    assert Catalog(registry).champion("iris").version == versions[3]


def test_a_rollback_to_a_retired_version_untags_its_files_on_s3(on_s3):
    app, store, registry, s3 = on_s3
    versions = [version_id(n) for n in range(1, 4)]
    for n, version in enumerate(versions):
        publish(store, registry, "iris", version, value=0.90 + n / 100)
        app.lambda_handler(with_key(f"models/iris/{version}/card.json"), LambdaContext())
    assert tags_of(s3, "iris", versions[0])["model.onnx"] != []  # retired

    result = rollback("iris", store, registry, to_version=versions[0], keep_versions=1)

    assert result.champion_after == versions[0]
    assert list(tags_of(s3, "iris", versions[0]).values()) == [[]] * 3
    # Kept: the champion and the newest other approved version; the middle one is retired.
    assert result.retired == [versions[1]]
    assert tags_of(s3, "iris", versions[2])["model.onnx"] == []
