"""Promotion routes each version (lambda or the container tier), records the route with the
version and on the champion pointer, and asks the container tier to scale out."""

from __future__ import annotations

import pytest

from dropflow.promotion.gate import promote
from dropflow.promotion.rollback import rollback
from dropflow.records.catalog import Catalog
from dropflow.vocabulary.routing import RoutePolicy
from dropflow.vocabulary.spec import spec_key
from tests.fakes_serving import publish, version_id

LARGE = RoutePolicy(max_model_mb=0.0001)  # every test graph is over this threshold
SMALL = RoutePolicy()


class RecordingTier:
    """`asked`: the minimum of each scale-out, 0 for each scale-in."""

    def __init__(self, fail: bool = False) -> None:
        self.asked: list[int] = []
        self.fail = fail

    def scale_out(self, minimum: int = 1) -> str:
        self.asked.append(minimum)
        if self.fail:
            raise RuntimeError("AccessDenied")
        return f"desired capacity 0 -> {minimum}"

    def scale_in(self) -> str:
        self.asked.append(0)
        if self.fail:
            raise RuntimeError("AccessDenied")
        return "desired capacity 1 -> 0"


def test_a_small_version_is_routed_to_the_function(store, registry):
    publish(store, registry, "iris", version_id(1))

    result = promote("iris", version_id(1), store, registry, policy=SMALL)

    assert result.route == "lambda"
    assert Catalog(registry).champion("iris").route == "lambda"
    assert Catalog(registry).version("iris", version_id(1)).route == "lambda"


def test_a_large_version_is_routed_to_the_container_and_the_tier_scales_out(store, registry):
    publish(store, registry, "iris", version_id(1))
    tier = RecordingTier()

    result = promote("iris", version_id(1), store, registry, policy=LARGE, tier=tier)

    assert result.decision == "approved"
    assert result.route == "container"
    assert "larger than" in result.route_reason
    assert Catalog(registry).champion("iris").route == "container"
    assert tier.asked == [1]
    assert result.scale_out == "desired capacity 0 -> 1"


def test_with_no_champion_routed_to_the_container_the_tier_is_scaled_in(store, registry):
    publish(store, registry, "iris", version_id(1))
    tier = RecordingTier()

    result = promote("iris", version_id(1), store, registry, policy=SMALL, tier=tier)

    assert tier.asked == [0]
    assert result.scale_out == "desired capacity 1 -> 0"


def test_a_lambda_champion_replacing_the_last_container_one_scales_the_tier_in(store, registry):
    publish(store, registry, "iris", version_id(1), value=0.8)
    promote("iris", version_id(1), store, registry, policy=LARGE)
    publish(store, registry, "iris", version_id(2), value=0.9)
    tier = RecordingTier()

    promote("iris", version_id(2), store, registry, policy=SMALL, tier=tier)

    assert tier.asked == [0]


def test_the_tier_stays_out_while_another_models_champion_is_routed_to_it(store, registry):
    publish(store, registry, "big", version_id(1))
    promote("big", version_id(1), store, registry, policy=LARGE)
    publish(store, registry, "iris", version_id(1))
    tier = RecordingTier()

    promote("iris", version_id(1), store, registry, policy=SMALL, tier=tier)

    assert tier.asked == [1]  # asked for at least one server again, never fewer


def test_a_rejected_large_version_does_not_scale_the_tier(store, registry):
    publish(store, registry, "iris", version_id(1), value=0.9)
    promote("iris", version_id(1), store, registry, policy=SMALL)
    publish(store, registry, "iris", version_id(2), value=0.5)
    tier = RecordingTier()

    result = promote("iris", version_id(2), store, registry, policy=LARGE, tier=tier)

    assert result.decision == "rejected"
    assert tier.asked == []


def test_a_failed_scale_out_leaves_the_promotion_standing(store, registry):
    publish(store, registry, "iris", version_id(1))

    result = promote("iris", version_id(1), store, registry, policy=LARGE, tier=RecordingTier(True))

    assert result.decision == "approved"
    assert Catalog(registry).champion("iris").version == version_id(1)
    assert "scaling failed: AccessDenied" in result.scale_out


def test_a_replayed_promotion_asks_the_tier_again(store, registry):
    publish(store, registry, "iris", version_id(1))
    promote("iris", version_id(1), store, registry, policy=LARGE)
    tier = RecordingTier()

    result = promote("iris", version_id(1), store, registry, policy=LARGE, tier=tier)

    assert result.replayed is True
    assert result.route == "container"
    assert tier.asked == [1]


@pytest.mark.parametrize(("spec", "route"), [("lambda", "lambda"), ("container", "container")])
def test_the_spec_serving_route_wins_over_the_size(store, registry, spec, route):
    store.put(spec_key("iris"), f"serving:\n  route: {spec}\n".encode())
    publish(store, registry, "iris", version_id(1))
    policy = LARGE if spec == "lambda" else SMALL

    result = promote("iris", version_id(1), store, registry, policy=policy)

    assert result.route == route
    assert f"serving.route is {spec}" in result.route_reason


def test_the_spec_serving_memory_replaces_the_estimate(store, registry):
    store.put(spec_key("iris"), b"serving:\n  memory_mb: 9000\n")
    publish(store, registry, "iris", version_id(1))

    result = promote("iris", version_id(1), store, registry, policy=SMALL)

    assert result.route == "container"
    assert "session about 9000 MB" in result.route_reason


def test_an_invalid_spec_routes_by_size_and_says_so(store, registry):
    store.put(spec_key("iris"), b"serving:\n  route: gpu\n")
    publish(store, registry, "iris", version_id(1))

    result = promote("iris", version_id(1), store, registry, policy=SMALL)

    assert result.route == "lambda"
    assert "serving section was ignored" in result.route_reason


def test_a_rollback_carries_the_route_of_the_version_it_restores(store, registry):
    publish(store, registry, "iris", version_id(1), value=0.8)
    promote("iris", version_id(1), store, registry, policy=LARGE)
    publish(store, registry, "iris", version_id(2), value=0.9)
    promote("iris", version_id(2), store, registry, policy=SMALL)
    assert Catalog(registry).champion("iris").route == "lambda"

    rollback("iris", store, registry)

    champion = Catalog(registry).champion("iris")
    assert (champion.version, champion.route) == (version_id(1), "container")


def test_a_rollback_to_a_container_version_scales_the_tier_out_and_back_in(store, registry):
    publish(store, registry, "iris", version_id(1), value=0.8)
    promote("iris", version_id(1), store, registry, policy=LARGE)
    publish(store, registry, "iris", version_id(2), value=0.9)
    promote("iris", version_id(2), store, registry, policy=SMALL)
    tier = RecordingTier()

    back = rollback("iris", store, registry, tier=tier)
    forth = rollback("iris", store, registry, version_id(2), tier=tier)

    assert (back.champion_after, forth.champion_after) == (version_id(1), version_id(2))
    assert tier.asked == [1, 0]
    assert back.tier == "desired capacity 0 -> 1"
