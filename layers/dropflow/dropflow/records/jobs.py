"""Training jobs in the registry: their lifecycle and the records each attempt leaves.

queued -> launching -> running -> (interrupted -> launching -> running)* -> exporting ->
published | failed. Every write is a compare-and-set, so two writers never lose an update.

A model's jobs have a partition of their own (pk JOBS#<model>), apart from its catalog
(MODEL#<model>: versions, decisions, the champion; dropflow.records.catalog). The training
instances write job records and nothing else, and IAM can say so by partition key (the
training role's dynamodb:LeadingKeys condition in template.yaml): an instance can never write
a decision or the champion pointer.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import IntEnum, StrEnum
from typing import Any

from pydantic import BaseModel, Field

from dropflow.errors import ConcurrentUpdate, DropflowError, NotFoundError
from dropflow.ports import Registry
from dropflow.records.catalog import MODELS_PK
from dropflow.vocabulary.names import check_model_name, model_of_job


def bootstrap_failure_key(model: str, job_id: str, attempt: int) -> str:
    """Where a training instance's bootstrap leaves why it failed before training started (the
    UserData of template.yaml's TrainingLaunchTemplate writes it; the tracker reads it)."""
    return f"jobs/{model}/{job_id}/attempts/{attempt}/bootstrap-failure.txt"


# The most of a bootstrap's reason that goes into the job's record.
MAX_BOOTSTRAP_REASON = 1000


class ExitCode(IntEnum):
    """How the training entrypoint ends; the tracker decides what to do from it."""

    OK = 0  # published (or nothing to do)
    CRASHED = 1  # unexpected error: worth another attempt
    USER_ERROR = 2  # bad data or spec: do not retry, the message says what to fix
    INTERRUPTED = 75  # spot notice honoured, checkpoint stored: resume me (EX_TEMPFAIL)


class JobState(StrEnum):
    QUEUED = "queued"
    LAUNCHING = "launching"
    RUNNING = "running"
    INTERRUPTED = "interrupted"
    EXPORTING = "exporting"
    PUBLISHED = "published"
    FAILED = "failed"

    @property
    def terminal(self) -> bool:
        return self in (JobState.PUBLISHED, JobState.FAILED)


_NEXT: dict[JobState, set[JobState]] = {
    JobState.QUEUED: {JobState.LAUNCHING, JobState.FAILED},
    JobState.LAUNCHING: {JobState.RUNNING, JobState.INTERRUPTED, JobState.FAILED},
    JobState.RUNNING: {JobState.EXPORTING, JobState.INTERRUPTED, JobState.FAILED},
    JobState.INTERRUPTED: {JobState.LAUNCHING, JobState.FAILED},
    JobState.EXPORTING: {JobState.PUBLISHED, JobState.INTERRUPTED, JobState.FAILED},
    JobState.PUBLISHED: set(),
    JobState.FAILED: set(),
}


class IllegalTransition(DropflowError):
    """A state change the lifecycle does not allow (e.g. published -> running)."""


class Attempt(BaseModel):
    """One try at running the job on one instance. Prices are USD per hour, None if unknown
    (dropflow.records.ledger turns them into the job's cost ledger)."""

    number: int
    instance_id: str | None = None
    instance_type: str | None = None
    zone: str | None = None
    lifecycle: str | None = None
    price_per_hour: float | None = None  # what this attempt pays (spot or on-demand)
    on_demand_price_per_hour: float | None = None  # the same type on-demand, for savings
    # Why this attempt runs on-demand (a spot failure, the deadline, the spec); None on spot.
    purchase_reason: str | None = None
    launched_at: float | None = None  # when its instance launched: billing starts here
    started_at: float | None = None  # when training started on it
    ended_at: float | None = None
    exit_reason: str | None = None
    seconds_lost: float | None = None


class Job(BaseModel):
    job_id: str
    model: str
    data_version: str
    state: JobState = JobState.QUEUED
    reason: str | None = None  # why it failed, or what it is waiting for
    trigger: str = "drop"  # drop | schedule | follow-up | manual
    attempts: list[Attempt] = Field(default_factory=list)
    version: str | None = None  # the model version it published
    # The sha256 (hex) of each file of `version` it wrote, by file name (model.onnx,
    # reference.npz, card.json): recorded with `version` before card.json is written, so that
    # promotion approves, and serving loads, only the bytes this job produced
    # (dropflow.vocabulary.digests).
    digests: dict[str, str] = Field(default_factory=dict)
    progress: dict[str, Any] = Field(default_factory=dict)  # heartbeat: epoch, step, loss...
    created_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)

    @property
    def current_attempt(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None


def jobs_pk(model: str) -> str:
    """The partition of the model's jobs."""
    return f"JOBS#{model}"


class JobStore:
    """Jobs kept in the Registry under pk JOBS#<model>, sk JOB#<job id>."""

    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    @staticmethod
    def _sk(job_id: str) -> str:
        return f"JOB#{job_id}"

    def create(self, job: Job) -> Job:
        self.registry.put_if_absent(MODELS_PK, job.model, {"created_at": job.created_at})
        if not self.registry.put_if_absent(
            jobs_pk(job.model), self._sk(job.job_id), job.model_dump(mode="json")
        ):
            raise DropflowError(f"job {job.job_id} already exists")
        return job

    def get(self, job_id: str) -> Job:
        """The job; raises NotFoundError (also for a malformed id)."""
        try:
            model = model_of_job(job_id)
        except ValueError as exc:
            raise NotFoundError(str(exc)) from None
        rec = self.registry.get(jobs_pk(model), self._sk(job_id))
        if rec is None:
            raise NotFoundError(f"no job {job_id!r}")
        return Job.model_validate(rec.data)

    def for_model(self, model: str) -> list[Job]:
        """The model's jobs, oldest first."""
        check_model_name(model)
        recs = self.registry.query(jobs_pk(model), sk_prefix="JOB#")
        return [Job.model_validate(r.data) for r in recs]

    def models(self) -> list[str]:
        """Every model that ever had a job, sorted."""
        return [r.sk for r in self.registry.query(MODELS_PK)]

    def all(self) -> list[Job]:
        return [job for model in self.models() for job in self.for_model(model)]

    def update(self, job_id: str, change: Callable[[Job], Job | None], *, tries: int = 20) -> Job:
        """Apply `change` to the current job with compare-and-set, retrying on conflicts.

        `change` gets a copy and returns the new job (or mutates it and returns None).
        """
        model = model_of_job(job_id)
        for _ in range(tries):
            rec = self.registry.get(jobs_pk(model), self._sk(job_id))
            if rec is None:
                raise NotFoundError(f"no job {job_id!r}")
            current = Job.model_validate(rec.data)
            draft = current.model_copy(deep=True)
            new = change(draft) or draft
            if new == current:
                return current
            new.updated_at = time.time()
            if self.registry.compare_and_set(
                jobs_pk(model),
                self._sk(job_id),
                new.model_dump(mode="json"),
                expected_revision=rec.revision,
            ):
                return new
        raise ConcurrentUpdate(f"job {job_id}: gave up after {tries} conflicting updates")

    def transition(self, job_id: str, to: JobState, **changes: Any) -> Job:
        """Move the job to state `to` (checked against the lifecycle) and set `changes`."""

        def apply(job: Job) -> Job:
            if job.state != to and to not in _NEXT[job.state]:
                raise IllegalTransition(f"job {job_id}: {job.state} -> {to} is not allowed")
            return job.model_copy(update={"state": to, **changes})

        return self.update(job_id, apply)

    def record_publication(self, job_id: str, version: str, digests: dict[str, str]) -> Job:
        """Record that the job is publishing `version`, whose files hash to `digests` (file
        name -> sha256 hex). Written before the version's card.json, which starts promotion:
        promotion trusts a version only when its job recorded it here."""

        def apply(job: Job) -> Job:
            return job.model_copy(update={"version": version, "digests": dict(digests)})

        return self.update(job_id, apply)

    def update_attempt(self, job_id: str, number: int, **changes: Any) -> Job:
        """Set fields of attempt `number` (1-based)."""

        def apply(job: Job) -> None:
            for attempt in job.attempts:
                if attempt.number == number:
                    for key, value in changes.items():
                        setattr(attempt, key, value)

        return self.update(job_id, apply)

    def set_progress(self, job_id: str, progress: dict[str, Any]) -> Job:
        def apply(job: Job) -> None:
            job.progress = progress

        return self.update(job_id, apply)
