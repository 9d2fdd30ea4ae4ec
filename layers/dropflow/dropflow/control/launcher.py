"""Starting training jobs: exactly once per (model, data version), one at a time per model,
and no more at once across all models than the stack owner allows.

A drop under `datasets/<model>/` (or the schedule) asks for training. The request is
idempotent twice over:
- the data version (a hash of every key and ETag under the prefix) is claimed with a
  conditional write, so duplicate deliveries of the same event start nothing new;
- each model has one *active slot* (registry record MODEL#<m>/ACTIVE). A drop that arrives
  while a job holds the slot sets `follow_up` on the slot instead of starting a parallel job;
  when the job ends, the tracker releases the slot and asks for one follow-up run, which
  then sees all the data that arrived meanwhile.

A new job then takes its turn in the training queue (dropflow.records.training_queue): at most
the owner's TrainingMaxConcurrentJobs jobs hold a training slot at once; the others wait,
first-come first-served, and are started as slots free (`drain`): when a job ends (published,
failed, or its launch failed) and on the watchdog's sweep. A job keeps its slot across its
relaunches.

Before anything is launched, the model's spec is read and checked against the owner's limits
(`job_compute`, dropflow.vocabulary.limits), and the first data file's header (read by
dropflow.vocabulary.data_header) against the target rule (`check_target`,
dropflow.vocabulary.target): an invalid spec, an instance type outside the allowlist, a budget
above the maximum or a table with no column to predict fails the job at once with the message
that names the key or lists the columns, so no instance is ever booted to find a typo. Every
attempt is checked against the job's limits (`stop_reason`: budget, always set; max runtime;
deadline) and bought spot unless the spec or the deadline says otherwise (`Launcher._launch`,
`deadline_needs_on_demand`). Each attempt records its price and the on-demand equivalent, from
which dropflow.records.ledger keeps the job's cost ledger; an instance that comes back with no
price at all is terminated at once, never counted at $0.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from dropflow.errors import DropflowError, NotFoundError, UserInputError
from dropflow.observability import logger
from dropflow.ports import (
    Compute,
    Instance,
    LaunchError,
    LaunchRequest,
    ObjectStore,
    Registry,
)
from dropflow.records.catalog import model_pk
from dropflow.records.jobs import Attempt, Job, JobState, JobStore
from dropflow.records.ledger import budget_spend, describe_usd, seconds_run, unpriced_runs
from dropflow.records.training_queue import TrainingQueue
from dropflow.vocabulary.clock import iso_utc
from dropflow.vocabulary.data_header import data_columns
from dropflow.vocabulary.datasets import (
    data_files,
    data_version,
    dataset_prefix,
    models_with_data,
    no_data_reason,
    trainable,
)
from dropflow.vocabulary.limits import MAX_JOBS_SETTING, JobCompute, OwnerLimits, setting
from dropflow.vocabulary.names import check_model_name, new_job_id
from dropflow.vocabulary.prices import OWNER_PRICES_PARAMETER, OWNER_PRICES_VARIABLE
from dropflow.vocabulary.spec import DEFAULT_FAMILY, ComputeSection, read_spec, spec_key
from dropflow.vocabulary.target import choose_target

ACTIVE = "ACTIVE"
# How long a slot taken by a request whose job record is not written yet counts as held.
SLOT_GRACE_SECONDS = 300.0
_REASON_CHARS = 500  # a purchase reason quoting every pool's error stays readable
# A spec's error is kept as the training job keeps it (training/job.py): whole, within reason.
_SPEC_REASON_CHARS = 2000
# Launch failures that another purchase option may get past.
FALLBACK_KINDS = frozenset({"capacity", "price", "quota"})

Action = Literal["launched", "queued", "duplicate", "coalesced", "no-data", "failed", "skipped"]


@dataclass(frozen=True)
class LaunchOutcome:
    action: Action
    model: str
    message: str
    job_id: str | None = None
    data_version: str | None = None
    # The run that drops during a job asked for, started when that job failed to launch.
    follow_up: LaunchOutcome | None = None
    # Jobs waiting in the training queue that this call started (or failed to) as slots freed.
    started: tuple[LaunchOutcome, ...] = ()

    def jobs_failed(self) -> int:
        """How many jobs this outcome saw fail to start: its own, its follow-up's, and those
        of the queued jobs it started."""
        own = 1 if self.action == "failed" else 0
        own += self.follow_up.jobs_failed() if self.follow_up else 0
        return own + sum(o.jobs_failed() for o in self.started)


class Launcher:
    """Turns 'train model M' requests into at most one running job per model and data version,
    and at most `limits.max_concurrent_jobs` running jobs in all."""

    def __init__(
        self,
        store: ObjectStore,
        registry: Registry,
        compute: Compute,
        *,
        max_attempts: int = 3,
        claim_ttl_seconds: int = 7 * 24 * 3600,
        clock: Callable[[], float] = time.time,
        limits: OwnerLimits | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.compute = compute
        self.jobs = JobStore(registry)
        self.queue = TrainingQueue(registry, clock)
        self.max_attempts = max_attempts
        self.claim_ttl_seconds = claim_ttl_seconds
        self.clock = clock
        self.limits = limits if limits is not None else OwnerLimits()

    # ------------------------------------------------------------------ requests
    def request_training(self, model: str, *, trigger: str = "drop") -> LaunchOutcome:
        """Start a job for the model's current data unless this data was already claimed.

        The new job waits in the training queue (outcome `queued`, with its place in line)
        when the stack's training slots are all held; it starts when one frees.
        """
        outcome = self._request(model, trigger)
        if outcome.action != "queued":
            return outcome
        return self._own(outcome, self.drain())

    def _request(self, model: str, trigger: str) -> LaunchOutcome:
        """Claim the data, take the model's slot and record a job that waits in line for a
        training slot (outcome `queued`); launches nothing: the caller drains the queue."""
        check_model_name(model)
        objects = self.store.list(dataset_prefix(model))
        if not trainable(objects):
            return LaunchOutcome("no-data", model, no_data_reason(dataset_prefix(model)))
        version = data_version(objects)
        claim_sk = f"CLAIM#{version}"
        claimed = self.registry.put_if_absent(
            model_pk(model),
            claim_sk,
            {"trigger": trigger, "at": self.clock()},
            expires_at=self.clock() + self.claim_ttl_seconds,
        )
        if not claimed:
            return LaunchOutcome(
                "duplicate",
                model,
                f"data version {version} is already trained or training (no new data)",
                None,
                version,
            )

        job_id = new_job_id(model)
        holder = self._take_slot(model, job_id)
        if holder is not None:
            # Let the follow-up run claim this data version again once the active job ends.
            self.registry.delete(model_pk(model), claim_sk)
            return LaunchOutcome(
                "coalesced",
                model,
                f"job {holder} is running; one follow-up run will train on the new data",
                holder,
                version,
            )
        job = self.jobs.create(
            Job(
                job_id=job_id,
                model=model,
                data_version=version,
                trigger=trigger,
                created_at=self.clock(),  # a deadline such as `6h` counts from here
                reason=self._waiting_reason(),
            )
        )
        logger.info("job created", extra={"job_id": job.job_id, "data_version": version})
        position = self.queue.enqueue(job_id, job.created_at)
        return self._queued(job, position)

    def scheduled_training(self) -> list[LaunchOutcome]:
        """The retrain schedule's tick: one outcome per model with data. A model is retrained
        when its spec has a `schedule` section, its last published job is older than
        `schedule.every`, and its data changed since that job; any other is skipped, saying
        why. The request itself is the drop's, so the data version is claimed exactly once."""
        return [self._scheduled(model) for model in models_with_data(self.store)]

    def _scheduled(self, model: str) -> LaunchOutcome:
        try:
            spec = read_spec(self.store, model)
        except UserInputError as exc:
            return LaunchOutcome("skipped", model, f"not scheduled: {exc}")
        if spec.schedule is None:
            return LaunchOutcome(
                "skipped", model, f"no schedule in {spec_key(model)}: retrained by drops only"
            )
        objects = self.store.list(dataset_prefix(model))
        if not trainable(objects):
            return LaunchOutcome("no-data", model, no_data_reason(dataset_prefix(model)))
        version = data_version(objects)
        published = [j for j in self.jobs.for_model(model) if j.state == JobState.PUBLISHED]
        last = max(published, key=lambda j: j.created_at, default=None)
        if last is not None:
            if last.data_version == version:
                return LaunchOutcome(
                    "skipped", model, f"data unchanged since job {last.job_id}", None, version
                )
            due = last.created_at + spec.schedule.every_seconds
            if self.clock() < due:
                when = iso_utc(due, zone="+00:00")
                return LaunchOutcome(
                    "skipped",
                    model,
                    f"data changed, retrain due at {when} (schedule.every {spec.schedule.every})",
                    None,
                    version,
                )
        return self.request_training(model, trigger="schedule")

    # ------------------------------------------------------------------ the training queue
    def launch_attempt(self, job_id: str) -> LaunchOutcome:
        """Launch the job's next attempt (first run or resume) if it holds a training slot,
        and start the queued jobs that free slots let start.

        A job without a slot (one whose slot was recovered, or from before the cap) waits in
        line for one: outcome `queued`. The job is failed instead, with the reason, when its
        spec is invalid or outside the owner's limits, or it is past its deadline, has spent
        its budget or used up its max runtime (see `stop_reason`).
        """
        job = self.jobs.get(job_id)
        if self.queue.state().holds(job_id):
            own = self._attempt(job)
        else:
            own = self._queued(job, self.queue.enqueue(job_id, job.created_at))
        return self._own(own, self.drain())

    def drain(self) -> list[LaunchOutcome]:
        """Start the jobs first in line while training slots are free: the outcome of each
        job this call started. A job whose launch fails frees its slot for the next in line.

        Each slot is handed over by one compare-and-set (TrainingQueue.fill), so however many
        callers drain at once, each queued job is started by exactly one of them.
        """
        outcomes = []
        while moved := self.queue.fill(self.limits.max_concurrent_jobs):
            for job_id in moved:
                try:
                    job = self.jobs.get(job_id)
                except NotFoundError:
                    job = None
                if job is None or job.state.terminal:
                    self.queue.release(job_id)  # nothing to start: let the next one in
                    continue
                outcomes.append(self._attempt(job))
        return outcomes

    def _own(self, outcome: LaunchOutcome, started: list[LaunchOutcome]) -> LaunchOutcome:
        """`outcome` as its job now is (see `_settle`), carrying the other jobs `started`."""
        pool = list(started)
        settled = self._settle(outcome, pool)
        return dataclasses.replace(settled, started=tuple(pool))

    def _settle(self, outcome: LaunchOutcome, pool: list[LaunchOutcome]) -> LaunchOutcome:
        """A `queued` outcome replaced by its job's launch when `pool` has it (taken out of
        `pool`), else told its place in line as it is now; the same for its follow-up."""
        if outcome.action == "queued" and outcome.job_id is not None:
            mine = next((o for o in pool if o.job_id == outcome.job_id), None)
            if mine is not None:
                pool.remove(mine)
                outcome = mine
            else:
                position = self.queue.state().position(outcome.job_id)
                message = self._queued_message(outcome.job_id, position)
                outcome = dataclasses.replace(outcome, message=message)
        if outcome.follow_up is not None:
            outcome = dataclasses.replace(outcome, follow_up=self._settle(outcome.follow_up, pool))
        return outcome

    def _queued(self, job: Job, position: int | None) -> LaunchOutcome:
        return LaunchOutcome(
            "queued",
            job.model,
            self._queued_message(job.job_id, position),
            job.job_id,
            job.data_version,
        )

    def _queued_message(self, job_id: str, position: int | None) -> str:
        if position is None:
            return f"job {job_id} was given a training slot by a concurrent request"
        return f"job {job_id} is number {position} in line: {self._waiting_reason()}"

    def _waiting_reason(self) -> str:
        cap = self.limits.max_concurrent_jobs
        return (
            f"waiting for a training slot (at most {cap} "
            f"{'jobs train' if cap != 1 else 'job trains'} at once: {setting(MAX_JOBS_SETTING)})"
        )

    # ------------------------------------------------------------------ one attempt
    def _attempt(self, job: Job) -> LaunchOutcome:
        """Launch the next attempt of `job`, which holds a training slot (or fail the job,
        which frees the slot)."""
        number = len(job.attempts) + 1
        try:
            compute = self.job_compute(job.model)
            self.check_target(job.model)
        except UserInputError as exc:
            # The message the training job would fail with, before any instance is booted.
            reason = str(exc)[:_SPEC_REASON_CHARS]
            logger.warning("job refused before launch", extra={"job_id": job.job_id})
            return self._failed(job, reason)
        now = self.clock()
        refusal = stop_reason(job, compute, now, launching=True)
        if refusal is not None:
            reason = f"attempt {number} not launched: {refusal}"
            logger.warning("job stopped", extra={"job_id": job.job_id, "reason": reason})
            return self._failed(job, reason)

        def add_attempt(j: Job) -> Job:
            return j.model_copy(
                update={
                    "attempts": [*j.attempts, Attempt(number=number, started_at=self.clock())],
                    "reason": None,
                }
            )

        self.jobs.transition(job.job_id, JobState.LAUNCHING)
        self.jobs.update(job.job_id, add_attempt)
        try:
            instance, purchase_reason = self._launch(job, number, compute, now)
        except (LaunchError, OSError) as exc:
            reason = f"attempt {number} could not start: {exc}"
            self.jobs.update_attempt(job.job_id, number, ended_at=self.clock(), exit_reason=reason)
            return self._failed(job, reason)
        self.jobs.update_attempt(
            job.job_id,
            number,
            instance_id=instance.instance_id,
            instance_type=instance.instance_type,
            zone=instance.zone,
            lifecycle=instance.lifecycle,
            price_per_hour=instance.price_per_hour,
            on_demand_price_per_hour=instance.on_demand_price_per_hour,
            purchase_reason=purchase_reason,
            launched_at=instance.launched_at,
            started_at=instance.launched_at,
        )
        if instance.price_per_hour is None and instance.on_demand_price_per_hour is None:
            return self._unpriced(job, number, instance)
        logger.info("attempt launched", extra={"job_id": job.job_id, "attempt": number})
        return LaunchOutcome(
            "launched",
            job.model,
            f"attempt {number} started on {instance.instance_id}"
            + (f" ({instance.lifecycle}: {purchase_reason})" if purchase_reason else ""),
            job.job_id,
            job.data_version,
        )

    def _unpriced(self, job: Job, number: int, instance: Instance) -> LaunchOutcome:
        """An instance that came with no price: its hours could not count against the budget
        (never as $0), so it is stopped at once and the job fails saying how to price it."""
        self.compute.terminate(instance.instance_id)
        reason = (
            f"attempt {number}: {instance.instance_id} ({instance.instance_type or 'type unknown'})"
            " came with no price, so what it costs could not count against the job's budget; it "
            f"was terminated at once. Price that instance type with the stack parameter "
            f"{OWNER_PRICES_PARAMETER} ({OWNER_PRICES_VARIABLE})"
        )
        self.jobs.update_attempt(job.job_id, number, ended_at=self.clock(), exit_reason=reason)
        logger.warning("unpriced instance terminated", extra={"job_id": job.job_id})
        return self._failed(job, reason)

    def job_compute(self, model: str) -> JobCompute:
        """What a job of `model` may use: its spec's compute section within the owner's limits
        (dropflow.vocabulary.limits). Raises UserInputError, with the message the training job
        would give, for an invalid spec, and naming the key and the allowed values for one
        outside the limits."""
        return self.limits.bound(read_spec(self.store, model).compute, source=spec_key(model))

    def check_target(self, model: str) -> None:
        """Raise UserInputError, with the message the training job would give, when a table
        model's data has no column to predict (dropflow.vocabulary.target): the spec names
        none and no column, or several, are named target, label, class or y; or the spec's
        target is not a column. Reads the first data file's header only (a CSV file's first
        line, a Parquet file's footer); one that cannot be read here is left to the job."""
        spec = read_spec(self.store, model)
        if spec.family != DEFAULT_FAMILY:
            return  # another family reads its data its own way
        files = data_files(self.store.list(dataset_prefix(model)))
        if not files:
            return
        # The training job takes the columns from the first file in key order.
        first = min(files, key=lambda info: info.key)
        columns = data_columns(self.store, first)
        if columns is not None:
            choose_target(columns, spec.target, model=model)

    def enforced_compute(self, model: str) -> JobCompute:
        """The limits the watchdog holds a running job of `model` to: job_compute, or, for a
        spec that turned invalid since the launch, the owner's defaults (the default budget):
        a job is never unbounded."""
        try:
            return self.job_compute(model)
        except UserInputError:
            return self.limits.bound(ComputeSection(), source=spec_key(model))

    def attempt_limit(self, model: str) -> int:
        """Failed attempts a job of `model` may have before it is failed."""
        return self.enforced_compute(model).max_attempts or self.max_attempts

    def _launch(
        self, job: Job, attempt: int, compute: JobCompute, now: float
    ) -> tuple[Instance, str | None]:
        """Spot first; on-demand when spot has no capacity (or cannot meet the deadline) and
        the spec allows it. Returns the instance and why it runs on-demand (None on spot)."""
        lifecycles = {
            "fallback": ["spot", "on-demand"],
            "never": ["spot"],
            "always": ["on-demand"],
        }[compute.on_demand]
        why_on_demand: str | None = "the spec says compute.on_demand: always"
        if compute.on_demand == "fallback":
            late = deadline_needs_on_demand(job, compute, now)
            if late is not None:
                # Spot stays the last resort: late is better than not at all.
                lifecycles, why_on_demand = ["on-demand", "spot"], late
                logger.info("on-demand for the deadline", extra={"job_id": job.job_id})
        tried: list[str] = []
        for lifecycle in lifecycles:
            request = LaunchRequest(
                job_id=job.job_id,
                model=job.model,
                attempt=attempt,
                # Always the list the limits allow: the spec's, else the owner's whole allowlist.
                instance_types=compute.instance_types,
                lifecycle=lifecycle,
            )
            try:
                instance = self.compute.launch(request)
            except LaunchError as exc:
                tried.append(f"{lifecycle}: {exc}")
                # On-demand would fail the same way on a bad request or a throttled API.
                if exc.kind not in FALLBACK_KINDS:
                    raise LaunchError("; ".join(tried), kind=exc.kind) from exc
                last = exc
                if lifecycle == "spot":
                    why_on_demand = f"spot failed ({exc.kind}): {exc}"[:_REASON_CHARS]
                continue
            return instance, (why_on_demand if lifecycle == "on-demand" else None)
        if compute.on_demand == "never":
            tried.append("on-demand not tried: the spec says compute.on_demand: never")
        raise LaunchError("; ".join(tried), kind=last.kind)

    # ------------------------------------------------------------------ the active slot
    def _take_slot(self, model: str, job_id: str) -> str | None:
        """Give the model's slot to `job_id`; if another live job holds it, flag a follow-up
        and return that job's id. Every change is a compare-and-set on one record."""
        pk = model_pk(model)
        for _ in range(50):
            rec = self.registry.get(pk, ACTIVE)
            mine = {"job_id": job_id, "follow_up": False, "taken_at": self.clock()}
            if rec is None:
                if self.registry.put_if_absent(pk, ACTIVE, mine):
                    return None
                continue
            holder = rec.data.get("job_id")
            if holder and self._is_live(holder, rec.data.get("taken_at")):
                if rec.data.get("follow_up") or self.registry.compare_and_set(
                    pk, ACTIVE, {**rec.data, "follow_up": True}, expected_revision=rec.revision
                ):
                    return holder
                continue
            # Free, or held by a job that ended without releasing it (a crash in between).
            # The new job reads all the data there is now: no follow-up owed.
            if self.registry.compare_and_set(pk, ACTIVE, mine, expected_revision=rec.revision):
                return None
        raise DropflowError(f"model {model}: the active-job record kept changing; try again")

    def _is_live(self, job_id: str, taken_at: float | None) -> bool:
        try:
            return not self.jobs.get(job_id).state.terminal
        except NotFoundError:
            # A request takes the slot before it records its job: for those few round trips
            # the holder is alive though its job is not there yet. One that died in between
            # (its Lambda timed out) frees the slot once the grace has passed.
            return taken_at is not None and self.clock() - float(taken_at) < SLOT_GRACE_SECONDS
        except DropflowError:
            return False

    def active_job(self, model: str) -> str | None:
        rec = self.registry.get(model_pk(model), ACTIVE)
        return rec.data.get("job_id") if rec else None

    def _failed(self, job: Job, reason: str) -> LaunchOutcome:
        """Fail the job with `reason`, free its training slot and its model's slot, and put
        the follow-up it owes in line (the caller's drain starts it); the outcome is this
        job's, carrying the follow-up's."""
        self.jobs.transition(job.job_id, JobState.FAILED, reason=reason)
        self.queue.release(job.job_id)
        follow_up = None
        if self.release_slot(job.model, job.job_id):
            follow_up = self._request(job.model, "follow-up")
        return LaunchOutcome(
            "failed", job.model, reason, job.job_id, job.data_version, follow_up=follow_up
        )

    def hand_over(self, model: str, job_id: str) -> Handover:
        """The ended job `job_id` gives up its training slot and its model's slot: the
        follow-up run that drops during it asked for is requested, and the queued jobs that
        the free slot lets start are started (the follow-up among them, in its turn)."""
        self.queue.release(job_id)
        released = self.release_slot(model, job_id)
        follow_up = self._request(model, "follow-up") if released else None
        started = self.drain()
        if follow_up is not None:
            logger.info("follow-up requested", extra={"job_id": job_id})
            follow_up = self._settle(follow_up, started)
        return Handover(released, follow_up, tuple(started))

    def release_slot(self, model: str, job_id: str) -> bool | None:
        """Free the slot held by `job_id`. Returns True when a follow-up run was requested
        while it ran (the caller then requests it once), False when there was none, and None
        when `job_id` did not hold the slot (already freed: nothing to do)."""
        pk = model_pk(model)
        for _ in range(50):
            rec = self.registry.get(pk, ACTIVE)
            if rec is None or rec.data.get("job_id") != job_id:
                return None
            follow_up = bool(rec.data.get("follow_up"))
            if self.registry.compare_and_set(
                pk, ACTIVE, {"job_id": None, "follow_up": False}, expected_revision=rec.revision
            ):
                return follow_up
        raise DropflowError(f"model {model}: could not release the active-job record")

    def recover_slots(self) -> list[str]:
        """Free the training slots and places in line of jobs that do not exist (any more),
        and take out of line the jobs that ended while they waited. Returns those jobs.

        A job that ended holding a slot is not freed here: it gives the slot up when its
        instance has ended (Tracker.sweep hands it over then), so that a job still
        finishing on its instance keeps counting against the cap.
        """
        state = self.queue.state()
        dead = []
        for job_id in [*state.running, *(j for _, j in state.waiting)]:
            try:
                job = self.jobs.get(job_id)
            except NotFoundError:
                dead.append(job_id)
                continue
            if job.state.terminal and not state.holds(job_id):
                dead.append(job_id)
        return self.queue.forget(dead) if dead else []


@dataclass(frozen=True)
class Handover:
    """What the end of a job set going: `released` is release_slot's answer for the model's
    slot, `follow_up` the follow-up run's outcome (None when none was owed), `started` the
    outcomes of the other queued jobs started."""

    released: bool | None
    follow_up: LaunchOutcome | None
    started: tuple[LaunchOutcome, ...] = ()


# ---------------------------------------------------------------------- budget and deadline
# Time a new attempt needs besides training: boot, data load, export and publish, plus the
# work a spot reclaim may cost. Spot is chosen only if the deadline leaves this much on top
# of the estimated training time, itself padded by SPOT_SLACK for a possible reclaim.
DEADLINE_MARGIN_SECONDS = 600.0
SPOT_SLACK = 1.25


def remaining_work_seconds(job: Job) -> float | None:
    """Estimated training seconds the job still needs, from its last heartbeat.

    The heartbeat of the latest attempt that reported (job.progress) says the step reached
    out of all steps, and usually the training loop's own estimate of the time left
    (`eta_seconds`, from its measured throughput): that estimate is used as it is. Without
    one, the time it took to reach that step is extrapolated: the seconds the earlier
    attempts ran, less the seconds they lost, divided by the steps done, times the steps
    left. A job that finished training needs 0 more; one that never reported has no
    estimate (None).
    """
    progress = job.progress or {}
    if progress.get("stage") in ("exporting", "published"):
        return 0.0
    eta = progress.get("eta_seconds")
    if isinstance(eta, int | float) and not isinstance(eta, bool) and eta >= 0:
        return float(eta)
    step, steps = progress.get("step"), progress.get("steps")
    if not (isinstance(step, int | float) and isinstance(steps, int | float)) or step <= 0:
        return None
    if step >= steps:
        return 0.0
    useful = sum(
        seconds_run(a, a.ended_at or job.updated_at) - (a.seconds_lost or 0.0) for a in job.attempts
    )
    if useful <= 0:
        return None
    return (steps - step) * useful / step


def deadline_needs_on_demand(job: Job, compute: JobCompute, now: float) -> str | None:
    """Why the next attempt must run on-demand to meet the job's deadline, or None when spot
    still can (or there is no deadline).

    Spot is judged too slow when the time left is less than the estimated remaining work
    (remaining_work_seconds; 0 when unknown) times SPOT_SLACK plus DEADLINE_MARGIN_SECONDS.
    """
    deadline = compute.deadline_at(job.created_at)
    if deadline is None:
        return None
    left = deadline - now
    remaining = remaining_work_seconds(job)
    needed = (remaining or 0.0) * SPOT_SLACK + DEADLINE_MARGIN_SECONDS
    if left >= needed:
        return None
    estimate = (
        "no estimate of the work left"
        if remaining is None
        else (f"about {remaining:.0f} s of training left")
    )
    return (
        f"the deadline ({compute.deadline}, {iso_utc(deadline)}) is {max(left, 0.0):.0f} s away "
        f"and spot would need about {needed:.0f} s ({estimate}, plus margin)"
    )


def stop_reason(job: Job, compute: JobCompute, now: float, *, launching: bool) -> str | None:
    """Why the job must not run on, or None.

    - budget (every job has one: its spec's compute.budget_usd, else the stack's default):
      what it spent (ledger.budget_spend, counting the running attempt up to `now`) has
      reached it, or cannot be known because an attempt ran without a price (never counted
      as $0);
    - max runtime: its attempts ran compute.max_runtime in all;
    - deadline (only when `launching` a new attempt): compute.deadline has passed. A running
      attempt is left to finish, since stopping it would throw its work away.
    """
    budget = f"{describe_usd(compute.budget_usd)} ({compute.budget_source})"
    spent = budget_spend(job.attempts, now)
    if spent is None:
        unpriced = ", ".join(
            f"attempt {a.number} on {a.instance_type or 'an unknown type'}"
            for a in unpriced_runs(job.attempts, now)
        )
        return (
            f"what the job has spent cannot be known ({unpriced} ran with no recorded "
            f"price), so its budget of {budget} cannot be kept; price that instance type with "
            f"the stack parameter {OWNER_PRICES_PARAMETER} ({OWNER_PRICES_VARIABLE})"
        )
    if spent >= compute.budget_usd:
        return f"the job has spent {describe_usd(spent)} of its budget of {budget}"
    limit = compute.max_runtime_seconds
    if limit is not None:
        ran = sum(seconds_run(a, now) for a in job.attempts)
        if ran >= limit:
            return (
                f"its attempts ran {ran:.0f} s in all, the max runtime is "
                f"{compute.max_runtime} (compute.max_runtime)"
            )
    if launching:
        deadline = compute.deadline_at(job.created_at)
        if deadline is not None and now >= deadline:
            return (
                f"the deadline ({compute.deadline}, {iso_utc(deadline)}) has passed "
                "(compute.deadline)"
            )
    return None
