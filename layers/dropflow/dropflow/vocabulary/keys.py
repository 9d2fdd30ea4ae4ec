"""Object keys: the one rule every ObjectStore adapter applies before touching a backend.

A key is a '/'-separated relative path such as `models/iris/v20261123T101500Z-3f9a0c/card.json`.
Both the directory store and S3 accept exactly the same keys, so data written through one
adapter can always be read through the other.
"""

from __future__ import annotations

from dropflow.ports import InvalidKey

# S3 refuses keys longer than 1024 UTF-8 bytes; most local filesystems refuse a path segment
# longer than 255 bytes. Holding both adapters to the stricter of the two keeps them equal.
MAX_KEY_BYTES = 1024
MAX_SEGMENT_BYTES = 255


def check_key(key: str) -> str:
    """Return `key` unchanged if it is a valid object key, else raise InvalidKey naming it.

    Valid: a non-empty '/'-separated relative path whose segments are non-empty, are not
    '.' or '..', do not start with '.' (dot names are reserved for the local store's own
    bookkeeping and for editor litter such as `.DS_Store`, and are never listed), and hold
    no backslash or NUL character.
    """
    if not isinstance(key, str) or not key:
        raise InvalidKey(f"invalid object key {key!r}: a key must be a non-empty string")
    problem = _key_problem(key)
    if problem:
        raise InvalidKey(f"invalid object key {key!r}: {problem}")
    return key


def is_valid_key(key: str) -> bool:
    """True if `check_key` would accept `key` (used to skip foreign objects when listing)."""
    return isinstance(key, str) and bool(key) and _key_problem(key) is None


def _key_problem(key: str) -> str | None:
    if key.startswith("/"):
        return "a key is relative and must not start with '/'"
    if "\\" in key:
        return "use '/' to separate segments, not '\\'"
    if "\x00" in key:
        return "a key must not contain a NUL character"
    try:
        encoded = key.encode("utf-8")
    except UnicodeEncodeError:
        return "a key must be valid Unicode text (no lone surrogates)"
    if len(encoded) > MAX_KEY_BYTES:
        return f"a key must be at most {MAX_KEY_BYTES} bytes long"
    for segment in key.split("/"):
        if not segment:
            return "a key must not have empty segments ('//' or a trailing '/')"
        if segment in (".", ".."):
            return "'.' and '..' segments are not allowed"
        if segment.startswith("."):
            return f"segment {segment!r} starts with '.', which is reserved"
        if len(segment.encode("utf-8")) > MAX_SEGMENT_BYTES:
            return f"segment {segment[:20]!r}... is longer than {MAX_SEGMENT_BYTES} bytes"
    return None
