"""The training loop's second data path: inputs read batch by batch from a BatchSource.

A source over a matrix, read by row indices as a streaming family reads its files, must train
exactly as the matrix itself does (same batches, same steps, same weights); with random draws
per batch (an augmentation's), a run stopped and resumed from its checkpoint must still end
with the uninterrupted run's weights.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from sklearn.datasets import load_breast_cancer

from dropflow.vocabulary.spec import ModelSection, TrainingSection
from dropflow.wiring import open_store
from tests.integration.test_resume import TOLERANCE, StopAfter, max_weight_diff
from training.checkpoint import CheckpointStore, Lineage
from training.families.tabular import build_tabular_network
from training.loop import Trained, train

MODEL = ModelSection(family="mlp", hidden_layers=[32], dropout=0.2)
TRAINING = TrainingSection(epochs=6, batch_size=50)


class MatrixSource:
    """A BatchSource over a matrix: each batch read by its row indices; with `noise`, every
    training batch gets Gaussian noise drawn from torch's generator (like an augmentation)."""

    def __init__(self, x: np.ndarray, noise: float = 0.0) -> None:
        self.x, self.noise = x, noise
        self.batches_read = 0

    def __len__(self) -> int:
        return len(self.x)

    def take(self, rows: np.ndarray) -> np.ndarray:
        return self.x[rows]

    def training_batches(
        self, batches: Sequence[torch.Tensor], device: torch.device
    ) -> Iterator[torch.Tensor]:
        for rows in batches:
            self.batches_read += 1
            x = torch.as_tensor(self.x[rows.numpy()]).to(device)
            yield x + self.noise * torch.randn_like(x) if self.noise else x


def data() -> tuple[np.ndarray, np.ndarray]:
    bunch = load_breast_cancer()
    return bunch.data.astype(np.float32)[:400], bunch.target.astype(np.int64)[:400]


def run(x_train: np.ndarray | MatrixSource, x: np.ndarray, y: np.ndarray, **options) -> Trained:
    return train(
        lambda: build_tabular_network("classification", x, y, n_classes=2, model=MODEL),
        x_train,
        y,
        training=TRAINING,
        rows=np.arange(300),
        validation_rows=np.arange(300, 400),
        **options,
    )


def test_a_source_read_by_row_indices_trains_as_the_matrix_does():
    x, y = data()
    source = MatrixSource(x)

    streamed = run(source, x, y)
    in_memory = run(x, x, y)

    assert streamed.step == in_memory.step == 6 * 6
    assert source.batches_read == streamed.step
    assert max_weight_diff(streamed.network.state_dict(), in_memory.network.state_dict()) == 0.0
    assert streamed.losses == in_memory.losses
    assert streamed.validation_losses == in_memory.validation_losses
    assert streamed.calibration == in_memory.calibration


def test_a_stopped_and_resumed_streamed_run_ends_with_the_uninterrupted_weights(tmp_path):
    x, y = data()
    straight = run(MatrixSource(x, noise=0.3), x, y)
    store = open_store(f"file://{tmp_path}/bucket")
    lineage = Lineage(
        job_id="bc-20260101T000000Z-abcdef", attempt=1, data_version="d", spec_hash="s"
    )

    first = run(
        MatrixSource(x, noise=0.3),
        x,
        y,
        sink=CheckpointStore(store, "bc", lineage),
        stop=StopAfter(9),  # inside the second epoch (6 steps each)
        checkpoint_seconds=0,
    )
    found = CheckpointStore(store, "bc", lineage).latest()
    assert not first.completed and found is not None and found.step == 9
    resumed = run(MatrixSource(x, noise=0.3), x, y, resume=found.checkpoint)

    assert resumed.completed and resumed.resumed_from == 9
    assert max_weight_diff(resumed.network.state_dict(), straight.network.state_dict()) <= TOLERANCE
    assert resumed.losses == straight.losses
    # The draws matter: without them the run ends elsewhere.
    plain = run(MatrixSource(x), x, y)
    assert max_weight_diff(plain.network.state_dict(), straight.network.state_dict()) > 1e-3
