"""`dropflow local up` as a user runs it, for the end-to-end tests: a child process on
127.0.0.1 whose console is read line by line, and `dropflow status --json` for its state.
Every wait is on state (a console line, a job's state) and bounded."""

from __future__ import annotations

import json
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from tests.net import wait_until

DROPFLOW = [sys.executable, "-m", "dropflow_dev.cli"]
# Starting the runtime (Python, its imports, the API's socket) on a loaded 2-core machine.
START_SECONDS = 120
# Training takes seconds to minutes depending on the machine and its load: the tests wait on
# the job's state in `dropflow status --json`, never for a fixed time, within bounds meant for
# a loaded 2-core machine (a bound costs nothing where the machine is quick). STEP_SECONDS:
# a job to start training, a version to be promoted; JOB_SECONDS: a job to end.
STEP_SECONDS = 300
JOB_SECONDS = 600
TERMINAL = {"published", "failed"}


class LocalUp:
    """`dropflow local up` in a child process with extra flags, its console read by line.

    A context manager: leaving the block stops it (Ctrl-C) whatever happened in it, so that a
    test asserts in its body, never in a `finally`, and its first failure is the one shown.
    """

    def __init__(
        self,
        home: Path,
        *flags: str,
        command: list[str] | None = None,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        """`command`, run in `cwd` with `env`, replaces `dropflow local up --home <home>
        --port 0 <flags>` (README's own line through bash, say); it must run on `home`."""
        self.home = home
        if command is None:
            command = [*DROPFLOW, "local", "up", "--home", str(home), "--port", "0", *flags]
        self.proc = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.console: list[str] = []  # every line so far, for failure messages
        threading.Thread(target=self._read, daemon=True).start()
        try:
            pattern = r"API on (http://127\.0\.0\.1:\d+)"
            self.url = self.wait_for(pattern, START_SECONDS).group(1)
        except BaseException:
            self.stop()  # the caller gets no object to stop
            raise

    def __enter__(self) -> LocalUp:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.console.append(line.rstrip())
            self.lines.put(line.rstrip())

    @property
    def output(self) -> str:
        """The console so far, as one text (for assertion messages)."""
        return "console:\n" + "\n".join(self.console)

    def wait_for(self, pattern: str, seconds: float) -> re.Match[str]:
        """The first console line from now on matching `pattern`, within `seconds`."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.5)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            if match := re.search(pattern, line):
                return match
        raise AssertionError(f"no line matching {pattern!r}; {self.output}")

    def status(self) -> dict[str, Any]:
        """`dropflow status --json` for this home, as a user's script reads it."""
        return status(self.home)

    def job(self, model: str) -> dict[str, Any] | None:
        """The model's newest job in `dropflow status --json`, or None before it has one."""
        return next((j for j in self.status()["jobs"] if j["model"] == model), None)

    def ended(self, model: str) -> dict[str, Any]:
        """The model's newest job once it has ended (published or failed)."""
        return wait_until(
            lambda: (job := self.job(model)) is not None and job["state"] in TERMINAL and job,
            JOB_SECONDS,
            interval=1.0,
            what=lambda: f"{model}'s job to end; {self.output}",
        )

    def champion(self, model: str) -> str | None:
        """The model's champion version in `dropflow status --json`, or None."""
        return next((m["champion"] for m in self.status()["models"] if m["model"] == model), None)

    def promoted(self, model: str, version: str) -> None:
        """Wait until `version` is the model's champion (the runtime promotes after the job)."""
        wait_until(
            lambda: self.champion(model) == version,
            STEP_SECONDS,
            interval=1.0,
            what=lambda: f"{model} {version} promoted; {self.output}",
        )

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


def status(home: Path) -> dict[str, Any]:
    """`dropflow status --home <home> --json`, parsed (it may run beside `local up`)."""
    done = subprocess.run(
        [*DROPFLOW, "status", "--home", str(home), "--json"],
        capture_output=True,
        text=True,
        timeout=START_SECONDS,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def invoked_event(home: Path, kind: str, model: str, event_file: Path) -> dict[str, Any]:
    """The proxy answer PredictFunction gives, through `dropflow invoke`, to the event
    `dropflow events <kind> --model <model>` writes to `event_file` for this home, as a
    developer runs them beside `local up`."""
    for command in (
        ["events", kind, "--model", model, "-o", str(event_file)],
        ["invoke", "PredictFunction", "-e", str(event_file)],
    ):
        done = subprocess.run(
            [*DROPFLOW, *command, "--home", str(home)],
            capture_output=True,
            text=True,
            timeout=START_SECONDS,
            check=False,
        )
        assert done.returncode == 0, (command, done.stdout, done.stderr)
    return json.loads(done.stdout)
