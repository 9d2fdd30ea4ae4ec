"""Registry on a SQLite file: the embedded default's DynamoDB.

Several processes (the local runtime, training jobs, `dropflow` commands) and several threads
in each share one file. WAL lets readers run beside the single writer; every write is a
`BEGIN IMMEDIATE` transaction, which takes the write lock up front, so a conditional write's
check and its write can never interleave with another writer's.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dropflow.ports import Record

_SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    pk TEXT NOT NULL,
    sk TEXT NOT NULL,
    data TEXT NOT NULL,
    revision INTEGER NOT NULL,
    expires_at REAL,
    PRIMARY KEY (pk, sk)
) WITHOUT ROWID
"""
# A live record: never expires, or expires in the future. Bound to :now.
_LIVE = "(expires_at IS NULL OR expires_at > :now)"


class SqliteRegistry:
    """A Registry stored in the SQLite file `path` (its folder is created if missing).

    Safe to share between threads (each thread gets its own connection) and between
    processes (SQLite file locks). A writer waits up to `busy_timeout` seconds for the lock.
    """

    def __init__(self, path: Path, *, busy_timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        # Every open handle, weakly: a thread's handle (and connection) dies with the thread.
        self._handles: weakref.WeakSet[_Handle] = weakref.WeakSet()
        self._handles_lock = threading.Lock()
        with self._write() as db:
            db.execute(_SCHEMA)

    def __repr__(self) -> str:
        return f"SqliteRegistry({str(self.path)!r})"

    # ------------------------------------------------------------------ reads
    def get(self, pk: str, sk: str) -> Record | None:
        """The live record at (pk, sk), or None if there is none or it has expired."""
        row = (
            self._conn()
            .execute(
                f"SELECT pk, sk, data, revision, expires_at FROM items "
                f"WHERE pk = :pk AND sk = :sk AND {_LIVE}",
                {"pk": _part("pk", pk), "sk": _part("sk", sk), "now": time.time()},
            )
            .fetchone()
        )
        return _record(row) if row else None

    def query(self, pk: str, *, sk_prefix: str = "") -> list[Record]:
        """Live records under `pk` whose sk starts with `sk_prefix`, sorted by sk."""
        # `sk >= prefix` uses the primary key index; the startswith check ends the range.
        # SQLite's BINARY collation orders UTF-8 bytes, the order DynamoDB sorts keys in.
        rows = self._conn().execute(
            f"SELECT pk, sk, data, revision, expires_at FROM items "
            f"WHERE pk = :pk AND sk >= :prefix AND {_LIVE} ORDER BY sk",
            {"pk": _part("pk", pk), "prefix": sk_prefix, "now": time.time()},
        )
        found = []
        for row in rows:
            if not row[1].startswith(sk_prefix):
                break
            found.append(_record(row))
        return found

    # ------------------------------------------------------------------ writes
    def put(
        self, pk: str, sk: str, data: dict[str, Any], *, expires_at: float | None = None
    ) -> Record:
        """Write the record unconditionally; returns it with its new revision."""
        text = _encode(data)
        with self._write() as db:
            row = db.execute(
                f"SELECT revision FROM items WHERE pk = :pk AND sk = :sk AND {_LIVE}",
                {"pk": _part("pk", pk), "sk": _part("sk", sk), "now": time.time()},
            ).fetchone()
            revision = row[0] + 1 if row else 1
            db.execute(
                "INSERT OR REPLACE INTO items (pk, sk, data, revision, expires_at) "
                "VALUES (?, ?, ?, ?, ?)",
                (pk, sk, text, revision, expires_at),
            )
        return Record(pk, sk, json.loads(text), revision, expires_at)

    def put_if_absent(
        self, pk: str, sk: str, data: dict[str, Any], *, expires_at: float | None = None
    ) -> bool:
        """Create the record (revision 1) unless a live one exists; True if created."""
        text = _encode(data)
        with self._write() as db:
            cur = db.execute(
                "INSERT INTO items (pk, sk, data, revision, expires_at) "
                "VALUES (:pk, :sk, :data, 1, :expires_at) "
                "ON CONFLICT (pk, sk) DO UPDATE SET "
                "data = excluded.data, revision = 1, expires_at = excluded.expires_at "
                "WHERE items.expires_at IS NOT NULL AND items.expires_at <= :now",
                {
                    "pk": _part("pk", pk),
                    "sk": _part("sk", sk),
                    "data": text,
                    "expires_at": expires_at,
                    "now": time.time(),
                },
            )
            return cur.rowcount == 1

    def compare_and_set(
        self,
        pk: str,
        sk: str,
        data: dict[str, Any],
        *,
        expected_revision: int,
        expires_at: float | None = None,
    ) -> bool:
        """Replace the live record if its revision is `expected_revision`; True if replaced.

        The new record gets revision `expected_revision + 1` and exactly `expires_at`
        (None: never expires), as a DynamoDB PutItem would.
        """
        text = _encode(data)
        with self._write() as db:
            cur = db.execute(
                f"UPDATE items SET data = :data, revision = revision + 1, "
                f"expires_at = :expires_at "
                f"WHERE pk = :pk AND sk = :sk AND revision = :expected AND {_LIVE}",
                {
                    "pk": _part("pk", pk),
                    "sk": _part("sk", sk),
                    "data": text,
                    "expires_at": expires_at,
                    "expected": int(expected_revision),
                    "now": time.time(),
                },
            )
            return cur.rowcount == 1

    def delete(self, pk: str, sk: str) -> None:
        """Remove the record; a missing one is not an error."""
        with self._write() as db:
            db.execute(
                "DELETE FROM items WHERE pk = ? AND sk = ?", (_part("pk", pk), _part("sk", sk))
            )

    def close(self) -> None:
        """Close every connection this object has open; later calls open new ones."""
        with self._handles_lock:
            handles = list(self._handles)
            self._handles.clear()
        for handle in handles:
            handle.close()
        self._local = threading.local()

    # ------------------------------------------------------------------ internals
    def _conn(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use (and again after a fork)."""
        handle = getattr(self._local, "handle", None)
        # A connection inherited through fork() must not be used by the child.
        if handle is not None and handle.pid == os.getpid() and not handle.closed:
            return handle.conn
        # isolation_level=None: no implicit transactions; _write() issues BEGIN IMMEDIATE.
        # check_same_thread=False only so close() may close other threads' connections;
        # each connection is otherwise used by the thread that opened it.
        conn = sqlite3.connect(
            self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        _use_wal(conn, self.busy_timeout)
        # NORMAL is durable across application crashes in WAL mode and much faster than FULL.
        conn.execute("PRAGMA synchronous = NORMAL")
        handle = _Handle(conn)
        self._local.handle = handle
        with self._handles_lock:
            self._handles.add(handle)
        return conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        db = self._conn()
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            # Also after a failed COMMIT: a transaction left open would break the next write.
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise


class _Handle:
    """One thread's connection; closed when the thread ends and drops its last reference."""

    __slots__ = ("__weakref__", "closed", "conn", "pid")

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn, self.pid, self.closed = conn, os.getpid(), False

    def close(self) -> None:
        # Only the process that opened it may close it: SQLite's file locks are per process.
        if not self.closed and self.pid == os.getpid():
            self.closed = True
            self.conn.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()


def _part(name: str, value: str) -> str:
    # DynamoDB refuses empty key attributes; refusing them here keeps the adapters equal.
    if not isinstance(value, str) or not value:
        raise ValueError(f"registry {name} must be a non-empty string, got {value!r}")
    return value


def _encode(data: dict[str, Any]) -> str:
    if not isinstance(data, dict):
        raise TypeError(f"registry data must be a dict, got {type(data).__name__}")
    # allow_nan=False: NaN is not JSON, and other readers of the record would choke on it.
    return json.dumps(data, separators=(",", ":"), allow_nan=False)


def _record(row: tuple[Any, ...]) -> Record:
    pk, sk, data, revision, expires_at = row
    return Record(pk, sk, json.loads(data), int(revision), expires_at)


def _use_wal(conn: sqlite3.Connection, patience: float) -> None:
    """Put the database in WAL mode (kept in the file, so later connections find it set).

    Switching needs the database to itself, and SQLite answers "database is locked" at once
    rather than waiting when other connections are opening a fresh file at the same moment
    (threads or processes starting together): retry for up to `patience` seconds.
    """
    deadline = time.monotonic() + patience
    while True:
        try:
            if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                conn.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(0.01)
