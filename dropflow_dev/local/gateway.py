"""A local stand-in for API Gateway (REST, Lambda proxy integration) on 127.0.0.1.

Each HTTP request becomes the proxy event API Gateway would send (resource, pathParameters,
headers and multiValueHeaders, query strings, requestContext, body or base64 body), the
handler is called as Lambda would call it, and its proxy answer goes back over HTTP. So the
predict function answers the same bytes locally as behind API Gateway, with no Docker. The
translation itself is dropflow.serving.proxy_event, which the container tier's server uses too.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from dropflow.serving.api import MAX_GATEWAY_BODY_BYTES, error_body
from dropflow.serving.proxy_event import (
    DEFAULT_ROUTES,
    DRAIN_LIMIT_BYTES,
    INTERNAL_SERVER_ERROR,
    OWN_HEADERS,
    SUPPORTED_METHODS,
    ProxyEvents,
    json_answer,
    unpack,
)
from dropflow_dev.lambda_context import LOCAL_ACCOUNT, LambdaContext

Handler = Callable[[dict[str, Any], Any], Any]
log = logging.getLogger("dropflow.gateway")

STAGE = "local"
API_ID = "local"
# API Gateway REST's default integration timeout, given to the handler as its remaining time.
INTEGRATION_TIMEOUT_SECONDS = 29.0
# Idle keep-alive connections are dropped after this, so stop() never waits on a client.
IDLE_CONNECTION_SECONDS = 15.0
_CHUNK = 1024 * 1024


class Gateway:
    """An HTTP server that turns requests into API Gateway REST proxy events for `handler`.

    `start()` serves from a background thread; `url` is where; `stop()` shuts it down and
    joins the thread (bounded). Usable as a context manager.
    """

    def __init__(
        self,
        handler: Handler,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        routes: Sequence[str] = DEFAULT_ROUTES,
        function_name: str = "PredictFunction",
        max_body_bytes: int = MAX_GATEWAY_BODY_BYTES,
    ) -> None:
        self.handler = handler
        self.host, self.port = host, port
        self.events = ProxyEvents(routes, stage=STAGE, api_id=API_ID, account_id=LOCAL_ACCOUNT)
        self.function_name = function_name
        self.max_body_bytes = max_body_bytes
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        # A Lambda execution environment handles one event at a time, and handlers rely on it
        # (powertools' resolver keeps the current request on the module's `app`): connections
        # are served by many threads, the handler by one at a time.
        self._one_event_at_a_time = threading.Lock()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Bind (port 0 picks a free port) and serve in a daemon thread."""
        if self._server is not None:
            return
        try:
            server = _Server((self.host, self.port), _RequestHandler)
        except OSError as exc:
            raise OSError(
                exc.errno,
                f"cannot listen on {self.host}:{self.port} ({exc.strerror}); choose another port",
            ) from exc
        server.daemon_threads = True  # a hung client must not keep the process alive
        server.gateway = self  # type: ignore[attr-defined]
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name=f"dropflow-gateway-{self.port}",
            daemon=True,
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving and release the port; waits at most about `timeout` seconds."""
        server, thread = self._server, self._thread
        self._server, self._thread = None, None
        if server is None:
            return
        # shutdown() blocks until serve_forever notices, which it does every poll_interval.
        stopper = threading.Thread(target=server.shutdown, daemon=True)
        stopper.start()
        stopper.join(timeout)
        server.server_close()
        if thread is not None:
            thread.join(timeout)

    def __enter__(self) -> Gateway:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ translation
    def event_for(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        source_ip: str,
    ) -> dict[str, Any]:
        """The API Gateway REST proxy event (payload 1.0) for one HTTP request."""
        return self.events.event_for(
            method, target, headers, body, source_ip, domain=f"{self.host}:{self.port}"
        )

    def invoke(self, event: dict[str, Any]) -> tuple[int, list[tuple[str, str]], bytes]:
        """Call the handler and unpack its proxy answer; a crash or bad answer is a 502."""
        context = LambdaContext(
            function_name=self.function_name, timeout_seconds=INTEGRATION_TIMEOUT_SECONDS
        )
        try:
            with self._one_event_at_a_time:
                answer = self.handler(event, context)
            return unpack(answer)
        except Exception:
            # What API Gateway answers when the function fails or answers nonsense.
            traceback.print_exc(file=sys.stderr)
            return json_answer(HTTPStatus.BAD_GATEWAY, INTERNAL_SERVER_ERROR)


class _Server(ThreadingHTTPServer):
    # socketserver's default backlog of 5 resets connections when many clients connect at
    # once (as API Gateway's clients do); the kernel caps it at somaxconn anyway.
    request_queue_size = 128


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every answer carries Content-Length
    # Headers and body leave in two writes; with Nagle on, the second waits ~40 ms for the
    # client's delayed ACK on every request.
    disable_nagle_algorithm = True
    timeout = IDLE_CONNECTION_SECONDS
    server_version = "dropflow-gateway"

    @property
    def gateway(self) -> Gateway:
        return self.server.gateway  # type: ignore[attr-defined]

    def do_GET(self) -> None:
        self._serve()

    do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = do_GET

    def __getattr__(self, name: str) -> Any:
        # Any other method (TRACE, CONNECT, made-up ones): API Gateway REST has no such
        # method, so it is refused with the API's JSON error, never http.server's 501 page.
        if name.startswith("do_"):
            return self._unsupported_method
        raise AttributeError(name)

    def _unsupported_method(self) -> None:
        allowed = ", ".join(SUPPORTED_METHODS)
        self._refuse(
            HTTPStatus.METHOD_NOT_ALLOWED,
            f"{self.command} is not an API Gateway method; use one of {allowed}",
            {"Allow": allowed},
        )

    def _serve(self) -> None:
        started = time.perf_counter()
        body = self._read_body()
        if body is None:
            return  # already answered (413, 411 or 400)
        event = self.gateway.event_for(
            self.command, self.path, list(self.headers.items()), body, self.client_address[0]
        )
        status, headers, data = self.gateway.invoke(event)
        self._answer(status, headers, data)
        log.debug(
            "%s %s -> %s in %.1f ms",
            self.command,
            self.path,
            status,
            (time.perf_counter() - started) * 1000,
        )

    def _read_body(self) -> bytes | None:
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            self._refuse(HTTPStatus.LENGTH_REQUIRED, "send a Content-Length (no chunked bodies)")
            return None
        raw_length = self.headers.get("Content-Length")
        try:
            length = int(raw_length) if raw_length is not None else 0
            if length < 0:
                raise ValueError(raw_length)
        except ValueError:
            self._refuse(HTTPStatus.BAD_REQUEST, f"invalid Content-Length {raw_length!r}")
            return None
        if length > self.gateway.max_body_bytes:
            if length <= DRAIN_LIMIT_BYTES:
                self._discard(length)
            self._refuse(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"request body is {length} bytes; the limit is {self.gateway.max_body_bytes} bytes",
            )
            return None
        return self.rfile.read(length) if length else b""

    def _discard(self, length: int) -> None:
        while length > 0:
            chunk = self.rfile.read(min(_CHUNK, length))
            if not chunk:
                break
            length -= len(chunk)

    def _refuse(
        self, status: HTTPStatus, message: str, extra: Mapping[str, str] | None = None
    ) -> None:
        # The connection may hold unread body bytes: it cannot carry another request.
        _, headers, data = json_answer(status, error_body(status, message))
        headers = [*headers, *(extra or {}).items()]
        self._answer(int(status), headers, data, close=True)

    def _answer(
        self, status: int, headers: list[tuple[str, str]], data: bytes, *, close: bool = False
    ) -> None:
        self.send_response(status)
        for name, value in headers:
            if name.lower() not in OWN_HEADERS:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        if close:
            self.send_header("Connection", "close")  # also makes the server close it
        self.end_headers()
        if self.command != "HEAD" and data:
            self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)
