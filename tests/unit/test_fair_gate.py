"""The fair promotion gate: both models scored on the candidate's holdout rows and labels."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from dropflow.adapters.local.event_log import JsonLinesEventPublisher
from dropflow.promotion.gate import promote
from dropflow.records.catalog import Catalog
from dropflow.vocabulary import onnx_session
from dropflow.vocabulary.card import INPUT_NAME, Feature
from dropflow.vocabulary.events import PROMOTED, REJECTED
from tests.fakes_serving import expected_output, publish, version_id

V1, V2 = version_id(1), version_id(2)
X = np.random.default_rng(7).normal(size=(64, 4)).astype(np.float32)


def champion_labels(store, task: str = "classification") -> np.ndarray:
    """Labels the champion V1 gets all right: its own predictions on X."""
    out = expected_output(store, "m", V1, X)
    return out.argmax(axis=1) if task == "classification" else out


def candidate_accuracy(store, labels: np.ndarray) -> float:
    return float(np.mean(expected_output(store, "m", V2, X).argmax(axis=1) == labels))


def test_a_worse_candidate_is_rejected_even_if_its_card_claims_better(store, registry):
    publish(store, registry, "m", V1, value=0.5, seed=0, x=X)
    promote("m", V1, store, registry)
    labels = champion_labels(store)
    publish(store, registry, "m", V2, value=0.99, seed=1, x=X, target=labels)
    measured = candidate_accuracy(store, labels)
    assert measured < 1.0  # the fixture's premise: the candidate misses some rows

    result = promote("m", V2, store, registry)

    assert result.decision == "rejected"
    assert "worse than the champion on the same 64 holdout rows" in result.reason
    assert f"accuracy {measured:.4g} vs champion {V1} 1" in result.reason
    assert result.metrics["basis"] == "holdout"
    assert result.metrics["champion"] == 1.0
    assert result.metrics["candidate"] == pytest.approx(measured)
    assert Catalog(registry).champion("m").version == V1
    assert Catalog(registry).version("m", V2).metrics["basis"] == "holdout"


def test_an_equal_candidate_passes_even_if_its_card_claims_worse(store, registry):
    publish(store, registry, "m", V1, value=0.99, seed=0, x=X)
    promote("m", V1, store, registry)
    publish(store, registry, "m", V2, value=0.1, seed=0, x=X, target=champion_labels(store))

    result = promote("m", V2, store, registry)

    assert result.decision == "approved"
    assert "not worse than the champion on the same 64 holdout rows" in result.reason
    assert Catalog(registry).champion("m").version == V2


@pytest.mark.parametrize(("slack", "decision"), [(0.01, "approved"), (-0.01, "rejected")])
def test_the_tolerance_is_applied_to_the_measured_metrics(store, registry, slack, decision):
    publish(store, registry, "m", V1, seed=0, x=X)
    promote("m", V1, store, registry)
    labels = champion_labels(store)
    publish(store, registry, "m", V2, seed=1, x=X, target=labels)  # measure the candidate first
    tolerance = 1.0 - candidate_accuracy(store, labels) + slack
    publish(
        store,
        registry,
        "m",
        V2,
        seed=1,
        x=X,
        target=labels,
        card_extra={"promotion": {"tolerance": tolerance}},
    )

    result = promote("m", V2, store, registry)

    assert result.decision == decision
    assert result.metrics["tolerance"] == pytest.approx(tolerance)


def test_regression_is_scored_by_error_on_the_same_rows(store, registry):
    publish(store, registry, "m", V1, task="regression", value=9.0, seed=0, x=X)
    promote("m", V1, store, registry)
    labels = champion_labels(store, "regression")
    publish(store, registry, "m", V2, task="regression", value=0.01, seed=1, x=X, target=labels)

    result = promote("m", V2, store, registry)

    assert result.decision == "rejected"
    assert "(lower is better" in result.reason
    assert result.metrics["champion"] == pytest.approx(0.0, abs=1e-5)


def test_an_allowed_feature_reordering_falls_back_to_the_cards_saying_so(store, registry):
    publish(store, registry, "m", V1, value=0.9, seed=0, x=X)
    promote("m", V1, store, registry)
    labels = champion_labels(store)
    publish(
        store,
        registry,
        "m",
        V2,
        value=0.95,
        seed=1,
        x=X,
        target=labels,
        features=["f1", "f0", "f2", "f3"],
        card_extra={"promotion": {"allow_schema_change": True}},
    )

    result = promote("m", V2, store, registry)

    assert result.decision == "approved"  # the cards: 0.95 vs 0.9
    assert "compared the cards' recorded metrics: feature schemas differ" in result.reason
    assert "the spec allows its schema change: the features would be reordered" in result.reason
    assert result.metrics["basis"] == "card"


COLOUR = ["green", "red"]
COLOUR_LEARNT = ["blue", "green", "red"]  # blue arrived with new data: the codes shift


def colour_rows(codes: np.ndarray) -> np.ndarray:
    """X with its last column replaced by category codes."""
    return np.column_stack([X[:, :3], codes.astype(np.float32)])


def test_a_learnt_category_is_compared_on_the_same_rows_in_the_champions_codes(store, registry):
    names: list = ["f0", "f1", "f2"]
    old = Feature(name="colour", dtype="category", categories=COLOUR)
    new = Feature(name="colour", dtype="category", categories=COLOUR_LEARNT)
    candidate_codes = np.arange(64) % 3  # blue, green, red, blue, ...
    publish(store, registry, "m", V1, value=0.5, seed=0, features=[*names, old], x=X)
    promote("m", V1, store, registry)
    # Labels the champion gets all right on the rows it can take, read in its own codes.
    champion_x = colour_rows(np.array([0, 0, 1])[candidate_codes])
    labels = expected_output(store, "m", V1, champion_x).argmax(axis=1)
    x = colour_rows(candidate_codes)
    publish(
        store, registry, "m", V2, value=0.99, seed=1, features=[*names, new], x=x, target=labels
    )
    blue = candidate_codes == 0
    measured = float(
        np.mean(expected_output(store, "m", V2, x[~blue]).argmax(axis=1) == labels[~blue])
    )
    assert measured < 1.0  # the fixture's premise: the candidate misses some rows

    result = promote("m", V2, store, registry)

    assert result.decision == "rejected"
    assert result.metrics["basis"] == "holdout"
    assert result.metrics["champion"] == 1.0
    assert result.metrics["candidate"] == pytest.approx(measured)
    assert result.metrics["rows"] == int((~blue).sum())
    assert result.metrics["rows_left_out"] == int(blue.sum())
    assert (
        f"on the same {(~blue).sum()} holdout rows ({blue.sum()} left out: values the champion "
        "does not accept)"
    ) in result.reason
    assert "schema_changes" not in result.metrics  # learning a category breaks no client


def test_a_reference_without_target_falls_back_to_the_cards(store, registry):
    publish(store, registry, "m", V1, value=0.9)
    promote("m", V1, store, registry)
    publish(store, registry, "m", V2, value=0.85)

    result = promote("m", V2, store, registry)

    assert result.decision == "rejected"
    assert "reference.npz has no holdout target" in result.reason


def test_unusable_labels_fall_back_to_the_cards(store, registry):
    publish(store, registry, "m", V1, value=0.9, x=X)
    promote("m", V1, store, registry)
    publish(store, registry, "m", V2, value=0.95, seed=1, x=X, target=np.full(64, 7))

    result = promote("m", V2, store, registry)

    assert result.decision == "approved"
    assert "target must hold class ids 0..1" in result.reason


def test_decisions_are_published_as_events(store, registry, tmp_path):
    events = JsonLinesEventPublisher(tmp_path / "events.jsonl")
    publish(store, registry, "m", V1, seed=0, x=X)
    promote("m", V1, store, registry, events)
    publish(store, registry, "m", V2, seed=1, x=X, target=champion_labels(store))
    promote("m", V2, store, registry, events)
    promote("m", V2, store, registry, events)  # a replay publishes nothing new

    sent = events.read()

    assert [e["detail-type"] for e in sent] == [PROMOTED, REJECTED]
    assert {e["source"] for e in sent} == {"dropflow"}
    rejected = sent[1]["detail"]
    assert (rejected["model"], rejected["version"]) == ("m", V2)
    assert rejected["metrics"]["champion"] == 1.0
    assert "worse than the champion" in rejected["reason"]
    json.dumps(sent)


class Broken:
    def publish(self, detail_type, detail):
        raise RuntimeError("bus unreachable")


def test_an_unreachable_bus_does_not_undo_the_decision(store, registry):
    publish(store, registry, "m", V1)

    result = promote("m", V1, store, registry, Broken())

    assert result.decision == "approved"
    assert Catalog(registry).champion("m").version == V1


def test_promotion_runs_both_graphs_on_a_large_holdout_in_bounded_slices(
    store, registry, monkeypatch
):
    # Issue 13: reference.npz of a 1,000,000-row table holds 200,000 holdout rows, and one
    # onnxruntime run over them all took gigabytes; the promote function has 1,769 MB.
    monkeypatch.setattr(onnx_session, "SLICE_ROWS", 100)
    runs: list[int] = []
    run = ort.InferenceSession.run

    def recording(self, output_names, feed, *args, **kwargs):  # type: ignore[no-untyped-def]
        runs.append(len(feed[INPUT_NAME]))
        return run(self, output_names, feed, *args, **kwargs)

    monkeypatch.setattr(ort.InferenceSession, "run", recording)
    x = np.random.default_rng(8).normal(size=(1_050, 4)).astype(np.float32)
    publish(store, registry, "m", V1, seed=0, x=x)
    promote("m", V1, store, registry)
    labels = expected_output(store, "m", V1, x).argmax(axis=1)
    publish(store, registry, "m", V2, seed=1, x=x, target=labels)
    measured = float(np.mean(expected_output(store, "m", V2, x).argmax(axis=1) == labels))

    result = promote("m", V2, store, registry)

    assert result.metrics["basis"] == "holdout" and result.metrics["rows"] == 1_050
    assert result.metrics["candidate"] == pytest.approx(measured)
    assert result.metrics["champion"] == 1.0
    # Parity of V1, then of V2, then V2 and V1 scored: every row, 100 at a time.
    assert runs == ([100] * 10 + [50]) * 4
