"""When the container tier is ready: every champion routed `container` loaded, in every worker.

Each worker process loads the models itself (onnxruntime sessions are per process), in a
background thread (`Preloader`), and then again every `refresh_seconds` for new champions.
`Readiness` says whether this worker has loaded them, and, when the server runs several
workers, whether all of them have: each worker that is done leaves a mark named by its pid in
a folder the server shares with its workers, so a health check answered by any one worker
says "ready" only once no worker would make a request wait for a model to load.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

# After a failed preload (registry unreachable), how soon to try again.
RETRY_SECONDS = 5.0
# How long stopping waits for a preload under way (a large model can take a while to load;
# the thread is a daemon, so the process never waits longer).
STOP_SECONDS = 5.0


class Readiness:
    """This worker's models are loaded (`mark_loaded`), and so are its peers' (`peers_dir`
    holds one mark per loaded worker; `workers` is how many there are)."""

    def __init__(self, peers_dir: Path | None = None, workers: int = 1) -> None:
        self.peers_dir = peers_dir
        self.workers = workers
        self._loaded = threading.Event()

    @property
    def loaded(self) -> bool:
        """Whether this worker has loaded its models (once; later refreshes do not count)."""
        return self._loaded.is_set()

    def mark_loaded(self) -> None:
        if self.peers_dir is not None:
            (self.peers_dir / str(os.getpid())).touch()
        self._loaded.set()

    def is_ready(self) -> bool:
        if not self.loaded:
            return False
        if self.peers_dir is None or self.workers <= 1:
            return True
        return self._loaded_peers() >= self.workers

    def leave(self) -> None:
        """Take this worker's mark away (it is stopping)."""
        if self.peers_dir is not None:
            (self.peers_dir / str(os.getpid())).unlink(missing_ok=True)

    def _loaded_peers(self) -> int:
        count = 0
        for mark in self.peers_dir.iterdir() if self.peers_dir else ():
            if mark.name.isdigit() and _alive(int(mark.name)):
                count += 1
            else:  # a worker that died: the server starts another, which marks itself
                mark.unlink(missing_ok=True)
        return count


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class Preloader:
    """Calls `preload` (which loads the models and returns the (model, version) pairs it
    loaded) in a daemon thread: at once, then every `refresh_seconds`, until `stop()`."""

    def __init__(
        self,
        preload: Callable[[], list[tuple[str, str]]],
        readiness: Readiness,
        *,
        refresh_seconds: float = 30.0,
        retry_seconds: float = RETRY_SECONDS,
    ) -> None:
        self.preload = preload
        self.readiness = readiness
        self.refresh_seconds = refresh_seconds
        self.retry_seconds = retry_seconds
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="preload", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = STOP_SECONDS) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.readiness.leave()

    def _run(self) -> None:
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                loaded = self.preload()
            except Exception as exc:  # the registry or the store cannot be reached yet
                say(f"cannot list the models to load yet: {type(exc).__name__}: {exc}")
                self._stopping.wait(self.retry_seconds)
                continue
            if not self.readiness.loaded:
                took = time.monotonic() - started
                shown = ", ".join(f"{m} {v}" for m, v in loaded) or "none routed here yet"
                say(f"worker {os.getpid()} ready: models loaded in {took:.1f} s ({shown})")
                self.readiness.mark_loaded()
            self._stopping.wait(self.refresh_seconds)


def say(line: str) -> None:
    """One line on the server's log (stderr), for the people running it."""
    print(f"dropflow container tier: {line}", file=sys.stderr, flush=True)
