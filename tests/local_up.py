"""`dropflow local up` as a user runs it, for the end-to-end tests: a child process on
127.0.0.1 whose console is read line by line; every wait is bounded."""

from __future__ import annotations

import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path


class LocalUp:
    """`dropflow local up` in a child process with extra flags, its console read by line."""

    def __init__(self, home: Path, *flags: str) -> None:
        command = [sys.executable, "-m", "dropflow_dev.cli", "local", "up", "--home", str(home)]
        self.proc = subprocess.Popen(
            [*command, "--port", "0", *flags],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.console: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        try:
            self.url = self.wait_for(r"API on (http://127\.0\.0\.1:\d+)", 60).group(1)
        except BaseException:
            self.stop()  # the caller gets no object to stop
            raise

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip())

    def wait_for(self, pattern: str, seconds: float) -> re.Match[str]:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            self.console.append(line)
            if match := re.search(pattern, line):
                return match
        raise AssertionError(f"no line matching {pattern!r}; console:\n" + "\n".join(self.console))

    def stop(self) -> int:
        """Ctrl-C, as a user would; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode
