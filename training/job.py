"""One training job, start to publish: what `python -m training` runs on the instance.

running -> read spec and data -> split, train, evaluate -> exporting -> ONNX export and parity
-> publish models/<model>/<version>/{model.onnx, reference.npz, card.json} -> published.

card.json is written last and only after parity passed: its presence is what tells promotion
that a version is complete. On bad data or spec (UserInputError) the job is failed with the
message as its reason and the process exits USER_ERROR; on anything else the attempt records
why it crashed and the process exits CRASHED, leaving the job state to the tracker (which may
try again). Nothing is published on either path.
"""

from __future__ import annotations

import logging
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from dropflow.card import Card, Feature, artifact_key, card_key
from dropflow.errors import NotFoundError, UserInputError
from dropflow.jobs import ExitCode, Job, JobState, JobStore
from dropflow.names import new_version
from dropflow.ports import ObjectNotFound, ObjectStore, Registry
from dropflow.spec import Spec, load_spec, spec_hash, spec_key
from training.data import load_dataset, split
from training.export import check_parity, export_onnx, reference_npz
from training.loop import EpochCallback, train
from training.metrics import evaluate
from training.model import predict

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
REFERENCE_FILE = "reference.npz"
HEARTBEAT_SECONDS = 5.0  # how often training progress is written to the job record
_REASON_CHARS = 2000  # keep registry items small whatever an exception's message holds


def read_spec(store: ObjectStore, model: str) -> Spec:
    """The model's validated spec (defaults when there is no dropflow.yaml)."""
    key = spec_key(model)
    try:
        text = store.get(key)
    except ObjectNotFound:
        return load_spec(None)
    return load_spec(text, source=key)


def _start(jobs: JobStore, job: Job, attempt: int) -> None:
    # A manual run, or a relaunch racing the tracker, may find the job before `launching`.
    if job.state in (JobState.QUEUED, JobState.INTERRUPTED):
        jobs.transition(job.job_id, JobState.LAUNCHING)
    jobs.transition(job.job_id, JobState.RUNNING, reason=None)
    jobs.update_attempt(job.job_id, attempt, started_at=time.time())


def _heartbeat(jobs: JobStore, job_id: str) -> EpochCallback:
    last = 0.0

    def on_epoch(epoch: int, epochs: int, loss: float) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= HEARTBEAT_SECONDS or epoch == epochs:
            last = now
            jobs.set_progress(
                job_id, {"stage": "training", "epoch": epoch, "epochs": epochs, "loss": loss}
            )

    return on_epoch


def _utc_iso(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, UTC).isoformat(timespec="seconds")


def train_and_publish(
    job: Job,
    attempt: int,
    store: ObjectStore,
    jobs: JobStore,
    *,
    clock: Callable[[], float] = time.perf_counter,
) -> str:
    """Run the job's stages and publish a version; return the version id.

    Raises UserInputError for bad data or spec and ExportCheckFailed when parity fails; in
    both cases nothing has been written under models/.
    """
    started = clock()
    model = job.model
    jobs.set_progress(job.job_id, {"stage": "loading"})
    spec = read_spec(store, model)
    dataset = load_dataset(store, model, spec)
    primary = spec.primary_metric(dataset.task)
    log.info(
        "%s: %d rows, %d features, target %r (%s%s) from %d file(s)",
        model,
        len(dataset.y),
        len(dataset.features),
        dataset.target,
        dataset.task,
        f", {dataset.n_classes} classes" if dataset.classes is not None else "",
        len(dataset.sources),
    )
    loaded = clock()

    parts = split(dataset, spec.training.holdout_fraction, spec.training.seed)
    trained = train(
        parts.x_train,
        parts.y_train,
        task=dataset.task,
        n_classes=dataset.n_classes,
        model=spec.model,
        training=spec.training,
        on_epoch=_heartbeat(jobs, job.job_id),
    )
    network = trained.network
    metrics = evaluate(
        dataset.task,
        primary,
        predict(network, parts.x_holdout),
        parts.y_train,
        parts.y_holdout,
        dataset.n_classes,
    )
    log.info(
        "holdout %s (baseline %s)",
        " ".join(f"{k}={v:.4f}" for k, v in metrics.holdout.items()),
        " ".join(f"{k}={v:.4f}" for k, v in metrics.baseline.items()),
    )
    trained_at = clock()

    jobs.transition(job.job_id, JobState.EXPORTING, progress={"stage": "exporting"})
    with tempfile.TemporaryDirectory(prefix="dropflow-export-") as tmp:
        onnx_path = export_onnx(network, parts.x_holdout, Path(tmp) / MODEL_FILE)
        parity, reference = check_parity(onnx_path, network, parts.x_holdout)
        exported = clock()

        # Parity passed: from here on, only writes. card.json goes last.
        version = new_version(job.job_id)
        store.put_file(
            artifact_key(model, version, MODEL_FILE),
            onnx_path,
            content_type="application/octet-stream",
        )
        model_bytes = onnx_path.stat().st_size
    store.put(
        artifact_key(model, version, REFERENCE_FILE),
        reference_npz(network, parts.x_holdout, reference),
        content_type="application/octet-stream",
    )
    now = time.time()
    attempts: list[dict[str, Any]] = []
    for record in jobs.get(job.job_id).attempts:
        if record.number == attempt:
            record = record.model_copy(update={"ended_at": now, "exit_reason": "published"})
        attempts.append(record.model_dump(mode="json"))
    card = Card(
        model=model,
        version=version,
        job_id=job.job_id,
        task=dataset.task,
        target=dataset.target,
        features=[Feature(name=name) for name in dataset.features],
        classes=dataset.classes,
        metrics=metrics,
        parity=parity,
        data_version=job.data_version,
        spec_hash=spec_hash(spec),
        created_at=_utc_iso(now),
        timings={
            "load": round(loaded - started, 3),
            "train": round(trained_at - loaded, 3),
            "export": round(exported - trained_at, 3),
            "total": round(clock() - started, 3),
        },
        files={"model": MODEL_FILE, "reference": REFERENCE_FILE},
        model_bytes=model_bytes,
        attempts=attempts,
        # Extra key (the card allows them): promotion's metric gate reads its tolerance here.
        promotion=spec.promotion.model_dump(mode="json"),
    )
    store.put(
        card_key(model, version),
        card.model_dump_json(indent=2).encode(),
        content_type="application/json",
    )
    log.info("published %s %s (%s %.4f)", model, version, primary, metrics.primary_value)
    return version


def _safely(what: str, action: Callable[[], object]) -> None:
    """Run a bookkeeping write on a failure path; its own failure must not hide the first."""
    try:
        action()
    except Exception as exc:  # the original error is what the caller reports
        log.warning("could not %s: %s: %s", what, type(exc).__name__, exc)


def run_job(job_id: str, attempt: int, store: ObjectStore, registry: Registry) -> int:
    """Run attempt `attempt` of job `job_id` to the end; return the process exit code.

    ExitCode.OK: published, or nothing to do (the job is already over, or a later attempt
    has replaced this one). USER_ERROR: the job is failed, the reason says what to fix.
    CRASHED: unexpected error, recorded on the attempt; the tracker decides about a retry.
    """
    jobs = JobStore(registry)
    try:
        job = jobs.get(job_id)
    except NotFoundError as exc:
        print(f"dropflow training: {exc}", file=sys.stderr)
        return ExitCode.CRASHED
    if job.state.terminal:
        log.info("job %s is already %s; nothing to do", job_id, job.state)
        return ExitCode.OK
    latest = max((a.number for a in job.attempts), default=attempt)
    if latest > attempt:
        log.info("job %s: attempt %d was replaced by attempt %d; exiting", job_id, attempt, latest)
        return ExitCode.OK

    try:
        _start(jobs, job, attempt)
        version = train_and_publish(job, attempt, store, jobs)
        jobs.transition(job_id, JobState.PUBLISHED, version=version, progress={})
        _safely(
            "record the attempt's end",
            lambda: jobs.update_attempt(
                job_id, attempt, ended_at=time.time(), exit_reason="published"
            ),
        )
        return ExitCode.OK
    except UserInputError as exc:
        message = str(exc)[:_REASON_CHARS]
        _safely(
            "mark the job failed",
            lambda: jobs.transition(job_id, JobState.FAILED, reason=message),
        )
        _safely(
            "record the attempt's end",
            lambda: jobs.update_attempt(
                job_id, attempt, ended_at=time.time(), exit_reason=f"failed: {message}"
            ),
        )
        print(f"dropflow training failed: {message}", file=sys.stderr)
        return ExitCode.USER_ERROR
    except Exception as exc:
        reason = f"crashed: {type(exc).__name__}: {exc}"[:_REASON_CHARS]
        traceback.print_exc()
        _safely(
            "record the crash",
            lambda: jobs.update_attempt(job_id, attempt, ended_at=time.time(), exit_reason=reason),
        )
        return ExitCode.CRASHED
