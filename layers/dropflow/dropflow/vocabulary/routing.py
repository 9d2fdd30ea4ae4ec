"""Routing: which tier serves a model version, decided once, at promotion.

- `lambda`: the predict function runs the graph itself (onnxruntime inside the Lambda);
- `container`: the version is too large for the function, so the predict function forwards
  its requests to the container tier (serving/), which runs the same API on EC2.

A version goes to the Lambda when its model.onnx is at most `max_model_mb` and the memory its
session is estimated to need, plus what the runtime itself takes, fits the function's memory.
The spec's `serving` section (datasets/<model>/dropflow.yaml) may force a route, or state the
memory the model needs when the estimate from the file size is wrong (e.g. large activations).
The route is stored with the version and the champion pointer, so serving never recomputes it.

The same estimate sizes the sessions in the predict function's cache (dropflow.serving.service).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal

Route = Literal["lambda", "container"]
LAMBDA: Route = "lambda"
CONTAINER: Route = "container"
ROUTES: tuple[Route, ...] = (LAMBDA, CONTAINER)

MB = 1024 * 1024
# What python, numpy, onnxruntime, powertools and the handler take before any model is loaded
# (about 130 MB in a Lambda on python3.12 arm64), with room to spare.
RUNTIME_OVERHEAD_MB = 160.0
# onnxruntime keeps the initializers (most of the file) and needs working memory besides;
# while a session is built, the file's bytes are held too. Twice the file is a fair bound for
# the MLPs dropflow trains.
SESSION_MEMORY_FACTOR = 2.0
# The predict function's memory when nothing says otherwise (its MemorySize in template.yaml).
DEFAULT_FUNCTION_MEMORY_MB = 1024
DEFAULT_MAX_MODEL_MB = 200.0


def session_memory_mb(model_bytes: int, factor: float = SESSION_MEMORY_FACTOR) -> float:
    """The memory, in MB, an onnxruntime session of a `model_bytes`-byte graph is estimated
    to need."""
    return model_bytes / MB * factor


def physical_memory_mb() -> float | None:
    """This machine's memory in MB (None where the OS does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / MB
    except (AttributeError, OSError, ValueError):
        return None


def default_cache_budget_mb(environ: dict[str, str] | None = None) -> float:
    """The memory the session cache may use when DROPFLOW_MODEL_CACHE_MB is not set.

    In a Lambda: the function's memory (AWS_LAMBDA_FUNCTION_MEMORY_SIZE) less what the runtime
    takes, the same room the routing decision gave the model. Elsewhere (the container tier,
    the local runtime): 80% of the machine's memory less the same overhead.
    """
    env = os.environ if environ is None else environ
    function_mb = env.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE")
    if function_mb and function_mb.isdigit():
        total = float(function_mb)
    else:
        total = 0.8 * (physical_memory_mb() or 4096.0)
    # Never less than a small model's worth: a budget of 0 would still serve one model alone.
    return max(64.0, total - RUNTIME_OVERHEAD_MB)


@dataclass(frozen=True)
class RoutePolicy:
    """The thresholds of the routing decision (settings DROPFLOW_LAMBDA_MAX_MODEL_MB,
    DROPFLOW_LAMBDA_MEMORY_MB and DROPFLOW_SESSION_MEMORY_FACTOR)."""

    max_model_mb: float = DEFAULT_MAX_MODEL_MB
    function_memory_mb: float = DEFAULT_FUNCTION_MEMORY_MB
    memory_factor: float = SESSION_MEMORY_FACTOR
    overhead_mb: float = RUNTIME_OVERHEAD_MB

    @classmethod
    def from_settings(cls, settings: Any) -> RoutePolicy:
        return cls(
            max_model_mb=settings.lambda_max_model_mb,
            function_memory_mb=settings.lambda_memory_mb,
            memory_factor=settings.session_memory_factor,
        )


@dataclass(frozen=True)
class RouteDecision:
    """Where a version is served and why (the reason is recorded with the version)."""

    route: Route
    reason: str
    model_mb: float
    memory_mb: float  # the session's memory: the spec's `serving.memory_mb`, else the estimate


def decide_route(
    model_bytes: int,
    policy: RoutePolicy | None = None,
    *,
    override: str | None = None,
    memory_mb: float | None = None,
) -> RouteDecision:
    """The route of a version whose model.onnx has `model_bytes` bytes.

    `override` is the spec's `serving.route` (`lambda`, `container`, or `auto`/None to decide
    by size); `memory_mb` the spec's `serving.memory_mb`, which replaces the estimate.
    """
    policy = policy or RoutePolicy()
    model_mb = model_bytes / MB
    memory = (
        memory_mb if memory_mb is not None else session_memory_mb(model_bytes, policy.memory_factor)
    )
    sizes = f"model.onnx {model_mb:.1f} MB, session about {memory:.0f} MB"
    if override in ROUTES:
        route: Route = LAMBDA if override == LAMBDA else CONTAINER
        return RouteDecision(
            route, f"serving.route is {override} in the spec ({sizes})", model_mb, memory
        )
    room = policy.function_memory_mb - policy.overhead_mb
    if model_mb > policy.max_model_mb:
        why = f"{sizes}: larger than the {policy.max_model_mb:g} MB the predict function takes"
        return RouteDecision(CONTAINER, why, model_mb, memory)
    if memory > room:
        why = (
            f"{sizes}: more than the {room:.0f} MB left in the predict function's "
            f"{policy.function_memory_mb:g} MB"
        )
        return RouteDecision(CONTAINER, why, model_mb, memory)
    return RouteDecision(LAMBDA, f"{sizes}: fits the predict function", model_mb, memory)
