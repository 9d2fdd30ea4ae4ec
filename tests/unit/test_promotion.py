"""Promotion: parity re-check, the metric gate, the champion switch, idempotency."""

from __future__ import annotations

import numpy as np
import pytest

from dropflow.errors import InvalidName
from dropflow.promotion.gate import card_location, promote
from dropflow.records.catalog import Catalog
from dropflow.vocabulary.card import artifact_key, card_key
from tests.fakes_serving import publish, regressor_onnx, version_id

V1, V2, V3 = version_id(1), version_id(2), version_id(3)


def champion_of(registry, model: str = "iris") -> str | None:
    champion = Catalog(registry).champion(model)
    return champion.version if champion else None


# ---------------------------------------------------------------------- the gate
def test_the_first_sound_version_becomes_champion(store, registry):
    publish(store, registry, "iris", V1, value=0.9)

    result = promote("iris", V1, store, registry)

    assert result.decision == "approved"
    assert result.champion_before is None
    assert result.champion_after == V1
    assert champion_of(registry) == V1


def test_a_worse_candidate_is_rejected_and_the_champion_stays(store, registry):
    publish(store, registry, "iris", V1, value=0.9)
    promote("iris", V1, store, registry)
    publish(store, registry, "iris", V2, value=0.85)

    result = promote("iris", V2, store, registry)

    assert result.decision == "rejected"
    assert "worse than the champion" in result.reason
    assert "accuracy 0.85" in result.reason
    assert result.champion_after == V1
    assert champion_of(registry) == V1


@pytest.mark.parametrize("value", [0.9, 0.97])
def test_an_equal_or_better_candidate_replaces_the_champion(store, registry, value):
    publish(store, registry, "iris", V1, value=0.9)
    promote("iris", V1, store, registry)
    publish(store, registry, "iris", V2, value=value)

    result = promote("iris", V2, store, registry)

    assert result.decision == "approved"
    assert (result.champion_before, result.champion_after) == (V1, V2)
    assert champion_of(registry) == V2
    assert Catalog(registry).champion("iris").previous == V1


def test_the_spec_tolerance_lets_a_slightly_worse_candidate_through(store, registry):
    publish(store, registry, "iris", V1, value=0.90)
    promote("iris", V1, store, registry)
    publish(store, registry, "iris", V2, value=0.895, card_extra={"promotion": {"tolerance": 0.01}})

    assert promote("iris", V2, store, registry).decision == "approved"


def test_for_regression_a_lower_error_is_better(store, registry):
    publish(store, registry, "price", V1, task="regression", primary="rmse", value=3.0)
    promote("price", V1, store, registry)
    publish(store, registry, "price", V2, task="regression", primary="rmse", value=3.5)
    publish(store, registry, "price", V3, task="regression", primary="rmse", value=2.5)

    worse = promote("price", V2, store, registry)
    better = promote("price", V3, store, registry)

    assert worse.decision == "rejected"
    assert "lower is better" in worse.reason
    assert better.decision == "approved"
    assert champion_of(registry, "price") == V3


def metrics(primary: str, holdout: dict[str, float], baseline: dict[str, float]) -> dict:
    """A card's metrics section, with the naive baseline the training job records."""
    return {
        "metrics": {
            "primary": primary,
            "holdout": holdout,
            "baseline": baseline,
            "holdout_rows": 30,
            "train_rows": 120,
        }
    }


def test_a_first_version_below_the_naive_baseline_is_rejected_naming_both_numbers(store, registry):
    card = metrics(
        "accuracy", {"accuracy": 0.52, "log_loss": 0.9}, {"accuracy": 0.55, "log_loss": 1.1}
    )
    publish(store, registry, "iris", V1, card_extra=card)

    result = promote("iris", V1, store, registry)

    assert result.decision == "rejected"
    assert "no better than the naive baseline on its 30 holdout rows" in result.reason
    assert "accuracy 0.52 does not beat the naive baseline's 0.55" in result.reason
    assert result.metrics["baseline"] == {"accuracy": 0.55, "log_loss": 1.1}
    assert champion_of(registry) is None


def test_a_first_version_whose_log_loss_is_worse_than_the_baseline_is_rejected(store, registry):
    # Issue 15: epochs 4000 on iris, holdout log loss 2.19 against the naive baseline's 1.10.
    card = metrics(
        "accuracy", {"accuracy": 0.9, "log_loss": 2.19}, {"accuracy": 0.33, "log_loss": 1.0986}
    )
    publish(store, registry, "iris", V1, card_extra=card)

    result = promote("iris", V1, store, registry)

    assert result.decision == "rejected"
    assert "log_loss 2.19 is worse than the naive baseline's 1.099" in result.reason
    assert "accuracy" not in result.reason  # the accuracy beats its baseline
    assert champion_of(registry) is None


def test_equalling_the_baseline_is_not_beating_it(store, registry):
    card = metrics(
        "accuracy", {"accuracy": 0.6, "log_loss": 0.6}, {"accuracy": 0.6, "log_loss": 0.7}
    )
    publish(store, registry, "iris", V1, card_extra=card)

    assert promote("iris", V1, store, registry).decision == "rejected"


def test_a_candidate_below_the_baseline_never_replaces_the_champion(store, registry):
    publish(store, registry, "iris", V1, value=0.5)
    promote("iris", V1, store, registry)
    card = metrics(
        "accuracy", {"accuracy": 0.7, "log_loss": 0.9}, {"accuracy": 0.75, "log_loss": 1.0}
    )
    publish(store, registry, "iris", V2, card_extra=card)

    result = promote("iris", V2, store, registry)

    assert result.decision == "rejected" and "naive baseline's 0.75" in result.reason
    assert champion_of(registry) == V1


def test_for_regression_the_error_must_be_below_the_mean_predictor_s(store, registry):
    card = metrics("rmse", {"rmse": 3.2, "r2": -0.01}, {"rmse": 3.1, "r2": 0.0})
    publish(store, registry, "price", V1, task="regression", card_extra=card)

    result = promote("price", V1, store, registry)

    assert result.decision == "rejected"
    assert "rmse 3.2 does not beat the naive baseline's 3.1 (lower is better)" in result.reason


def test_a_first_version_that_beats_the_baseline_is_approved(store, registry):
    card = metrics(
        "accuracy", {"accuracy": 0.95, "log_loss": 0.2}, {"accuracy": 0.33, "log_loss": 1.1}
    )
    publish(store, registry, "iris", V1, card_extra=card)

    assert promote("iris", V1, store, registry).decision == "approved"


def test_a_version_older_than_the_champion_is_rejected(store, registry):
    publish(store, registry, "iris", V1, value=0.99)
    publish(store, registry, "iris", V2, value=0.9)
    promote("iris", V2, store, registry)

    result = promote("iris", V1, store, registry)  # a late event for an older version

    assert result.decision == "rejected"
    assert f"older than the champion {V2}" in result.reason
    assert champion_of(registry) == V2


# ---------------------------------------------------------------------- broken candidates
def test_a_parity_failure_is_rejected_with_the_difference(store, registry):
    publish(store, registry, "iris", V1)
    promote("iris", V1, store, registry)
    publish(store, registry, "iris", V2, value=0.99, skew_reference=0.05)

    result = promote("iris", V2, store, registry)

    assert result.decision == "rejected"
    assert "parity: max abs diff 0.05 exceeds the tolerance 0.0001" in result.reason
    assert champion_of(registry) == V1


def test_a_first_version_failing_parity_leaves_no_champion(store, registry):
    publish(store, registry, "iris", V1, skew_reference=0.05)

    result = promote("iris", V1, store, registry)

    assert result.decision == "rejected"
    assert champion_of(registry) is None


def test_a_corrupt_onnx_file_is_rejected(store, registry):
    publish(store, registry, "iris", V1)
    promote("iris", V1, store, registry)
    publish(store, registry, "iris", V2, value=0.99, model_bytes=b"not an onnx graph")

    result = promote("iris", V2, store, registry)

    assert result.decision == "rejected"
    assert "model.onnx cannot be loaded by onnxruntime" in result.reason
    assert champion_of(registry) == V1


def test_a_graph_breaking_the_contract_is_rejected(store, registry):
    regression_graph = regressor_onnx(np.ones((4, 1), np.float32), np.zeros(1, np.float32))
    publish(store, registry, "iris", V1, model_bytes=regression_graph)

    result = promote("iris", V1, store, registry)

    assert result.decision == "rejected"
    assert "breaks the graph contract" in result.reason
    assert "expected input 'input' and output 'probabilities'" in result.reason


@pytest.mark.parametrize(
    ("missing", "reason"),
    [
        ("reference.npz", "reference.npz is missing"),
        ("model.onnx", "model.onnx is missing"),
    ],
)
def test_a_missing_file_is_rejected(store, registry, missing, reason):
    publish(store, registry, "iris", V1)
    store.delete(artifact_key("iris", V1, missing))

    result = promote("iris", V1, store, registry)

    assert result.decision == "rejected"
    assert reason in result.reason
    assert champion_of(registry) is None


def test_without_a_card_nothing_is_decided_or_recorded(store, registry):
    result = promote("iris", V1, store, registry)  # e.g. the sample event, nothing published

    assert result.decision == "rejected"
    assert "card.json is missing" in result.reason
    assert Catalog(registry).version("iris", V1) is None
    assert not Catalog(registry).exists("iris")  # predict still says "unknown model"


def test_a_card_arriving_after_an_early_event_is_still_promoted(store, registry):
    promote("iris", V1, store, registry)
    publish(store, registry, "iris", V1)

    assert promote("iris", V1, store, registry).decision == "approved"


def test_an_unreadable_card_is_rejected_naming_the_field(store, registry):
    publish(store, registry, "iris", V1)
    store.put(card_key("iris", V1), b'{"model": "iris"}')

    result = promote("iris", V1, store, registry)

    assert result.decision == "rejected"
    assert "card.json is not a valid model card" in result.reason


def test_a_card_whose_training_parity_failed_is_rejected(store, registry):
    publish(store, registry, "iris", V1, parity_passed=False)

    result = promote("iris", V1, store, registry)

    assert result.decision == "rejected"
    assert "parity check failed" in result.reason


def test_an_unreadable_reference_is_rejected(store, registry):
    publish(store, registry, "iris", V1, reference_bytes=b"PK\x03\x04 broken zip")

    result = promote("iris", V1, store, registry)

    assert result.decision == "rejected"
    assert "reference.npz is unreadable" in result.reason


# ---------------------------------------------------------------------- records, replays, races
def test_the_decision_and_reason_are_recorded(store, registry):
    publish(store, registry, "iris", V1)
    promote("iris", V1, store, registry)
    publish(store, registry, "iris", V2, value=0.5)
    promote("iris", V2, store, registry)

    records = {r.version: r for r in Catalog(registry).versions("iris")}

    assert records[V1].decision == "approved"
    assert records[V2].decision == "rejected"
    assert "worse than the champion" in (records[V2].reason or "")
    assert records[V2].primary_metric == "accuracy"
    assert records[V2].primary_value == 0.5


@pytest.mark.parametrize("value", [0.99, 0.5])
def test_promoting_the_same_version_twice_changes_nothing(store, registry, value):
    publish(store, registry, "iris", V1, value=0.9)
    promote("iris", V1, store, registry)
    publish(store, registry, "iris", V2, value=value)
    first = promote("iris", V2, store, registry)
    record = Catalog(registry).version("iris", V2)
    champion = Catalog(registry).champion("iris")

    again = promote("iris", V2, store, registry)

    assert again.replayed is True
    assert (again.decision, again.reason) == (first.decision, first.reason)
    assert again.champion_before == again.champion_after == first.champion_after
    assert Catalog(registry).version("iris", V2) == record
    assert Catalog(registry).champion("iris") == champion


def test_a_switch_applied_but_not_recorded_is_completed_by_a_retry(store, registry):
    publish(store, registry, "iris", V1)
    # crashed before recording
    Catalog(registry).switch_champion("iris", V1, expected=None, route="lambda")

    result = promote("iris", V1, store, registry)

    assert result.decision == "approved"
    assert result.reason == "already the champion"
    assert Catalog(registry).version("iris", V1).decision == "approved"


class RacingRegistry:
    """Lets another promotion switch the champion just before this one's first switch."""

    def __init__(self, inner, race) -> None:
        self.inner, self.race, self.raced = inner, race, False

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def compare_and_set(self, pk, sk, data, **kwargs):
        self._maybe_race(sk)
        return self.inner.compare_and_set(pk, sk, data, **kwargs)

    def put_if_absent(self, pk, sk, data, **kwargs):
        self._maybe_race(sk)
        return self.inner.put_if_absent(pk, sk, data, **kwargs)

    def _maybe_race(self, sk) -> None:
        if sk == "CHAMPION" and not self.raced:
            self.raced = True
            self.race()


def test_losing_a_race_re_decides_against_the_new_champion(store, registry):
    publish(store, registry, "iris", V1, value=0.9)
    publish(store, registry, "iris", V2, value=0.95)
    publish(store, registry, "iris", V3, value=0.97)
    promote("iris", V1, store, registry)
    racing = RacingRegistry(registry, lambda: promote("iris", V2, store, registry))

    result = promote("iris", V3, store, racing)

    assert result.decision == "approved"
    assert result.champion_before == V2  # decided again against the version that won the race
    assert champion_of(registry) == V3


def test_a_candidate_worse_than_the_race_winner_is_rejected(store, registry):
    publish(store, registry, "iris", V1, value=0.9)
    publish(store, registry, "iris", V2, value=0.99)
    publish(store, registry, "iris", V3, value=0.95)
    promote("iris", V1, store, registry)
    racing = RacingRegistry(registry, lambda: promote("iris", V2, store, registry))

    result = promote("iris", V3, store, racing)

    assert result.decision == "rejected"
    assert champion_of(registry) == V2


# ---------------------------------------------------------------------- names and keys
@pytest.mark.parametrize(("model", "version"), [("Iris", V1), ("iris", "latest"), ("", V1)])
def test_a_malformed_model_or_version_is_an_invalid_name(store, registry, model, version):
    with pytest.raises(InvalidName):
        promote(model, version, store, registry)


@pytest.mark.parametrize(
    ("key", "location"),
    [
        (f"models/iris/{V1}/card.json", ("iris", V1)),
        (f"models/iris/{V1}/model.onnx", None),
        ("datasets/iris/card.json", None),
        (f"models/iris/{V1}/extra/card.json", None),
    ],
)
def test_card_location_reads_model_and_version_from_the_key(key, location):
    assert card_location(key) == location
