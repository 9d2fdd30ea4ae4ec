"""HTTP <-> API Gateway REST proxy integration (payload 1.0), without any HTTP server.

`ProxyEvents.event_for` turns one HTTP request into the event API Gateway would send the
predict function (resource, pathParameters, headers and multiValueHeaders, query strings,
requestContext, body or base64 body); `unpack` turns the function's proxy answer back into a
status, header pairs and body bytes, as API Gateway does. The container tier's ASGI server
(serving/) and the local gateway (dropflow_dev.local.gateway) both translate with this, so a
request gets the same event, and the same bytes back, whichever of them it reaches.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

# The API's resources, as template.yaml declares them (the Open Inference Protocol lives under
# /v2). Other paths go to a greedy proxy resource, so the handler answers them (404) where
# API Gateway itself would refuse them.
DEFAULT_ROUTES = (
    "/health",
    "/openapi.json",
    "/models",
    "/models/{name}",
    "/models/{name}/predict",
    "/v2",
    "/v2/{proxy+}",
)
PROXY_RESOURCE = "/{proxy+}"
# The methods API Gateway REST passes to an integration; any other is refused as it refuses.
SUPPORTED_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
# What the answer's body is when the handler fails or answers nonsense, as API Gateway words it.
INTERNAL_SERVER_ERROR = {"message": "Internal server error"}
# A body over the size limit, up to this size, is read and dropped by the HTTP server, so the
# client can read the 413 (closing on a client still sending makes it see a reset instead);
# beyond it, the server just closes.
DRAIN_LIMIT_BYTES = 64 * 1024 * 1024
# Headers the HTTP server itself sets (or that only make sense hop by hop): never copied from
# a proxy answer.
OWN_HEADERS = frozenset({"content-length", "connection", "transfer-encoding", "date", "server"})

Answer = tuple[int, list[tuple[str, str]], bytes]


class _Route:
    """One API resource, e.g. `/models/{name}/predict`; `{x+}` is greedy as in API Gateway."""

    def __init__(self, resource: str) -> None:
        self.resource = resource
        pattern, last = "", 0
        for param in re.finditer(r"\{(\w+)(\+?)\}", resource):
            pattern += re.escape(resource[last : param.start()])
            pattern += f"(?P<{param[1]}>{'.+' if param[2] else '[^/]+'})"
            last = param.end()
        self.regex = re.compile(pattern + re.escape(resource[last:]))

    def match(self, path: str) -> dict[str, str] | None:
        found = self.regex.fullmatch(path)
        return found.groupdict() if found else None


class ProxyEvents:
    """Builds the REST proxy events of one API (its resources, stage and ids)."""

    def __init__(
        self,
        routes: Sequence[str] = DEFAULT_ROUTES,
        *,
        stage: str,
        api_id: str,
        account_id: str,
    ) -> None:
        self.routes = [_Route(r) for r in routes]
        self.stage, self.api_id, self.account_id = stage, api_id, account_id

    def resource_for(self, path: str) -> tuple[str, dict[str, str] | None]:
        """The API resource matching `path` and its path parameters (None when it has none)."""
        for route in self.routes:
            params = route.match(path)
            if params is not None:
                return route.resource, params or None
        return PROXY_RESOURCE, {"proxy": path.lstrip("/")}

    def event_for(
        self,
        method: str,
        target: str,
        headers: Sequence[tuple[str, str]],
        body: bytes,
        source_ip: str,
        *,
        domain: str,
    ) -> dict[str, Any]:
        """The proxy event for one HTTP request: `target` is the request line's path and
        query, `headers` the (name, value) pairs as sent, `domain` the Host to assume when the
        request names none."""
        split = urlsplit(target)
        path = unquote(split.path) or "/"
        resource, path_parameters = self.resource_for(path)
        single: dict[str, str] = {}
        multi: dict[str, list[str]] = {}
        for name, value in headers:
            single[name] = value  # API Gateway keeps the last value in `headers`
            multi.setdefault(name, []).append(value)
        query = parse_qs(split.query, keep_blank_values=True)
        text_body, is_base64 = body_for_event(body)
        now = datetime.now(UTC)
        request_id = str(uuid.uuid4())
        return {
            "resource": resource,
            "path": path,
            "httpMethod": method,
            "headers": single or None,
            "multiValueHeaders": multi or None,
            "queryStringParameters": {k: v[-1] for k, v in query.items()} or None,
            "multiValueQueryStringParameters": query or None,
            "pathParameters": path_parameters,
            "stageVariables": None,
            "requestContext": {
                "accountId": self.account_id,
                "apiId": self.api_id,
                "domainName": header(single, "host") or domain,
                "extendedRequestId": request_id,
                "httpMethod": method,
                "identity": {
                    "sourceIp": source_ip,
                    "userAgent": header(single, "user-agent"),
                    "accountId": None,
                    "caller": None,
                    "user": None,
                    "userArn": None,
                    "accessKey": None,
                    "cognitoIdentityId": None,
                    "cognitoIdentityPoolId": None,
                    "cognitoAuthenticationType": None,
                    "cognitoAuthenticationProvider": None,
                },
                "path": f"/{self.stage}{path}",
                "protocol": "HTTP/1.1",
                "requestId": request_id,
                "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
                "requestTimeEpoch": int(now.timestamp() * 1000),
                "resourceId": self.api_id,
                "resourcePath": resource,
                "stage": self.stage,
            },
            "body": text_body,
            "isBase64Encoded": is_base64,
        }


def body_for_event(body: bytes) -> tuple[str | None, bool]:
    """Text bodies go as they are; bytes that are not UTF-8 go base64 (binary media types)."""
    if not body:
        return None, False
    try:
        return body.decode("utf-8"), False
    except UnicodeDecodeError:
        return base64.b64encode(body).decode("ascii"), True


def header(headers: Mapping[str, str], name: str) -> str | None:
    """The value of header `name` (lower case) in `headers`, whatever its case there."""
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def unpack(answer: Any) -> Answer:
    """(status, header pairs, body bytes) of a proxy answer, as API Gateway sends it on.

    Raises ValueError when `answer` is not a proxy answer (API Gateway's 502).
    """
    if not isinstance(answer, Mapping) or "statusCode" not in answer:
        raise ValueError(f"handler answer is not an API Gateway proxy response: {answer!r:.200}")
    status = int(answer["statusCode"])
    pairs: list[tuple[str, str]] = []
    multi = answer.get("multiValueHeaders") or {}
    for name, values in multi.items():
        pairs.extend((name, str(v)) for v in values)
    for name, value in (answer.get("headers") or {}).items():
        if name not in multi:  # API Gateway merges both; multi values win on a clash
            pairs.append((name, str(value)))
    body = answer.get("body")
    if body is None:
        data = b""
    elif answer.get("isBase64Encoded"):
        try:
            data = base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("handler answer: isBase64Encoded but body is not base64") from exc
    else:
        data = str(body).encode("utf-8")
    return status, pairs, data


def json_answer(status: HTTPStatus, payload: Any) -> Answer:
    """A JSON answer of the HTTP server's own (a refusal, or the 502 of a failed handler)."""
    return int(status), [("Content-Type", "application/json")], json.dumps(payload).encode()
