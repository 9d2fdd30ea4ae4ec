"""The job's heartbeat: `jobs/<model>/<job-id>/heartbeat.json` and the job's progress record.

Written at every stage change (loading, training, exporting, interrupted); while loading, a
second into the read and then every HEARTBEAT_SECONDS (30, or $DROPFLOW_HEARTBEAT_SECONDS):
rows_read, read_fraction and load_eta_seconds (the time left reading the data, kept apart from
eta_seconds, which is training's and which the launcher takes as the work left); while
training, every HEARTBEAT_SECONDS: epoch, epochs, step, steps, loss, samples_per_second,
eta_seconds. Always: stage, updated_at (epoch seconds) and attempt. `dropflow status` and the
local console read the registry copy. A heartbeat that cannot be written is
logged and skipped: it is not worth losing the training for.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from dropflow.ports import ObjectStore
from dropflow.records.jobs import Job, JobStore
from training.checkpoint import job_prefix
from training.loop import Progress
from training.reading import ReadProgress

log = logging.getLogger(__name__)

# While training. DROPFLOW_HEARTBEAT_SECONDS overrides it (a local console wants a livelier
# line); read at each use, so tests may lower it.
HEARTBEAT_SECONDS = float(os.environ.get("DROPFLOW_HEARTBEAT_SECONDS", "") or 30.0)
HEARTBEAT_FILE = "heartbeat.json"


def heartbeat_key(model: str, job_id: str) -> str:
    return f"{job_prefix(model, job_id)}{HEARTBEAT_FILE}"


class Heartbeat:
    """Writes one job attempt's progress to the store and the registry."""

    def __init__(
        self,
        store: ObjectStore,
        jobs: JobStore,
        job: Job,
        attempt: int,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.jobs = jobs
        self.job = job
        self.attempt = attempt
        self.clock = clock
        self.since = clock()
        self.stage_name = "starting"
        self.last: dict[str, Any] = {}
        self.writes = 0

    @property
    def key(self) -> str:
        return heartbeat_key(self.job.model, self.job.job_id)

    def stage(self, stage: str, **extra: Any) -> None:
        """Record a stage change (the training figures so far stay in the record)."""
        self.stage_name = stage
        self._write({**self.last, **extra})

    def loading(self, progress: ReadProgress) -> None:
        """Record how far reading the data has got (a training.reading.ReadMeter calls this);
        the figures go with the loading stage and are not kept past it."""
        eta = progress.eta_seconds
        self._write(
            {
                **self.last,
                "rows_read": progress.rows,
                "read_fraction": round(progress.fraction, 3),
                "load_eta_seconds": None if eta is None else round(eta),
            }
        )

    def progress(self, progress: Progress) -> None:
        """Record training progress (the loop calls this every HEARTBEAT_SECONDS)."""
        self.last = {
            "epoch": progress.epoch,
            "epochs": progress.epochs,
            "step": progress.step,
            "steps": progress.steps,
            "loss": progress.loss,
            "samples_per_second": round(progress.samples_per_second, 1),
            "eta_seconds": None if progress.eta_seconds is None else round(progress.eta_seconds),
        }
        self._write(self.last)

    def _write(self, figures: dict[str, Any]) -> None:
        record = {
            **figures,
            "stage": self.stage_name,
            "attempt": self.attempt,
            "updated_at": self.clock(),
        }

        def merge(job: Job) -> None:
            # The tracker adds a spot notice it saw through EventBridge: keep this attempt's.
            notice_at = job.progress.get("notice_at")
            kept = {}
            if isinstance(notice_at, int | float) and notice_at >= self.since:
                kept = {"notice": job.progress.get("notice"), "notice_at": notice_at}
            job.progress = {**kept, **record}

        try:
            self.store.put(self.key, json.dumps(record).encode(), content_type="application/json")
            self.jobs.update(self.job.job_id, merge)
            self.writes += 1
        except Exception as exc:  # a lost heartbeat is noise; a lost job is not
            log.warning("heartbeat not written: %s: %s", type(exc).__name__, exc)
