"""The HTTP API's contract, shared by the predict function and the local gateway.

One error shape for every 4xx/5xx: {"error": {"code": <status>, "message": "..."}}, the size
limits of the real path (API Gateway 10 MB, Lambda 6 MB synchronous payload), the checks
that must run before any body is parsed, raw image bodies (`POST /models/{name}/predict` with
Content-Type image/jpeg, image/png or image/webp: one image, pinned to a version with
`?version=`; `image_event` turns one into the JSON request it stands for), and the one JSON
reader of request bodies
(`parse_json`), which refuses what no client of this API sends but a fuzzer or an attacker
does: nesting deeper than MAX_JSON_DEPTH, integers longer than Python converts.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import sys
from collections.abc import Mapping, Sequence
from http import HTTPStatus
from typing import Any

from dropflow.errors import DropflowError

JSON = "application/json"
# `curl -d` labels every body application/x-www-form-urlencoded unless told otherwise.
FORM = "application/x-www-form-urlencoded"
# Lambda's synchronous invocation payload limit: a larger event never reaches the function in
# AWS, so locally it is refused with the same status API Gateway would give.
MAX_LAMBDA_BODY_BYTES = 6 * 1024 * 1024
# API Gateway REST's payload limit: the local gateway refuses more without calling the handler.
MAX_GATEWAY_BODY_BYTES = 10 * 1024 * 1024
_METHODS_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
PREDICT_PATH = re.compile(r"/models/([^/]+)/predict")
# The image types a raw predict body may have (template.yaml's BinaryMediaTypes: API Gateway
# hands such a body to the function base64-encoded, in its 6 MB payload).
IMAGE_MEDIA_TYPES = frozenset({"image/jpeg", "image/png", "image/webp"})
# A raw image arrives base64-encoded, 4 characters for 3 bytes, within Lambda's 6 MB payload,
# beside the event's other fields (headers, request context: a few kB). The same base64 text in
# a JSON body is what a container-routed image is forwarded as, under the same 6 MB limit.
EVENT_ALLOWANCE_BYTES = 16 * 1024
MAX_IMAGE_BODY_BYTES = (MAX_LAMBDA_BODY_BYTES - EVENT_ALLOWANCE_BYTES) * 3 // 4
# The key of the event that image_event marks with the raw body's media type: an event key
# that no HTTP request can set (a header could be forged by any client).
RAW_IMAGE_EVENT_KEY = "dropflowRawImageMediaType"
# The deepest this API's bodies nest is 5 levels ({"inputs": [{"data": [[...]]}]} in the Open
# Inference Protocol). Far deeper is refused before any code walks the value: how deep
# Python's json parses depends on the interpreter (python3.11 stops near 1,000 levels,
# python3.12 parses 1,000 and stops near 2,000), and code that walks a value recursively
# stops sooner, with a RecursionError that would be a 500.
MAX_JSON_DEPTH = 32
# Outside its strings, JSON text is ASCII: deleting every ASCII character but the brackets
# leaves its structure.
_ALL_BUT_BRACKETS = str.maketrans(
    "", "", "".join(c for c in map(chr, range(128)) if c not in "[]{}")
)


class UnreadableBody(DropflowError, ValueError):
    """A request body that is JSON but more than this API reads (HTTP 400): nested deeper
    than MAX_JSON_DEPTH, or an integer with more digits than Python converts."""


def error_body(status: int, message: str) -> dict[str, Any]:
    """The body of every error answer."""
    return {"error": {"code": int(status), "message": message}}


def body_size(body: str | None, is_base64: bool) -> int:
    """Size in bytes of a proxy event's body (decoded when base64)."""
    if not body:
        return 0
    if is_base64:
        # 4 base64 characters carry 3 bytes; exact enough for a limit, without decoding 6 MB.
        return len(body) * 3 // 4 - body[-2:].count("=")
    return len(body.encode("utf-8", errors="surrogatepass"))


def content_type_problem(method: str, raw: str | None) -> str | None:
    """Why a request's Content-Type (`raw`, as sent) is unacceptable, or None (absent means
    JSON)."""
    if method.upper() not in _METHODS_WITH_BODY:
        return None
    media_type = _media_type(raw)
    if media_type in ("", JSON):
        return None
    images = ""
    if media_type in IMAGE_MEDIA_TYPES:
        images = " (a raw image body goes to POST /models/<name>/predict only)"
    return f"Content-Type {(raw or '').strip()!r} is not supported{images}: send the body as {JSON}"


def content_type(event: Mapping[str, Any]) -> str | None:
    """The request's Content-Type header, any case, or None. API Gateway fills both header
    maps; a hand-written event may carry only one of them, and `headers` wins."""
    found = None
    for name, value in (event.get("headers") or {}).items():
        if name.lower() == "content-type":
            found = value
    if found is not None:
        return found
    for name, values in (event.get("multiValueHeaders") or {}).items():
        if values and name.lower() == "content-type":
            found = values[-1]
    return found


def _media_type(raw: str | None) -> str:
    return (raw or "").split(";", 1)[0].strip().lower()


def _body_text(event: Mapping[str, Any]) -> str:
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        try:
            return base64.b64decode(body).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return ""
    return body


def json_event(event: dict[str, Any]) -> dict[str, Any]:
    """The event, with curl's default form content type relabelled JSON when the body is a
    JSON object or array: that is what `curl -X POST ... -d '{"instances": ...}'` means.
    A real form body keeps its label (and gets a 415)."""
    if _media_type(content_type(event)) != FORM:
        return event
    if _body_text(event).lstrip()[:1] not in ("{", "["):
        return event
    headers = event.get("headers") or {}
    multi = event.get("multiValueHeaders") or {}
    fixed = dict(event)
    fixed["headers"] = {k: JSON if k.lower() == "content-type" else v for k, v in headers.items()}
    fixed["multiValueHeaders"] = {
        k: [JSON] if k.lower() == "content-type" else v for k, v in multi.items()
    }
    return fixed


def raw_image_type(event: Mapping[str, Any]) -> str | None:
    """The media type of a raw image body sent to POST /models/{name}/predict, else None."""
    media_type = _media_type(content_type(event))
    if media_type not in IMAGE_MEDIA_TYPES or str(event.get("httpMethod") or "").upper() != "POST":
        return None
    return media_type if PREDICT_PATH.fullmatch(str(event.get("path") or "")) else None


def image_event(event: dict[str, Any]) -> dict[str, Any]:
    """The event of the JSON request a raw image body stands for: {"instances": ["<base64>"]}
    (a bare value: the model's one input field), with "version" from `?version=`, marked with
    RAW_IMAGE_EVENT_KEY; `event` itself when it is no raw image body."""
    media_type = raw_image_type(event)
    if media_type is None:
        return event
    body = event.get("body") or ""
    if not event.get("isBase64Encoded"):  # a local text body that happened to be UTF-8
        body = base64.b64encode(body.encode("utf-8", errors="surrogatepass")).decode("ascii")
    request: dict[str, Any] = {"instances": ["".join(body.split())]}
    version = (event.get("queryStringParameters") or {}).get("version")
    if version is not None:
        request["version"] = version
    text = json.dumps(request)
    fixed = dict(event)
    fixed["body"], fixed["isBase64Encoded"] = text, False
    fixed["headers"] = {**_without_content_type(event.get("headers")), "Content-Type": JSON}
    fixed["multiValueHeaders"] = {
        **_without_content_type(event.get("multiValueHeaders")),
        "Content-Type": [JSON],
    }
    fixed[RAW_IMAGE_EVENT_KEY] = media_type
    return fixed


def _without_content_type(headers: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (headers or {}).items() if k.lower() != "content-type"}


def precheck(event: Mapping[str, Any]) -> tuple[HTTPStatus, str] | None:
    """Refusals due before any parsing: an oversized body (413), a non-JSON content type
    (415), a body that is not UTF-8 text (400). None when the request may go on."""
    body, is_base64 = event.get("body"), bool(event.get("isBase64Encoded"))
    if raw_image_type(event) is not None:
        size = body_size(body, is_base64)
        if size > MAX_IMAGE_BODY_BYTES:
            return (
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"image body is {size} bytes; the limit is {MAX_IMAGE_BODY_BYTES} bytes (it "
                "travels base64-encoded in Lambda's 6 MB payload): send the image smaller",
            )
        return None
    # A character is at most 4 bytes in UTF-8: a short body needs no encoding to be measured.
    if body and len(body) > MAX_LAMBDA_BODY_BYTES // 4:
        size = body_size(body, is_base64)
        if size > MAX_LAMBDA_BODY_BYTES:
            return (
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"request body is {size} bytes; the limit is {MAX_LAMBDA_BODY_BYTES} bytes "
                "(send fewer instances per request)",
            )
    problem = content_type_problem(str(event.get("httpMethod") or ""), content_type(event))
    if problem:
        return HTTPStatus.UNSUPPORTED_MEDIA_TYPE, problem
    if is_base64 and body and not _utf8_base64(body):
        return HTTPStatus.BAD_REQUEST, "request body is not UTF-8 text: send JSON"
    if not is_base64 and body and not _utf8_text(body):
        return (
            HTTPStatus.BAD_REQUEST,
            "request body is not UTF-8 text (a lone surrogate): send JSON",
        )
    return None


def _utf8_text(body: str) -> bool:
    """Whether a text body can be UTF-8 at all: an event's JSON can carry a lone surrogate
    (an escape such as \\ud800) that no UTF-8 encoder, the forwarding client's included,
    accepts."""
    if body.isascii():
        return True
    try:
        body.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _utf8_base64(body: str) -> bool:
    """Whether a base64 body decodes to UTF-8 text (what the JSON parser will need)."""
    try:
        base64.b64decode(body, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):  # UnicodeDecodeError is a ValueError
        return False
    return True


def parse_json(text: str) -> Any:
    """The value of a JSON request body.

    Raises json.JSONDecodeError when it is not JSON (its message and position say where),
    UnreadableBody when it nests deeper than MAX_JSON_DEPTH or holds an integer longer than
    sys.get_int_max_str_digits() digits. NaN and Infinity parse as Python's json reads them;
    the input checks refuse them where a number is due.
    """
    try:
        value = json.loads(text)
    except RecursionError:
        raise _too_deep() from None
    except json.JSONDecodeError:
        raise
    except ValueError:
        # The only other ValueError json.loads raises: int() refusing a digit string longer
        # than the interpreter converts (quadratic work, hence Python's own limit).
        raise UnreadableBody(
            "request body holds an integer of more than "
            f"{sys.get_int_max_str_digits()} digits: no feature takes such a number "
            "(send numbers within float32's range)"
        ) from None
    if _nesting_exceeds(text, MAX_JSON_DEPTH):
        raise _too_deep()
    return value


def _too_deep() -> UnreadableBody:
    return UnreadableBody(
        f"request body nests arrays and objects more than {MAX_JSON_DEPTH} levels deep; "
        "a request to this API needs 5 at most"
    )


def _nesting_exceeds(text: str, limit: int) -> bool:
    """Whether the (valid) JSON `text` nests arrays and objects more than `limit` deep.

    Strings go first: in valid JSON a backslash escapes the one character after it, so
    dropping escaped backslashes, then escaped quotes, leaves quotes that only open and close
    strings. On the brackets left, each round of removing every adjacent pair removes exactly
    the innermost level; the text is as deep as the rounds it takes to empty. Every step is a
    pass in C: a 6 MB body is measured in a fraction of what json.loads took to parse it.
    """
    if text.count("[") + text.count("{") <= limit:
        return False
    unescaped = text.replace("\\\\", "").replace('\\"', "")
    outside_strings = "".join(unescaped.split('"')[::2])
    brackets = outside_strings.translate(_ALL_BUT_BRACKETS).replace("{", "[").replace("}", "]")
    for _ in range(limit):
        if not brackets:
            return False
        brackets = brackets.replace("[]", "")
    return bool(brackets)


def json_syntax_error(errors: Sequence[Mapping[str, Any]]) -> str | None:
    """The message for a body that is not JSON at all, or None when it parsed."""
    for error in errors:
        if error.get("type") == "json_invalid":
            detail = (error.get("ctx") or {}).get("error") or "invalid JSON"
            loc = error.get("loc") or ()
            position = f" at character {loc[1]}" if len(loc) > 1 else ""
            return f"request body is not valid JSON: {detail}{position}"
    return None


def readable_errors(errors: Sequence[Mapping[str, Any]]) -> str:
    """One line naming each invalid field and what is wrong with it.

    Union branch tags that pydantic puts in locations (e.g. 'list[list[any]]') are dropped:
    a client knows its fields, not our type annotations.
    """
    lines: list[str] = []
    for error in errors:
        path = [
            str(p)
            for p in error.get("loc") or ()
            if p != "body" and not (isinstance(p, str) and "[" in p)
        ]
        where = ".".join(path) or "body"
        message = str(error.get("msg") or error.get("type") or "invalid")
        message = message.removeprefix("Value error, ")
        if error.get("type") == "missing":
            message = "required" if path else "a JSON body is required"
        line = f"{where}: {message}"
        if line not in lines:
            lines.append(line)
    return "invalid request: " + "; ".join(lines)


def allowed_method(methods: Mapping[str, str], path: str) -> str | None:
    """The method the route matching `path` answers (rules like '/models/<name>'), or None."""
    for rule, method in methods.items():
        if re.fullmatch(re.sub(r"<\w+>", "[^/]+", rule), path):
            return method
    return None


def proxy_error(status: HTTPStatus, message: str) -> dict[str, Any]:
    """An API Gateway proxy answer carrying `error_body`, for refusals made before routing."""
    return {
        "statusCode": int(status),
        "headers": {"Content-Type": JSON},
        "body": json.dumps(error_body(status, message)),
        "isBase64Encoded": False,
    }
