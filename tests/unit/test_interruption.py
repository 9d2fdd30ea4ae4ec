"""The interruption watcher against the IMDS emulator over real HTTP on 127.0.0.1.

Every wait is on state (requests seen, the event, a log line, the watcher's thread), bounded
generously for a loaded machine; the watcher polls every 0.05 s here instead of EC2's 5 s.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dropflow.adapters.local import instance_state
from dropflow_dev.local.imds import ImdsEmulator
from tests.net import free_port, wait_until
from training import interruption
from training.interruption import InterruptionWatcher, Notice

INSTANCE = "proc-0123456789ab"
FAST = 0.05  # poll interval in these tests
LOGGER = "training.interruption"


WAIT = 30.0  # seconds: a bound on work of milliseconds, for a loaded machine
WATCHER_THREAD = "dropflow-interruption-watcher"  # the name the watcher gives its thread


def _wait_for(condition: Callable[[], Any], timeout: float = WAIT) -> Any:
    return wait_until(condition, timeout, 0.01)


def _watcher_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    """The watcher threads alive now that were not alive at `before`."""
    return [t for t in threading.enumerate() if t.name == WATCHER_THREAD and t not in before]


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[ImdsEmulator]:
    with ImdsEmulator(tmp_path / "compute") as emu:
        yield emu


@pytest.fixture
def watch(emulator: ImdsEmulator) -> Iterator[Callable[..., InterruptionWatcher]]:
    """Start watchers on INSTANCE's endpoint; each is stopped after the test."""
    started: list[InterruptionWatcher] = []

    def start(
        endpoint: str | None = None, *, overrides: dict[str, Any] | None = None, **kwargs: Any
    ) -> InterruptionWatcher:
        kwargs.setdefault("poll_seconds", FAST)
        watcher = InterruptionWatcher(endpoint or emulator.endpoint(INSTANCE), **kwargs)
        for name, value in (overrides or {}).items():  # class-level knobs, e.g. the token TTL
            setattr(watcher, name, value)
        started.append(watcher)
        return watcher

    yield start
    for watcher in started:
        watcher.stop()


def _gets(emulator: ImdsEmulator) -> int:
    return sum(1 for method, _path, _status in emulator.requests if method == "GET")


# --------------------------------------------------------------------------- notices
def test_no_notice_leaves_the_event_unset(emulator: ImdsEmulator, watch: Callable) -> None:
    watcher = watch().start()

    _wait_for(lambda: _gets(emulator) >= 6)  # several full rounds of polling

    assert not watcher.event.is_set()
    assert watcher.notice is None
    assert {status for _m, _p, status in emulator.requests} == {200, 404}


def test_an_announced_interruption_sets_the_event(
    emulator: ImdsEmulator, watch: Callable, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    watcher = watch().start()
    _wait_for(lambda: _gets(emulator) >= 2)
    before = time.time()

    served = instance_state.announce_interruption(emulator.state_dir, INSTANCE, in_seconds=120)

    assert watcher.event.wait(WAIT)
    notice = watcher.notice
    assert isinstance(notice, Notice)
    assert notice.kind == "spot-interruption"
    assert notice.detail == f"terminate at {served['time']}"
    assert before <= notice.seen_at <= time.time()
    notices = [r for r in caplog.records if "spot-interruption" in r.getMessage()]
    assert len(notices) == 1  # one clear line, not one per poll


def test_a_rebalance_recommendation_sets_the_event_with_its_kind(
    emulator: ImdsEmulator, watch: Callable
) -> None:
    watcher = watch().start()

    instance_state.announce_rebalance(emulator.state_dir, INSTANCE)

    assert watcher.event.wait(WAIT)
    assert watcher.notice is not None
    assert watcher.notice.kind == "rebalance-recommendation"
    assert watcher.notice.detail.startswith("rebalance recommended at ")


def test_an_interruption_after_a_rebalance_replaces_the_notice(
    emulator: ImdsEmulator, watch: Callable
) -> None:
    watcher = watch().start()
    instance_state.announce_rebalance(emulator.state_dir, INSTANCE)
    assert watcher.event.wait(WAIT)

    instance_state.announce_interruption(emulator.state_dir, INSTANCE, action="hibernate")

    _wait_for(lambda: watcher.notice and watcher.notice.kind == "spot-interruption")
    assert watcher.notice is not None and watcher.notice.detail.startswith("hibernate at ")


def test_a_notice_for_another_instance_is_not_seen(emulator: ImdsEmulator, watch: Callable) -> None:
    watcher = watch().start()

    instance_state.announce_interruption(emulator.state_dir, "proc-ffffffffffff")
    _wait_for(lambda: _gets(emulator) >= 6)

    assert not watcher.event.is_set()


# --------------------------------------------------------------------------- tokens
def test_the_token_is_renewed_before_it_expires(emulator: ImdsEmulator, watch: Callable) -> None:
    # TTL 4 s: renewed after 3 s, a second before it expires (room for a busy machine).
    watcher = watch(overrides={"token_ttl_seconds": 4}).start()

    _wait_for(lambda: sum(1 for r in emulator.requests if r[0] == "PUT") >= 2, timeout=60)
    instance_state.announce_interruption(emulator.state_dir, INSTANCE)

    assert watcher.event.wait(WAIT)
    puts = [r for r in emulator.requests if r[0] == "PUT"]
    assert len(puts) >= 2 and all(status == 200 for _m, _p, status in puts)
    assert 401 not in {status for _m, _p, status in emulator.requests}


def test_a_revoked_token_is_replaced_after_a_401(emulator: ImdsEmulator, watch: Callable) -> None:
    watcher = watch().start()
    _wait_for(lambda: _gets(emulator) >= 2)

    emulator.revoke_tokens()  # as if IMDS forgot it (or it expired early)
    instance_state.announce_interruption(emulator.state_dir, INSTANCE)

    assert watcher.event.wait(WAIT)
    statuses = [status for _m, _p, status in emulator.requests]
    assert 401 in statuses
    assert sum(1 for r in emulator.requests if r[0] == "PUT") >= 2


# --------------------------------------------------------------------------- no IMDS
def test_without_a_metadata_service_the_watcher_gives_up_quietly(
    watch: Callable, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    before = set(threading.enumerate())
    watcher = watch(f"http://127.0.0.1:{free_port()}/{INSTANCE}").start()

    # Then its thread ends by itself (nothing answered its token requests), saying so once.
    _wait_for(lambda: not _watcher_threads(before))

    assert not watcher.event.is_set() and watcher.notice is None
    lines = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(lines) == 1 and "interruption watcher off" in lines[0]


def test_not_on_ec2_and_no_endpoint_means_no_polling_at_all(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    monkeypatch.delenv(interruption.ENDPOINT_ENV, raising=False)
    monkeypatch.setattr(interruption, "looks_like_ec2", lambda: False)

    before = set(threading.enumerate())
    watcher = InterruptionWatcher(poll_seconds=FAST).start()

    assert _watcher_threads(before) == []  # no thread was started
    assert not watcher.event.is_set()
    assert len([r for r in caplog.records if r.name == LOGGER]) == 1
    watcher.stop()


def test_stop_ends_the_watcher_between_polls(emulator: ImdsEmulator, watch: Callable) -> None:
    before = set(threading.enumerate())
    watcher = watch(poll_seconds=300.0).start()
    _wait_for(lambda: _gets(emulator) >= 2)  # the first round is done; now it waits 300 s
    assert len(_watcher_threads(before)) == 1

    watcher.stop()

    # stop() waits for the thread at most a few seconds: it ended because it was woken, long
    # before its next poll would have come.
    assert _watcher_threads(before) == []


# --------------------------------------------------------------------------- endpoint
def test_endpoint_comes_from_the_argument_then_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(interruption.ENDPOINT_ENV, "http://127.0.0.1:9/env/")
    monkeypatch.setattr(interruption, "looks_like_ec2", lambda: True)

    assert interruption.resolve_endpoint("http://arg:1/x") == "http://arg:1/x"
    assert interruption.resolve_endpoint() == "http://127.0.0.1:9/env"
    monkeypatch.delenv(interruption.ENDPOINT_ENV)
    assert interruption.resolve_endpoint() == "http://169.254.169.254"
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    assert interruption.resolve_endpoint() is None


# --------------------------------------------------------------------------- notice files
def test_an_interruption_is_due_once_its_time_has_passed(tmp_path: Path) -> None:
    served = instance_state.announce_interruption(
        tmp_path, INSTANCE, in_seconds=120, now=1_000_000.0
    )

    assert served == {"action": "terminate", "time": "1970-01-12T13:48:40Z"}
    assert instance_state.due_terminations(tmp_path, now=1_000_119.0) == []
    assert instance_state.due_terminations(tmp_path, now=1_000_120.0) == [INSTANCE]

    instance_state.clear(tmp_path, INSTANCE)

    assert instance_state.due_terminations(tmp_path, now=2_000_000.0) == []
    instance_state.clear(tmp_path, INSTANCE)  # clearing twice is fine


def test_an_immediate_interruption_is_due_at_once_and_a_rebalance_never(tmp_path: Path) -> None:
    instance_state.announce_interruption(tmp_path, INSTANCE, in_seconds=0)
    instance_state.announce_rebalance(tmp_path, "proc-ffffffffffff")

    assert instance_state.due_terminations(tmp_path) == [INSTANCE]


def test_a_rebalance_is_kept_when_an_interruption_follows(tmp_path: Path) -> None:
    instance_state.announce_rebalance(tmp_path, INSTANCE, now=0.0)
    instance_state.announce_interruption(tmp_path, INSTANCE, now=0.0)

    emulator = ImdsEmulator(tmp_path)
    assert emulator.metadata(INSTANCE, "events/recommendations/rebalance") == (
        200,
        '{"noticeTime": "1970-01-01T00:00:00Z"}',
    )
    assert emulator.metadata(INSTANCE, "spot/instance-action")[0] == 200


@pytest.mark.parametrize("bad", ["", "../etc", "a/b", "x.json", "-lead"])
def test_odd_instance_ids_are_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ValueError, match="not an instance id"):
        instance_state.announce_interruption(tmp_path, bad)


def test_an_unknown_action_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="action"):
        instance_state.announce_interruption(tmp_path, INSTANCE, action="reboot")
