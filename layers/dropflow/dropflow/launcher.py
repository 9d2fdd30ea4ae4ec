"""Starting training jobs: exactly once per (model, data version), one at a time per model.

A drop under `datasets/<model>/` (or the schedule) asks for training. The request is
idempotent twice over:
- the data version (a hash of every key and ETag under the prefix) is claimed with a
  conditional write, so duplicate deliveries of the same event start nothing new;
- each model has one *active slot* (registry record MODEL#<m>/ACTIVE). A drop that arrives
  while a job holds the slot sets `follow_up` on the slot instead of starting a parallel job;
  when the job ends, the tracker releases the slot and asks for one follow-up run, which
  then sees all the data that arrived meanwhile.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from dropflow.datasets import data_files, data_version, dataset_prefix
from dropflow.errors import DropflowError, UserInputError
from dropflow.jobs import Attempt, Job, JobState, JobStore, model_pk
from dropflow.names import check_model_name, new_job_id
from dropflow.observability import logger
from dropflow.ports import (
    Compute,
    Instance,
    LaunchError,
    LaunchRequest,
    ObjectNotFound,
    ObjectStore,
    Registry,
)
from dropflow.spec import ComputeSection, load_spec, spec_key

ACTIVE = "ACTIVE"
# Launch failures that another purchase option may get past.
FALLBACK_KINDS = frozenset({"capacity", "price", "quota"})

Action = Literal["launched", "duplicate", "coalesced", "no-data", "failed"]


@dataclass(frozen=True)
class LaunchOutcome:
    action: Action
    model: str
    message: str
    job_id: str | None = None
    data_version: str | None = None


class Launcher:
    """Turns 'train model M' requests into at most one running job per model and data version."""

    def __init__(
        self,
        store: ObjectStore,
        registry: Registry,
        compute: Compute,
        *,
        max_attempts: int = 3,
        claim_ttl_seconds: int = 7 * 24 * 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.registry = registry
        self.compute = compute
        self.jobs = JobStore(registry)
        self.max_attempts = max_attempts
        self.claim_ttl_seconds = claim_ttl_seconds
        self.clock = clock

    # ------------------------------------------------------------------ requests
    def request_training(self, model: str, *, trigger: str = "drop") -> LaunchOutcome:
        """Start a job for the model's current data unless this data was already claimed."""
        check_model_name(model)
        objects = self.store.list(dataset_prefix(model))
        if not data_files(objects):
            return LaunchOutcome(
                "no-data", model, f"no .csv or .parquet file under {dataset_prefix(model)}"
            )
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
            Job(job_id=job_id, model=model, data_version=version, trigger=trigger)
        )
        logger.info("job created", extra={"job_id": job.job_id, "data_version": version})
        return self.launch_attempt(job_id)

    def launch_attempt(self, job_id: str) -> LaunchOutcome:
        """Launch the job's next attempt on the Compute port (first run or resume)."""
        job = self.jobs.get(job_id)
        number = len(job.attempts) + 1

        def add_attempt(j: Job) -> Job:
            return j.model_copy(
                update={
                    "attempts": [*j.attempts, Attempt(number=number, started_at=self.clock())],
                    "reason": None,
                }
            )

        self.jobs.transition(job_id, JobState.LAUNCHING)
        self.jobs.update(job_id, add_attempt)
        try:
            instance = self._launch(job_id, job.model, number)
        except (LaunchError, OSError) as exc:
            reason = f"attempt {number} could not start: {exc}"
            self.jobs.update_attempt(job_id, number, ended_at=self.clock(), exit_reason=reason)
            self.jobs.transition(job_id, JobState.FAILED, reason=reason)
            self.release_slot(job.model, job_id)
            return LaunchOutcome("failed", job.model, reason, job_id, job.data_version)
        self.jobs.update_attempt(
            job_id,
            number,
            instance_id=instance.instance_id,
            instance_type=instance.instance_type,
            zone=instance.zone,
            lifecycle=instance.lifecycle,
            started_at=instance.launched_at,
        )
        logger.info("attempt launched", extra={"job_id": job_id, "attempt": number})
        return LaunchOutcome(
            "launched",
            job.model,
            f"attempt {number} started on {instance.instance_id}",
            job_id,
            job.data_version,
        )

    def compute_spec(self, model: str) -> ComputeSection:
        """The model's compute section; defaults when the spec is absent or invalid (the job
        itself then fails on the invalid spec, naming the key)."""
        try:
            return load_spec(self.store.get(spec_key(model))).compute
        except (ObjectNotFound, UserInputError):
            return ComputeSection()

    def attempt_limit(self, model: str) -> int:
        """Failed attempts a job of `model` may have before it is failed."""
        return self.compute_spec(model).max_attempts or self.max_attempts

    def _launch(self, job_id: str, model: str, attempt: int) -> Instance:
        """Spot first; on-demand when spot has no capacity and the spec allows it."""
        compute = self.compute_spec(model)
        lifecycles = {
            "fallback": ["spot", "on-demand"],
            "never": ["spot"],
            "always": ["on-demand"],
        }[compute.on_demand]
        tried: list[str] = []
        for lifecycle in lifecycles:
            request = LaunchRequest(
                job_id=job_id,
                model=model,
                attempt=attempt,
                instance_types=tuple(compute.instance_types or ()),
                lifecycle=lifecycle,
            )
            try:
                return self.compute.launch(request)
            except LaunchError as exc:
                tried.append(f"{lifecycle}: {exc}")
                # On-demand would fail the same way on a bad request or a throttled API.
                if exc.kind not in FALLBACK_KINDS:
                    raise LaunchError("; ".join(tried), kind=exc.kind) from exc
                last = exc
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
            if rec is None:
                if self.registry.put_if_absent(pk, ACTIVE, {"job_id": job_id, "follow_up": False}):
                    return None
                continue
            holder = rec.data.get("job_id")
            if holder and self._is_live(holder):
                if rec.data.get("follow_up") or self.registry.compare_and_set(
                    pk, ACTIVE, {**rec.data, "follow_up": True}, expected_revision=rec.revision
                ):
                    return holder
                continue
            # Free, or held by a job that ended without releasing it (a crash in between).
            if self.registry.compare_and_set(
                pk,
                ACTIVE,
                # The new job reads all the data there is now: no follow-up owed.
                {"job_id": job_id, "follow_up": False},
                expected_revision=rec.revision,
            ):
                return None
        raise DropflowError(f"model {model}: the active-job record kept changing; try again")

    def _is_live(self, job_id: str) -> bool:
        try:
            return not self.jobs.get(job_id).state.terminal
        except DropflowError:
            return False

    def active_job(self, model: str) -> str | None:
        rec = self.registry.get(model_pk(model), ACTIVE)
        return rec.data.get("job_id") if rec else None

    def release_slot(self, model: str, job_id: str) -> bool:
        """Free the slot held by `job_id`. Returns True when a follow-up run was requested
        while it ran (the caller then calls request_training once)."""
        pk = model_pk(model)
        for _ in range(50):
            rec = self.registry.get(pk, ACTIVE)
            if rec is None or rec.data.get("job_id") != job_id:
                return False
            follow_up = bool(rec.data.get("follow_up"))
            if self.registry.compare_and_set(
                pk, ACTIVE, {"job_id": None, "follow_up": False}, expected_revision=rec.revision
            ):
                return follow_up
        raise DropflowError(f"model {model}: could not release the active-job record")
