"""One training job attempt, start to publish: what `python -m training` runs on the instance.

running -> read spec and data -> split (train / validation / holdout, by index) -> resume
from the job's last checkpoint when it fits -> train (checkpoints, heartbeats, a stop check at
every step; early stopping, best weights, calibration) -> evaluate -> exporting -> ONNX export
and parity -> publish models/<model>/<version>/{model.onnx, reference.npz, curve.png, the
family's own files (a text model's tokenizer.json), card.json}, recording the version and the
sha256 of each but curve.png on the job before card.json is written -> published.

The spec's family (training.families) reads the data, builds the network, describes the
graph's input for the card and exports the graph; every other stage here is the same for
every family.

card.json is written last and only after parity passed: its presence is what tells promotion
that a version is complete. How an attempt ends (dropflow.records.jobs.ExitCode):

- OK (0): published; or nothing to do (the job is over, a later attempt replaced this one);
  or, under torchrun, a rank other than 0 whose share of the work is done.
- USER_ERROR (2): bad data or spec (UserInputError): the job is failed with the message as
  its reason; another attempt would fail the same way.
- CRASHED (1): anything else: the attempt records why, the job state is left to the tracker.
- INTERRUPTED (75): a spot notice, a rebalance recommendation, SIGTERM or SIGINT asked to
  stop. The loop stored a checkpoint at the next step boundary, the attempt records
  "interrupted: <kind>" and its end; the job is not failed: the tracker starts the next
  attempt, which resumes from that checkpoint.

Resume rule: an attempt continues from the newest readable checkpoint of its job when that
checkpoint was made from the same data version (the dataset files' keys and ETags, as the
launcher hashes them) and the same effective spec (spec_hash); otherwise it starts from the
first step and logs why. Nothing is published on any path but the first.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dropflow.errors import NotFoundError, UserInputError
from dropflow.ports import ObjectStore, Registry
from dropflow.records.jobs import Attempt, ExitCode, Job, JobState, JobStore
from dropflow.records.ledger import ledger
from dropflow.vocabulary.card import CARD_FILE, Card, Task, artifact_key, card_key
from dropflow.vocabulary.clock import iso_utc
from dropflow.vocabulary.datasets import data_version, dataset_prefix
from dropflow.vocabulary.digests import file_sha256_hex, sha256_hex
from dropflow.vocabulary.names import new_version
from dropflow.vocabulary.spec import ServingSection, read_spec, spec_hash
from training import heartbeat as heartbeats
from training import holdout
from training.checkpoint import CheckpointStore, Found, Lineage, mismatch
from training.curve import CURVE_FILE, training_curve
from training.distributed import Placement, place, release
from training.export import check_parity, reference_npz, reference_rows
from training.families import family_for
from training.heartbeat import Heartbeat
from training.joblog import AttemptLog
from training.loop import Score, train
from training.metrics import evaluate, task_metrics
from training.network import TaskNetwork, in_passes
from training.reading import ReadMeter
from training.split import fitting_rows, split_for
from training.stop import StopRequest, Watcher

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
REFERENCE_FILE = "reference.npz"
_REASON_CHARS = 2000  # keep registry items small whatever an exception's message holds


class Interrupted(Exception):
    """The attempt stopped early on request; its checkpoint (if any training ran) is stored."""

    def __init__(self, reason: str, step: int | None = None) -> None:
        super().__init__(f"interrupted: {reason}")
        self.reason = reason
        self.step = step


def observed_data_version(store: ObjectStore, model: str) -> str:
    """The data version of the files under the model's prefix now (as the launcher hashes it).

    The job record's data_version is what the launcher claimed; the files may have changed
    since (a later drop). A checkpoint is resumed only by a run that reads the same files.
    """
    return data_version(store.list(dataset_prefix(model)))


def seconds_lost(previous: Attempt, resumed: Mapping[str, Any] | None, *, now: float) -> float:
    """The work of attempt `previous` that the next attempt must do again, in seconds.

    `resumed` is the checkpoint the next attempt continues from (None: from the start). When
    `previous` wrote it, what was lost is the time from that checkpoint to the attempt's end
    (about 0 when it honoured a notice); when it wrote none, its whole running time.
    """
    ended = previous.ended_at if previous.ended_at is not None else now
    if resumed is not None and resumed.get("attempt") == previous.number:
        return max(0.0, ended - float(resumed["saved_at"]))
    if previous.started_at is None:
        return 0.0  # it never ran
    return max(0.0, ended - previous.started_at)


def resumed_epochs(resumes: Sequence[int], steps_per_epoch: int) -> list[float]:
    """Where the curve marks the job's resumes, in epochs (a step count over the steps of an
    epoch: a resume may fall mid-epoch), oldest first; `resumes` are the steps each run took
    over from (training.loop.Trained.resumes). A resume from step 0 lost nothing to mark."""
    return [step / max(1, steps_per_epoch) for step in resumes if step > 0]


def _start(jobs: JobStore, job: Job, attempt: int) -> None:
    # A manual run, or a relaunch racing the tracker, may find the job before `launching`.
    if job.state in (JobState.QUEUED, JobState.INTERRUPTED):
        jobs.transition(job.job_id, JobState.LAUNCHING)
    jobs.transition(job.job_id, JobState.RUNNING, reason=None)
    jobs.update_attempt(job.job_id, attempt, started_at=time.time())


def _holdout_score(task: Task, primary: str, x: holdout.Rows, y: np.ndarray) -> Score:
    """The primary metric of a network on the holdout rows (the curve's right panel), computed
    in passes of bounded memory (training.network.in_passes); streamed rows are read chunk by
    chunk every time (training.holdout), a matrix is moved to the device once."""
    on_device: dict[torch.device, torch.Tensor] = {}

    def score(network: TaskNetwork) -> float:
        if not isinstance(x, np.ndarray):
            return float(task_metrics(task, y, holdout.outputs(network, x))[primary])
        device = next(network.parameters()).device
        if device not in on_device:
            on_device[device] = torch.as_tensor(network.as_input(x)).to(device)
        outputs = in_passes(network, on_device[device]).numpy()
        return float(task_metrics(task, y, outputs)[primary])

    return score


def _resume_point(checkpoints: CheckpointStore) -> Found | None:
    found = checkpoints.latest()
    if found is None:
        log.info("no checkpoint for this job: training from the first step")
        return None
    why = mismatch(found.checkpoint, checkpoints.lineage)
    if why is not None:
        log.warning("not resuming from %s: %s; training from the first step", found.key, why)
        return None
    state = found.checkpoint
    log.info(
        "resuming from %s: epoch %d, batch %d of that epoch, step %d (saved by attempt %s)",
        found.key,
        int(state["epoch"]) + 1,
        int(state["step_in_epoch"]) + 1,
        found.step,
        state.get("attempt"),
    )
    return found


def _record_seconds_lost(jobs: JobStore, job_id: str, attempt: int, resumed: Found | None) -> None:
    job = jobs.get(job_id)
    previous = next((a for a in job.attempts if a.number == attempt - 1), None)
    if previous is None or previous.seconds_lost is not None:
        return
    lost = seconds_lost(previous, resumed.checkpoint if resumed else None, now=time.time())
    jobs.update_attempt(job_id, previous.number, seconds_lost=round(lost, 3))
    log.info("attempt %d lost %.1f s of work", previous.number, lost)


def _check_stop(stop: StopRequest, placement: Placement | None, step: int | None) -> None:
    """Raise Interrupted when a stop was asked for; with a placement, on every rank at once
    (all ranks must call it then: it is a collective)."""
    (stopping,) = placement.agree(stop()) if placement is not None else (stop(),)
    if stopping:
        raise Interrupted(stop.reason, step)


def train_and_publish(
    job: Job,
    attempt: int,
    store: ObjectStore,
    jobs: JobStore,
    *,
    placement: Placement | None = None,
    stop: StopRequest | None = None,
    heartbeat: Heartbeat | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> str | None:
    """Run the job's stages and publish a version; return the version id.

    On a rank other than 0 (torchrun) it trains its share and returns None. Raises
    UserInputError for bad data or spec and ExportCheckFailed when parity fails; in both
    cases nothing has been written under models/. Raises Interrupted when `stop` asked to
    stop (after the loop stored its checkpoint).
    """
    placement = placement or Placement(device=torch.device("cpu"))
    stop = stop or StopRequest()
    main = placement.is_main
    if main and heartbeat is None:
        heartbeat = Heartbeat(store, jobs, job, attempt)
    started = clock()
    model = job.model
    if heartbeat is not None:
        heartbeat.stage("loading")
    spec = read_spec(store, model)
    family = family_for(spec)
    lineage = Lineage(
        job_id=job.job_id,
        attempt=attempt,
        data_version=observed_data_version(store, model),
        spec_hash=spec_hash(spec),
    )
    # Rows read and the time left, in the heartbeat and the log, from the read's first second.
    meter = ReadMeter(
        heartbeat.loading if heartbeat is not None else None, every=heartbeats.HEARTBEAT_SECONDS
    )
    examples = family.read_metered(store, model, spec, meter)
    features = family.input_schema(examples)
    primary = spec.primary_metric(examples.task)
    log.info(
        "%s: %d rows, %d features, target %r (%s%s) from %d file(s); family %s",
        model,
        len(examples.y),
        len(features),
        examples.target,
        examples.task,
        f", {examples.n_classes} classes" if examples.classes is not None else "",
        len(examples.sources),
        family.name,
    )
    if lineage.data_version != job.data_version:
        log.info(
            "the dataset changed since the job was created (data version %s, job claimed %s)",
            lineage.data_version,
            job.data_version,
        )
    loaded = clock()
    parts = split_for(examples, spec.training)
    # Indices into the one matrix: only the holdout (for the card and parity) and the rows the
    # preprocessing is fitted on are copied out of it. A family whose rows stream keeps its
    # holdout streamed: it is read chunk by chunk wherever it is used (training.holdout).
    x_holdout, y_holdout = examples.x[parts.holdout], examples.y[parts.holdout]
    # The card counts every row that is not held out as a training row (validation included:
    # it shaped the model), and the majority/mean baseline learns from them.
    y_train = examples.y[np.concatenate([parts.train, parts.validation])]
    fit = fitting_rows(parts.train, spec.training.seed)
    log.info(
        "split: %d training, %d validation, %d holdout rows",
        len(parts.train),
        len(parts.validation),
        len(parts.holdout),
    )

    checkpoints = CheckpointStore(store, model, lineage) if main else None
    resumed = _resume_point(checkpoints) if checkpoints is not None else None
    if checkpoints is not None and resumed is not None:
        checkpoints.adopt(resumed.key, resumed.sha256)
    if main and attempt > 1:
        _record_seconds_lost(jobs, job.job_id, attempt, resumed)
    resume = resumed.checkpoint if resumed is not None else None
    if placement.distributed:
        resume = placement.broadcast(resume)
    _check_stop(stop, placement, resumed.step if resumed else 0)

    if heartbeat is not None:
        heartbeat.stage("training")
    log.info("training on %s", placement.description)
    trained = train(
        lambda: family.build(examples, examples.x[fit], examples.y[fit], spec),
        examples.x,
        examples.y,
        rows=parts.train,
        validation_rows=parts.validation,
        training=spec.training,
        placement=placement,
        sink=checkpoints,
        stop=stop,
        score=_holdout_score(examples.task, primary, x_holdout, y_holdout),
        on_progress=heartbeat.progress if heartbeat is not None else None,
        progress_seconds=heartbeats.HEARTBEAT_SECONDS,
        resume=resume,
    )
    if not trained.completed:
        log.warning(
            "stopped at step %d of %d (%s); checkpoint stored",
            trained.step,
            trained.steps,
            stop.reason,
        )
        raise Interrupted(stop.reason, trained.step)
    if not main:
        return None
    assert heartbeat is not None and checkpoints is not None
    network = trained.network
    metrics = evaluate(
        examples.task,
        primary,
        holdout.outputs(network, x_holdout),
        y_train,
        y_holdout,
        examples.n_classes,
    )
    log.info(
        "holdout %s (baseline %s)",
        " ".join(f"{k}={v:.4f}" for k, v in metrics.holdout.items()),
        " ".join(f"{k}={v:.4f}" for k, v in metrics.baseline.items()),
    )
    trained_at = clock()
    # Training is stored (the final checkpoint): a stop now costs only the export. The other
    # ranks are gone: this check is rank 0's alone.
    _check_stop(stop, None, trained.step)

    jobs.transition(job.job_id, JobState.EXPORTING)
    heartbeat.stage("exporting")
    with tempfile.TemporaryDirectory(prefix="dropflow-export-") as tmp:
        onnx_path = family.export(network, holdout.head(x_holdout, 8), Path(tmp) / MODEL_FILE)
        graphed = clock()
        parity, reference = check_parity(onnx_path, network, x_holdout)
        parity_seconds = clock() - graphed
        # From here on the holdout rows are those reference.npz carries: every one, or a
        # seeded sample when their inputs are large (training.export.reference_rows).
        evidence = reference_rows(x_holdout, spec.training.seed)
        x_holdout, y_holdout = x_holdout[evidence], y_holdout[evidence]
        reference = reference[evidence]
        version = new_version(job.job_id)
        curve = training_curve(
            trained.losses,
            trained.scores,
            primary,
            title=f"{model} {version}",
            validation_losses=trained.validation_losses,
            resumed_at=resumed_epochs(trained.resumes, trained.steps_per_epoch),
        )
        exported = clock()

        # Parity passed: from here on, only writes. card.json goes last.
        store.put_file(
            artifact_key(model, version, MODEL_FILE),
            onnx_path,
            content_type="application/octet-stream",
        )
        model_bytes = onnx_path.stat().st_size
        digests = {MODEL_FILE: file_sha256_hex(onnx_path)}
    # The family's own files (a text model's tokenizer), digests recorded like model.onnx's.
    files = {"model": MODEL_FILE, "reference": REFERENCE_FILE, "curve": CURVE_FILE}
    for role, (name, data) in family.files(examples).items():
        kind = "application/json" if name.endswith(".json") else "application/octet-stream"
        store.put(artifact_key(model, version, name), data, content_type=kind)
        digests[name] = sha256_hex(data)
        files[role] = name
    reference_bytes = reference_npz(network, x_holdout, reference, target=y_holdout)
    store.put(
        artifact_key(model, version, REFERENCE_FILE),
        reference_bytes,
        content_type="application/octet-stream",
    )
    digests[REFERENCE_FILE] = sha256_hex(reference_bytes)
    store.put(artifact_key(model, version, CURVE_FILE), curve, content_type="image/png")
    now = time.time()
    records: list[Attempt] = []
    for record in jobs.get(job.job_id).attempts:
        if record.number == attempt:
            record = record.model_copy(
                update={"ended_at": now, "exit_reason": "published", "seconds_lost": 0.0}
            )
        records.append(record)
    attempts: list[dict[str, Any]] = [record.model_dump(mode="json") for record in records]
    card = Card(
        model=model,
        version=version,
        job_id=job.job_id,
        task=examples.task,
        target=examples.target,
        features=features,
        classes=examples.classes,
        metrics=metrics,
        parity=parity,
        data_version=job.data_version,
        spec_hash=lineage.spec_hash,
        created_at=iso_utc(now, zone="+00:00"),
        timings={
            "load": round(loaded - started, 3),
            "train": round(trained_at - loaded, 3),
            "export": round(exported - trained_at, 3),
            # Of which the parity run: for a large graph, a share worth telling apart.
            "parity": round(parity_seconds, 3),
            "total": round(clock() - started, 3),
        },
        files=files,
        input=family.input_spec(examples),
        model_bytes=model_bytes,
        attempts=attempts,
        cost=ledger(records, now).to_dict(),  # up to publish: the shutdown after is not in it
        # Extra keys (the card allows them). Promotion's metric gate reads its tolerance here;
        # promotion's routing and the predict function read `serving` (never the spec itself).
        promotion=spec.promotion.model_dump(mode="json"),
        serving=(spec.serving or ServingSection()).model_dump(mode="json"),
        training={
            "family": family.name,
            "device": placement.description,
            "world_size": placement.world_size,
            "epochs": len(trained.losses),
            "epoch_budget": trained.steps // max(1, trained.steps_per_epoch),
            "steps": trained.step,
            "rows": {
                "train": len(parts.train),
                "validation": len(parts.validation),
                "holdout": len(parts.holdout),
            },
            # Early stopping and calibration (training.loop): the epoch whose weights were
            # kept, and the validation log loss before and after the temperature was fitted.
            "best_epoch": trained.best_epoch,
            "stopped_early": trained.stopped_early,
            "temperature": round(float(network.temperature), 6),
            "calibration": None
            if trained.calibration is None
            else {
                "log_loss_before": round(trained.calibration[0], 6),
                "log_loss_after": round(trained.calibration[1], 6),
            },
            "resumed_from_step": trained.resumed_from,
            "training_seconds": round(trained.training_seconds, 3),
            "samples_per_second": round(trained.samples_per_second, 1),
            "checkpoints": trained.checkpoints,
            "checkpoint_seconds": round(trained.checkpoint_seconds, 3),
            "data_version": lineage.data_version,
            "reference_rows": len(evidence),  # of the holdout's, in reference.npz
            **family.card_training(examples),
            # Per epoch, what curve.png draws: mean training loss, holdout primary metric;
            # and the validation loss early stopping watched.
            "history": {
                "loss": [round(v, 6) for v in trained.losses],
                primary: [round(v, 6) for v in trained.scores],
                "validation_loss": [round(v, 6) for v in trained.validation_losses],
            },
        },
    )
    card_bytes = card.model_dump_json(indent=2).encode()
    digests[CARD_FILE] = sha256_hex(card_bytes)
    # Recorded before card.json exists: card.json starts promotion, which approves only a
    # version its job recorded, with these digests (dropflow.promotion.provenance).
    jobs.record_publication(job.job_id, version, digests)
    store.put(card_key(model, version), card_bytes, content_type="application/json")
    log.info("published %s %s (%s %.4f)", model, version, primary, metrics.primary_value)
    return version


def _safely(what: str, action: Callable[[], object]) -> None:
    """Run a bookkeeping write on a failure path; its own failure must not hide the first."""
    try:
        action()
    except Exception as exc:  # the original error is what the caller reports
        log.warning("could not %s: %s: %s", what, type(exc).__name__, exc)


def run_job(
    job_id: str,
    attempt: int,
    store: ObjectStore,
    registry: Registry,
    *,
    stop: Any = None,
    watcher: Watcher | None = None,
    placement: Placement | None = None,
) -> int:
    """Run attempt `attempt` of job `job_id` to the end; return the process exit code.

    See the module docstring for the codes. `stop` (a threading.Event or a callable) asks the
    attempt to stop like a spot notice does; `watcher` (an InterruptionWatcher) is started
    for the attempt and stopped after it; SIGTERM and SIGINT stop it too while it runs in the
    main thread. `placement` defaults to what the environment says (torchrun or not).
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

    own_placement = placement is None
    if placement is None:
        try:
            placement = place()
        except Exception as exc:
            print(f"dropflow training: cannot set up the devices: {exc}", file=sys.stderr)
            return ExitCode.CRASHED
    request = StopRequest(stop, watcher if placement.is_main else None)
    try:
        with request.signals():
            if placement.is_main:
                return _run_main(job, attempt, store, jobs, request, placement)
            return _run_rank(job, attempt, store, jobs, request, placement)
    finally:
        if own_placement:
            release(placement)


def _run_rank(
    job: Job,
    attempt: int,
    store: ObjectStore,
    jobs: JobStore,
    stop: StopRequest,
    placement: Placement,
) -> int:
    """A rank other than 0: train its share; rank 0 records and reports the outcome."""
    try:
        train_and_publish(job, attempt, store, jobs, placement=placement, stop=stop)
    except Interrupted:
        return ExitCode.OK
    except UserInputError:
        return ExitCode.USER_ERROR
    except Exception:
        log.exception("rank %d crashed", placement.rank)
        return ExitCode.CRASHED
    return ExitCode.OK


def _run_main(
    job: Job,
    attempt: int,
    store: ObjectStore,
    jobs: JobStore,
    stop: StopRequest,
    placement: Placement,
) -> int:
    job_id = job.job_id
    heartbeat = Heartbeat(store, jobs, job, attempt)
    outcome = "ended"
    with AttemptLog(store, job.model, job_id, attempt) as attempt_log:
        if stop.watcher is not None:
            _safely("start the interruption watcher", stop.watcher.start)
        try:
            _start(jobs, job, attempt)
            log.info("job %s attempt %d", job_id, attempt)
            version = train_and_publish(
                job, attempt, store, jobs, placement=placement, stop=stop, heartbeat=heartbeat
            )
            jobs.transition(job_id, JobState.PUBLISHED, version=version, progress={})
            outcome = f"published {version}"
            _safely(
                "record the attempt's end",
                lambda: jobs.update_attempt(
                    job_id, attempt, ended_at=time.time(), exit_reason="published", seconds_lost=0.0
                ),
            )
            return ExitCode.OK
        except Interrupted as exc:
            reason = f"interrupted: {exc.reason}"
            outcome = reason + (f" at step {exc.step}" if exc.step is not None else "")
            detail = stop.detail
            log.warning(
                "%s%s; exiting for the next attempt to resume",
                outcome,
                f" ({detail})" if detail else "",
            )
            kind = exc.reason
            _safely("record the stage", lambda: heartbeat.stage("interrupted", notice=kind))
            _safely(
                "record the attempt's end",
                lambda: jobs.update_attempt(
                    job_id, attempt, ended_at=time.time(), exit_reason=reason
                ),
            )
            return ExitCode.INTERRUPTED
        except UserInputError as exc:
            message = str(exc)[:_REASON_CHARS]
            outcome = f"failed: {message}"
            log.error("failed: %s", message)
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
            outcome = reason
            log.exception("attempt %d crashed", attempt)
            _safely(
                "record the crash",
                lambda: jobs.update_attempt(
                    job_id, attempt, ended_at=time.time(), exit_reason=reason
                ),
            )
            return ExitCode.CRASHED
        finally:
            if stop.watcher is not None:
                with contextlib.suppress(Exception):
                    stop.watcher.stop()
            attempt_log.upload(outcome)
