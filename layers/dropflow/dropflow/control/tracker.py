"""Keeping jobs alive: what happens when the instance (or child process) of an attempt ends.

The job itself records its success (published) or a user error (failed). When an instance
ends and the job is not in a final state, the attempt was lost (spot reclaim, crash, a stop of
the local runtime): the tracker starts the next attempt, which resumes, until the job's
attempts are used up, its budget is spent, its max runtime used or its deadline past (see
launcher.stop_reason). The watchdog also stops a running attempt once the job's spend reaches
its budget (every job has one) or its max runtime, and terminates instances that serve no
unfinished job, except one whose job ended moments ago and is still writing its log. When a
job reaches a final state its training slot and the model's active slot are released, a
follow-up run is requested if data arrived meanwhile, and the jobs waiting in the training
queue start as the free slots allow. A relaunch keeps the job's training slot: an interrupted
job never goes to the back of the line.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from dropflow.control.launcher import Launcher, LaunchOutcome, stop_reason
from dropflow.errors import NotFoundError
from dropflow.observability import logger
from dropflow.ports import Instance, InstanceState, ObjectNotFound
from dropflow.records.jobs import (
    MAX_BOOTSTRAP_REASON,
    Attempt,
    ExitCode,
    Job,
    JobState,
    bootstrap_failure_key,
)
from dropflow.vocabulary.limits import JobCompute

Action = Literal[
    "ignored",
    "noted",
    "relaunched",
    "queued",
    "started",
    "failed",
    "finished",
    "terminated",
    "recovered",
]

# An interrupted attempt (spot reclaim, with its checkpoint) is always retried: it does not
# count against the job's max attempts. This cap only stops a job that is reclaimed forever.
MAX_ATTEMPTS_IN_ALL = 25
INTERRUPTED_PREFIX = "interrupted"

# A running attempt whose heartbeat (every ~30 s) is older than this is presumed stuck: its
# instance is terminated, and the end of the instance relaunches the job from its checkpoint.
STALE_HEARTBEAT_SECONDS = 15 * 60

# An attempt that never got an instance (the launcher died in between) is retried after this.
LAUNCH_GRACE_SECONDS = 120.0

# A job marks itself published (or failed on a user error) before its process is done: it
# then records the attempt's end and uploads its log, and its instance shuts itself down.
# The watchdog leaves the instance of a job that ended this recently alone, and terminates it
# once this has passed if it is still there.
FINISHING_GRACE_SECONDS = 300.0


@dataclass(frozen=True)
class TrackOutcome:
    action: Action
    message: str
    job_id: str | None = None
    follow_up: LaunchOutcome | None = None
    # The job's final state ("failed" or "published") when this call is the one that ended
    # it, else None: duplicate events never count a job twice in the handlers' metrics.
    ended: str | None = None
    # Jobs waiting in the training queue that this call started (or failed to start).
    started: tuple[LaunchOutcome, ...] = ()

    def jobs_failed(self) -> int:
        """How many jobs this call saw fail: the one it ended, its follow-up's, and those of
        the queued jobs it started."""
        own = 1 if self.ended == "failed" else 0
        own += self.follow_up.jobs_failed() if self.follow_up else 0
        return own + sum(o.jobs_failed() for o in self.started)


def describe_exit(exit_code: int | None) -> str:
    """A reader's account of how an attempt's process ended."""
    if exit_code is None:
        return "the instance ended"
    if exit_code < 0:
        return f"killed by signal {-exit_code}"
    try:
        return {
            ExitCode.OK: "exited without publishing",
            ExitCode.CRASHED: "crashed (exit 1)",
            ExitCode.USER_ERROR: "stopped on a data or spec error (exit 2)",
            ExitCode.INTERRUPTED: "interrupted; a checkpoint was stored (exit 75)",
        }[ExitCode(exit_code)]
    except ValueError:
        return f"exited with code {exit_code}"


def failed_attempts(attempts: list[Attempt]) -> int:
    """Attempts that ended in failure; those that honoured an interruption do not count."""
    return sum(1 for a in attempts if not (a.exit_reason or "").startswith(INTERRUPTED_PREFIX))


class Tracker:
    def __init__(self, launcher: Launcher, *, clock: Callable[[], float] = time.time) -> None:
        self.launcher = launcher
        self.jobs = launcher.jobs
        self.compute = launcher.compute
        self.clock = clock

    def instance_ended(self, instance: Instance) -> TrackOutcome:
        """React to the end of an attempt's instance (EC2 state change, or a process exit)."""
        try:
            job = self.jobs.get(instance.job_id)
        except NotFoundError:
            return TrackOutcome("ignored", f"{instance.instance_id} belongs to no known job")
        current = job.current_attempt
        if current is None or current.instance_id not in (None, instance.instance_id):
            return TrackOutcome(
                "ignored", f"{instance.instance_id} ran an earlier attempt", job.job_id
            )
        how = describe_exit(instance.exit_code)
        boot_failure = None
        if instance.exit_code is None and job.state == JobState.LAUNCHING:
            # An instance (not a local process) that ended before the job began training (it
            # moves the job to running): its bootstrap failed, and said why beside the job if
            # it could reach S3.
            boot_failure = self._bootstrap_failure(job, current.number)
            how = (
                f"failed before training: {boot_failure}"
                if boot_failure
                else "ended before training started and left no reason: if this repeats, "
                "its subnet may not reach S3 (TrainingSubnetIds need S3 and DynamoDB)"
            )
        if current.ended_at is None or current.exit_reason is None:
            self.jobs.update_attempt(
                job.job_id,
                current.number,
                ended_at=current.ended_at or instance.ended_at or self.clock(),
                exit_reason=current.exit_reason or how,
            )
        if job.state.terminal:
            return self._finish(job)
        if instance.exit_code == ExitCode.USER_ERROR:
            return self._fail(job, current.exit_reason or how)
        if boot_failure:
            # The bootstrap names a cause another instance of the same stack would meet too
            # (its network, its AMI, its bundle): another attempt would only pay for it again.
            return self._fail(job, f"attempt {current.number} {how}")
        failures = failed_attempts(self.jobs.get(job.job_id).attempts)
        if failures >= self.launcher.attempt_limit(job.model):
            return self._fail(job, f"gave up after {failures} failed attempts; the last one {how}")
        if len(job.attempts) >= MAX_ATTEMPTS_IN_ALL:
            return self._fail(job, f"gave up after {len(job.attempts)} attempts in all")
        self.jobs.transition(
            job.job_id, JobState.INTERRUPTED, reason=f"attempt {current.number} {how}"
        )
        outcome = self.launcher.launch_attempt(job.job_id)
        logger.info("attempt relaunched", extra={"job_id": job.job_id, "outcome": outcome.message})
        return self._relaunched(job, outcome)

    def _bootstrap_failure(self, job: Job, attempt: int) -> str | None:
        key = bootstrap_failure_key(job.model, job.job_id, attempt)
        try:
            text = self.launcher.store.get(key).decode("utf-8", "replace").strip()
        except ObjectNotFound:
            return None
        return text[:MAX_BOOTSTRAP_REASON] or None

    def notice(self, instance: Instance, kind: str) -> TrackOutcome:
        """Record a spot interruption warning or rebalance recommendation on the attempt.

        The job on the instance sees the same notice through IMDS and checkpoints itself;
        the relaunch happens when the instance has ended.
        """
        try:
            job = self.jobs.get(instance.job_id)
        except NotFoundError:
            return TrackOutcome("ignored", f"{instance.instance_id} belongs to no known job")
        current = job.current_attempt
        if current is None or current.instance_id != instance.instance_id:
            return TrackOutcome("ignored", f"{instance.instance_id} is not the current attempt")
        self.jobs.set_progress(
            job.job_id, {**job.progress, "notice": kind, "notice_at": self.clock()}
        )
        return TrackOutcome("noted", f"{kind} for attempt {current.number}", job.job_id)

    def sweep(self) -> list[TrackOutcome]:
        """Check every unfinished job's current instance; handle those that ended.

        The local runtime calls this in its loop (it is its EC2 state-change feed); in AWS the
        watchdog schedule calls it to catch events that were lost.
        """
        outcomes = []
        holders: dict[str, str | None] = {}  # each model's slot, read once per sweep
        queue = self.launcher.queue.state()  # the training slots, read once per sweep
        for job in self.jobs.all():
            if job.state.terminal:
                if job.model not in holders:
                    holders[job.model] = self.launcher.active_job(job.model)
                if holders[job.model] == job.job_id or queue.holds(job.job_id):
                    if self._still_running(job):
                        # A job that has published (or failed itself) holds its slots until
                        # its instance has ended, so the cap counts instances: that end
                        # frees them (or, its event lost, the next sweep).
                        continue
                    # It ended without giving its slots up (its function died in between).
                    outcomes.append(self._finish(job))
                    if holders[job.model] == job.job_id:
                        holders[job.model] = None
                continue
            if queue.position(job.job_id) is not None:
                continue  # waiting for a training slot: the queue starts it in its turn
            current = job.current_attempt
            if current is None or current.instance_id is None:
                # Since the attempt started, or since the job got its slot (whoever moved it
                # there launches it: give them the grace), or since it was created.
                started = (
                    (current.started_at if current else None)
                    or queue.running.get(job.job_id)
                    or job.created_at
                )
                if self.clock() - started > LAUNCH_GRACE_SECONDS:
                    outcomes.append(self._relaunch_orphan(job))
                continue
            instance = self.compute.describe(current.instance_id)
            if instance is None or instance.state == InstanceState.TERMINATED:
                outcomes.append(
                    self.instance_ended(
                        instance
                        or Instance(
                            instance_id=current.instance_id,
                            job_id=job.job_id,
                            attempt=current.number,
                            state=InstanceState.TERMINATED,
                            instance_type=current.instance_type or "unknown",
                            lifecycle=current.lifecycle or "unknown",
                            zone=current.zone or "unknown",
                            launched_at=current.started_at or job.created_at,
                        )
                    )
                )
        for job_id in self.launcher.recover_slots():
            message = f"the training slot of {job_id}, which ended without freeing it, is free"
            outcomes.append(TrackOutcome("recovered", message, job_id))
        started = self.launcher.drain()  # slots freed by anything above, or left idle
        if started:
            message = f"{len(started)} queued job(s) started"
            outcomes.append(TrackOutcome("started", message, started=tuple(started)))
        return outcomes

    def enforce_limits(self) -> list[TrackOutcome]:
        """Stop every running attempt whose job reached its budget (what it spent, counting
        this attempt's price times the seconds it has run so far) or its max runtime: the
        job fails with the reason first, so the end of the instance relaunches nothing, then
        the instance is terminated. A deadline does not stop a running attempt (see
        launcher.stop_reason); it only keeps the job from being relaunched."""
        now = self.clock()
        specs: dict[str, JobCompute] = {}
        outcomes = []
        for job in self.jobs.all():
            attempt = job.current_attempt
            if (
                job.state.terminal
                or attempt is None
                or attempt.instance_id is None
                or attempt.ended_at is not None
            ):
                continue
            if job.model not in specs:
                specs[job.model] = self.launcher.enforced_compute(job.model)
            why = stop_reason(job, specs[job.model], now, launching=False)
            if why is not None:
                outcomes.append(self._stop(job, attempt, why, now))
        return outcomes

    def watchdog(self) -> list[TrackOutcome]:
        """The schedule's sweep: handle ended instances whose event was lost, stop attempts
        over their job's budget or max runtime, terminate a stuck attempt (stale heartbeat),
        and terminate every dropflow instance that serves no unfinished job, so that no
        forgotten GPU instance bills a weekend. The instance of a job that ended less than
        FINISHING_GRACE_SECONDS ago is left to finish (its log is still being written)."""
        outcomes = self.sweep()
        outcomes += self.enforce_limits()
        now = self.clock()
        current: dict[str, Job] = {}
        finishing: set[str] = set()
        for job in self.jobs.all():
            attempt = job.current_attempt
            if attempt is None or not attempt.instance_id:
                continue
            if not job.state.terminal:
                current[attempt.instance_id] = job
            elif now - _ended_at(job, attempt) < FINISHING_GRACE_SECONDS:
                finishing.add(attempt.instance_id)
        for instance in self.compute.list_instances():
            if instance.state == InstanceState.TERMINATED or instance.instance_id in finishing:
                continue
            job = current.get(instance.instance_id)
            if job is None:
                self.compute.terminate(instance.instance_id)
                outcomes.append(
                    TrackOutcome(
                        "terminated",
                        f"orphan instance {instance.instance_id} (job {instance.job_id}, "
                        f"attempt {instance.attempt}) serves no unfinished job",
                        instance.job_id,
                    )
                )
                continue
            beat = job.progress.get("updated_at")
            if beat is None:
                beat = instance.launched_at
            if job.state == JobState.RUNNING and now - float(beat) > STALE_HEARTBEAT_SECONDS:
                self.compute.terminate(instance.instance_id)
                outcomes.append(
                    TrackOutcome(
                        "terminated",
                        f"no heartbeat from {instance.instance_id} for {now - float(beat):.0f} s; "
                        "terminated so that the job resumes on a new instance",
                        job.job_id,
                    )
                )
        return outcomes

    # ------------------------------------------------------------------ internals
    def _still_running(self, job: Job) -> bool:
        """Whether the instance of the job's current attempt is still pending or running."""
        current = job.current_attempt
        if current is None or current.instance_id is None:
            return False
        instance = self.compute.describe(current.instance_id)
        return instance is not None and instance.state != InstanceState.TERMINATED

    def _relaunch_orphan(self, job: Job) -> TrackOutcome:
        if len(job.attempts) >= self.launcher.attempt_limit(job.model):
            return self._fail(job, f"gave up after {len(job.attempts)} attempts that never started")
        if job.state != JobState.QUEUED:
            self.jobs.transition(job.job_id, JobState.INTERRUPTED, reason="attempt never started")
        return self._relaunched(job, self.launcher.launch_attempt(job.job_id))

    @staticmethod
    def _relaunched(job: Job, outcome: LaunchOutcome) -> TrackOutcome:
        """The tracker's account of a launch_attempt for `job`."""
        if outcome.action == "failed":
            # The launcher failed the job (and requested the follow-up it owed): this call
            # ended it.
            return TrackOutcome(
                "failed", outcome.message, job.job_id, outcome.follow_up, "failed", outcome.started
            )
        action: Action = "queued" if outcome.action == "queued" else "relaunched"
        return TrackOutcome(action, outcome.message, job.job_id, started=outcome.started)

    def _stop(self, job: Job, attempt: Attempt, why: str, now: float) -> TrackOutcome:
        instance_id = attempt.instance_id
        reason = f"stopped attempt {attempt.number} on {instance_id}: {why}"
        failed = self.jobs.transition(job.job_id, JobState.FAILED, reason=reason)
        self.jobs.update_attempt(
            job.job_id, attempt.number, ended_at=now, exit_reason=f"stopped: {why}"
        )
        assert instance_id is not None
        self.compute.terminate(instance_id)
        logger.warning("job stopped", extra={"job_id": job.job_id, "reason": reason})
        finished = self._finish(failed)
        return TrackOutcome(
            "failed", reason, job.job_id, finished.follow_up, "failed", finished.started
        )

    def _fail(self, job: Job, reason: str) -> TrackOutcome:
        failed = self.jobs.transition(job.job_id, JobState.FAILED, reason=reason)
        logger.warning("job failed", extra={"job_id": job.job_id, "reason": reason})
        outcome = self._finish(failed)
        return TrackOutcome(
            "failed", reason, job.job_id, outcome.follow_up, "failed", outcome.started
        )

    def _finish(self, job: Job) -> TrackOutcome:
        """Free the ended job's training slot and model slot (requesting the follow-up it
        owes, and starting the queued jobs the free slot lets start). The call that frees the
        model slot is the one that reports the job as ended."""
        handover = self.launcher.hand_over(job.model, job.job_id)
        follow_up = handover.follow_up
        message = f"job {job.state}" + (f"; follow-up: {follow_up.message}" if follow_up else "")
        if handover.started:
            message += f"; {len(handover.started)} queued job(s) started"
        ended = job.state.value if handover.released is not None else None
        return TrackOutcome("finished", message, job.job_id, follow_up, ended, handover.started)


def _ended_at(job: Job, attempt: Attempt) -> float:
    """When the ended `job` ended: the later of its last change and its attempt's recorded end
    (the job writes its final state first, then the attempt's end)."""
    return max(job.updated_at, attempt.ended_at or 0.0)
