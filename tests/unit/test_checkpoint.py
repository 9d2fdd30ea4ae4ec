"""Checkpoints in the store, and when the training loop takes them.

A DirectoryStore in tmp_path stands in for S3 (the ObjectStore contract tests hold both to the
same semantics); the loop runs on tiny random data for a few milliseconds.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from dropflow.adapters.local.directory_store import DirectoryStore
from dropflow.errors import UserInputError
from dropflow.ports import ObjectInfo
from dropflow.vocabulary.spec import ModelSection, TrainingSection, load_spec
from tests.training_jobs import flip_tensor_byte, train_tabular
from training import checkpoint as ckpt
from training.checkpoint import CheckpointStore, Lineage
from training.loop import learning_rate_factor

MODEL, JOB = "iris", "iris-20260101T000000Z-abcdef"
LINEAGE = Lineage(job_id=JOB, attempt=1, data_version="d1", spec_hash="s1")


class RecordingStore:
    """Delegates to a DirectoryStore; remembers writes and deletes in order; can fail puts."""

    def __init__(self, root: Path) -> None:
        self.inner = DirectoryStore(root)
        self.events: list[str] = []
        self.fail_puts = False

    def put(self, key: str, data: bytes, **kwargs: Any) -> ObjectInfo:
        if self.fail_puts:
            raise ConnectionError("bucket unreachable")
        self.events.append(f"put {key}")
        return self.inner.put(key, data, **kwargs)

    def delete(self, key: str) -> None:
        self.events.append(f"delete {key}")
        self.inner.delete(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
def bucket(tmp_path) -> RecordingStore:
    return RecordingStore(tmp_path / "bucket")


def state(step: int, **extra: Any) -> dict[str, Any]:
    """The smallest state the loop would hand over, for `step`."""
    return {
        "model": {"w": torch.full((2,), float(step))},
        "optimizer": {"state": {}, "param_groups": []},
        "scheduler": {"last_epoch": step},
        "epoch": step // 10,
        "step_in_epoch": step % 10,
        "global_step": step,
        "rng": {"order": torch.Generator().get_state(), "ranks": [ckpt.capture_rng()]},
        "history": {"loss": [], "score": [], "step_losses": [], "validation": []},
        "early_stopping": {"best": None, "best_loss": float("inf"), "best_epoch": 0, "bad": 0},
        "finished": False,
        **extra,
    }


def stored_steps(bucket: RecordingStore) -> list[int]:
    keys = [i.key for i in bucket.list(f"jobs/{MODEL}/{JOB}/checkpoints/")]
    return [ckpt.step_of(k) for k in keys]  # type: ignore[misc]


# --------------------------------------------------------------------------- format
def test_keys_name_the_zero_padded_global_step():
    assert ckpt.checkpoint_key(MODEL, JOB, 1234) == (
        f"jobs/{MODEL}/{JOB}/checkpoints/step-000001234.pt"
    )
    assert ckpt.step_of(ckpt.checkpoint_key(MODEL, JOB, 7)) == 7
    assert ckpt.step_of(f"jobs/{MODEL}/{JOB}/manifest.json") is None


def test_a_checkpoint_loads_with_weights_only():
    data = ckpt.dumps(
        {"format": ckpt.FORMAT, **state(3), "data_version": "d", "spec_hash": "s", "saved_at": 1.0}
    )
    loaded = ckpt.loads(data)  # torch.load(weights_only=True) inside
    assert torch.equal(loaded["model"]["w"], torch.full((2,), 3.0))
    assert loaded["global_step"] == 3


@pytest.mark.parametrize(
    "data",
    [b"", b"not a torch file", ckpt.dumps({"format": 99}), ckpt.dumps({"format": ckpt.FORMAT})],
    ids=["empty", "garbage", "other-format", "incomplete"],
)
def test_what_is_not_a_whole_checkpoint_is_unreadable(data):
    with pytest.raises(ckpt.UnreadableCheckpoint):
        ckpt.loads(data)


def test_rng_states_come_back_exactly():
    torch.manual_seed(1)
    np.random.seed(2)
    random.seed(3)
    saved = ckpt.loads(
        ckpt.dumps(
            {"format": ckpt.FORMAT, **state(0), "data_version": "", "spec_hash": "", "saved_at": 0}
        )
    )["rng"]["ranks"][0]
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(9)
    np.random.seed(9)
    random.seed(9)
    ckpt.restore_rng(saved)
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0])
    assert np.array_equal(expected[1], again[1]) and expected[2] == again[2]


# --------------------------------------------------------------------------- the store side
def test_the_manifest_is_written_after_its_checkpoint(bucket):
    sink = CheckpointStore(bucket, MODEL, LINEAGE, clock=lambda: 1000.0)
    key = sink.save(state(12))
    assert bucket.events == [f"put {key}", f"put jobs/{MODEL}/{JOB}/manifest.json"]
    manifest = json.loads(bucket.get(f"jobs/{MODEL}/{JOB}/manifest.json"))
    assert manifest == {
        "checkpoint": key,
        "step": 12,
        "epoch": 1,
        "step_in_epoch": 2,
        "saved_at": 1000.0,
        "data_version": "d1",
        "spec_hash": "s1",
        "attempt": 1,
        "digests": {key: hashlib.sha256(bucket.get(key)).hexdigest()},
    }


def test_the_manifest_records_the_digest_of_every_checkpoint_kept(bucket):
    sink = CheckpointStore(bucket, MODEL, LINEAGE)
    keys = [sink.save(state(step)) for step in (5, 10, 15)]
    manifest = json.loads(bucket.get(sink.manifest_key))
    # The one it names and the one to fall back to; the pruned one is gone from it too.
    assert manifest["digests"] == {
        key: hashlib.sha256(bucket.get(key)).hexdigest() for key in keys[1:]
    }


def test_only_the_last_two_checkpoints_are_kept(bucket):
    sink = CheckpointStore(bucket, MODEL, LINEAGE)
    for step in (5, 10, 15, 20):
        sink.save(state(step))
    assert stored_steps(bucket) == [15, 20]
    assert sink.count == 4


def test_checkpoints_of_an_abandoned_run_are_deleted_by_the_new_one(bucket):
    # An earlier attempt trained on other data up to step 500; this run starts from 0.
    CheckpointStore(bucket, MODEL, LINEAGE).save(state(500))
    fresh = Lineage(job_id=JOB, attempt=2, data_version="d2", spec_hash="s1")
    CheckpointStore(bucket, MODEL, fresh).save(state(8))
    assert stored_steps(bucket) == [8]


def test_the_latest_checkpoint_is_the_one_the_manifest_names(bucket):
    sink = CheckpointStore(bucket, MODEL, LINEAGE)
    sink.save(state(5))
    sink.save(state(10))
    found = CheckpointStore(bucket, MODEL, LINEAGE).latest()
    assert found is not None and found.step == 10
    assert found.checkpoint["data_version"] == "d1" and found.checkpoint["attempt"] == 1


def test_a_torn_checkpoint_is_skipped_for_the_previous_one(bucket, caplog):
    sink = CheckpointStore(bucket, MODEL, LINEAGE)
    sink.save(state(5))
    newest = sink.save(state(10))
    assert newest is not None
    bucket.inner.put(newest, bucket.get(newest)[:100])  # truncated, as a torn upload would be
    with caplog.at_level(logging.WARNING, logger="training.checkpoint"):
        found = CheckpointStore(bucket, MODEL, LINEAGE).latest()
    assert found is not None and found.step == 5
    assert f"checkpoint {newest} differs from the digest" in caplog.text
    assert "trying the previous one" in caplog.text


def test_a_flipped_byte_in_tensor_data_falls_back_to_the_previous_checkpoint(bucket, caplog):
    sink = CheckpointStore(bucket, MODEL, LINEAGE)
    sink.save(state(5))
    newest = sink.save(state(10))
    assert newest is not None
    corrupted = flip_tensor_byte(bucket.get(newest), torch.full((2,), 10.0))
    # torch itself loads it without a word, with a weight changed: only the digest tells.
    loaded = ckpt.loads(corrupted)
    assert not torch.equal(loaded["model"]["w"], torch.full((2,), 10.0))
    bucket.inner.put(newest, corrupted)

    with caplog.at_level(logging.WARNING, logger="training.checkpoint"):
        found = CheckpointStore(bucket, MODEL, LINEAGE).latest()

    assert found is not None and found.step == 5
    assert torch.equal(found.checkpoint["model"]["w"], torch.full((2,), 5.0))
    assert f"checkpoint {newest} differs from the digest" in caplog.text
    assert "its bytes changed after it was saved; trying the previous one" in caplog.text


def test_a_checkpoint_the_manifest_does_not_record_is_not_resumed(bucket, caplog):
    sink = CheckpointStore(bucket, MODEL, LINEAGE)
    sink.save(state(5))
    named = sink.save(state(10))
    assert named is not None
    # A newer one that no manifest records (as when the manifest's put failed after it), and
    # the named one damaged: the listing offers the unrecorded one next, and it is passed by.
    stray = ckpt.checkpoint_key(MODEL, JOB, 15)
    bucket.inner.put(stray, bucket.get(named))
    bucket.inner.put(named, bucket.get(named)[:-1])
    with caplog.at_level(logging.WARNING, logger="training.checkpoint"):
        found = CheckpointStore(bucket, MODEL, LINEAGE).latest()
    assert found is not None and found.step == 5
    assert f"checkpoint {stray} has no digest in" in caplog.text


def test_without_a_manifest_no_checkpoint_is_resumed(bucket, caplog):
    sink = CheckpointStore(bucket, MODEL, LINEAGE)
    sink.save(state(5))
    sink.save(state(10))
    bucket.delete(sink.manifest_key)
    with caplog.at_level(logging.WARNING, logger="training.checkpoint"):
        assert CheckpointStore(bucket, MODEL, LINEAGE).latest() is None
    assert "cannot be verified" in caplog.text


def test_a_resumed_checkpoint_stays_recorded_in_the_next_manifest(bucket):
    CheckpointStore(bucket, MODEL, LINEAGE).save(state(5))
    resumed = CheckpointStore(bucket, MODEL, Lineage(JOB, 2, "d1", "s1"))
    found = resumed.latest()
    assert found is not None
    resumed.adopt(found.key, found.sha256)
    newest = resumed.save(state(6))
    manifest = json.loads(bucket.get(resumed.manifest_key))
    assert set(manifest["digests"]) == {found.key, newest}
    assert manifest["digests"][found.key] == found.sha256


def test_a_job_without_checkpoints_has_no_latest(bucket):
    assert CheckpointStore(bucket, MODEL, LINEAGE).latest() is None


def test_a_failed_upload_keeps_the_previous_checkpoint_in_force(bucket, caplog):
    sink = CheckpointStore(bucket, MODEL, LINEAGE)
    sink.save(state(5))
    bucket.fail_puts = True
    with caplog.at_level(logging.WARNING, logger="training.checkpoint"):
        assert sink.save(state(10)) is None
    assert "checkpoint at step 10 not stored: ConnectionError" in caplog.text
    found = sink.latest()
    assert found is not None and found.step == 5


@pytest.mark.parametrize(
    ("lineage", "words"),
    [
        (Lineage(JOB, 2, "d2", "s1"), "data version d1, the dataset is now d2"),
        (Lineage(JOB, 2, "d1", "s2"), "spec s1, dropflow.yaml now gives s2"),
        (Lineage(JOB, 2, "d1", "s1"), None),
    ],
    ids=["other-data", "other-spec", "same"],
)
def test_a_checkpoint_of_other_data_or_spec_is_not_resumable(lineage, words):
    why = ckpt.mismatch({"data_version": "d1", "spec_hash": "s1"}, lineage)
    assert why == words or (words is not None and words in (why or ""))


# --------------------------------------------------------------------------- loop policy
class ListSink:
    """Keeps each checkpoint's serialised form, as a store would."""

    def __init__(self) -> None:
        self.saved: list[dict[str, Any]] = []

    def save(self, state: dict[str, Any]) -> str:
        self.saved.append(
            ckpt.loads(
                ckpt.dumps(
                    {
                        "format": ckpt.FORMAT,
                        **state,
                        "data_version": "",
                        "spec_hash": "",
                        "saved_at": 0.0,
                    }
                )
            )
        )
        return "ok"


class FakeClock:
    """Advances `tick` seconds per reading: time passes only as the loop looks at it."""

    def __init__(self, tick: float) -> None:
        self.now, self.tick = 0.0, tick

    def __call__(self) -> float:
        self.now += self.tick
        return self.now


def fit(**options: Any):  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    training = options.pop("training", TrainingSection(epochs=3, batch_size=10))
    return train_tabular(
        x,
        y,
        task="classification",
        n_classes=2,
        model=ModelSection(hidden_layers=[4]),
        training=training,
        **options,
    )


def test_a_stop_request_checkpoints_at_once_and_ends_the_run():
    sink = ListSink()
    calls = 0

    def stop() -> bool:
        nonlocal calls
        calls += 1
        return calls > 6  # after 6 steps: mid second epoch (4 steps per epoch)

    trained = fit(sink=sink, stop=stop, checkpoint_seconds=0)
    assert not trained.completed and trained.step == 6
    last = sink.saved[-1]
    assert (last["epoch"], last["step_in_epoch"], last["global_step"]) == (1, 2, 6)
    assert len(last["history"]["loss"]) == 1  # the first epoch's mean loss


def test_the_time_interval_checkpoints_within_an_epoch():
    sink = ListSink()
    # One clock reading per step boundary and a few per epoch/checkpoint: 1 s each.
    fit(
        sink=sink,
        checkpoint_seconds=3.0,
        clock=FakeClock(1.0),
        training=TrainingSection(epochs=1, batch_size=4),
    )
    steps = [s["global_step"] for s in sink.saved]
    assert steps[-1] == 10  # the end of training is always stored
    assert any(s["step_in_epoch"] > 0 for s in sink.saved)  # some inside the epoch


def test_every_epoch_end_is_checkpointed_when_checkpoints_are_cheap():
    sink = ListSink()
    # A checkpoint takes one clock tick, an epoch of 40 steps over 40: each epoch gets one.
    fit(
        sink=sink,
        checkpoint_seconds=0,
        clock=FakeClock(1.0),
        training=TrainingSection(epochs=3, batch_size=1),
    )
    assert [(s["epoch"], s["step_in_epoch"]) for s in sink.saved] == [(1, 0), (2, 0), (3, 0)]


def test_epoch_end_checkpoints_are_skipped_while_they_would_cost_over_5_percent(monkeypatch):
    class SlowSink(ListSink):
        def save(self, state: dict[str, Any]) -> str:
            clock.now += 100.0  # a checkpoint costs far more than an epoch
            return super().save(state)

    clock = FakeClock(0.001)
    sink = SlowSink()
    fit(
        sink=sink,
        checkpoint_seconds=0,
        clock=clock,
        training=TrainingSection(epochs=5, batch_size=10),
    )
    assert [s["epoch"] for s in sink.saved] == [1, 5]  # the first, then only the final one


def test_the_constant_schedule_keeps_the_rate_and_cosine_decays_to_a_tenth():
    assert learning_rate_factor("constant", 500, 1000) == 1.0
    assert learning_rate_factor("cosine", 0, 1000) == pytest.approx(1.0)
    assert learning_rate_factor("cosine", 500, 1000) == pytest.approx(0.55)
    assert learning_rate_factor("cosine", 1000, 1000) == pytest.approx(0.1)


def test_the_spec_sets_the_interval_default_60_seconds_and_0_for_epoch_ends_only():
    assert load_spec(None).training.checkpoint_interval_seconds == 60.0
    spec = load_spec("training: {checkpoint_interval_seconds: 0, lr_schedule: cosine}")
    assert spec.training.checkpoint_interval_seconds == 0.0
    assert spec.training.lr_schedule == "cosine"
    with pytest.raises(UserInputError, match=r"training\.checkpoint_interval_seconds"):
        load_spec("training: {checkpoint_interval_seconds: -1}")
