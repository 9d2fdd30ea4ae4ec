"""Forward passes over many rows in bounded memory (issue 13): training.network.in_passes and
predict, the loop's validation scores, calibration, the export's parity run and onnxruntime in
slices (dropflow.vocabulary.onnx_session.run_in_slices). Each test counts the rows every pass
or run really took, and compares the answers with one pass over all rows."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from dropflow.vocabulary import onnx_session
from dropflow.vocabulary.card import INPUT_NAME
from dropflow.vocabulary.spec import ModelSection, TrainingSection
from training import network as network_module
from training.export import check_parity, export_onnx
from training.families.tabular import build_tabular_network
from training.loop import reproducible, train
from training.network import TaskNetwork, fit_temperature, in_passes, predict

ROWS = 1_050
PASS = 100  # rows per pass the tests' budgets allow
COUNTS = {4: 3, 5: 12}  # column 4 one-hot, column 5 embedded (by the tabm network)


def table(rows: int = ROWS) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(rows, 6)).astype(np.float32)
    x[:, 4] = rng.integers(0, 3, rows)
    x[:, 5] = rng.integers(0, 12, rows)
    x[::7, 1] = np.nan
    y = ((np.nan_to_num(x[:, 1]) + x[:, 0] + (x[:, 4] == 1)) > 0.5).astype(np.int64)
    return x, y


def built(family: str, task: str = "classification") -> TaskNetwork:
    x, y = table()
    with reproducible(0):
        return build_tabular_network(
            task,
            x,
            y if task == "classification" else x[:, 0] * 10.0,
            n_classes=2,
            model=ModelSection(family=family),
            category_counts=COUNTS,
        ).eval()


def first_layer(network: TaskNetwork) -> nn.Module:
    """A module every row of a pass goes through, whatever the network."""
    return network.ensemble_view if hasattr(network, "ensemble_view") else network.mlp


@contextmanager
def rows_per_pass(network: TaskNetwork, *, eval_only: bool = False) -> Iterator[list[int]]:
    """The number of rows of each forward pass through `network` while the block runs."""
    seen: list[int] = []

    def record(module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        if not (eval_only and module.training):
            seen.append(len(inputs[0]))

    hook = first_layer(network).register_forward_pre_hook(record)
    try:
        yield seen
    finally:
        hook.remove()


def budget_for(network: TaskNetwork, rows: int = PASS) -> int:
    """A budget that lets exactly `rows` rows into one pass of `network`."""
    return network.row_bytes(torch.as_tensor(table()[0][:1])) * rows


@contextmanager
def onnxruntime_runs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The rows of every onnxruntime run while the block runs (the real runtime, spied on)."""
    seen: list[int] = []
    run = ort.InferenceSession.run

    def recording(self, output_names, feed, *args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(len(feed[INPUT_NAME]))
        return run(self, output_names, feed, *args, **kwargs)

    monkeypatch.setattr(ort.InferenceSession, "run", recording)
    yield seen


# --------------------------------------------------------------------------- torch
@pytest.mark.parametrize("family", ["tabm", "mlp"])
@pytest.mark.parametrize("task", ["classification", "regression"])
def test_predict_runs_in_passes_within_the_budget_and_answers_as_one_pass(family, task):
    network = built(family, task)
    x, _ = table()
    with torch.inference_mode():
        whole = network(torch.as_tensor(x)).numpy()
    budget = budget_for(network)

    with rows_per_pass(network) as seen:
        answer = predict(network, x, budget=budget)

    assert seen == [PASS] * (ROWS // PASS) + [ROWS % PASS]
    assert answer.shape == whole.shape and answer.dtype == np.float32
    np.testing.assert_allclose(answer, whole, rtol=1e-5, atol=1e-6)


def test_in_passes_takes_rows_by_index_one_slice_at_a_time():
    network = built("tabm")
    x, _ = table()
    rows = torch.as_tensor(np.random.default_rng(0).permutation(ROWS)[:730])
    with torch.inference_mode():
        whole = network.scores(torch.as_tensor(x)[rows])
    budget = budget_for(network)

    with rows_per_pass(network) as seen:
        scores = in_passes(network, torch.as_tensor(x), rows=rows, scores=True, budget=budget)

    assert seen == [PASS] * 7 + [30]
    assert scores.shape == whole.shape == (730, network.ensemble_size, 2)
    torch.testing.assert_close(scores, whole, rtol=1e-5, atol=1e-6)


def test_no_rows_give_an_empty_answer_of_the_right_shape():
    network = built("tabm")
    assert predict(network, table()[0][:0]).shape == (0, 2)


def test_a_pass_of_the_default_network_fits_the_budget_by_what_its_modules_output():
    network = built("tabm")
    x = torch.as_tensor(table()[0])
    per_row = network.row_bytes(x[:1])
    # At least the ensemble's widest activations: [k, width] floats per row in each layer.
    assert per_row >= 4 * network.ensemble_size * 128 * 2
    rows = network.pass_rows(x[:1])
    assert rows * per_row <= network_module.PASS_BYTES < (rows + 1) * per_row
    assert network.pass_rows(x[:1], budget=1) == 1  # never less than a row


def test_measuring_a_row_changes_neither_the_mode_the_state_nor_the_random_draws():
    network = built("tabm").train()
    state = {k: v.clone() for k, v in network.state_dict().items()}
    random_state = torch.get_rng_state()

    network.row_bytes(torch.as_tensor(table()[0][:1]))

    assert network.training
    assert all(torch.equal(state[k], v) for k, v in network.state_dict().items())
    assert torch.equal(torch.get_rng_state(), random_state)
    with pytest.raises(ValueError, match="at least one example row"):
        built("tabm").row_bytes(torch.as_tensor(table()[0][:0]))


def test_passes_run_on_one_cpu_thread_and_give_the_threads_back():
    network = built("tabm")
    budget = budget_for(network)
    threads: list[int] = []
    hook = first_layer(network).register_forward_pre_hook(
        lambda *_: threads.append(torch.get_num_threads())
    )
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        predict(network, table()[0], budget=budget)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
        hook.remove()
    assert set(threads) == {1}


def test_the_loop_scores_its_validation_rows_in_passes_within_the_budget(monkeypatch):
    x, y = table()
    monkeypatch.setattr(network_module, "PASS_BYTES", budget_for(built("tabm"), 64))
    seen: list[int] = []

    def build() -> TaskNetwork:
        network = build_tabular_network(
            "classification", x, y, n_classes=2, model=ModelSection(), category_counts=COUNTS
        )
        first_layer(network).register_forward_pre_hook(
            lambda module, inputs: None if module.training else seen.append(len(inputs[0]))
        )
        return network

    trained = train(
        build,
        x,
        y,
        training=TrainingSection(epochs=2, seed=0),
        rows=np.arange(0, 700),
        validation_rows=np.arange(700, ROWS),
    )

    assert trained.calibration is not None  # the validation rows were scored and calibrated on
    # One row measured for the budget, then two epochs judged and the calibration, 350 rows
    # each time, in passes of at most 64 rows.
    assert seen[0] == 1 and max(seen) == 64
    assert sum(seen[1:]) == 3 * (ROWS - 700)


def test_calibration_in_slices_finds_the_temperature_of_all_rows_at_once(monkeypatch):
    rng = np.random.default_rng(5)
    scores = torch.as_tensor(rng.normal(scale=3.0, size=(5_000, 16, 3)), dtype=torch.float32)
    y = torch.as_tensor(rng.integers(0, 3, 5_000))
    at_once = fit_temperature(scores, y)

    monkeypatch.setattr(network_module, "PASS_BYTES", 3 * 8 * 16 * 3 * 333)  # 333 rows a slice
    sliced = fit_temperature(scores, y)

    assert sliced == pytest.approx(at_once, rel=1e-9)
    assert len(list(network_module.averaged_probabilities(scores))) == 16


# --------------------------------------------------------------------------- onnxruntime
def test_the_parity_check_runs_torch_and_onnxruntime_in_slices(tmp_path, monkeypatch):
    network = built("tabm")
    x, _ = table()
    path = export_onnx(network, x[:8], tmp_path / "model.onnx")
    monkeypatch.setattr(network_module, "PASS_BYTES", budget_for(network))

    with onnxruntime_runs(monkeypatch) as runs, rows_per_pass(network) as passes:
        parity, expected = check_parity(path, network, x)

    assert parity.passed and parity.rows == ROWS and expected.shape == (ROWS, 2)
    assert passes == [PASS] * 10 + [50]
    assert runs == [PASS] * 10 + [50] + [1]  # every row in slices, then a batch of one


def test_run_in_slices_answers_every_row_as_one_run_does(tmp_path, monkeypatch):
    network = built("tabm")
    x, _ = table()
    session = onnx_session.open_session(export_onnx(network, x[:8], tmp_path / "model.onnx"))
    (whole,) = session.run(["probabilities"], {INPUT_NAME: x})

    with onnxruntime_runs(monkeypatch) as runs:
        sliced = onnx_session.run_in_slices(session, "probabilities", x, rows=PASS)
        monkeypatch.setattr(onnx_session, "SLICE_ROWS", 400)
        default = onnx_session.run_in_slices(session, "probabilities", x)

    assert runs == [PASS] * 10 + [50] + [400, 400, 250]
    np.testing.assert_allclose(sliced, whole, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(default.shape, whole.shape)
    assert onnx_session.run_in_slices(session, "probabilities", x[:0]).shape == (0, 2)
