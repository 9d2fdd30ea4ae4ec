"""Loopback helpers for tests that start servers of their own, and the one way a test waits.

A test never sleeps for a fixed time and hopes the work is done: it polls the state that says
so (a file, a record, a status, a count) with `wait_until`, bounded generously enough for a
loaded 2-core machine. A bound costs nothing when the work is quick: the wait ends as soon as
the state is there.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import TypeVar

import requests

T = TypeVar("T")

# The most a test lets a slow tool (samtranslator, cfn-lint, checkov, sam local) run in a
# subprocess: a bound for a loaded 2-core machine, never a wait. Tests that run one carry
# pytest.mark.timeout(TOOL_TEST_SECONDS), above it.
TOOL_SECONDS = 600
TOOL_TEST_SECONDS = 900


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.05,
    *,
    what: str | Callable[[], str] = "",
) -> T:
    """The first truthy value of `predicate()`, polled every `interval` s.

    Raises AssertionError after `timeout` s, naming `what` (or a callable giving more detail
    at that moment, such as a console) and the last value seen.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            detail = what() if callable(what) else what
            raise AssertionError(
                f"not within {timeout:g} s: {detail or predicate} (last: {result!r})"
            )
        time.sleep(interval)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_ready(url: str, seconds: float = 120, *, alive=lambda: True) -> int:
    """The status of GET <url>/v2/health/ready once it is 200, polled every 0.1 s for at most
    `seconds` while `alive()`; 0 if it never was."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and alive():
        try:
            if requests.get(f"{url}/v2/health/ready", timeout=2).status_code == HTTPStatus.OK:
                return HTTPStatus.OK
        except requests.ConnectionError:
            pass
        time.sleep(0.1)
    return 0
