"""The Registry contract, run against SQLite and DynamoDB (moto)."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from dropflow.adapters.local.sqlite_registry import SqliteRegistry
from dropflow.ports import Registry
from tests.net import wait_until

PK = "MODEL#iris"


def _race(workers: int, work: Callable[[int], object]) -> list[object]:
    """Run `work(i)` in `workers` threads released at the same moment; their results."""
    barrier = threading.Barrier(workers)
    results: list[object] = [None] * workers
    failures: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait(timeout=60)  # bounds, not waits: generous for a loaded machine
            results[i] = work(i)
        except BaseException as exc:  # surfaced below: a crashed thread must fail the test
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a worker thread hung"
    assert failures == []
    return results


def _increment(registry: Registry, sk: str, tries: int = 500) -> int:
    """Add one to data['n'] with compare-and-set; the number of tries it took."""
    for attempt in range(1, tries + 1):
        rec = registry.get(PK, sk)
        assert rec is not None
        if registry.compare_and_set(
            PK, sk, {"n": rec.data["n"] + 1}, expected_revision=rec.revision
        ):
            return attempt
    raise AssertionError(f"no increment after {tries} tries")


# --------------------------------------------------------------------------- get / put
def test_get_missing_record_is_none(registry: Registry) -> None:
    assert registry.get(PK, "JOB#nope") is None


def test_put_then_get_round_trips_the_data(registry: Registry) -> None:
    data = {
        "state": "running",
        "loss": 0.1,
        "tiny": 1e-7,
        "big": 2**53,
        "nested": {"attempts": [{"number": 1, "zone": "us-east-1a"}], "ok": True},
        "none": None,
        "text": "résumé ✓",
    }

    written = registry.put(PK, "JOB#1", data)

    got = registry.get(PK, "JOB#1")
    assert got is not None
    assert got.data == data
    assert isinstance(got.data["loss"], float)  # not a Decimal
    assert (got.pk, got.sk, got.revision, got.expires_at) == (PK, "JOB#1", 1, None)
    assert written == got


def test_put_overwrites_and_bumps_the_revision(registry: Registry) -> None:
    registry.put(PK, "CHAMPION", {"version": "v1"})

    second = registry.put(PK, "CHAMPION", {"version": "v2"})

    assert second.revision == 2
    got = registry.get(PK, "CHAMPION")
    assert got is not None and got.data == {"version": "v2"} and got.revision == 2


def test_records_are_keyed_by_both_pk_and_sk(registry: Registry) -> None:
    registry.put("MODEL#a", "X", {"who": "a"})
    registry.put("MODEL#b", "X", {"who": "b"})

    assert registry.get("MODEL#a", "X").data == {"who": "a"}  # type: ignore[union-attr]
    assert registry.get("MODEL#b", "X").data == {"who": "b"}  # type: ignore[union-attr]


def test_empty_key_parts_are_rejected(registry: Registry) -> None:
    with pytest.raises(ValueError, match="pk"):
        registry.put("", "x", {})
    with pytest.raises(ValueError, match="sk"):
        registry.get(PK, "")


# --------------------------------------------------------------------------- put_if_absent
def test_put_if_absent_creates_once(registry: Registry) -> None:
    assert registry.put_if_absent(PK, "CLAIM#d1", {"job": "first"}) is True

    assert registry.put_if_absent(PK, "CLAIM#d1", {"job": "second"}) is False

    got = registry.get(PK, "CLAIM#d1")
    assert got is not None and got.data == {"job": "first"} and got.revision == 1


def test_racing_put_if_absent_has_exactly_one_winner(registry: Registry) -> None:
    results = _race(20, lambda i: registry.put_if_absent(PK, "CLAIM#race", {"winner": i}))

    winners = [i for i, won in enumerate(results) if won is True]
    assert len(winners) == 1
    assert all(won in (True, False) for won in results)
    assert registry.get(PK, "CLAIM#race").data == {"winner": winners[0]}  # type: ignore[union-attr]


# --------------------------------------------------------------------------- compare_and_set
def test_compare_and_set_with_the_current_revision_succeeds(registry: Registry) -> None:
    registry.put(PK, "JOB#1", {"state": "queued"})

    assert registry.compare_and_set(PK, "JOB#1", {"state": "launching"}, expected_revision=1)

    got = registry.get(PK, "JOB#1")
    assert got is not None and got.data == {"state": "launching"} and got.revision == 2


def test_compare_and_set_with_a_stale_revision_changes_nothing(registry: Registry) -> None:
    registry.put(PK, "JOB#1", {"state": "queued"})
    registry.compare_and_set(PK, "JOB#1", {"state": "launching"}, expected_revision=1)

    assert not registry.compare_and_set(PK, "JOB#1", {"state": "failed"}, expected_revision=1)
    assert not registry.compare_and_set(PK, "JOB#1", {"state": "failed"}, expected_revision=3)

    got = registry.get(PK, "JOB#1")
    assert got is not None and got.data == {"state": "launching"} and got.revision == 2


def test_compare_and_set_on_a_missing_record_fails(registry: Registry) -> None:
    assert not registry.compare_and_set(PK, "JOB#ghost", {"x": 1}, expected_revision=1)
    assert not registry.compare_and_set(PK, "JOB#ghost", {"x": 1}, expected_revision=0)
    assert registry.get(PK, "JOB#ghost") is None


def test_concurrent_increments_lose_no_update(registry: Registry) -> None:
    registry.put(PK, "COUNTER", {"n": 0})
    workers, each = 6, 8

    _race(workers, lambda _: [_increment(registry, "COUNTER") for _ in range(each)])

    got = registry.get(PK, "COUNTER")
    assert got is not None
    assert got.data == {"n": workers * each}
    assert got.revision == 1 + workers * each


# --------------------------------------------------------------------------- expiry
def test_expired_record_is_absent(registry: Registry) -> None:
    registry.put(PK, "CLAIM#old", {"job": "j0"}, expires_at=time.time() - 5)

    assert registry.get(PK, "CLAIM#old") is None
    assert registry.query(PK) == []
    assert not registry.compare_and_set(PK, "CLAIM#old", {"job": "j1"}, expected_revision=1)


def test_expired_record_can_be_claimed_again(registry: Registry) -> None:
    registry.put_if_absent(PK, "CLAIM#d1", {"job": "j0"}, expires_at=time.time() - 5)

    assert registry.put_if_absent(PK, "CLAIM#d1", {"job": "j1"}, expires_at=time.time() + 600)

    got = registry.get(PK, "CLAIM#d1")
    assert got is not None and got.data == {"job": "j1"} and got.revision == 1


def test_unexpired_record_is_present_and_keeps_its_expiry(registry: Registry) -> None:
    expires = time.time() + 600

    assert registry.put_if_absent(PK, "CLAIM#d1", {"job": "j0"}, expires_at=expires)

    got = registry.get(PK, "CLAIM#d1")
    assert got is not None and got.expires_at is not None
    # DynamoDB TTL keeps whole seconds, rounded up: never earlier than asked.
    assert expires <= got.expires_at < expires + 1
    assert not registry.put_if_absent(PK, "CLAIM#d1", {"job": "j1"}, expires_at=expires)


def test_record_expires_when_its_time_comes(registry: Registry) -> None:
    registry.put(PK, "CLAIM#soon", {"job": "j0"}, expires_at=time.time() + 0.2)
    assert registry.get(PK, "CLAIM#soon") is not None

    # 0.2 s, rounded up to a whole second by DynamoDB; the bound is for a loaded machine.
    wait_until(lambda: registry.get(PK, "CLAIM#soon") is None, 30, what="the record to expire")


def test_put_over_an_expired_record_starts_afresh(registry: Registry) -> None:
    registry.put(PK, "CLAIM#d1", {"job": "j0"}, expires_at=time.time() - 5)

    rec = registry.put(PK, "CLAIM#d1", {"job": "j1"})

    assert rec.revision == 1 and rec.expires_at is None
    assert registry.get(PK, "CLAIM#d1") == rec


def test_compare_and_set_replaces_the_expiry(registry: Registry) -> None:
    registry.put(PK, "LEASE", {"owner": "a"}, expires_at=time.time() + 600)

    assert registry.compare_and_set(PK, "LEASE", {"owner": "b"}, expected_revision=1)

    got = registry.get(PK, "LEASE")
    assert got is not None and got.expires_at is None and got.data == {"owner": "b"}


# --------------------------------------------------------------------------- query
def test_query_returns_prefix_matches_sorted_by_sk(registry: Registry) -> None:
    for sk in ["JOB#b", "VERSION#1", "JOB#a1", "JOB", "JOB#a", "JOB$", "CHAMPION"]:
        registry.put(PK, sk, {"sk": sk})
    registry.put("MODEL#other", "JOB#zzz", {"sk": "other"})

    jobs = registry.query(PK, sk_prefix="JOB#")

    assert [r.sk for r in jobs] == ["JOB#a", "JOB#a1", "JOB#b"]
    assert all(r.pk == PK and r.data == {"sk": r.sk} for r in jobs)


def test_query_without_prefix_returns_the_whole_partition(registry: Registry) -> None:
    for sk in ["b", "a", "c/1", "c"]:
        registry.put(PK, sk, {})
    registry.put("MODEL#other", "a", {})

    assert [r.sk for r in registry.query(PK)] == ["a", "b", "c", "c/1"]


def test_query_unknown_partition_or_prefix_is_empty(registry: Registry) -> None:
    registry.put(PK, "JOB#a", {})

    assert registry.query("MODEL#nobody") == []
    assert registry.query(PK, sk_prefix="VERSION#") == []


def test_query_skips_expired_records(registry: Registry) -> None:
    registry.put(PK, "CLAIM#1", {}, expires_at=time.time() - 5)
    registry.put(PK, "CLAIM#2", {}, expires_at=time.time() + 600)
    registry.put(PK, "CLAIM#3", {})

    assert [r.sk for r in registry.query(PK, sk_prefix="CLAIM#")] == ["CLAIM#2", "CLAIM#3"]


def test_query_pages_through_many_records(registry: Registry) -> None:
    blob = "x" * 20_000  # ~3 MB in all: more than one DynamoDB query page (1 MB)
    for i in range(150):
        registry.put(PK, f"JOB#{i:04d}", {"blob": blob})

    got = registry.query(PK, sk_prefix="JOB#")

    assert [r.sk for r in got] == [f"JOB#{i:04d}" for i in range(150)]


# --------------------------------------------------------------------------- delete
def test_delete_removes_and_is_idempotent(registry: Registry) -> None:
    registry.put(PK, "JOB#1", {})

    registry.delete(PK, "JOB#1")
    registry.delete(PK, "JOB#1")
    registry.delete(PK, "JOB#never")

    assert registry.get(PK, "JOB#1") is None
    assert registry.put_if_absent(PK, "JOB#1", {"again": True})


# --------------------------------------------------------------------------- adapter specifics
_CAS_WORKER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from dropflow.adapters.local.sqlite_registry import SqliteRegistry

    db, count, go, ready = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
    registry = SqliteRegistry(db)
    ready.touch()
    deadline = time.monotonic() + 300  # start together, so the two really contend
    while not go.exists() and time.monotonic() < deadline:
        time.sleep(0.005)
    done = 0
    for _ in range(count * 200):  # bounded: gives up rather than spin forever
        rec = registry.get("MODEL#iris", "COUNTER")
        if registry.compare_and_set(
            "MODEL#iris", "COUNTER", {"n": rec.data["n"] + 1}, expected_revision=rec.revision
        ):
            done += 1
            if done == count:
                break
    print(done)
    """
)


def test_sqlite_compare_and_set_is_safe_across_processes(tmp_path: Path) -> None:
    db, go = tmp_path / "registry.db", tmp_path / "go"
    readies = [tmp_path / "ready-1", tmp_path / "ready-2"]
    SqliteRegistry(db).put(PK, "COUNTER", {"n": 0})
    each = 150

    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _CAS_WORKER, str(db), str(each), str(go), str(ready)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for ready in readies
    ]
    try:
        # Both at the start line (their interpreters up: slow on a loaded machine), so that
        # they really contend.
        wait_until(
            lambda: all(r.exists() for r in readies) or any(w.poll() is not None for w in workers),
            120,
            0.01,
            what="both workers at the start line",
        )
        go.touch()
        outputs = [w.communicate(timeout=120) for w in workers]
    finally:
        for w in workers:
            if w.poll() is None:
                w.kill()
                w.wait()

    assert [w.returncode for w in workers] == [0, 0], outputs
    assert [int(out.strip()) for out, _ in outputs] == [each, each]
    got = SqliteRegistry(db).get(PK, "COUNTER")
    assert got is not None and got.data == {"n": 2 * each} and got.revision == 1 + 2 * each


def test_sqlite_registry_creates_its_folder(tmp_path: Path) -> None:
    registry = SqliteRegistry(tmp_path / "deep" / "er" / "registry.db")

    registry.put(PK, "x", {"ok": 1})

    assert SqliteRegistry(tmp_path / "deep" / "er" / "registry.db").get(PK, "x") is not None


def test_sqlite_connections_of_finished_threads_are_closed(tmp_path: Path) -> None:
    # A threaded HTTP server uses a new thread per request: none may leave a connection open.
    registry = SqliteRegistry(tmp_path / "registry.db")
    registry.put(PK, "x", {})
    open_files = Path("/proc/self/fd")
    before = len(list(open_files.iterdir()))

    for _ in range(10):
        _race(10, lambda _: registry.get(PK, "x"))

    # A leak would hold 100+ descriptors; SQLite itself parks a few closed ones for reuse.
    assert len(list(open_files.iterdir())) < before + 30
