"""Model names, job ids and version ids: the identifiers that appear in keys and URLs."""

from __future__ import annotations

import re
import secrets

from dropflow.errors import InvalidName
from dropflow.vocabulary.clock import compact_utc

MODEL_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
JOB_ID = re.compile(
    r"(?P<model>[a-z0-9][a-z0-9-]{0,62})-(?P<stamp>\d{8}T\d{6}Z)-(?P<short>[0-9a-f]{6})"
)
VERSION = re.compile(r"v\d{8}T\d{6}Z-[0-9a-f]{6}")


def check_model_name(name: str) -> str:
    """Return `name` if it is a valid model name, else raise InvalidName saying why."""
    if not isinstance(name, str) or not MODEL_NAME.fullmatch(name):
        raise InvalidName(
            f"invalid model name {name!r}: use 1-63 characters of a-z, 0-9 and '-', "
            "starting with a letter or digit"
        )
    return name


def check_version(version: str) -> str:
    """Return `version` if it looks like a dropflow version id, else raise InvalidName."""
    if not isinstance(version, str) or not VERSION.fullmatch(version):
        raise InvalidName(f"invalid version {version!r}: expected e.g. v20261123T101500Z-3f9a0c")
    return version


def new_job_id(model: str, now: float | None = None) -> str:
    """A fresh job id, `<model>-<UTC stamp>-<6 hex>` (stamp of `now`, epoch seconds, default
    the current time); sorts by creation time per model."""
    check_model_name(model)
    return f"{model}-{compact_utc(now)}-{secrets.token_hex(3)}"


def model_of_job(job_id: str) -> str:
    """The model a job id belongs to; raises InvalidName for a malformed id."""
    m = JOB_ID.fullmatch(job_id or "")
    if not m:
        raise InvalidName(f"invalid job id {job_id!r}: expected <model>-<YYYYMMDDTHHMMSSZ>-<6 hex>")
    return m["model"]


def short_job_id(job_id: str) -> str:
    model_of_job(job_id)
    return job_id.rsplit("-", 1)[1]


def new_version(job_id: str, now: float | None = None) -> str:
    """A version id `v<UTC stamp>-<short job id>` (stamp of `now`, epoch seconds, default the
    current time); versions sort by publish time."""
    return f"v{compact_utc(now)}-{short_job_id(job_id)}"
