"""Adapters for the three ports, chosen by URL scheme (see dropflow.config).

Imports are lazy so that a local run never imports boto3 and a Lambda never imports sqlite3
adapters it does not use.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlparse

from dropflow.errors import ConfigError
from dropflow.ports import Compute, ObjectStore, Registry


def _path(url: str) -> Path:
    parsed = urlparse(url)
    if parsed.netloc not in ("", "localhost"):
        raise ConfigError(
            f"{url!r}: a local URL needs an absolute path, e.g. file:///home/me/bucket"
        )
    return Path(parsed.path)


@lru_cache(maxsize=8)
def open_store(url: str) -> ObjectStore:
    """The ObjectStore for `file:///dir` or `s3://bucket[/prefix]`, cached per URL."""
    scheme = urlparse(url).scheme
    if scheme == "file":
        from dropflow.adapters.local_store import DirectoryStore

        return DirectoryStore(_path(url))
    if scheme == "s3":
        from dropflow.adapters.s3_store import S3Store

        parsed = urlparse(url)
        return S3Store(parsed.netloc, prefix=parsed.path.lstrip("/"))
    raise ConfigError(f"DROPFLOW_STORE_URL {url!r}: scheme must be file:// or s3://")


@lru_cache(maxsize=8)
def open_registry(url: str) -> Registry:
    """The Registry for `sqlite:///file.db` or `dynamodb://table`, cached per URL."""
    scheme = urlparse(url).scheme
    if scheme == "sqlite":
        from dropflow.adapters.sqlite_registry import SqliteRegistry

        return SqliteRegistry(_path(url))
    if scheme == "dynamodb":
        from dropflow.adapters.dynamodb_registry import DynamoRegistry

        return DynamoRegistry(urlparse(url).netloc)
    raise ConfigError(f"DROPFLOW_REGISTRY_URL {url!r}: scheme must be sqlite:// or dynamodb://")


@lru_cache(maxsize=8)
def open_compute(url: str) -> Compute:
    """The Compute for `process:///state-dir` (child processes) or `ec2://<launch template>`.

    An EC2 compute reads its subnets and default instance types from
    $DROPFLOW_TRAINING_SUBNET_IDS and $DROPFLOW_TRAINING_INSTANCE_TYPES (comma lists) and
    tags its instances dropflow:stack=$DROPFLOW_STACK_NAME when that is set.

    A process compute hands its children the IMDS emulator at $DROPFLOW_LOCAL_IMDS_URL
    (set by the local runtime, which serves the same state dir), if any. Read when the
    adapter is first opened: the runtime sets it before then.
    """
    scheme = urlparse(url).scheme
    if scheme == "process":
        from dropflow.adapters.process_compute import ProcessCompute

        return ProcessCompute(
            _path(url), metadata_url=os.environ.get("DROPFLOW_LOCAL_IMDS_URL") or None
        )
    if scheme == "ec2":
        from dropflow.adapters.ec2_compute import DEFAULT_GPU_TYPES, Ec2Compute

        template = urlparse(url).netloc
        if not template:
            raise ConfigError(
                f"DROPFLOW_COMPUTE_URL {url!r}: name the launch template, e.g. ec2://lt-0abc123"
            )
        stack = os.environ.get("DROPFLOW_STACK_NAME")
        return Ec2Compute(
            template,
            subnet_ids=_comma_list("DROPFLOW_TRAINING_SUBNET_IDS"),
            instance_types=_comma_list("DROPFLOW_TRAINING_INSTANCE_TYPES") or DEFAULT_GPU_TYPES,
            tags={"dropflow:stack": stack} if stack else None,
        )
    raise ConfigError(f"DROPFLOW_COMPUTE_URL {url!r}: scheme must be process:// or ec2://")


def _comma_list(variable: str) -> tuple[str, ...]:
    """The non-empty items of a comma-separated environment variable."""
    return tuple(item.strip() for item in os.environ.get(variable, "").split(",") if item.strip())
