"""A small EC2 instance metadata service (IMDSv2) for the local runtime and the tests.

On EC2 a spot instance learns of its end from IMDS: `spot/instance-action` answers 404 until
EC2 decides to take the instance back, then a JSON notice two minutes ahead; a rebalance
recommendation may come earlier at `events/recommendations/rebalance`. The training job's
watcher (training.interruption) polls exactly those paths. This emulator serves them for
local "instances" (ProcessCompute's child processes), so `dropflow local interrupt` can
exercise the same code path as a real interruption.

One emulator serves many instances: the base URL of instance X is `{url}/{X}`, which
ProcessCompute hands to each child as AWS_EC2_METADATA_SERVICE_ENDPOINT. Requests then look
like `PUT {url}/{X}/latest/api/token`, `GET {url}/{X}/latest/meta-data/instance-id`.

IMDSv2 rules honoured (what the watcher must cope with on EC2):
- `PUT latest/api/token` needs `X-aws-ec2-metadata-token-ttl-seconds` (1..21600): else 400;
  a PUT carrying X-Forwarded-For is refused with 403, as EC2 does;
- every GET needs a live token issued for that instance in `X-aws-ec2-metadata-token`:
  else 401 (an expired token too, which is how clients learn to refresh).

All state is in files under one folder, the ProcessCompute state dir (`<home>/compute` in the
local runtime), so the CLI, the runtime and the emulator need no other channel:

    <state_dir>/tags/<instance-id>.json     {"DROPFLOW_JOB_ID": ..., ...}  (ProcessCompute)
    <state_dir>/notices/<instance-id>.json  {"spot": {...}, "rebalance": {...}}  (announce_*)

Tags are served at `meta-data/tags/instance[/<key>]` as with InstanceMetadataTags=enabled.
Files are written atomically (temp file + rename), so the server never reads half of one.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from dropflow.adapters.local.instance_state import (
    INSTANCE_ID,
    checked_instance_id,
    notice_path,
    read_json_object,
    read_tags,
)

TOKEN_HEADER = "X-aws-ec2-metadata-token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
MAX_TOKEN_TTL = 21600  # EC2's limit: six hours
_STOP_TIMEOUT = 5.0  # bounds stop(): serve_forever notices shutdown within its poll interval


# ---------------------------------------------------------------------- the server
class ImdsEmulator:
    """IMDSv2 over HTTP for the instances whose files are under `state_dir`.

    start() binds (port 0: any free port) and serves from a daemon thread; `url` is then
    `http://host:port`, and instance X's endpoint is `f"{url}/{X}"`. stop() is bounded.
    Also a context manager. `requests` records (method, path, status) of recent requests,
    for tests and debugging.
    """

    def __init__(self, state_dir: Path, host: str = "127.0.0.1", port: int = 0) -> None:
        self.state_dir = Path(state_dir).resolve()
        self.host, self.port = host, port
        self.requests: deque[tuple[str, str, int]] = deque(maxlen=1000)
        self._tokens: dict[str, tuple[str, float]] = {}  # token -> (instance id, expiry)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("ImdsEmulator: call start() first")
        return f"http://{self.host}:{self._server.server_address[1]}"

    def endpoint(self, instance_id: str) -> str:
        """The AWS_EC2_METADATA_SERVICE_ENDPOINT of `instance_id`."""
        return f"{self.url}/{checked_instance_id(instance_id)}"

    def start(self) -> ImdsEmulator:
        if self._server is not None:
            return self
        self.state_dir.mkdir(parents=True, exist_ok=True)
        server = ThreadingHTTPServer((self.host, self.port), _handler_for(self))
        server.daemon_threads = True  # a stuck client never holds up stop()
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="dropflow-imds",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        # shutdown() waits for serve_forever to return, with no timeout of its own: run it
        # aside and wait a bounded time, so stop() can never hang the runtime's exit.
        stopper = threading.Thread(target=server.shutdown, daemon=True)
        stopper.start()
        stopper.join(_STOP_TIMEOUT)
        if thread is not None:
            thread.join(_STOP_TIMEOUT)
        server.server_close()

    def revoke_tokens(self) -> None:
        """Invalidate every token issued so far (the next GET with one answers 401)."""
        with self._lock:
            self._tokens.clear()

    def __enter__(self) -> ImdsEmulator:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ request logic
    def issue_token(self, instance_id: str, ttl_header: str | None) -> tuple[int, str]:
        """(status, body) for `PUT latest/api/token`."""
        if ttl_header is None:
            return 400, "missing X-aws-ec2-metadata-token-ttl-seconds"
        try:
            ttl = int(ttl_header)
        except ValueError:
            ttl = 0
        if not 1 <= ttl <= MAX_TOKEN_TTL:
            return 400, f"token TTL must be 1..{MAX_TOKEN_TTL} seconds"
        token = secrets.token_urlsafe(40)
        now = time.monotonic()
        with self._lock:
            # Drop expired tokens, so a long-running emulator does not grow without bound.
            self._tokens = {t: v for t, v in self._tokens.items() if v[1] > now}
            self._tokens[token] = (instance_id, now + ttl)
        return 200, token

    def token_ok(self, instance_id: str, token: str | None) -> bool:
        if not token:
            return False
        with self._lock:
            found = self._tokens.get(token)
        return found is not None and found[0] == instance_id and found[1] > time.monotonic()

    def metadata(self, instance_id: str, path: str) -> tuple[int, str]:
        """(status, body) for `GET latest/meta-data/<path>` with a valid token."""
        path = path.strip("/")
        if path == "instance-id":
            return 200, instance_id
        if path == "tags/instance" or path.startswith("tags/instance/"):
            tags = read_tags(self.state_dir, instance_id)
            if tags is None:
                return 404, "Not Found"  # as EC2 without InstanceMetadataTags=enabled
            key = path.removeprefix("tags/instance").strip("/")
            if not key:
                return 200, "\n".join(sorted(tags))
            return (200, tags[key]) if key in tags else (404, "Not Found")
        notices = read_json_object(notice_path(self.state_dir, instance_id)) or {}
        if path == "spot/instance-action" and isinstance(notices.get("spot"), dict):
            spot = notices["spot"]
            return 200, json.dumps({"action": spot["action"], "time": spot["time"]})
        if path == "events/recommendations/rebalance" and isinstance(
            notices.get("rebalance"), dict
        ):
            return 200, json.dumps({"noticeTime": notices["rebalance"]["noticeTime"]})
        return 404, "Not Found"


def _handler_for(emulator: ImdsEmulator) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "dropflow-imds"

        def do_PUT(self) -> None:
            instance_id, rest = self._split()
            if instance_id is None or rest != "latest/api/token":
                self._answer(404, "Not Found")
            elif self.headers.get("X-Forwarded-For") is not None:
                self._answer(403, "Forbidden")  # EC2 refuses token requests via a proxy
            else:
                self._answer(*emulator.issue_token(instance_id, self.headers.get(TTL_HEADER)))

        def do_GET(self) -> None:
            instance_id, rest = self._split()
            if instance_id is None or not rest.startswith("latest/"):
                self._answer(404, "Not Found")
            elif not emulator.token_ok(instance_id, self.headers.get(TOKEN_HEADER)):
                self._answer(401, "Unauthorized")
            elif rest.startswith("latest/meta-data/"):
                self._answer(
                    *emulator.metadata(instance_id, rest.removeprefix("latest/meta-data/"))
                )
            else:
                self._answer(404, "Not Found")

        def _split(self) -> tuple[str | None, str]:
            """(instance id, the rest of the path) of `/<instance>/<rest>`."""
            instance_id, _, rest = self.path.split("?", 1)[0].lstrip("/").partition("/")
            if not INSTANCE_ID.fullmatch(instance_id):
                return None, rest
            return instance_id, rest

        def _answer(self, status: int, body: str) -> None:
            # Drain a request body, if any, so the client never sees a reset connection.
            length = int(self.headers.get("Content-Length") or 0)
            if length:
                with contextlib.suppress(OSError):
                    self.rfile.read(min(length, 65536))
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(data)))
            if status == 200 and self.command == "PUT":
                self.send_header(TTL_HEADER, self.headers.get(TTL_HEADER, ""))
            self.end_headers()
            self.wfile.write(data)
            emulator.requests.append((self.command, self.path, status))

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the runtime's console shows events, not every poll of every watcher

    return Handler
