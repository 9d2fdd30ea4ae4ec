"""The embedded default: the whole dropflow loop on one machine, no AWS and no Docker.

`dropflow local up` runs this in the foreground. It plays the parts AWS plays in the cloud:
- S3 + EventBridge: a watcher on `<home>/bucket/` sends "Object Created" events for settled
  dataset files and model cards to the LaunchTraining and PromoteModel handlers;
- EC2: the Compute port starts child processes running the training entrypoint, and the end
  of one becomes an "EC2 Instance State-change Notification" for the TrackTraining handler;
- the schedule: a timer sends a Scheduled Event to LaunchTraining;
- API Gateway: an HTTP server on 127.0.0.1 turns requests into proxy events for Predict;
- the container tier for large models: `python -m serving` (the production server, one
  worker) as a child process, which Predict forwards the versions routed `container` to
  (`--container-threshold-mb` lowers the size above which a version is routed there). Like
  an Auto Scaling group at its desired capacity, it is started again when a promotion asks
  the tier to scale out, and only then.
The handlers are the very files of template.yaml, loaded as `dropflow invoke` loads them.
State (bucket, registry, compute records) lives under <home> and survives restarts.
"""

from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dropflow_dev.local import events
from dropflow_dev.local.home_lock import HomeLock
from dropflow_dev.local.watcher import BucketWatcher

LOCAL_BUCKET = "dropflow-local"
DEFAULT_HOME = Path(os.environ.get("DROPFLOW_HOME", "~/.dropflow")).expanduser()
WATCHDOG_SECONDS = 30.0
# What one training process takes, for the default cap on processes at once: torch's threads
# keep about two cores busy, and a process holds up to about 1.5 GiB (0.6 GiB on a small
# table: 30 of them took 18.7 GB), so 2 GiB each leaves the rest of the machine room.
CORES_PER_JOB = 2
MEMORY_PER_JOB_GIB = 2.0
MAX_JOBS_RULE = (
    f"one per {CORES_PER_JOB} CPU cores and per {MEMORY_PER_JOB_GIB:g} GiB of memory, "
    "whichever allows fewer, at least 1"
)


def machine_memory_gib() -> float | None:
    """This machine's physical memory in GiB, None where the OS does not say."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return None


def default_max_jobs(cpus: int | None = None, memory_gib: float | None = None) -> int:
    """How many training processes `local up` runs at once unless told (--max-jobs): see
    MAX_JOBS_RULE. `cpus` and `memory_gib` default to this machine's."""
    if cpus is None:
        try:
            cpus = len(os.sched_getaffinity(0))
        except AttributeError:  # not Linux
            cpus = os.cpu_count() or 1
    if memory_gib is None:
        memory_gib = machine_memory_gib()
    by_memory = int(memory_gib // MEMORY_PER_JOB_GIB) if memory_gib else cpus
    return max(1, min(cpus // CORES_PER_JOB, by_memory))


def find_template(start: Path | None = None) -> Path:
    """template.yaml of the dropflow checkout: from `start` (or cwd) upwards, else next to
    the installed package (an editable install lives in the checkout)."""
    candidates = [start or Path.cwd(), Path(__file__).resolve()]
    for base in candidates:
        for folder in [base, *base.parents]:
            if (folder / "template.yaml").is_file() and (folder / "functions").is_dir():
                return folder / "template.yaml"
    raise FileNotFoundError(
        "template.yaml not found: run dropflow from its checkout (the folder with template.yaml)"
    )


@dataclass
class LocalPaths:
    home: Path
    bucket: Path = field(init=False)
    datasets: Path = field(init=False)
    registry: Path = field(init=False)
    compute: Path = field(init=False)
    serving: Path = field(init=False)

    def __post_init__(self) -> None:
        self.home = self.home.expanduser().resolve()
        self.bucket = self.home / "bucket"
        self.datasets = self.bucket / "datasets"
        self.registry = self.home / "registry.db"
        self.compute = self.home / "compute"
        self.serving = self.home / "serving"

    def environment(self) -> dict[str, str]:
        return {
            "DROPFLOW_STORE_URL": self.bucket.as_uri(),
            "DROPFLOW_REGISTRY_URL": f"sqlite://{self.registry}",
            "DROPFLOW_COMPUTE_URL": f"process://{self.compute}",
            # Locally, "Model Promoted" / "Model Rejected" events go to a JSON-lines file.
            "DROPFLOW_EVENT_LOG": str(self.home / "events.jsonl"),
            # Promotion asks the local runtime to (re)start the container tier's process.
            "DROPFLOW_CONTAINER_TIER_URL": f"process://{self.serving}",
        }


def configure(home: Path, *, verbose: bool = False) -> LocalPaths:
    """Point this process (and the training processes it starts) at the local adapters."""
    paths = LocalPaths(home)
    # The folder a data owner copies into exists from the first command on: `cp x.csv
    # <home>/bucket/datasets/<model>/` then needs only the model's own folder.
    paths.datasets.mkdir(parents=True, exist_ok=True)
    paths.compute.mkdir(parents=True, exist_ok=True)
    os.environ.update(paths.environment())
    # The console shows one line per event; the handlers' JSON logs only when asked.
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "INFO" if verbose else "WARNING")
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_DEV", "false")
    # Training processes report progress every 2 s, for the console's live line.
    os.environ.setdefault("DROPFLOW_HEARTBEAT_SECONDS", "2")
    from dropflow import wiring
    from dropflow.observability import logger

    # The shared logger may exist already (imported before this call): set its level too.
    logger.setLevel(os.environ["POWERTOOLS_LOG_LEVEL"])
    wiring.reset()
    return paths


class _WithoutMetrics(io.TextIOBase):
    """stdout minus CloudWatch EMF lines. Locally there is no CloudWatch to read them, and
    powertools prints the cold-start metric even when metrics are disabled."""

    def __init__(self, target: io.TextIOBase) -> None:
        self.target = target
        self._pending = ""
        self._lock = threading.Lock()

    def write(self, text: str) -> int:
        with self._lock:
            self._pending += text
            *lines, self._pending = self._pending.split("\n")
            for line in lines:
                if not line.startswith('{"_aws":'):
                    self.target.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self.target.flush()


class ContainerProcess:
    """The container tier locally: `python -m serving` (the server of the EC2 image) run from
    the `checkout`, in a child process with one worker (it starts sooner, and one machine's
    loop needs no more), its output in <home>/serving/server.log. Listens on a fixed URL, so
    the predict function's DROPFLOW_CONTAINER_URL stays right across restarts."""

    def __init__(
        self,
        checkout: Path,
        state_dir: Path,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        workers: int = 1,
    ):
        self.checkout = checkout
        self.state_dir = state_dir
        self.workers = workers
        self.host = host
        self.port = port or _free_port(host)
        self.proc: subprocess.Popen[bytes] | None = None
        self.exit_reported = False

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        with open(self.state_dir / "server.log", "ab") as log:
            command = [sys.executable, "-m", "serving", "--host", self.host]
            command += ["--port", str(self.port), "--workers", str(self.workers)]
            self.proc = subprocess.Popen(
                command,
                cwd=self.checkout,  # where `serving` is; dropflow is installed or on the path
                env={**os.environ, "DROPFLOW_SERVED_BY": "container"},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self.exit_reported = False

    def stop(self, grace_seconds: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(grace_seconds)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


class LocalRuntime:
    """One machine's dropflow: call start(), then tick() in a loop (run() does both), stop()."""

    def __init__(
        self,
        home: Path = DEFAULT_HOME,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        poll_seconds: float = 0.5,
        settle_seconds: float = 1.0,
        schedule_seconds: float = 0.0,
        template: Path | None = None,
        verbose: bool = False,
        say: Callable[[str], None] = print,
        container: bool = True,
        container_port: int = 0,
        container_threshold_mb: float | None = None,
        max_jobs: int | None = None,
    ) -> None:
        if container_threshold_mb is not None:
            # Read by the promote handler's settings at its (local) cold start, in start().
            os.environ["DROPFLOW_LAMBDA_MAX_MODEL_MB"] = str(container_threshold_mb)
        if max_jobs is not None and max_jobs < 1:
            raise ValueError(f"max_jobs must be at least 1, not {max_jobs}")
        # The stack's TrainingMaxConcurrentJobs, locally: the same launcher and training queue
        # hold the child processes to it. Read when the launcher is made, in start().
        self.max_jobs = max_jobs or int(
            os.environ.get("DROPFLOW_MAX_CONCURRENT_JOBS") or default_max_jobs()
        )
        os.environ["DROPFLOW_MAX_CONCURRENT_JOBS"] = str(self.max_jobs)
        self.paths = configure(home, verbose=verbose)
        self.host, self.port = host, port
        self.poll_seconds = poll_seconds
        self.schedule_seconds = schedule_seconds
        self.template = template or find_template()
        self.say = say
        self.verbose = verbose
        self.watcher = BucketWatcher(self.paths.bucket, settle_seconds=settle_seconds)
        # Files already in the bucket at start: their events replay decisions made before (a
        # data version already trained, a version already decided). Those lines are quiet
        # unless --verbose; once all are delivered, one summary line per model says where
        # each stands.
        self._replaying: set[str] = set()
        self._stop = threading.Event()
        self._reported_ended: set[str] = set()
        self._job_states: dict[str, str] = {}
        self._job_progress: dict[str, str] = {}
        self._last_schedule = time.monotonic()
        self._last_watchdog = 0.0
        self.gateway: Any = None
        self.imds: Any = None
        self.url = ""
        self.container: ContainerProcess | None = None
        if container:
            checkout = self.template.parent
            self.container = ContainerProcess(checkout, self.paths.serving, host, container_port)
        self._scale_out_seen: float | None = None
        self.lock = HomeLock(self.paths.home)

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Take the home's lock, then start the IMDS emulator, the container tier's process,
        the handlers and the API. Raises HomeInUse (naming the holder's PID) when another
        runtime has this home, before starting anything. Any other failure (the API's port
        taken, a handler that does not load) stops what had started, the lock released, and
        is raised."""
        self.lock.acquire()
        if self.lock.previous_pid is not None:
            self.say(
                f"dropflow local: took over {self.lock.path}: PID {self.lock.previous_pid} "
                "held it and has ended without releasing it"
            )
        try:
            self._start()
        except BaseException:
            self.stop()
            raise

    def _start(self) -> None:
        from dropflow import wiring
        from dropflow_dev.invoke import load_function
        from dropflow_dev.local.gateway import Gateway
        from dropflow_dev.local.imds import ImdsEmulator

        # Before any adapter exists: open_compute reads the URL once, at first use.
        self.imds = ImdsEmulator(self.paths.compute).start()
        os.environ["DROPFLOW_LOCAL_IMDS_URL"] = self.imds.url
        if self.container is not None:
            # Before the handlers load: the predict function forwards large models here.
            os.environ["DROPFLOW_CONTAINER_URL"] = self.container.url
            from dropflow.adapters.local.process_tier import scale_out_requested_at

            self._scale_out_seen = scale_out_requested_at(self.paths.serving)
            self.container.start()
        else:
            os.environ.pop("DROPFLOW_CONTAINER_URL", None)  # left by an earlier runtime
        wiring.reset()

        if os.environ.get("POWERTOOLS_METRICS_DISABLED", "").lower() == "true":
            self._stdout = sys.stdout
            sys.stdout = _WithoutMetrics(sys.stdout)  # type: ignore[assignment]
            warnings.filterwarnings("ignore", message="No application metrics to publish")
        self.handlers = {
            name: load_function(self.template, name)[0]
            for name in (
                "LaunchTrainingFunction",
                "TrackTrainingFunction",
                "PromoteModelFunction",
                "PredictFunction",
            )
        }
        self.compute = wiring.compute()
        self.jobs = wiring.jobs()
        self.tracker = wiring.tracker()
        self.gateway = Gateway(self.handlers["PredictFunction"], host=self.host, port=self.port)
        self.gateway.start()
        self.url = self.gateway.url
        self._job_states = {job.job_id: job.state.value for job in self.jobs.all()}
        self._replaying = self.watcher.present()
        self.say(f"dropflow local: home {self.paths.home}")
        self.say(f"  drop CSV/Parquet files into {self.paths.datasets}/<model>/")
        self.say(f"  API on {self.url}  (POST /models/<model>/predict)")
        self.say(
            f"  at most {self.max_jobs} training job{'s' if self.max_jobs != 1 else ''} at once "
            "(--max-jobs); the others wait in line (dropflow status shows their place)"
        )
        if self.container is not None:
            threshold = os.environ.get("DROPFLOW_LAMBDA_MAX_MODEL_MB")
            above = f" above {threshold} MB" if threshold else ""
            self.say(
                f"  container tier on {self.container.url} (pid {self.container.pid}) "
                f"serves the models{above} too large for the predict function"
            )

    def run(self) -> None:
        """Start, then work until stop() is called or Ctrl-C; always stops cleanly."""
        self.start()
        try:
            while not self._stop.is_set():
                self.tick()
                self._stop.wait(self.poll_seconds)
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def request_stop(self) -> None:
        self._stop.set()

    def stop(self, grace_seconds: float = 10.0) -> None:
        self._stop.set()
        if self.gateway is not None:
            self.gateway.stop()
            self.gateway = None
        if self.container is not None:
            self.container.stop()
        compute = getattr(self, "compute", None)
        if compute is not None and hasattr(compute, "stop_all"):
            compute.stop_all(grace_seconds)
        if self.imds is not None:
            self.imds.stop()
            self.imds = None
            os.environ.pop("DROPFLOW_LOCAL_IMDS_URL", None)
        # Last: a new runtime may take the home once this one's processes have ended.
        self.lock.release()
        self.say("dropflow local: stopped")
        if getattr(self, "_stdout", None) is not None:
            sys.stdout.flush()
            sys.stdout, self._stdout = self._stdout, None

    # ------------------------------------------------------------------ one turn of the loop
    def tick(self) -> None:
        """Deliver every pending event once: drops, cards, ended instances, the schedule."""
        self._deliver_drops()
        self._terminate_interrupted()
        self._deliver_instance_ends()
        self._watch_container()
        now = time.monotonic()
        if self.schedule_seconds and now - self._last_schedule >= self.schedule_seconds:
            self._last_schedule = now
            self._call("LaunchTrainingFunction", events.scheduled())
        if now - self._last_watchdog >= WATCHDOG_SECONDS:
            self._last_watchdog = now
            for outcome in self.tracker.watchdog():  # what events missed; orphans; stuck jobs
                if outcome.action in ("terminated", "failed"):
                    self.say(f"watchdog: {outcome.message}")
        self._report_job_changes()

    def _deliver_drops(self) -> None:
        keys = self.watcher.scan()
        dataset_models: set[str] = set()
        for key in keys:
            path = self.paths.bucket / key
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            if key.startswith("datasets/"):
                model = key.split("/")[1]
                if model in dataset_models:  # one event per model and turn is enough
                    continue
                dataset_models.add(model)
                result = self._call(
                    "LaunchTrainingFunction", events.s3_object_created(LOCAL_BUCKET, key, size, "")
                )
                for outcome in (result or {}).get("results", []):
                    if key in self._replaying and outcome["action"] == "duplicate":
                        self._quiet(f"[{outcome['model']}] duplicate: {outcome['message']}")
                        continue
                    self.say(f"[{outcome['model']}] {outcome['action']}: {outcome['message']}")
                if result and result.get("skipped"):
                    self.say(f"ignored {key}: {result['skipped']}")
            elif key.endswith("/card.json"):
                result = self._call(
                    "PromoteModelFunction", events.s3_object_created(LOCAL_BUCKET, key, size, "")
                )
                if result and key in self._replaying and result.get("replayed"):
                    self._quiet(_promotion_line(result))
                elif result:
                    self.say(_promotion_line(result))
        if self._replaying:
            self._replaying &= self.watcher.present()  # a file removed since is not waited for
            self._replaying.difference_update(keys)
            if not self._replaying:
                self._summarise()

    def _quiet(self, line: str) -> None:
        if self.verbose:
            self.say(line)

    def _summarise(self) -> None:
        """One line per model once the files of the last run are delivered again, e.g.
        "iris: champion v..., 3 versions, nothing to do"."""
        from dropflow import wiring

        catalog = wiring.catalog()
        active = {}
        for job in self.jobs.all():
            if not job.state.terminal:
                active.setdefault(job.model, job)
        for model in catalog.models():
            champion = catalog.champion(model)
            count = len(catalog.versions(model))
            where = f"champion {champion.version}" if champion else "no champion yet"
            job = active.get(model)
            doing = f"job {job.job_id} {job.state.value}" if job else "nothing to do"
            plural = "s" if count != 1 else ""
            self.say(f"{model}: {where}, {count} version{plural}, {doing}")

    def _terminate_interrupted(self) -> None:
        """EC2's part of a spot interruption: the instance ends when its notice time comes."""
        from dropflow.adapters.local import instance_state
        from dropflow.ports import InstanceState

        for instance_id in instance_state.due_terminations(self.paths.compute):
            instance = self.compute.describe(instance_id)
            if instance is not None and instance.state != InstanceState.TERMINATED:
                self.say(f"spot interruption: terminating {instance_id} (notice time reached)")
                self.compute.terminate(instance_id)
            instance_state.clear(self.paths.compute, instance_id)

    def _deliver_instance_ends(self) -> None:
        from dropflow.ports import InstanceState

        for instance in self.compute.list_instances():
            if instance.state != InstanceState.TERMINATED:
                continue
            if instance.instance_id in self._reported_ended:
                continue
            self._reported_ended.add(instance.instance_id)
            self._call(
                "TrackTrainingFunction", events.ec2_state_change(instance.instance_id, "terminated")
            )

    def _watch_container(self) -> None:
        """Report the container process's end; start it again when a promotion asked the tier
        to scale out since (an ASG at desired capacity 1 replaces its instance the same way)."""
        container = self.container
        if container is None:
            return
        from dropflow.adapters.local.process_tier import scale_out_requested_at

        requested = scale_out_requested_at(self.paths.serving)
        asked = requested is not None and requested != self._scale_out_seen
        self._scale_out_seen = requested
        if container.running():
            return
        if asked:
            container.start()
            self.say(f"container tier started for a scale-out (pid {container.pid})")
            return
        if not container.exit_reported and container.proc is not None:
            container.exit_reported = True
            code = container.proc.returncode
            self.say(
                f"container tier stopped (exit code {code}): its models answer 503 until a "
                "promotion scales it out again"
            )

    def _report_job_changes(self) -> None:
        from dropflow_dev.status import describe_progress

        for job in self.jobs.all():
            before = self._job_states.get(job.job_id)
            if before == job.state.value:
                progress = describe_progress(job.progress) if not job.state.terminal else ""
                if progress and self._job_progress.get(job.job_id) != progress:
                    self._job_progress[job.job_id] = progress
                    self.say(f"[{job.model}] {job.job_id} {progress}")
                continue
            self._job_states[job.job_id] = job.state.value
            detail = job.version or job.reason or ""
            attempt = f" (attempt {len(job.attempts)})" if job.attempts else ""
            self.say(f"[{job.model}] job {job.job_id} {job.state.value}{attempt} {detail}".rstrip())

    def _call(self, function: str, event: dict[str, Any]) -> Any:
        from dropflow_dev.lambda_context import LambdaContext

        try:
            return self.handlers[function](event, LambdaContext(function_name=function))
        except Exception as exc:  # a handler bug must not take the whole runtime down
            self.say(f"{function} failed: {type(exc).__name__}: {exc}")
            return None


def _promotion_line(result: dict[str, Any]) -> str:
    model = result.get("model", "?")
    version = result.get("version", "?")
    decision = result.get("decision", "?")
    reason = result.get("reason") or ""
    if result.get("skipped"):
        return f"ignored: {result['skipped']}"
    when = " (decided earlier)" if result.get("replayed") else ""
    return f"[{model}] {version} {decision}{when}: {reason}".rstrip(": ")
