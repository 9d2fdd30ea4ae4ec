"""Loopback helpers for tests that start servers of their own."""

from __future__ import annotations

import socket
import time
from http import HTTPStatus

import requests


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (free a moment ago)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_ready(url: str, seconds: float = 30, *, alive=lambda: True) -> int:
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
