"""Checkpoints of a training job in the ObjectStore, and the manifest that points to the latest.

    jobs/<model>/<job-id>/checkpoints/step-000001234.pt    one per save, the last KEEP kept
    jobs/<model>/<job-id>/manifest.json                    written after the checkpoint it names

A checkpoint is a `torch.save` of plain containers, numbers, strings and tensors, so it loads
with `torch.load(weights_only=True)` (no pickled code runs on load):

    format            FORMAT
    model             the network's state_dict (float32 weights and the preprocessing buffers)
    optimizer         the optimizer's state_dict (Adam moments and step counts)
    scheduler         the learning-rate scheduler's state_dict
    epoch             completed epochs; the run continues with epoch `epoch` (0-based)
    step_in_epoch     optimizer steps already taken in that epoch
    global_step       optimizer steps since the start of the job
    epochs, steps_per_epoch   the run's shape (a resume checks steps_per_epoch)
    world_size        ranks that wrote it (any number of ranks can resume it: same batches)
    rng               order: the batch-order generator's state at the start of the epoch in
                      progress (replaying it gives that epoch's permutation); ranks: per rank,
                      torch CPU, CUDA (the rank's own device, or None), numpy and python
                      `random` states
    history           loss, score and validation loss per completed epoch; step_losses of
                      the epoch in progress
    early_stopping    best: the weights (a state_dict) of the epoch with the lowest validation
                      loss so far, or None; best_loss, best_epoch (1-based); bad: epochs since
                      it; stopping: early stopping has ended the epochs
    finished          training is over: the best weights are restored and the temperature
                      fitted (a resume returns the network as it is)
    calibration       [validation log loss before, after] the temperature was fitted, or None
    training_seconds  seconds of training so far, over every attempt
    data_version      hash of the dataset files read (keys and ETags), as the launcher computes it
    spec_hash         hash of the effective spec (dropflow.vocabulary.spec.spec_hash)
    job_id, attempt   who wrote it
    saved_at          wall-clock time (epoch seconds) of the save

The manifest holds {checkpoint (its key), step, epoch, step_in_epoch, saved_at, data_version,
spec_hash, attempt, digests}; `digests` maps the key of every checkpoint kept (the one named
and the one to fall back to) to the sha256 of its bytes. A put is atomic, so a checkpoint
object is whole or absent; the manifest is written only after its checkpoint was stored, and
older checkpoints are deleted only after that. Even so a checkpoint can be unusable (a disk
that lied, a truncated upload or a changed byte from another tool): a resume uses only a
checkpoint whose bytes hash to the digest the manifest recorded and that loads; it skips any
other for the next older one and says why in the log. Without a readable manifest nothing
can be verified, and training starts from the first step.
"""

from __future__ import annotations

import io
import json
import logging
import random
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from dropflow.ports import ObjectNotFound, ObjectStore
from dropflow.vocabulary.digests import sha256_hex

log = logging.getLogger(__name__)

# 2: early stopping, the finished state and the head's temperature. A format 1 checkpoint
# (from before them) is not resumed: its job trains again from the first step.
FORMAT = 2
KEEP = 2  # checkpoints kept per job: the latest, and one to fall back to
MANIFEST = "manifest.json"
_STEP_KEY = re.compile(r"step-(\d{9,})\.pt")
_REQUIRED = (
    "model",
    "optimizer",
    "scheduler",
    "epoch",
    "step_in_epoch",
    "global_step",
    "rng",
    "history",
    "early_stopping",
    "finished",
    "data_version",
    "spec_hash",
    "saved_at",
)


class UnreadableCheckpoint(Exception):
    """A checkpoint object that cannot be used: truncated, not a torch file, wrong format."""


def job_prefix(model: str, job_id: str) -> str:
    return f"jobs/{model}/{job_id}/"


def checkpoints_prefix(model: str, job_id: str) -> str:
    return f"{job_prefix(model, job_id)}checkpoints/"


def checkpoint_key(model: str, job_id: str, step: int) -> str:
    """`jobs/<model>/<job-id>/checkpoints/step-<9-digit global step>.pt`."""
    return f"{checkpoints_prefix(model, job_id)}step-{step:09d}.pt"


def manifest_key(model: str, job_id: str) -> str:
    return f"{job_prefix(model, job_id)}{MANIFEST}"


def step_of(key: str) -> int | None:
    """The global step in a checkpoint key, or None for any other key."""
    match = _STEP_KEY.fullmatch(key.rsplit("/", 1)[-1])
    return int(match[1]) if match else None


# --------------------------------------------------------------------------- RNG states
def capture_rng() -> dict[str, Any]:
    """This process's random generators, as tensors and plain values (weights_only-safe)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        # This process's own GPU only: asking for every device would open a context on each.
        "cuda": torch.cuda.get_rng_state() if torch.cuda.is_initialized() else None,
        "numpy": {
            "kind": str(kind),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(gauss),
        },
        "python": {
            "version": int(version),
            "internal": torch.tensor(internal, dtype=torch.int64),
            "gauss_next": gauss_next,
        },
    }


def restore_rng(state: Mapping[str, Any]) -> None:
    """Put back generators captured by capture_rng (CUDA ones only where a GPU is in use)."""
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"])  # the current device (training.distributed)
    numpy = state["numpy"]
    np.random.set_state(
        (
            numpy["kind"],
            numpy["keys"].numpy().astype(np.uint32),
            numpy["pos"],
            numpy["has_gauss"],
            numpy["cached_gaussian"],
        )
    )
    python = state["python"]
    random.setstate(
        (
            python["version"],
            tuple(int(v) for v in python["internal"].tolist()),
            python["gauss_next"],
        )
    )


# --------------------------------------------------------------------------- bytes
def dumps(checkpoint: Mapping[str, Any]) -> bytes:
    """The checkpoint as the bytes of a torch.save file."""
    buffer = io.BytesIO()
    torch.save(dict(checkpoint), buffer)
    return buffer.getvalue()


def loads(data: bytes) -> dict[str, Any]:
    """A checkpoint read back (tensors on the CPU); UnreadableCheckpoint if it is not one."""
    try:
        checkpoint = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, foreign pickle, ...: all mean "cannot use"
        raise UnreadableCheckpoint(
            f"not a readable torch file ({type(exc).__name__}: {exc})"
        ) from None
    if not isinstance(checkpoint, dict):
        raise UnreadableCheckpoint(f"holds a {type(checkpoint).__name__}, not a checkpoint")
    if checkpoint.get("format") != FORMAT:
        raise UnreadableCheckpoint(f"format {checkpoint.get('format')!r}, expected {FORMAT}")
    missing = [k for k in _REQUIRED if k not in checkpoint]
    if missing:
        raise UnreadableCheckpoint(f"lacks {', '.join(missing)}")
    return checkpoint


# --------------------------------------------------------------------------- the store side
@dataclass(frozen=True)
class Lineage:
    """What every checkpoint of this attempt is stamped with, and what a resume must match."""

    job_id: str
    attempt: int
    data_version: str
    spec_hash: str


@dataclass(frozen=True)
class Found:
    """A readable checkpoint, the key it was read from and the sha256 of its bytes."""

    key: str
    checkpoint: dict[str, Any]
    sha256: str

    @property
    def step(self) -> int:
        return int(self.checkpoint["global_step"])


class CheckpointStore:
    """A job's checkpoints in an ObjectStore: the sink the training loop saves to.

    `save` stores a checkpoint, then the manifest, then deletes all but the last KEEP
    checkpoints; `latest` finds the newest readable checkpoint. `count` and `seconds` say how
    many saves this object made and how long they took (serialising included).
    """

    def __init__(
        self,
        store: ObjectStore,
        model: str,
        lineage: Lineage,
        *,
        keep: int = KEEP,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if keep < 1:
            raise ValueError("keep at least one checkpoint")
        self.store = store
        self.model = model
        self.lineage = lineage
        self.keep = keep
        self.clock = clock
        self.count = 0
        self.seconds = 0.0
        self.last_saved: dict[str, Any] | None = None  # the manifest of the last good save
        # The checkpoints that are ours to keep: written by this object, or resumed from; and
        # the sha256 of each, for the manifest.
        self._kept: list[str] = []
        self._digests: dict[str, str] = {}

    @property
    def manifest_key(self) -> str:
        return manifest_key(self.model, self.lineage.job_id)

    def adopt(self, key: str, sha256: str) -> None:
        """Count `key` (the checkpoint a run resumed from, whose bytes hash to `sha256`) among
        the ones to keep."""
        self._digests[key] = sha256
        if key not in self._kept:
            self._kept.append(key)

    def save(self, state: Mapping[str, Any]) -> str | None:
        """Store `state` (from the loop) stamped with the lineage; return its key.

        A failure to write is logged and returns None: training goes on, and the next save
        tries again (the previous checkpoints and manifest are untouched).
        """
        started = time.perf_counter()
        saved_at = self.clock()
        checkpoint = {
            "format": FORMAT,
            **state,
            "job_id": self.lineage.job_id,
            "attempt": self.lineage.attempt,
            "data_version": self.lineage.data_version,
            "spec_hash": self.lineage.spec_hash,
            "saved_at": saved_at,
        }
        step = int(checkpoint["global_step"])
        key = checkpoint_key(self.model, self.lineage.job_id, step)
        data = dumps(checkpoint)  # a bug here is a bug: let it raise
        digest = sha256_hex(data)
        kept = [k for k in self._kept if k != key][-(self.keep - 1) :] if self.keep > 1 else []
        manifest = {
            "checkpoint": key,
            "step": step,
            "epoch": int(checkpoint["epoch"]),
            "step_in_epoch": int(checkpoint["step_in_epoch"]),
            "saved_at": saved_at,
            "data_version": self.lineage.data_version,
            "spec_hash": self.lineage.spec_hash,
            "attempt": self.lineage.attempt,
            # The checkpoints a resume may use: this one, and the ones to fall back to.
            "digests": {
                **{k: self._digests[k] for k in kept if k in self._digests},
                key: digest,
            },
        }
        try:
            self.store.put(key, data, content_type="application/octet-stream")
            self.store.put(
                self.manifest_key,
                json.dumps(manifest, indent=1).encode(),
                content_type="application/json",
            )
        except Exception as exc:  # S3 hiccup, full disk: the older checkpoints still stand
            log.warning("checkpoint at step %d not stored: %s: %s", step, type(exc).__name__, exc)
            self.seconds += time.perf_counter() - started
            return None
        self.adopt(key, digest)
        self._prune()
        self.count += 1
        self.last_saved = manifest
        self.seconds += time.perf_counter() - started
        log.debug("checkpoint %s (%d bytes)", key, len(data))
        return key

    def _prune(self) -> None:
        keep = set(self._kept[-self.keep :])
        self._kept = self._kept[-self.keep :]
        self._digests = {k: v for k, v in self._digests.items() if k in keep}
        try:
            stale = [
                info.key
                for info in self.store.list(checkpoints_prefix(self.model, self.lineage.job_id))
                if info.key not in keep
            ]
            for key in stale:
                self.store.delete(key)
        except Exception as exc:  # an extra old checkpoint costs storage, not correctness
            log.warning("could not delete old checkpoints: %s: %s", type(exc).__name__, exc)

    def latest(self) -> Found | None:
        """The newest checkpoint of the job that is verified and readable, or None.

        The manifest's checkpoint is tried first, then the others under the prefix, newest
        first. One is used only when its bytes hash to the digest the manifest recorded for it
        and it loads; each one skipped is logged with the reason (a missing or unreadable
        manifest leaves nothing verifiable).
        """
        candidates: list[str] = []
        recorded: dict[str, str] = {}
        try:
            manifest = json.loads(self.store.get(self.manifest_key))
            if isinstance(manifest, dict) and isinstance(manifest.get("checkpoint"), str):
                candidates.append(manifest["checkpoint"])
            else:
                log.warning("%s does not name a checkpoint; listing them", self.manifest_key)
            digests = manifest.get("digests") if isinstance(manifest, dict) else None
            if isinstance(digests, dict):
                recorded = {k: v for k, v in digests.items() if isinstance(v, str)}
        except ObjectNotFound:
            pass
        except (ValueError, UnicodeDecodeError) as exc:
            log.warning("%s is unreadable (%s); listing the checkpoints", self.manifest_key, exc)
        listed = [
            info.key
            for info in self.store.list(checkpoints_prefix(self.model, self.lineage.job_id))
            if step_of(info.key) is not None
        ]
        listed.sort(key=lambda k: step_of(k) or 0, reverse=True)
        candidates += [key for key in listed if key not in candidates]
        for key in candidates:
            try:
                data = self.store.get(key)
            except ObjectNotFound:
                log.warning("checkpoint %s is missing; trying the previous one", key)
                continue
            digest = sha256_hex(data)
            expected = recorded.get(key)
            if expected is None:
                log.warning(
                    "checkpoint %s has no digest in %s, so its bytes cannot be verified; "
                    "trying the previous one",
                    key,
                    self.manifest_key,
                )
                continue
            if digest != expected:
                log.warning(
                    "checkpoint %s differs from the digest %s recorded (sha256 %s..., recorded "
                    "%s...): its bytes changed after it was saved; trying the previous one",
                    key,
                    self.manifest_key,
                    digest[:16],
                    expected[:16],
                )
                continue
            try:
                checkpoint = loads(data)
            except UnreadableCheckpoint as exc:
                log.warning("checkpoint %s is unreadable: %s; trying the previous one", key, exc)
                continue
            return Found(key, checkpoint, digest)
        return None


def mismatch(checkpoint: Mapping[str, Any], lineage: Lineage) -> str | None:
    """Why `checkpoint` cannot be resumed by a run with `lineage`, or None when it can."""
    if checkpoint.get("data_version") != lineage.data_version:
        return (
            f"it was trained on data version {checkpoint.get('data_version')}, "
            f"the dataset is now {lineage.data_version}"
        )
    if checkpoint.get("spec_hash") != lineage.spec_hash:
        return (
            f"it was trained with spec {str(checkpoint.get('spec_hash'))[:12]}, "
            f"dropflow.yaml now gives {lineage.spec_hash[:12]}"
        )
    return None


__all__ = [
    "FORMAT",
    "KEEP",
    "CheckpointStore",
    "Found",
    "Lineage",
    "UnreadableCheckpoint",
    "capture_rng",
    "checkpoint_key",
    "dumps",
    "loads",
    "manifest_key",
    "mismatch",
    "restore_rng",
    "step_of",
]
