"""The container tier: where versions routed `container` are served (serving/ on EC2, or a
local process), seen from the predict function.

- `ContainerClient` forwards a request over HTTP (stdlib only: no dependency in the Lambda) to
  the tier's URL and returns its answer. A tier that cannot answer (connection refused, no
  healthy server behind the load balancer, a timeout, a 5xx) is `ContainerUnavailable`: a 503
  with Retry-After for the client, never a 500. A 4xx of the tier is the client's mistake,
  judged by the same code the predict function runs, and a 503 with dropflow's own error body
  is the server declining a version (its file is not its job's): `ContainerAnswered` carries
  either through unchanged.

The tier's capacity (the ContainerTier port, which promotion sizes) is in dropflow.ports.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import quote

from dropflow.errors import DropflowError, NotReadyError

log = logging.getLogger(__name__)

JSON = "application/json"
# How long a client should wait before retrying when no server of the tier answers: an
# instance boots, pulls the image and loads its models in a few minutes.
DEFAULT_RETRY_AFTER = 120
DEFAULT_TIMEOUT = 20.0
# The tier's answer headers worth passing on to the client.
_PASSED_HEADERS = ("retry-after", "allow")


class ContainerUnavailable(NotReadyError):
    """No server of the container tier answered (the message says why); retry later."""


@dataclass(eq=False)  # an exception compares and hashes by identity
class ContainerAnswered(DropflowError):
    """The container tier refused the request (4xx): its answer, to pass on unchanged."""

    status: int
    body: bytes
    content_type: str = JSON
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"the container tier answered {self.status}: {self.body[:200]!r}"


class ContainerClient:
    """Forwards predictions and inference requests to the tier at `url` (http://host[:port])."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = DEFAULT_TIMEOUT,
        retry_after: int = DEFAULT_RETRY_AFTER,
    ) -> None:
        self.url = url.rstrip("/")
        self.timeout = timeout
        self.retry_after = retry_after

    @functools.cached_property
    def _opener(self) -> Any:
        # urllib.request (with http.client, socket and ssl) is loaded by the first forward,
        # not at every cold start of a predict function that may never forward.
        import urllib.request

        # No proxies: the tier is on the VPC (or this machine); a proxy from the environment
        # would only stand in the way.
        return urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def predict(self, model: str, version: str, instances: Sequence[Any]) -> dict[str, Any]:
        """The tier's answer to POST /models/{model}/predict, pinned to `version`."""
        body = json.dumps({"instances": list(instances), "version": version}).encode()
        return self._json("POST", f"/models/{quote(model)}/predict", body)

    def infer(self, model: str, version: str, body: str | None) -> dict[str, Any]:
        """The tier's answer to an Open Inference Protocol infer request (JSON text)."""
        path = f"/v2/models/{quote(model)}/versions/{quote(version)}/infer"
        return self._json("POST", path, (body or "").encode())

    def model_ready(self, model: str, version: str) -> tuple[bool, str]:
        """(ready, why not) of `version` on the tier: ready once a server has loaded it."""
        path = f"/v2/models/{quote(model)}/versions/{quote(version)}/ready"
        try:
            self._call("GET", path, None)
        except ContainerUnavailable as exc:
            return False, str(exc)
        except ContainerAnswered as exc:
            if exc.status == HTTPStatus.SERVICE_UNAVAILABLE:
                return False, f"version {version!r} of model {model!r} is loading on the tier"
            raise
        return True, ""

    # ------------------------------------------------------------------ HTTP
    def _json(self, method: str, path: str, body: bytes | None) -> dict[str, Any]:
        data = self._call(method, path, body)
        try:
            answer = json.loads(data)
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            log.error("the container tier answered %s %s with no JSON object", method, path)
            raise self._unavailable("its answer was not a JSON object")
        return answer

    def _call(self, method: str, path: str, body: bytes | None) -> bytes:
        import urllib.error
        import urllib.request
        from http.client import HTTPException

        request = urllib.request.Request(
            self.url + path,
            data=body,
            method=method,
            headers={"Content-Type": JSON, "Accept": JSON, "User-Agent": "dropflow-predict"},
        )
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                return response.read()
        except urllib.error.HTTPError as error:
            data = error.read() or b""
            status = error.code
            headers = {
                name: value
                for name, value in error.headers.items()
                if name.lower() in _PASSED_HEADERS
            }
            content_type = error.headers.get("Content-Type") or JSON
            error.close()
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            reason = getattr(exc, "reason", exc)
            raise self._unavailable(_why(reason, self.timeout)) from None
        except (HTTPException, OSError) as exc:  # a reset or a garbled answer mid-way
            raise self._unavailable(f"the connection failed ({type(exc).__name__})") from None
        if status == HTTPStatus.SERVICE_UNAVAILABLE and (path.endswith("/ready") or _refusal(data)):
            # The server itself declined (a version it will not serve: the message says why).
            raise ContainerAnswered(status, data, content_type, headers)
        if status >= 500:
            # The load balancer's 502/503/504 (no healthy server yet) or the server's own fault:
            # either way not the client's doing, and worth a retry once the tier recovers.
            log.warning(
                "the container tier answered %s to %s %s: %.300r", status, method, path, data
            )
            raise self._unavailable(f"it answered {status}")
        raise ContainerAnswered(status, data, content_type, headers)

    def _unavailable(self, why: str) -> ContainerUnavailable:
        return ContainerUnavailable(
            f"the model is served by the container tier for large models, which cannot answer "
            f"yet ({why}); it is being started: retry in {self.retry_after} s",
            retry_after=self.retry_after,
        )


def _refusal(data: bytes) -> bool:
    """Whether a 503's body is dropflow's own error (an object under "error"), not a load
    balancer's page: the server answered, and its reason is worth passing on."""
    try:
        answer = json.loads(data)
    except ValueError:
        return False
    return isinstance(answer, dict) and isinstance(answer.get("error"), dict | str)


def _why(reason: Any, timeout: float) -> str:
    import socket

    if isinstance(reason, TimeoutError | socket.timeout):
        return f"no answer within {timeout:g} s"
    if isinstance(reason, ConnectionRefusedError):
        return "no server is listening"
    if isinstance(reason, socket.gaierror):
        return "its address does not resolve"
    return f"connection failed: {reason}"
