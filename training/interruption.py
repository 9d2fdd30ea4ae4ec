"""Spot interruption notices, as the training job on an instance sees them: through IMDSv2.

EC2 announces that it takes a spot instance back two minutes ahead at
`meta-data/spot/instance-action` (404 until then, then `{"action": "terminate"|"stop"|
"hibernate", "time": "..."}`), and may send a rebalance recommendation earlier at
`meta-data/events/recommendations/rebalance` (`{"noticeTime": "..."}`). InterruptionWatcher
polls both from a daemon thread and sets `.event` when either appears, so the training loop
only checks a flag at each step boundary, checkpoints and exits "interrupted, resume me".

Every request carries an IMDSv2 session token from `PUT latest/api/token`; the token is
renewed before it expires and again whenever IMDS answers 401.

Where IMDS is: the `endpoint` argument, else AWS_EC2_METADATA_SERVICE_ENDPOINT (the local
runtime points it at its emulator, dropflow_dev.local.imds), else http://169.254.169.254 but only
when this machine looks like EC2. A machine with no metadata service (a laptop) gets one log
line and no polling; one where nothing answers the token request a few times in a row
before it ever worked also stops quietly, with one line.

Only the standard library: this runs on the instance before anything else is known, and must
not need boto3 (nor its credential chain, which would itself query IMDS).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ENDPOINT_ENV = "AWS_EC2_METADATA_SERVICE_ENDPOINT"
DEFAULT_ENDPOINT = "http://169.254.169.254"
SPOT_INTERRUPTION = "spot-interruption"
REBALANCE_RECOMMENDATION = "rebalance-recommendation"

_TOKEN_PATH = "/latest/api/token"
_SPOT_PATH = "/latest/meta-data/spot/instance-action"
_REBALANCE_PATH = "/latest/meta-data/events/recommendations/rebalance"
_TOKEN_HEADER = "X-aws-ec2-metadata-token"
_TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
_MAX_BODY = 64 * 1024  # IMDS answers are tiny; never read more than this
_IDENTITY_TAGS = {"DROPFLOW_JOB_ID": "job_id", "DROPFLOW_MODEL": "model"}

# Never through a proxy: IMDS is link-local (and EC2 refuses token requests that carry
# X-Forwarded-For), whatever HTTP_PROXY the instance or the developer's shell has.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass(frozen=True)
class Notice:
    """A notice seen at IMDS. `kind` is "spot-interruption" or "rebalance-recommendation";
    `detail` says what IMDS said (e.g. "terminate at 2026-11-23T10:17:00Z"); `seen_at` is
    when this process first saw it (epoch seconds)."""

    kind: str
    detail: str
    seen_at: float


class _Unavailable(Exception):
    """IMDS did not answer usefully (no connection, timeout, 5xx, or a token refused)."""


class _Imds:
    """A minimal IMDSv2 client: one base URL, a cached session token."""

    def __init__(self, base: str, timeout: float, token_ttl: int) -> None:
        self.base = base.rstrip("/")
        self.timeout = timeout
        self.token_ttl = token_ttl
        self._token: str | None = None
        self._renew_at = 0.0  # time.monotonic() after which the token is renewed
        self.answered = False  # a token was ever issued: there is an IMDS at `base`

    def get(self, path: str) -> str | None:
        """The body at `path` (200), or None (404). Raises _Unavailable otherwise."""
        if self._token is None or time.monotonic() >= self._renew_at:
            self._new_token()
        status, body = self._request("GET", path, {_TOKEN_HEADER: self._token or ""})
        if status == 401:
            # Expired or revoked (IMDS restarted, clock jumped): a fresh token, one retry.
            self._new_token()
            status, body = self._request("GET", path, {_TOKEN_HEADER: self._token or ""})
        if status == 200:
            return body
        if status == 404:
            return None
        raise _Unavailable(f"GET {path}: HTTP {status}")

    def _new_token(self) -> None:
        self._token = None
        status, body = self._request("PUT", _TOKEN_PATH, {_TTL_HEADER: str(self.token_ttl)})
        if status != 200 or not body:
            raise _Unavailable(f"PUT {_TOKEN_PATH}: HTTP {status}")
        self._token = body.strip()
        self.answered = True
        # Renew well before expiry (a quarter of the TTL, at most a minute early), so a
        # request never races the expiry; a 401 is still handled if it happens anyway.
        self._renew_at = time.monotonic() + self.token_ttl - min(60.0, self.token_ttl / 4)

    def _request(self, method: str, path: str, headers: dict[str, str]) -> tuple[int, str]:
        request = urllib.request.Request(self.base + path, method=method, headers=headers)
        try:
            with _OPENER.open(request, timeout=self.timeout) as response:
                return response.status, response.read(_MAX_BODY).decode("utf-8", "replace")
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, ""
        except (OSError, ValueError) as exc:  # URLError, refused, timeout, a bad URL
            raise _Unavailable(f"{method} {self.base}{path}: {exc}") from None


class InterruptionWatcher:
    """Polls IMDSv2 for a spot interruption or rebalance notice from a daemon thread.

    start() begins polling (every `poll_seconds`, each request bounded by `timeout`);
    stop() ends it and returns within about `timeout`. `event` is set, and `notice` filled,
    when a notice arrives; a later spot interruption replaces an earlier rebalance
    recommendation in `notice`, after which the watcher stops polling (nothing more to learn).
    """

    # IMDS's maximum. Tests lower it to exercise renewal.
    token_ttl_seconds: int = 21600
    # Token requests that must fail in a row, before any ever worked, to give up.
    give_up_after: int = 3

    def __init__(
        self, endpoint: str | None = None, *, poll_seconds: float = 5.0, timeout: float = 1.0
    ) -> None:
        self.endpoint = endpoint
        self.poll_seconds = poll_seconds
        self.timeout = timeout
        self.event = threading.Event()
        self.notice: Notice | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> InterruptionWatcher:
        """Start polling in the background; a second call does nothing."""
        if self._thread is not None:
            return self
        base = resolve_endpoint(self.endpoint)
        if base is None:
            log.info(
                "interruption watcher off: no instance metadata service here "
                "(not EC2, and %s is not set)",
                ENDPOINT_ENV,
            )
            return self
        # A fresh flag per run: a thread left over from a timed-out stop() stays stopped.
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run,
            args=(_Imds(base, self.timeout, self.token_ttl_seconds), self._stop),
            name="dropflow-interruption-watcher",
            daemon=True,  # never keeps the training process alive
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop polling. Waits for the thread at most a little over `timeout` seconds."""
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            # A request in flight finishes within `timeout` per socket operation.
            thread.join(2 * self.timeout + 1.0)

    def __enter__(self) -> InterruptionWatcher:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ the thread
    def _run(self, imds: _Imds, stop: threading.Event) -> None:
        failures = 0  # in a row
        outage_logged = False
        while not stop.is_set():
            try:
                done = self._poll(imds)
            except _Unavailable as exc:
                failures += 1
                if not imds.answered and failures >= self.give_up_after:
                    log.info(
                        "interruption watcher off: no instance metadata service at %s (%s)",
                        imds.base,
                        exc,
                    )
                    return
                if imds.answered and not outage_logged:  # once per outage, not per poll
                    outage_logged = True
                    log.warning("instance metadata service unavailable, still trying: %s", exc)
            else:
                if outage_logged:
                    log.info("instance metadata service answers again")
                failures, outage_logged = 0, False
                if done:
                    return
            stop.wait(self.poll_seconds)

    def _poll(self, imds: _Imds) -> bool:
        """One round of both paths; True once a spot interruption was seen."""
        body = imds.get(_SPOT_PATH)
        if body is not None:
            self._seen(SPOT_INTERRUPTION, _describe_spot(body))
            return True
        if self.notice is None:  # a rebalance only matters until something is seen
            body = imds.get(_REBALANCE_PATH)
            if body is not None:
                self._seen(REBALANCE_RECOMMENDATION, _describe_rebalance(body))
        return False

    def _seen(self, kind: str, detail: str) -> None:
        self.notice = Notice(kind=kind, detail=detail, seen_at=time.time())
        # The line first: whoever wakes on the event may read the log right away.
        log.warning("%s notice from EC2: %s", kind, detail)
        self.event.set()


def _describe_spot(body: str) -> str:
    try:
        data = json.loads(body)
        return f"{data['action']} at {data['time']}"
    except (ValueError, KeyError, TypeError):
        return body.strip()[:200]


def _describe_rebalance(body: str) -> str:
    try:
        return f"rebalance recommended at {json.loads(body)['noticeTime']}"
    except (ValueError, KeyError, TypeError):
        return body.strip()[:200]


# ---------------------------------------------------------------------- where and who
def resolve_endpoint(endpoint: str | None = None) -> str | None:
    """The IMDS base URL to use, or None when this machine has no metadata service.

    AWS_EC2_METADATA_DISABLED=true (the AWS SDKs' switch) turns the default off, not an
    explicit endpoint.
    """
    explicit = endpoint or os.environ.get(ENDPOINT_ENV)
    if explicit:
        return explicit.rstrip("/")
    if os.environ.get("AWS_EC2_METADATA_DISABLED", "").lower() == "true":
        return None
    return DEFAULT_ENDPOINT if looks_like_ec2() else None


def looks_like_ec2() -> bool:
    """True when the firmware says EC2 (Nitro: DMI vendor; Xen: hypervisor uuid).

    Cheap local file reads, so a laptop never waits on a link-local address that does not
    answer. Readable without root on Linux; elsewhere (macOS) always False.
    """
    probes = {
        "/sys/devices/virtual/dmi/id/sys_vendor": "Amazon EC2",
        "/sys/devices/virtual/dmi/id/board_vendor": "Amazon EC2",
        "/sys/devices/virtual/dmi/id/bios_vendor": "Amazon EC2",
        "/sys/hypervisor/uuid": "ec2",
    }
    for path, prefix in probes.items():
        try:
            text = Path(path).read_text(errors="replace").strip()
        except OSError:
            continue
        if text.lower().startswith(prefix.lower()):
            return True
    return False


def instance_identity(
    endpoint: str | None = None, *, timeout: float = 1.0
) -> dict[str, Any] | None:
    """Who this instance is, from IMDS: how the EC2 path learns its job.

    Returns {"instance_id": str, "job_id": str|None, "model": str|None, "attempt": int|None}
    (the tags DROPFLOW_JOB_ID, DROPFLOW_MODEL, DROPFLOW_ATTEMPT; None where a tag is missing,
    or where the launch template does not enable InstanceMetadataTags), or None when there
    is no metadata service. Endpoint as for InterruptionWatcher.
    """
    base = resolve_endpoint(endpoint)
    if base is None:
        return None
    imds = _Imds(base, timeout, token_ttl=60)  # a handful of requests: a short-lived token
    try:
        instance_id = imds.get("/latest/meta-data/instance-id")
        if not instance_id:
            return None
        identity: dict[str, Any] = {"instance_id": instance_id.strip()}
        for tag, key in _IDENTITY_TAGS.items():
            value = imds.get(f"/latest/meta-data/tags/instance/{tag}")
            identity[key] = value.strip() if value else None
        attempt = imds.get("/latest/meta-data/tags/instance/DROPFLOW_ATTEMPT")
    except _Unavailable as exc:
        log.debug("no instance identity from %s: %s", base, exc)
        return None
    try:
        identity["attempt"] = int(attempt) if attempt else None
    except ValueError:
        identity["attempt"] = None
    return identity
