"""The container tier's ASGI application: HTTP requests in, API Gateway proxy events to the
predict function's own endpoint (dropflow.serving.endpoint), proxy answers back out.

Each request becomes the REST proxy event the predict function would get from API Gateway
(dropflow.serving.proxy_event, as the local gateway builds it), the endpoint answers it in a
worker thread, and its answer (statusCode, headers, multiValueHeaders, base64 bodies) goes
back as HTTP. So a forwarded request is judged by the same code, with the same errors, as in
the function. The server's own part:
- a body over API Gateway's 10 MB is a JSON 413 without calling the endpoint (the endpoint
  refuses over Lambda's 6 MB itself, as in the function), a request line and headers over
  its 10 KB a JSON 431;
- HEAD on any route answers as GET does, with no body;
- /v2/health/ready is 503 with Retry-After until `readiness` says the models are loaded;
  /v2/health/live, like every other route, answers at once;
- a method API Gateway has no such thing as is a JSON 405; a failing endpoint a JSON 502.
The lifespan starts the preloading thread and stops it.
"""

from __future__ import annotations

import contextlib
import sys
import time
import traceback
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from dropflow.serving.api import MAX_GATEWAY_BODY_BYTES, error_body
from dropflow.serving.proxy_event import (
    DRAIN_LIMIT_BYTES,
    INTERNAL_SERVER_ERROR,
    OWN_HEADERS,
    SUPPORTED_METHODS,
    Answer,
    ProxyEvents,
    json_answer,
    unpack,
)
from serving.readiness import Preloader, Readiness

Handler = Callable[[dict[str, Any], Any], dict[str, Any]]

READY_PATH = "/v2/health/ready"
# API Gateway REST's limit on the request line and headers together.
MAX_HEADER_BYTES = 10 * 1024
# While models load, how soon to ask again (the health check asks on its own schedule).
LOADING_RETRY_AFTER = 5
# Requests a worker runs at once (each in a thread; predictions run in onnxruntime, which
# releases the GIL). More wait on the event loop, where they cost a socket and nothing else.
REQUEST_THREADS = 8
# What the endpoint is told of its time: the forwarding function gives up after its own
# timeout (DROPFLOW_CONTAINER_TIMEOUT_SECONDS), within API Gateway's 29 s.
REQUEST_SECONDS = 29.0
# The event's stage and API id: the container tier is not API Gateway, and says so.
STAGE = API_ID = "container"
ACCOUNT_ID = "000000000000"


@dataclass
class RequestContext:
    """What the endpoint's resolver is given in place of a Lambda context."""

    aws_request_id: str
    function_name: str = "ContainerTier"
    _deadline: float = field(default_factory=lambda: time.monotonic() + REQUEST_SECONDS)

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class ProxyApp:
    """The ASGI app (every path, every method) that turns requests into proxy events."""

    def __init__(
        self,
        handler: Handler,
        readiness: Readiness,
        *,
        max_body_bytes: int = MAX_GATEWAY_BODY_BYTES,
        max_header_bytes: int = MAX_HEADER_BYTES,
        threads: int = REQUEST_THREADS,
    ) -> None:
        self.handler = handler
        self.readiness = readiness
        self.max_body_bytes = max_body_bytes
        self.max_header_bytes = max_header_bytes
        self.events = ProxyEvents(stage=STAGE, api_id=API_ID, account_id=ACCOUNT_ID)
        self._threads = threads
        self._limiter: anyio.CapacityLimiter | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            response = await self.respond(Request(scope, receive))
        except Exception:  # our bug, never the client's: in the API's words, not Starlette's
            traceback.print_exc(file=sys.stderr)
            response = _response(json_answer(HTTPStatus.BAD_GATEWAY, INTERNAL_SERVER_ERROR))
        await response(scope, receive, send)

    async def respond(self, request: Request) -> Response:
        method = request.method
        if method not in SUPPORTED_METHODS:
            allowed = ", ".join(SUPPORTED_METHODS)
            message = f"{method} is not an API Gateway method; use one of {allowed}"
            return _refusal(HTTPStatus.METHOD_NOT_ALLOWED, message, {"Allow": allowed})
        head = _head_size(request.scope)
        if head > self.max_header_bytes:
            message = (
                f"request line and headers are {head} bytes; "
                f"the limit is {self.max_header_bytes} bytes"
            )
            return _refusal(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, message)
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        if request.url.path == READY_PATH and not self.readiness.is_ready():
            return _response(
                json_answer(HTTPStatus.SERVICE_UNAVAILABLE, {"ready": False}),
                {"Retry-After": str(LOADING_RETRY_AFTER)},
            )
        target = request.scope.get("raw_path", b"").decode("latin-1") or request.url.path
        if request.scope.get("query_string"):
            target += "?" + request.scope["query_string"].decode("latin-1")
        client = request.client.host if request.client else "127.0.0.1"
        server = request.scope.get("server") or ("localhost", 80)
        event = self.events.event_for(
            # HEAD answers as GET does; the server sends no body with it.
            "GET" if method == "HEAD" else method,
            target,
            [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.scope["headers"]],
            body,
            client,
            domain=f"{server[0]}:{server[1]}",
        )
        if self._limiter is None:  # made here: it belongs to the running event loop
            self._limiter = anyio.CapacityLimiter(self._threads)
        answer = await anyio.to_thread.run_sync(self._invoke, event, limiter=self._limiter)
        return _response(answer)

    def _invoke(self, event: dict[str, Any]) -> Answer:
        context = RequestContext(aws_request_id=event["requestContext"]["requestId"])
        try:
            return unpack(self.handler(event, context))
        except Exception:
            # Not the client's doing, and the endpoint answers its own errors: this is a bug.
            traceback.print_exc(file=sys.stderr)
            return json_answer(HTTPStatus.BAD_GATEWAY, INTERNAL_SERVER_ERROR)

    async def _body(self, request: Request) -> bytes | Response:
        """The whole body, or the refusal of one over `max_body_bytes`."""
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            # The server reads and drops the rest after this answer; past the drain limit it
            # closes the connection instead.
            close = int(declared) > DRAIN_LIMIT_BYTES
            return self._too_large(int(declared), close=close)
        chunks: list[bytes] = []
        size = 0
        try:
            async for chunk in request.stream():  # a chunked body has no length to check first
                size += len(chunk)
                if size > self.max_body_bytes:
                    if size > DRAIN_LIMIT_BYTES:
                        return self._too_large(size, close=True, at_least=True)
                    continue  # drained, not kept
                chunks.append(chunk)
        except ClientDisconnect:  # nobody to answer: the server sends nothing
            return Response(status_code=HTTPStatus.BAD_REQUEST)
        if size > self.max_body_bytes:
            return self._too_large(size)
        return b"".join(chunks)

    def _too_large(self, size: int, *, close: bool = False, at_least: bool = False) -> Response:
        message = (
            f"request body is {'over ' if at_least else ''}{size} bytes; "
            f"the limit is {self.max_body_bytes} bytes"
        )
        extra = {"Connection": "close"} if close else {}
        return _refusal(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, message, extra)


def _head_size(scope: Scope) -> int:
    """The request line and headers' size, about as sent (separators included)."""
    line = len(scope["method"]) + len(scope.get("raw_path") or b"") + len(scope["query_string"])
    return line + 11 + sum(len(k) + len(v) + 4 for k, v in scope["headers"])


def _refusal(status: HTTPStatus, message: str, extra: dict[str, str] | None = None) -> Response:
    return _response(json_answer(status, error_body(status, message)), extra)


def _response(answer: Answer, extra: dict[str, str] | None = None) -> Response:
    status, pairs, data = answer
    response = Response(content=data, status_code=status)  # sets Content-Length only
    headers = [(name, value) for name, value in pairs if name.lower() not in OWN_HEADERS]
    for name, value in [*headers, *(extra or {}).items()]:
        response.raw_headers.append((name.lower().encode("latin-1"), value.encode("latin-1")))
    return response


def build_app(handler: Handler, preloader: Preloader, **options: Any) -> Starlette:
    """The Starlette application serving `handler` (an endpoint's `handle`), ready when
    `preloader.readiness` is; its lifespan runs `preloader`."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        preloader.start()
        try:
            yield
        finally:
            await anyio.to_thread.run_sync(preloader.stop)

    proxy = ProxyApp(handler, preloader.readiness, **options)
    return Starlette(routes=[Route("/{path:path}", proxy)], lifespan=lifespan)
