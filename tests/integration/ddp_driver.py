"""Run by tests/integration/test_ddp.py under torchrun (not a test module itself).

Each rank trains on the same small dataset; rank 0 alone is told to stop after STOP_AFTER
step boundaries. Every rank must stop at the same step; rank 0 stores the checkpoint; then
every rank resumes from it and trains to the end. Each rank writes what it saw to
<out>/rank<r>.json, and rank 0 its final weights to <out>/weights.pt.

    python -m torch.distributed.run --nproc_per_node=2 tests/integration/ddp_driver.py \
        --bucket DIR --out DIR
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

# torchrun runs this file as a script: make the repository importable as for `-m`.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from dropflow.adapters.local.directory_store import DirectoryStore
from dropflow.vocabulary.spec import ModelSection, TrainingSection
from tests.training_jobs import train_tabular
from training.checkpoint import CheckpointStore, Lineage
from training.distributed import end_process, place, release

MODEL = "ddp"
JOB_ID = "ddp-20260101T000000Z-abcdef"
STOP_AFTER = 7  # step boundaries rank 0 lets pass before it asks to stop
# 301 rows: 241 train in batches of 32 (a small table's batch, training.budget; the last
# global batch, 17 rows, splits unevenly over 2 ranks), 60 are validation rows that rank 0
# judges every epoch on.
TRAINING = TrainingSection(epochs=3, batch_size=64, learning_rate=3e-3, seed=3)
# The default network (tabm): its submodel axis goes through DistributedDataParallel. No
# dropout: two ranks draw other masks than one process, and the test compares the weights.
MODEL_SECTION = ModelSection(ensemble_size=4, hidden_layers=[16, 16], dropout=0.0)
ROWS, VALIDATION = np.arange(241), np.arange(241, 301)


def dataset() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(301, 6)).astype(np.float32)
    y = ((x[:, 0] + 0.5 * x[:, 1] ** 2 - x[:, 2]) > 0.3).astype(np.int64)
    return x, y


def fit(placement, **options):  # type: ignore[no-untyped-def]
    x, y = dataset()
    return train_tabular(
        x,
        y,
        task="classification",
        n_classes=2,
        model=MODEL_SECTION,
        training=TRAINING,
        placement=placement,
        rows=ROWS,
        validation_rows=VALIDATION,
        **options,
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bucket", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()

    placement = place()
    store = DirectoryStore(args.bucket)
    lineage = Lineage(job_id=JOB_ID, attempt=1, data_version="d", spec_hash="s")
    sink = CheckpointStore(store, MODEL, lineage)
    calls = 0

    def rank0_sees_a_notice() -> bool:
        nonlocal calls
        calls += 1
        return placement.is_main and calls > STOP_AFTER

    first = fit(placement, sink=sink, stop=rank0_sees_a_notice, checkpoint_seconds=0)
    dist.barrier()  # rank 0 has stored its checkpoint before anyone reads it
    found = sink.latest()
    assert found is not None
    second = fit(placement, sink=sink, resume=found.checkpoint, checkpoint_seconds=0)
    report = {
        "rank": placement.rank,
        "world_size": placement.world_size,
        "stopped_at": first.step,
        "completed_first": first.completed,
        "resumed_from": second.resumed_from,
        "final_step": second.step,
        "losses": second.losses,
    }
    (args.out / f"rank{placement.rank}.json").write_text(json.dumps(report))
    if placement.is_main:
        torch.save(second.network.state_dict(), args.out / "weights.pt")
    release(placement)
    return 0


if __name__ == "__main__":
    end_process(main())  # as `python -m training` ends a rank
