"""An image holdout is read in chunks of bounded size (training.holdout): the job never
decodes it whole, and what it computes from the chunks equals what it computed in memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from dropflow.records.jobs import ExitCode, JobState
from tests.integration.test_image_family import SIZE, SPEC, digit_png, drop_digits
from tests.integration.test_resume import Home
from tests.unit.fakes import MemoryStore
from training import export, holdout
from training.export import check_parity, export_onnx
from training.image_network import build_image_network
from training.images import ImageRows
from training.job import run_job
from training.metrics import task_metrics
from training.network import predict

ROW_BYTES = SIZE * SIZE * 3


@pytest.fixture
def rows() -> ImageRows:
    """37 digits as 32 x 32 PNG files in a store."""
    store = MemoryStore()
    digits = load_digits()
    keys = [f"datasets/d/{digits.target[i]}/{i:03d}.png" for i in range(37)]
    for i, key in enumerate(keys):
        store.put(key, digit_png(digits.images[i]))
    return ImageRows(store, keys, SIZE)


@pytest.fixture
def network(rows: ImageRows):
    torch.manual_seed(0)
    built = build_image_network(
        rows.store, backbone="resnet-tiny", pretrained=False, image_size=SIZE, n_classes=10
    )
    return built.eval()


def test_streamed_chunks_hold_at_most_chunk_bytes_of_rows(rows, monkeypatch):
    monkeypatch.setattr(holdout, "CHUNK_BYTES", 8 * ROW_BYTES)

    sizes = [len(chunk) for chunk in holdout.chunks(rows)]

    assert sizes == [8, 8, 8, 8, 5]
    assert holdout.chunk_rows(np.zeros((37, 4))) == 37  # a matrix is one chunk: in memory


def test_with_workers_chunks_are_small_enough_that_those_in_flight_fit_the_bound(rows):
    # Two workers, one batch each, the chunk handed out and the one the loader holds: 4 of
    # them in flight at most, so chunks of 8 // 4 = 2 rows for a bound of 8.
    with_workers = ImageRows(rows.store, rows.keys, SIZE, workers=2)

    read = list(with_workers.chunks(8))

    assert {len(chunk) for chunk in read} == {1, 2}
    assert np.array_equal(np.concatenate(read), np.asarray(rows))
    assert [len(c) for c in ImageRows(rows.store, [], SIZE, workers=2).chunks(8)] == [0]


def test_streamed_outputs_and_metrics_equal_the_in_memory_ones(rows, network, monkeypatch):
    monkeypatch.setattr(holdout, "CHUNK_BYTES", 8 * ROW_BYTES)
    y = np.array([int(key.split("/")[2]) for key in rows.keys])

    streamed = holdout.outputs(network, rows)
    in_memory = predict(network, np.asarray(rows))

    assert streamed.shape == (37, 10)
    np.testing.assert_allclose(streamed, in_memory, rtol=0, atol=1e-6)
    assert task_metrics("classification", y, streamed) == pytest.approx(
        task_metrics("classification", y, in_memory), abs=1e-6
    )


def test_parity_on_streamed_rows_equals_parity_on_the_matrix(rows, network, tmp_path, monkeypatch):
    monkeypatch.setattr(holdout, "CHUNK_BYTES", 8 * ROW_BYTES)
    path = export_onnx(network, holdout.head(rows, 8), tmp_path / "m.onnx")

    streamed, streamed_outputs = check_parity(path, network, rows)
    whole, whole_outputs = check_parity(path, network, np.asarray(rows))

    assert streamed == whole and streamed.passed and streamed.rows == 37
    np.testing.assert_allclose(streamed_outputs, whole_outputs, rtol=0, atol=1e-6)


def test_the_job_never_decodes_more_than_a_chunk_of_its_holdout_at_once(tmp_path, monkeypatch):
    # Chunks and reference.npz of 8 images; the holdout is 20 (a fifth of 100).
    monkeypatch.setattr(holdout, "CHUNK_BYTES", 8 * ROW_BYTES)
    monkeypatch.setattr(export, "REFERENCE_INPUT_BYTES", 8 * ROW_BYTES)
    taken: list[tuple[int, int]] = []  # (rows of the view, rows decoded by one take)
    chunked: list[tuple[int, int, int]] = []  # (rows of the view, the bound, rows handed out)
    take, chunks = ImageRows.take, ImageRows.chunks

    def counted_take(self: ImageRows, rows: np.ndarray) -> np.ndarray:
        taken.append((len(self), len(rows)))
        return take(self, rows)

    def counted_chunks(self: ImageRows, rows_at_once: int):
        for chunk in chunks(self, rows_at_once):
            chunked.append((len(self), rows_at_once, len(chunk)))
            yield chunk

    monkeypatch.setattr(ImageRows, "take", counted_take)
    monkeypatch.setattr(ImageRows, "chunks", counted_chunks)
    home = Home(tmp_path)
    drop_digits(home.store, "digits", SPEC.replace(b"epochs: 12", b"epochs: 2"), count=100)
    job_id = home.new_job("digits")

    assert run_job(job_id, 1, home.store, home.registry) == ExitCode.OK
    job = home.jobs.get(job_id)
    assert job.state == JobState.PUBLISHED, job.reason
    card = home.card(job_id)
    assert card.metrics.holdout_rows == card.parity.rows == 20
    assert card.model_extra["training"]["reference_rows"] == 8
    # The holdout was read in chunks under the bound of 8 rows, whole every time (each epoch's
    # score, the metrics, parity); the other reads of its views (the export example, the
    # reference sample) were 8 rows at most; the only larger reads are the validation
    # batches (training.loop), from the whole dataset's view, a batch (32) at most.
    assert {(view, bound) for view, bound, _ in chunked} == {(20, 8)}
    assert max(rows for _, _, rows in chunked) <= 8
    assert sum(rows for _, _, rows in chunked) == 20 * (2 + 2)  # 2 epochs, metrics, parity
    assert max(rows for view, rows in taken if view < 100) <= 8
    assert max(rows for view, rows in taken if view == 100) <= 32
