"""One `dropflow local up` per home: the lock, its holder's PID, and the lock of a dead process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dropflow_dev.local.home_lock import LOCK_FILE, HomeInUse, HomeLock

# A process that takes the lock, says so, and holds it until its stdin closes (or it is killed).
HOLDER = """
import sys
from pathlib import Path
from dropflow_dev.local.home_lock import HomeLock
lock = HomeLock(Path(sys.argv[1]))
lock.acquire()
print("held", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def holder(tmp_path):
    """Another process holding tmp_path's lock; ended (SIGKILL) when the test is done."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout.readline().strip() == "held"  # blocks until it holds the lock
    yield proc
    proc.kill()
    proc.wait(30)


def test_the_lock_holds_its_owners_pid(tmp_path):
    lock = HomeLock(tmp_path)

    lock.acquire()

    assert lock.held
    assert (tmp_path / LOCK_FILE).read_text() == f"{os.getpid()}\n"
    lock.release()


def test_a_second_lock_on_the_same_home_is_refused_naming_the_holders_pid(tmp_path, holder):
    with pytest.raises(HomeInUse) as refused:
        HomeLock(tmp_path).acquire()

    message = str(refused.value)
    assert f"in use by another `dropflow local up` (PID {holder.pid})" in message
    assert f"`kill {holder.pid}`" in message
    assert "another --home" in message


def test_a_lock_in_this_process_also_refuses_a_second_one(tmp_path):
    first = HomeLock(tmp_path)
    first.acquire()

    with pytest.raises(HomeInUse, match=f"PID {os.getpid()}"):
        HomeLock(tmp_path).acquire()
    first.release()


def test_a_released_lock_is_empty_and_can_be_taken_again(tmp_path):
    first = HomeLock(tmp_path)
    first.acquire()
    first.release()

    assert not first.held
    assert (tmp_path / LOCK_FILE).read_text() == ""
    second = HomeLock(tmp_path)
    second.acquire()
    assert second.previous_pid is None  # a clean release leaves no one to take over from
    second.release()


def test_the_lock_of_a_process_that_died_is_taken_over(tmp_path, holder):
    # Given the holder dies without releasing (SIGKILL: no cleanup of its own runs)
    holder.send_signal(signal.SIGKILL)
    holder.wait(30)
    assert (tmp_path / LOCK_FILE).read_text() == f"{holder.pid}\n"

    # When another process asks for the home
    lock = HomeLock(tmp_path)
    lock.acquire()

    # Then it gets it, knows whose it was, and writes its own PID
    assert lock.previous_pid == holder.pid
    assert (tmp_path / LOCK_FILE).read_text() == f"{os.getpid()}\n"
    lock.release()


def test_release_is_harmless_when_not_held(tmp_path):
    lock = HomeLock(tmp_path)
    lock.release()

    assert not lock.held
    assert not (tmp_path / LOCK_FILE).exists()


def test_the_home_folder_is_made_when_missing(tmp_path):
    home: Path = tmp_path / "new" / "home"
    lock = HomeLock(home)
    lock.acquire()

    assert (home / LOCK_FILE).is_file()
    lock.release()
