"""One `dropflow local up` per home: two runtimes on one bucket and registry would both deliver
the same drops and both start, stop and report the same training processes.

The lock is an advisory `flock` on `<home>/local-up.lock`, which holds the owner's PID for the
message a second runtime prints. The kernel drops a `flock` when its process ends, however it
ends, so the lock of a process that died is simply taken: no PID check, no PID reuse to fear.
The file is never deleted (deleting it while another process opens it would let two processes
each lock a different file); a clean release empties it instead.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from dropflow.errors import DropflowError

LOCK_FILE = "local-up.lock"


class HomeInUse(DropflowError):
    """Another live process holds the home's lock (the message names its PID)."""


class HomeLock:
    """The lock of one home. acquire() takes it or raises HomeInUse; release() gives it back."""

    def __init__(self, home: Path) -> None:
        self.path = home / LOCK_FILE
        self._fd: int | None = None
        self.previous_pid: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock and write this PID into it. `previous_pid` is then the PID a process
        that died holding it left behind (None after a clean release). Raises HomeInUse naming
        the holder's PID when a live process holds it."""
        if self._fd is not None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_pid(fd)
            os.close(fd)
            who = f"PID {holder}" if holder else "a process that is starting (PID not written yet)"
            raise HomeInUse(
                f"{self.path.parent} is in use by another `dropflow local up` ({who}); "
                "stop that one first (Ctrl-C in its shell"
                + (f", or `kill {holder}`" if holder else "")
                + "), or give this one another --home"
            ) from None
        self.previous_pid = _read_pid(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Empty the file and unlock it; nothing when not held."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing the last descriptor drops the flock


def _read_pid(fd: int) -> int | None:
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return int(text) if text.isdigit() else None
