"""ObjectStore on an S3 bucket (optionally under a key prefix).

S3 already gives the semantics the port promises: a PutObject is atomic and strongly
consistent for reads and lists. This adapter only translates names, errors and ETags.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from dropflow.ports import ObjectInfo, ObjectNotFound
from dropflow.vocabulary.keys import check_key, is_valid_key

# Standard retry mode backs off on throttling (503 SlowDown) and transient network errors.
_CLIENT_CONFIG = Config(retries={"max_attempts": 8, "mode": "standard"})
_MISSING = {"NoSuchKey", "404", "NotFound"}
# The object tag that marks a retired object. The bucket's lifecycle rule (template.yaml,
# DataBucket) expires objects under models/ that carry exactly this tag and value.
RETIRED_TAG = "dropflow:retired"
RETIRED_VALUE = "true"


class S3Store:
    """An ObjectStore whose key `k` is the S3 object `s3://<bucket>/<prefix>/<k>`.

    `client` is a boto3 S3 client to use (tests pass one); by default one is created on
    first use and shared by every thread (boto3 clients are thread-safe), and a forked child
    process (a DataLoader worker reading images, training.images) creates its own: a client's
    pooled connections shared by two processes would interleave their requests.
    """

    def __init__(self, bucket: str, prefix: str = "", client: Any = None) -> None:
        if not bucket:
            raise ValueError("S3Store needs a bucket name")
        self.bucket = bucket
        prefix = prefix.strip("/")
        self.prefix = f"{prefix}/" if prefix else ""
        self._client = client
        self._client_lock = threading.Lock()
        self._own_client = client is None
        self._pid = os.getpid()

    def __repr__(self) -> str:
        return f"S3Store('s3://{self.bucket}/{self.prefix}')"

    @property
    def client(self) -> Any:
        """The boto3 S3 client, created once on first use (and once in a forked child)."""
        if self._own_client and self._pid != os.getpid():
            # The lock too: the parent may have held it while forking.
            self._client_lock = threading.Lock()
            self._client = None
            self._pid = os.getpid()
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = boto3.client("s3", config=_CLIENT_CONFIG)
        return self._client

    # ------------------------------------------------------------------ writes
    def put(self, key: str, data: bytes, *, content_type: str | None = None) -> ObjectInfo:
        """Store `data` at `key` (one PutObject: atomic); returns the new object's info."""
        extra = {"ContentType": content_type} if content_type else {}
        resp = self.client.put_object(
            Bucket=self.bucket, Key=self._full(key), Body=bytes(data), **extra
        )
        # PutObject does not return LastModified; the local clock is within a second of it
        # and saves a HeadObject per put.
        return ObjectInfo(key=key, size=len(data), etag=_etag(resp), modified=time.time())

    def put_file(self, key: str, path: Path, *, content_type: str | None = None) -> ObjectInfo:
        """Upload the local file `path` to `key` (multipart when large; still atomic)."""
        extra = {"ContentType": content_type} if content_type else None
        self.client.upload_file(str(path), self.bucket, self._full(key), ExtraArgs=extra)
        info = self.head(key)
        if info is None:  # only if someone deleted it in between
            raise ObjectNotFound(f"no object at key {key!r} right after uploading it")
        return info

    def delete(self, key: str) -> None:
        """Remove the object; S3 treats deleting a missing key as success."""
        self.client.delete_object(Bucket=self.bucket, Key=self._full(key))

    def set_retired(self, key: str, retired: bool) -> None:
        """Tag the object `dropflow:retired=true`, or remove its tags; raises ObjectNotFound.

        The bucket's lifecycle rule expires tagged objects under models/ a number of days
        after they were written (S3 counts from the object's creation, not from the tag).
        dropflow owns the tag set of what it marks: marking replaces any other tags, and
        unmarking removes them all (PutObjectTagging / DeleteObjectTagging, so the caller
        needs no s3:GetObjectTagging). Both act on the current version of the object.
        """
        with self._existing(key):
            if retired:
                tags = {"TagSet": [{"Key": RETIRED_TAG, "Value": RETIRED_VALUE}]}
                self.client.put_object_tagging(
                    Bucket=self.bucket, Key=self._full(key), Tagging=tags
                )
            else:
                self.client.delete_object_tagging(Bucket=self.bucket, Key=self._full(key))

    # ------------------------------------------------------------------ reads
    def is_retired(self, key: str) -> bool:
        """Whether the object is tagged `dropflow:retired=true`; raises ObjectNotFound."""
        with self._existing(key):
            resp = self.client.get_object_tagging(Bucket=self.bucket, Key=self._full(key))
        return any(
            tag["Key"] == RETIRED_TAG and tag["Value"] == RETIRED_VALUE
            for tag in resp.get("TagSet", [])
        )

    def get(self, key: str) -> bytes:
        """The object's bytes; raises ObjectNotFound naming the key."""
        with self._existing(key):
            resp = self.client.get_object(Bucket=self.bucket, Key=self._full(key))
        with resp["Body"] as body:
            return body.read()

    def get_start(self, key: str, count: int) -> bytes:
        """The object's first `count` bytes, by a ranged GetObject; raises ObjectNotFound."""
        return self._ranged(key, f"bytes=0-{count - 1}", count)

    def get_end(self, key: str, count: int) -> bytes:
        """The object's last `count` bytes, by a suffix-ranged GetObject; raises
        ObjectNotFound."""
        return self._ranged(key, f"bytes=-{count}", count)

    def _ranged(self, key: str, byte_range: str, count: int) -> bytes:
        if count <= 0:
            return b""
        try:
            with self._existing(key):
                resp = self.client.get_object(
                    Bucket=self.bucket, Key=self._full(key), Range=byte_range
                )
        except ClientError as exc:
            # S3 answers 416 InvalidRange when no byte of the range exists: an empty object.
            if _code(exc) == "InvalidRange":
                return b""
            raise
        with resp["Body"] as body:
            return body.read(count)

    def get_file(self, key: str, path: Path) -> None:
        """Download the object to `path` atomically (parents created); raises ObjectNotFound."""
        full = self._full(key)
        dest = Path(path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.parent / f".{dest.name}.{secrets.token_hex(6)}.tmp"
        try:
            with self._existing(key):
                self.client.download_file(self.bucket, full, str(tmp))
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)

    def head(self, key: str) -> ObjectInfo | None:
        """The object's info, or None if there is no object at `key`."""
        try:
            resp = self.client.head_object(Bucket=self.bucket, Key=self._full(key))
        except ClientError as exc:
            if _code(exc) in _MISSING:
                return None
            raise
        return ObjectInfo(
            key=key,
            size=int(resp["ContentLength"]),
            etag=_etag(resp),
            modified=resp["LastModified"].timestamp(),
        )

    def list(self, prefix: str) -> list[ObjectInfo]:
        """Every object whose key starts with `prefix` (a plain string prefix), sorted by key.

        Objects whose keys dropflow would refuse (e.g. `.DS_Store` uploaded by hand) are
        skipped, as the directory store skips them, so both adapters list the same keys.
        """
        paginator = self.client.get_paginator("list_objects_v2")
        found = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
            for obj in page.get("Contents", []):
                key = obj["Key"][len(self.prefix) :]
                if not is_valid_key(key):
                    continue
                found.append(
                    ObjectInfo(
                        key=key,
                        size=int(obj["Size"]),
                        etag=obj["ETag"].strip('"'),
                        modified=obj["LastModified"].timestamp(),
                    )
                )
        # S3 already lists in UTF-8 byte order, which is str order; sorting keeps that a
        # promise of this adapter rather than of the service.
        found.sort(key=lambda info: info.key)
        return found

    # ------------------------------------------------------------------ internals
    def _full(self, key: str) -> str:
        return self.prefix + check_key(key)

    @contextlib.contextmanager
    def _existing(self, key: str) -> Iterator[None]:
        """Raise ObjectNotFound naming `key` for S3's answer that the object is not there."""
        try:
            yield
        except ClientError as exc:
            if _code(exc) in _MISSING:
                raise ObjectNotFound(
                    f"no object at key {key!r} in s3://{self.bucket}/{self.prefix}"
                ) from None
            raise


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _etag(resp: dict[str, Any]) -> str:
    return str(resp["ETag"]).strip('"')
