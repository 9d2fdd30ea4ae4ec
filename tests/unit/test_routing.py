"""Routing: which tier serves a version, from its model.onnx size and the spec's override."""

from __future__ import annotations

import pytest

from dropflow.vocabulary.routing import (
    CONTAINER,
    LAMBDA,
    MB,
    RoutePolicy,
    decide_route,
    default_cache_budget_mb,
    session_memory_mb,
)

POLICY = RoutePolicy(max_model_mb=100, function_memory_mb=1024, memory_factor=2.0, overhead_mb=160)


def test_a_small_model_is_served_by_the_function():
    decision = decide_route(5 * MB, POLICY)

    assert decision.route == LAMBDA
    assert "fits the predict function" in decision.reason


def test_a_model_over_the_size_threshold_goes_to_the_container():
    decision = decide_route(101 * MB, POLICY)

    assert decision.route == CONTAINER
    assert "model.onnx 101.0 MB" in decision.reason
    assert "100 MB" in decision.reason


def test_a_model_whose_session_does_not_fit_the_function_memory_goes_to_the_container():
    # 90 MB passes the size threshold, but 2 x 90 MB does not fit 256 - 160 MB.
    small_function = RoutePolicy(max_model_mb=100, function_memory_mb=256)

    decision = decide_route(90 * MB, small_function)

    assert decision.route == CONTAINER
    assert "left in the predict function's 256 MB" in decision.reason


def test_the_size_threshold_is_configurable():
    lowered = RoutePolicy(max_model_mb=0.001)

    assert decide_route(2048, lowered).route == CONTAINER
    assert decide_route(512, lowered).route == LAMBDA


@pytest.mark.parametrize(("override", "size_mb"), [("lambda", 500), ("container", 1)])
def test_the_spec_route_overrides_the_size_rule(override, size_mb):
    decision = decide_route(size_mb * MB, POLICY, override=override)

    assert decision.route == override
    assert f"serving.route is {override}" in decision.reason


def test_auto_decides_by_size():
    assert decide_route(1 * MB, POLICY, override="auto").route == LAMBDA


def test_the_spec_memory_replaces_the_estimate():
    decision = decide_route(1 * MB, POLICY, memory_mb=4000)

    assert decision.route == CONTAINER
    assert decision.memory_mb == 4000


def test_the_session_estimate_scales_with_the_file():
    assert session_memory_mb(10 * MB, factor=2.5) == pytest.approx(25.0)


def test_the_cache_budget_follows_the_function_memory():
    assert default_cache_budget_mb({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1024"}) == 1024 - 160


def test_the_cache_budget_never_drops_to_nothing():
    assert default_cache_budget_mb({"AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "128"}) == 64


def test_outside_lambda_the_budget_comes_from_the_machine():
    assert default_cache_budget_mb({}) > 64
