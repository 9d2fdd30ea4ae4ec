"""promote() with versions that would break the champion's clients: real graphs, cards and
reference files published as the training job publishes them, a real store and registry."""

from __future__ import annotations

import numpy as np

from dropflow.adapters.local.event_log import JsonLinesEventPublisher
from dropflow.promotion.gate import promote
from dropflow.promotion.rollback import list_versions
from dropflow.records.catalog import Catalog
from dropflow.serving.service import ModelCache, PredictionService
from dropflow.vocabulary.card import Feature
from dropflow.vocabulary.events import REJECTED
from tests.fakes_serving import publish, version_id

V1, V2 = version_id(1), version_id(2)
IRIS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
SPECIES = ["setosa", "versicolor", "virginica"]
RENAMED = [*IRIS[:3], "petal_w"]
ROW = [5.1, 3.5, 1.4, 0.2]
ALLOW = {"promotion": {"allow_schema_change": True}}


def serve(store, registry) -> PredictionService:
    return PredictionService(ModelCache(store, registry, champion_ttl=0))


def champion(store, registry):
    publish(store, registry, "iris", V1, features=IRIS, classes=SPECIES, value=0.9, seed=0)
    assert promote("iris", V1, store, registry).decision == "approved"


def test_a_fourth_class_from_a_cut_row_is_rejected_and_clients_keep_three_probabilities(
    store, registry, tmp_path
):
    champion(store, registry)
    events = JsonLinesEventPublisher(tmp_path / "events.jsonl")
    # Better on its card, and its metric cannot be compared fairly: only the classes stop it.
    publish(
        store, registry, "iris", V2, features=IRIS, classes=[*SPECIES, "ver"], value=0.99, seed=1
    )

    result = promote("iris", V2, store, registry, events)

    assert result.decision == "rejected"
    assert result.reason.startswith(
        f"would break the clients of the champion {V1}: classes would change from "
        "[setosa, versicolor, virginica] to [setosa, versicolor, virginica, ver]. "
    )
    assert Catalog(registry).champion("iris").version == V1
    answer = serve(store, registry).predict("iris", [ROW])
    assert answer["version"] == V1
    assert len(answer["probabilities"][0]) == 3
    (event,) = [e for e in events.read() if e["detail-type"] == REJECTED]
    assert event["detail"]["reason"] == result.reason  # whole, as recorded
    assert event["detail"]["metrics"]["schema_changes"] == [
        "classes would change from [setosa, versicolor, virginica] to "
        "[setosa, versicolor, virginica, ver]"
    ]


def test_a_renamed_column_is_rejected_naming_both_names(store, registry):
    champion(store, registry)
    publish(store, registry, "iris", V2, features=RENAMED, classes=SPECIES, value=0.95, seed=1)

    result = promote("iris", V2, store, registry)

    assert result.decision == "rejected"
    assert "feature 'petal_width' is gone; feature 'petal_w' is new" in result.reason
    assert "add `promotion: {allow_schema_change: true}` to datasets/iris/dropflow.yaml" in (
        result.reason
    )
    rows = {row["version"]: row for row in list_versions("iris", registry)}
    assert rows[V2]["decision"] == "rejected"
    assert rows[V2]["reason"] == result.reason
    assert rows[V2]["metrics"]["schema_changes"] == [
        "feature 'petal_width' is gone",
        "feature 'petal_w' is new",
    ]
    assert (
        serve(store, registry).predict("iris", [dict(zip(IRIS, ROW, strict=True))])["version"] == V1
    )


def test_a_replayed_event_returns_the_same_rejection(store, registry):
    champion(store, registry)
    publish(store, registry, "iris", V2, features=RENAMED, classes=SPECIES, value=0.95, seed=1)
    first = promote("iris", V2, store, registry)

    again = promote("iris", V2, store, registry)

    assert again.replayed
    assert (again.decision, again.reason) == ("rejected", first.reason)


def test_the_spec_s_consent_lets_a_renamed_column_through_the_metric_gate(store, registry):
    champion(store, registry)
    publish(
        store,
        registry,
        "iris",
        V2,
        features=RENAMED,
        classes=SPECIES,
        value=0.95,
        seed=1,
        card_extra=ALLOW,
    )

    result = promote("iris", V2, store, registry)

    assert result.decision == "approved"
    assert result.reason.endswith(
        "the spec allows its schema change: feature 'petal_width' is gone; feature 'petal_w' is new"
    )
    assert result.metrics["schema_changes"] == [
        "feature 'petal_width' is gone",
        "feature 'petal_w' is new",
    ]
    named = dict(zip(RENAMED, ROW, strict=True))
    assert serve(store, registry).predict("iris", [named])["version"] == V2


def test_consent_does_not_spare_a_worse_candidate(store, registry):
    champion(store, registry)
    publish(
        store,
        registry,
        "iris",
        V2,
        features=RENAMED,
        classes=SPECIES,
        value=0.5,
        seed=1,
        card_extra=ALLOW,
    )

    result = promote("iris", V2, store, registry)

    assert result.decision == "rejected"
    assert result.reason.startswith("worse than the champion")


def test_learnt_categories_are_promoted_as_before(store, registry):
    names: list = IRIS[:3]
    colour = Feature(name="colour", dtype="category", categories=["green", "red"])
    learnt = Feature(name="colour", dtype="category", categories=["blue", "green", "red"])
    publish(store, registry, "iris", V1, features=[*names, colour], classes=SPECIES, value=0.9)
    promote("iris", V1, store, registry)
    publish(
        store, registry, "iris", V2, features=[*names, learnt], classes=SPECIES, value=0.92, seed=1
    )

    result = promote("iris", V2, store, registry)

    assert result.decision == "approved", result.reason
    assert "schema_changes" not in result.metrics
    answer = serve(store, registry).predict("iris", [[*ROW[:3], "red"], [*ROW[:3], "blue"]])
    assert answer["version"] == V2


def test_the_first_version_has_no_clients_to_break(store, registry):
    publish(store, registry, "iris", V1, features=RENAMED, classes=[*SPECIES, "ver"], value=0.5)

    assert promote("iris", V1, store, registry).decision == "approved"


def test_a_reordering_is_rejected_because_list_rows_would_change_meaning(store, registry):
    champion(store, registry)
    x = np.random.default_rng(3).normal(size=(32, 4)).astype(np.float32)
    publish(
        store, registry, "iris", V2, features=IRIS[::-1], classes=SPECIES, value=0.95, seed=1, x=x
    )

    result = promote("iris", V2, store, registry)

    assert result.decision == "rejected"
    assert (
        "the features would be reordered from [sepal_length, sepal_width, petal_length, "
        "petal_width] to [petal_width, petal_length, sepal_width, sepal_length]"
    ) in result.reason
