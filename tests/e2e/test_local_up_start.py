"""`dropflow local up` starting, as a user runs it: a failed start leaves no process behind, one
home has one runtime (a second is refused naming the first's PID), a dead runtime's lock is
taken over, and the first line comes before the slow part.

The processes a runtime started are found by their environment: every child of `local up`
inherits DROPFLOW_STORE_URL pointing at its home's bucket, and each test has a home of its own.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path

import pytest
import requests

from dropflow_dev.local.home_lock import LOCK_FILE, HomeLock
from tests.local_up import DROPFLOW, START_SECONDS, LocalUp

pytestmark = pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="reads /proc")


def processes_of(home: Path) -> dict[int, str]:
    """PID -> command line of each live process started with `home`'s bucket in its
    environment: what `local up` on that home started (the runtime's own /proc environ is
    the one it was started with, before it configured itself, so it is not among them)."""
    marker = f"DROPFLOW_STORE_URL={(home / 'bucket').resolve().as_uri()}".encode()
    found: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:  # ended meanwhile, or another user's
            continue
        if marker in environ:
            found[int(entry.name)] = command.strip()
    return found


@pytest.fixture
def home(tmp_path) -> Iterator[Path]:
    """A fresh home; whatever process a failing test left on it is ended afterwards."""
    home = tmp_path / "home"
    yield home
    for pid in processes_of(home):
        with contextlib.suppress(ProcessLookupError):  # ended meanwhile
            os.kill(pid, signal.SIGKILL)


@pytest.fixture
def busy_port() -> Iterator[int]:
    """A port on 127.0.0.1 that something else listens on."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        yield taken.getsockname()[1]


def _local_up(home: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*DROPFLOW, "local", "up", "--home", str(home), *flags],
        capture_output=True,
        text=True,
        timeout=START_SECONDS,
        check=False,
    )


def test_a_busy_api_port_fails_the_start_and_leaves_no_process(home, busy_port):
    # When local up starts on a port something else listens on
    done = _local_up(home, "--port", str(busy_port))

    # Then it fails saying so
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert f"cannot listen on 127.0.0.1:{busy_port} (Address already in use)" in done.stderr
    # after it had started the container tier's server (the reproduced case) ...
    assert (home / "serving" / "server.log").is_file(), done.stdout
    # ... which it stopped with every other process it started
    assert processes_of(home) == {}
    # and the home is free again
    assert (home / LOCK_FILE).read_text() == ""
    lock = HomeLock(home)
    lock.acquire()
    lock.release()


def test_the_first_line_comes_before_the_functions_load(home, busy_port):
    done = _local_up(home, "--port", str(busy_port), "--no-container")

    first = done.stdout.splitlines()[0]
    assert first.startswith(f"dropflow local: starting in {home}"), done.stdout
    assert "a first start can take a minute" in first


def test_a_second_local_up_on_the_same_home_is_refused_naming_the_first(home):
    with LocalUp(home) as first:
        container = int(first.wait_for(r"container tier on \S+ \(pid (\d+)\)", 30).group(1))
        started = processes_of(home)
        assert container in started, (started, first.output)

        # When a second local up is started on the same home
        second = _local_up(home, "--port", "0")

        # Then it is refused naming the first's PID, and started nothing
        assert second.returncode == 2, (second.stdout, second.stderr)
        assert f"in use by another `dropflow local up` (PID {first.proc.pid})" in second.stderr
        assert processes_of(home) == started
        # and the first one still serves
        assert requests.get(f"{first.url}/health", timeout=10).status_code == HTTPStatus.OK
        assert first.stop() == 0, first.output

    assert processes_of(home) == {}
    assert (home / LOCK_FILE).read_text() == ""


def test_the_lock_of_a_runtime_that_died_is_taken_over(home):
    # Given a process took the home's lock and was killed holding it
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, signal, sys; from pathlib import Path; "
            "from dropflow_dev.local.home_lock import HomeLock; "
            "HomeLock(Path(sys.argv[1])).acquire(); os.kill(os.getpid(), signal.SIGKILL)",
            str(home),
        ]
    )
    assert holder.wait(START_SECONDS) == -signal.SIGKILL
    assert (home / LOCK_FILE).read_text() == f"{holder.pid}\n"

    # When local up starts on that home
    with LocalUp(home, "--no-container") as runtime:
        # Then it takes the lock over, saying from whom
        assert f"PID {holder.pid} held it and has ended without releasing it" in runtime.output
        assert (home / LOCK_FILE).read_text() == f"{runtime.proc.pid}\n"
        assert runtime.stop() == 0, runtime.output
