"""In-memory ObjectStore and Registry for unit tests: the ports' semantics in a few dicts.

They honour what domain code relies on (atomic puts, sorted recursive listing, compare-and-set
with revisions, expiry treated as absence) and nothing more; the contract suites check the
real adapters.
"""

from __future__ import annotations

import copy
import hashlib
import threading
import time
from pathlib import Path
from typing import Any

from dropflow.ports import ObjectInfo, ObjectNotFound, Record
from dropflow.vocabulary.keys import check_key


class MemoryStore:
    """An ObjectStore in a dict. `puts` records every key written, in order."""

    def __init__(self) -> None:
        self.objects: dict[str, tuple[bytes, ObjectInfo]] = {}
        self.puts: list[str] = []
        self.retired: set[str] = set()
        self._lock = threading.Lock()

    def put(self, key: str, data: bytes, *, content_type: str | None = None) -> ObjectInfo:
        check_key(key)
        info = ObjectInfo(
            key=key,
            size=len(data),
            etag=hashlib.md5(data, usedforsecurity=False).hexdigest(),
            modified=time.time(),
        )
        with self._lock:
            self.objects[key] = (bytes(data), info)
            self.retired.discard(key)  # a new object starts kept, as on S3 (no tags)
            self.puts.append(key)
        return info

    def put_file(self, key: str, path: Path, *, content_type: str | None = None) -> ObjectInfo:
        return self.put(key, Path(path).read_bytes(), content_type=content_type)

    def get(self, key: str) -> bytes:
        check_key(key)
        with self._lock:
            if key not in self.objects:
                raise ObjectNotFound(f"no object at {key!r}")
            return self.objects[key][0]

    def get_file(self, key: str, path: Path) -> None:
        Path(path).write_bytes(self.get(key))

    def get_start(self, key: str, count: int) -> bytes:
        return self.get(key)[: max(count, 0)]

    def get_end(self, key: str, count: int) -> bytes:
        data = self.get(key)
        return data[max(len(data) - max(count, 0), 0) :]

    def head(self, key: str) -> ObjectInfo | None:
        check_key(key)
        with self._lock:
            entry = self.objects.get(key)
        return entry[1] if entry else None

    def list(self, prefix: str) -> list[ObjectInfo]:
        with self._lock:
            return [
                info for key, (_, info) in sorted(self.objects.items()) if key.startswith(prefix)
            ]

    def delete(self, key: str) -> None:
        check_key(key)
        with self._lock:
            self.objects.pop(key, None)
            self.retired.discard(key)

    def set_retired(self, key: str, retired: bool) -> None:
        check_key(key)
        with self._lock:
            if key not in self.objects:
                raise ObjectNotFound(f"no object at {key!r}")
            (self.retired.add if retired else self.retired.discard)(key)

    def is_retired(self, key: str) -> bool:
        check_key(key)
        with self._lock:
            if key not in self.objects:
                raise ObjectNotFound(f"no object at {key!r}")
            return key in self.retired


class MemoryRegistry:
    """A Registry in a dict keyed by (pk, sk); revisions start at 1 and grow by 1 per write."""

    def __init__(self, clock: Any = time.time) -> None:
        self.records: dict[tuple[str, str], Record] = {}
        self.clock = clock
        self._lock = threading.Lock()

    def _live(self, pk: str, sk: str) -> Record | None:
        record = self.records.get((pk, sk))
        if (
            record is not None
            and record.expires_at is not None
            and record.expires_at <= self.clock()
        ):
            return None
        return record

    def _write(
        self, pk: str, sk: str, data: dict[str, Any], revision: int, expires_at: float | None
    ) -> Record:
        record = Record(pk, sk, copy.deepcopy(data), revision, expires_at)
        self.records[(pk, sk)] = record
        return record

    def get(self, pk: str, sk: str) -> Record | None:
        with self._lock:
            record = self._live(pk, sk)
            return copy.deepcopy(record) if record else None

    def put(
        self, pk: str, sk: str, data: dict[str, Any], *, expires_at: float | None = None
    ) -> Record:
        with self._lock:
            current = self._live(pk, sk)
            return self._write(pk, sk, data, (current.revision + 1) if current else 1, expires_at)

    def put_if_absent(
        self, pk: str, sk: str, data: dict[str, Any], *, expires_at: float | None = None
    ) -> bool:
        with self._lock:
            if self._live(pk, sk) is not None:
                return False
            self._write(pk, sk, data, 1, expires_at)
            return True

    def compare_and_set(
        self,
        pk: str,
        sk: str,
        data: dict[str, Any],
        *,
        expected_revision: int,
        expires_at: float | None = None,
    ) -> bool:
        with self._lock:
            current = self._live(pk, sk)
            if current is None or current.revision != expected_revision:
                return False
            self._write(pk, sk, data, expected_revision + 1, expires_at)
            return True

    def query(self, pk: str, *, sk_prefix: str = "") -> list[Record]:
        with self._lock:
            found = [
                self._live(p, s)
                for (p, s) in sorted(self.records)
                if p == pk and s.startswith(sk_prefix)
            ]
            return [copy.deepcopy(r) for r in found if r is not None]

    def delete(self, pk: str, sk: str) -> None:
        with self._lock:
            self.records.pop((pk, sk), None)
