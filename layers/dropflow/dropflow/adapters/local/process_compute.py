"""Compute as child processes: the embedded default's EC2.

Each "instance" is the training entrypoint run as a child process in its own session (so a
Ctrl-C in the terminal of `dropflow local up` does not reach it, and the whole process tree
can be signalled as one group). Everything about an instance lives in files under
`state_dir`, so a later ProcessCompute (after `dropflow local up` restarts) can still
describe, list and terminate it:

    <id>.json   the record: job, attempt, pid and the pid's start time (guards pid reuse)
    <id>.log    stdout and stderr of the entrypoint
    <id>.exit   the exit code, written by the wrapper below when the entrypoint ends
    tags/<id>.json     the instance's tags (DROPFLOW_JOB_ID, DROPFLOW_MODEL, DROPFLOW_ATTEMPT)
    notices/<id>.json  spot notices announced to it (`dropflow local interrupt`)

The last two are the IMDS emulator's files (dropflow_dev.local.imds): the emulator serves this
same folder, so what EC2 would keep as instance tags and metadata sits beside the record.
With `metadata_url` (the emulator's URL) each child gets
AWS_EC2_METADATA_SERVICE_ENDPOINT=<metadata_url>/<id>, its own IMDS, where the training job
watches for interruption notices exactly as on EC2.

The entrypoint runs under a small wrapper (`python -m dropflow.adapters.local.process_compute
--exit-file F -- cmd...`) that waits for it and records its exit code, because only a
process's parent can learn its exit code and the parent may be long gone by then.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dropflow.adapters.local import instance_state
from dropflow.adapters.local.state_files import write_json
from dropflow.ports import Instance, InstanceState, LaunchError, LaunchRequest

_WRAPPER_MODULE = "dropflow.adapters.local.process_compute"
_ID = re.compile(r"proc-[0-9a-f]{12}")
_PROC = Path("/proc")
_POLL = 0.05  # seconds between liveness checks while waiting for processes to end
_KILL_WAIT = 5.0  # after SIGKILL a process is gone in milliseconds; this only bounds a hang
# Signals the wrapper passes on to the entrypoint.
_FORWARDED = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class ProcessCompute:
    """A Compute that runs `entrypoint --job-id <id> --attempt <n>` as child processes.

    `state_dir` (created if missing) holds one record, log and exit file per instance.
    `grace` is how long terminate() waits after SIGTERM before it sends SIGKILL.
    `metadata_url` is the base URL of an ImdsEmulator serving `state_dir`, or None (the
    children then inherit whatever AWS_EC2_METADATA_SERVICE_ENDPOINT this process has).
    A local instance costs nothing: its price and on-demand price are 0.0, unless
    `spot_price` and `on_demand_price` (USD/hour; the wiring passes $DROPFLOW_LOCAL_SPOT_PRICE
    and $DROPFLOW_LOCAL_ON_DEMAND_PRICE) simulate some, for demos and tests of the cost ledger.
    """

    def __init__(
        self,
        state_dir: Path,
        entrypoint: Sequence[str] = (sys.executable, "-m", "training"),
        *,
        grace: float = 10.0,
        metadata_url: str | None = None,
        spot_price: float = 0.0,
        on_demand_price: float = 0.0,
    ) -> None:
        if not entrypoint:
            raise ValueError("ProcessCompute needs an entrypoint command")
        # Absolute: the paths in records must stay valid for a process with another cwd.
        self.state_dir = Path(state_dir).resolve()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.entrypoint = tuple(str(part) for part in entrypoint)
        self.grace = grace
        self.metadata_url = metadata_url.rstrip("/") if metadata_url else None
        self.prices = {"spot": float(spot_price), "on-demand": float(on_demand_price)}
        # Popen objects of the processes this object started: polling them reaps zombies.
        self._children: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ProcessCompute({str(self.state_dir)!r})"

    # ------------------------------------------------------------------ Compute
    def launch(self, request: LaunchRequest) -> Instance:
        """Start the entrypoint for `request` and return the running instance.

        The process gets DROPFLOW_JOB_ID, DROPFLOW_MODEL, DROPFLOW_ATTEMPT and
        DROPFLOW_INSTANCE_ID on top of this process's environment and request.environment
        (and AWS_EC2_METADATA_SERVICE_ENDPOINT with a metadata_url); the first three are also
        its tags, as on EC2. Raises LaunchError if the process cannot be started.
        """
        self._reap_all()
        instance_id = f"proc-{secrets.token_hex(6)}"
        command = [
            *self.entrypoint,
            "--job-id",
            request.job_id,
            "--attempt",
            str(request.attempt),
        ]
        tags = {
            "DROPFLOW_JOB_ID": request.job_id,
            "DROPFLOW_MODEL": request.model,
            "DROPFLOW_ATTEMPT": str(request.attempt),
        }
        env = {
            **os.environ,
            **{str(k): str(v) for k, v in request.environment.items()},
            **tags,
            "DROPFLOW_INSTANCE_ID": instance_id,
        }
        if self.metadata_url:
            env["AWS_EC2_METADATA_SERVICE_ENDPOINT"] = f"{self.metadata_url}/{instance_id}"
        # Before the process starts, so its first IMDS request already finds them.
        instance_state.write_tags(self.state_dir, instance_id, tags)
        wrapper = [
            sys.executable,
            "-m",
            _WRAPPER_MODULE,
            "--exit-file",
            str(self._exit_path(instance_id)),
            "--",
            *command,
        ]
        launched_at = time.time()
        # The wrapper starts with these signals blocked (a child inherits the mask) and
        # unblocks them once its handlers are in place: a terminate() that comes while the
        # interpreter is still starting is then handled, not fatal with no exit code.
        mask = signal.pthread_sigmask(signal.SIG_BLOCK, _FORWARDED)
        try:
            with open(self._log_path(instance_id), "ab") as log:
                proc = subprocess.Popen(
                    wrapper,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    # Own session and process group: terminal signals stay out, and the
                    # whole tree (entrypoint, data loader workers) can be killed as one.
                    start_new_session=True,
                )
        except OSError as exc:
            raise LaunchError(
                f"job {request.job_id} attempt {request.attempt}: cannot start "
                f"{wrapper[0]!r}: {exc}"
            ) from exc
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        with self._lock:
            self._children[instance_id] = proc
        record = {
            "instance_id": instance_id,
            "job_id": request.job_id,
            "model": request.model,
            "attempt": request.attempt,
            "instance_type": "local",
            "lifecycle": request.lifecycle,
            "zone": "local",
            "launched_at": launched_at,
            "pid": proc.pid,
            # The child is unreaped until we poll it, so its /proc entry is still there.
            "start_ticks": _start_ticks(proc.pid),
            "boot_id": _boot_id(),
            "command": command,
            "log": str(self._log_path(instance_id)),
            "ended_at": None,
            "exit_code": None,
            "price_per_hour": self.prices.get(request.lifecycle),
            "on_demand_price_per_hour": self.prices["on-demand"],
        }
        self._save(record)
        return _instance(record, InstanceState.RUNNING)

    def describe(self, instance_id: str) -> Instance | None:
        """The instance as it is now, or None if no instance has that id."""
        record = self._load(instance_id)
        return self._refresh(record) if record else None

    def terminate(self, instance_id: str, *, grace: float | None = None) -> None:
        """Stop the instance: SIGTERM, then SIGKILL after `grace` seconds (default: self.grace).

        Returns once it has ended. An ended or unknown instance is not an error.
        """
        if self._load(instance_id) is not None:
            self._stop([instance_id], self.grace if grace is None else grace)

    def list_instances(self) -> list[Instance]:
        """Every instance recorded in state_dir, running or ended, oldest first."""
        self._reap_all()
        found = []
        for path in self.state_dir.glob("proc-*.json"):
            record = self._load(path.stem)
            if record is not None:
                found.append(self._refresh(record))
        found.sort(key=lambda inst: (inst.launched_at, inst.instance_id))
        return found

    def stop_all(self, grace: float | None = None) -> list[Instance]:
        """Terminate every running instance at once (SIGTERM to all, SIGKILL after `grace`).

        Used by the local runtime on Ctrl-C. Returns the instances it stopped, as they ended.
        """
        running = [
            inst.instance_id
            for inst in self.list_instances()
            if inst.state != InstanceState.TERMINATED
        ]
        self._stop(running, self.grace if grace is None else grace)
        return [inst for i in running if (inst := self.describe(i)) is not None]

    # ------------------------------------------------------------------ internals
    def _stop(self, instance_ids: Sequence[str], grace: float) -> None:
        live = []
        for instance_id in instance_ids:
            record = self._load(instance_id)
            if record is None or self._refresh(record).state == InstanceState.TERMINATED:
                continue
            # The wrapper passes SIGTERM on to its whole group exactly once.
            _signal_pid(record, signal.SIGTERM)
            live.append(record)
        stubborn = self._wait_until_ended(live, grace)
        for record in stubborn:
            # Past the grace period: kill the whole group, wrapper included.
            if self._alive(record):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(record["pid"], signal.SIGKILL)
        self._wait_until_ended(stubborn, _KILL_WAIT)
        for record in live:
            self._refresh(record)  # record how each one ended

    def _wait_until_ended(
        self, records: list[dict[str, Any]], timeout: float
    ) -> list[dict[str, Any]]:
        """Poll until every process in `records` has ended or `timeout` passes; the rest."""
        deadline = time.monotonic() + timeout
        remaining = list(records)
        while remaining:
            remaining = [r for r in remaining if self._alive(r)]
            if not remaining or time.monotonic() >= deadline:
                break
            time.sleep(min(_POLL, max(0.0, deadline - time.monotonic())))
        return remaining

    def _refresh(self, record: dict[str, Any]) -> Instance:
        """The instance's current state; records the end in the file the first time seen."""
        if record.get("ended_at") is not None:
            return _instance(record, InstanceState.TERMINATED)
        # Liveness first, exit file second: the wrapper writes the file before it exits,
        # so a process seen dead here has either written its file by now or never will.
        alive = self._alive(record)
        ended = _read_exit(self._exit_path(record["instance_id"]))
        if ended is None and alive:
            return _instance(record, InstanceState.RUNNING)
        if ended is not None:
            record["exit_code"], record["ended_at"] = ended
        else:
            # Died without a word (SIGKILL, machine reboot): the end time is when we noticed.
            record["exit_code"], record["ended_at"] = None, time.time()
        self._save(record)
        return _instance(record, InstanceState.TERMINATED)

    def _alive(self, record: dict[str, Any]) -> bool:
        """True while the instance's wrapper process still runs (and is not a zombie)."""
        instance_id, pid = record["instance_id"], int(record["pid"])
        with self._lock:
            child = self._children.get(instance_id)
        if child is not None:
            if child.poll() is None:
                return True
            with self._lock:
                self._children.pop(instance_id, None)
            return False
        if record.get("boot_id") and record["boot_id"] != _boot_id():
            return False  # the machine restarted since launch
        return _pid_is(pid, record.get("start_ticks"))

    def _reap_all(self) -> None:
        with self._lock:
            children = list(self._children.items())
        for instance_id, child in children:
            if child.poll() is not None:
                with self._lock:
                    self._children.pop(instance_id, None)

    def _load(self, instance_id: str) -> dict[str, Any] | None:
        if not isinstance(instance_id, str) or not _ID.fullmatch(instance_id):
            return None  # not one of ours; also keeps odd ids from naming other paths
        try:
            record = json.loads(self._record_path(instance_id).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        return record if isinstance(record, dict) else None

    def _save(self, record: dict[str, Any]) -> None:
        write_json(self._record_path(record["instance_id"]), record, indent=1)

    def _record_path(self, instance_id: str) -> Path:
        return self.state_dir / f"{instance_id}.json"

    def _log_path(self, instance_id: str) -> Path:
        return self.state_dir / f"{instance_id}.log"

    def _exit_path(self, instance_id: str) -> Path:
        return self.state_dir / f"{instance_id}.exit"


# ---------------------------------------------------------------------- process facts
def _instance(record: dict[str, Any], state: InstanceState) -> Instance:
    return Instance(
        instance_id=record["instance_id"],
        job_id=record["job_id"],
        attempt=int(record["attempt"]),
        state=state,
        instance_type=record["instance_type"],
        lifecycle=record["lifecycle"],
        zone=record["zone"],
        launched_at=float(record["launched_at"]),
        ended_at=record.get("ended_at"),
        exit_code=record.get("exit_code"),
        price_per_hour=record.get("price_per_hour"),
        on_demand_price_per_hour=record.get("on_demand_price_per_hour"),
    )


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state letter, start time in clock ticks since boot) of `pid`, or None if gone."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may hold spaces and parentheses; fields after it do not.
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[19])


def _start_ticks(pid: int) -> int | None:
    stat = _proc_stat(pid) if _PROC.is_dir() else None
    return stat[1] if stat else None


def _boot_id() -> str | None:
    try:
        return (_PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def _pid_is(pid: int, start_ticks: int | None) -> bool:
    """True if `pid` is alive, not a zombie, and (where known) started at `start_ticks`."""
    if start_ticks is not None and _PROC.is_dir():
        stat = _proc_stat(pid)
        # A different start time means the pid was reused by an unrelated process.
        return stat is not None and stat[1] == start_ticks and stat[0] not in ("Z", "X")
    # Without /proc (macOS) the best available check: does some process have this pid?
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # another user's process: the pid was reused
    return True


def _signal_pid(record: dict[str, Any], signum: int) -> None:
    pid = int(record["pid"])
    if not _pid_is(pid, record.get("start_ticks")):
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):  # ended in between
        os.kill(pid, signum)


def _read_exit(path: Path) -> tuple[int | None, float] | None:
    """(exit code, end time) from an exit file, or None if there is none yet."""
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    code = data.get("exit_code")
    return (int(code) if code is not None else None), float(data["ended_at"])


# ---------------------------------------------------------------------- the wrapper
def _die_with_parent_hook() -> Any:
    """A function for Popen's preexec_fn that makes the command get SIGKILL if the wrapper
    dies first (Linux prctl PR_SET_PDEATHSIG), or None where that is not available.

    Prepared before the fork: the forked child must only make the one C call.
    """
    if sys.platform != "linux":
        return None  # elsewhere the command may outlive a wrapper killed with SIGKILL
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1
    return lambda: prctl(pr_set_pdeathsig, int(signal.SIGKILL), 0, 0, 0)


def run_wrapped(exit_file: Path, command: Sequence[str]) -> int:
    """Run `command`, pass SIGTERM/SIGINT/SIGHUP on to it, write its exit code to `exit_file`.

    Returns the command's exit code (negative: killed by that signal, as in Popen), 127 if
    it could not be started.
    """
    child: subprocess.Popen[bytes] | None = None
    requested: list[int] = []  # signals received, in order
    forwarded = 0  # how many of them reached the command

    def forward(signum: int) -> None:
        assert child is not None
        if os.getpgrp() == os.getpid():
            # We lead the group ProcessCompute created: signal all of it (the command and
            # its own children) once, ignoring the copy that comes back to us.
            signal.signal(signum, signal.SIG_IGN)
            try:
                os.killpg(os.getpgrp(), signum)
            finally:
                signal.signal(signum, on_signal)
        else:
            child.send_signal(signum)

    def on_signal(signum: int, _frame: Any) -> None:
        nonlocal forwarded
        requested.append(signum)
        if child is not None:
            forwarded = len(requested)
            forward(signum)

    for signum in _FORWARDED:
        signal.signal(signum, on_signal)
    # ProcessCompute started us with them blocked; one sent meanwhile is delivered now.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _FORWARDED)
    preexec = _die_with_parent_hook()

    code: int
    if requested:
        code = -requested[0]  # stopped before it began: never start the command
    else:
        try:
            child = subprocess.Popen(list(command), preexec_fn=preexec)
        except OSError as exc:
            print(f"dropflow: cannot start {command[0]!r}: {exc}", file=sys.stderr, flush=True)
            child, code = None, 127
        else:
            # A signal that arrived while the command was being started has not reached it.
            if len(requested) > forwarded:
                forwarded = len(requested)
                forward(requested[-1])
            code = child.wait()
    write_json(exit_file, {"exit_code": code, "ended_at": time.time()})
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m dropflow.adapters.local.process_compute --exit-file F -- command [args...]`."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) < 4 or args[0] != "--exit-file" or args[2] != "--":
        print(
            "usage: python -m dropflow.adapters.local.process_compute"
            " --exit-file FILE -- COMMAND...",
            file=sys.stderr,
        )
        return 2
    code = run_wrapped(Path(args[1]), args[3:])
    # Shell convention for "killed by signal N"; an exit status cannot be negative.
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main())
