"""The default tabular network (training.tabm_model): its preprocessing inside, its ensemble,
its graph, and a finite answer for NaN in any column, for it and for the MLP."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from dropflow.vocabulary.card import INPUT_NAME
from dropflow.vocabulary.spec import ModelSection, TrainingSection
from tests.training_jobs import train_tabular
from training.distributed import Placement
from training.export import check_parity, export_onnx
from training.families.tabular import build_tabular_network
from training.loop import reproducible
from training.network import predict
from training.tabm_model import (
    ONE_HOT_MAX,
    TabMNetwork,
    build_tabm,
    quantile_bins,
    robust_scaling,
)

N_ROWS = 120
# Columns: 0 numeric with missing cells, 1 category (3 values: one-hot), 2 numeric in large
# units, 3 category (12 values: embedded), 4 constant, 5 numeric without missing cells.
COUNTS = {1: 3, 3: 12}


def table(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = np.column_stack(
        [
            rng.normal(size=N_ROWS),
            rng.integers(0, 3, N_ROWS),
            rng.normal(50_000.0, 20_000.0, N_ROWS),
            rng.integers(0, 12, N_ROWS),
            np.full(N_ROWS, 7.0),
            rng.uniform(size=N_ROWS),
        ]
    ).astype(np.float32)
    x[::9, 0] = np.nan
    y = ((np.nan_to_num(x[:, 0]) + (x[:, 1] == 2) + x[:, 5]) > 1).astype(np.int64)
    return x, y


def fresh(task: str = "classification", **options: object) -> TabMNetwork:
    x, y = table()
    with reproducible(0):
        if task == "classification":
            return build_tabm(
                "classification", x, y, n_classes=2, category_counts=COUNTS, **options
            )
        return build_tabm("regression", x, x[:, 5] * 1000.0, category_counts=COUNTS, **options)


# --------------------------------------------------------------------------- preprocessing
def test_robust_scaling_uses_the_interquartile_range_then_half_the_range_then_one():
    values = np.array(
        [[0.0, 1.0, 5.0], [1.0, 1.0, 5.0], [2.0, 1.0, 5.0], [3.0, 1.0, 5.0], [4.0, 9.0, 5.0]]
    )
    median, center, spread = robust_scaling(values)
    assert median.tolist() == center.tolist() == [2.0, 1.0, 5.0]
    assert spread.tolist() == [2.0, 4.0, 1.0]  # IQR; IQR 0 -> (9 - 1) / 2; constant -> 1


def test_robust_scaling_ignores_missing_cells_and_fills_an_empty_column_with_zero():
    values = np.array([[np.nan, np.nan], [1.0, np.nan], [3.0, np.nan]])
    median, _, spread = robust_scaling(values)
    assert median.tolist() == [2.0, 0.0]
    assert spread[1] == 1.0


def test_quantile_bins_are_sorted_distinct_edges_and_a_constant_gets_one_bin():
    scaled = np.column_stack([np.linspace(-1, 1, 100), np.zeros(100), np.repeat([0.0, 1.0], 50)])
    bins = quantile_bins(scaled, n_bins=8)
    assert len(bins[0]) == 9 and bool((bins[0][1:] > bins[0][:-1]).all())
    assert bins[1].tolist() == [-1.0, 1.0]
    assert bins[2][0] == 0.0 and bins[2][-1] == 1.0 and len(set(bins[2].tolist())) == len(bins[2])


def test_numbers_are_filled_scaled_and_only_columns_missing_in_training_get_an_indicator():
    network = fresh()
    x, _ = table()
    assert network.numeric_columns.tolist() == [0, 2, 4, 5]
    assert network.missing_columns.tolist() == [0]  # column 5 had no missing cell
    assert network.x_median[0].item() == pytest.approx(float(np.nanmedian(x[:, 0])), rel=1e-5)
    assert network.x_spread[1].item() > 1_000  # raw units of column 2: 20,000 +- noise


def test_few_categories_are_one_hot_and_many_are_embedded():
    network = fresh()
    assert sorted(set(network.one_hot_columns.tolist())) == [1]
    assert COUNTS[1] <= ONE_HOT_MAX < COUNTS[3]
    assert [tuple(p.shape) for p in network.category_embeddings] == [(12, 8)]


def test_the_statistics_are_state_and_the_layout_is_not():
    state = set(fresh().state_dict())
    assert {"x_median", "x_center", "x_spread", "temperature", "y_mean", "y_std"} <= state
    assert not {"numeric_columns", "missing_columns", "one_hot_columns", "codes_3"} & state


# --------------------------------------------------------------------------- the ensemble
def test_scores_have_one_row_per_submodel_and_forward_averages_them():
    network = fresh(ensemble_size=4).eval()
    x, _ = table()
    rows = torch.as_tensor(x[:5])
    with torch.inference_mode():
        scores = network.scores(rows)
        assert scores.shape == (5, 4, 2)
        expected = torch.softmax(scores, dim=-1).mean(dim=1)
        assert torch.allclose(network(rows), expected)
        assert not torch.allclose(scores[:, 0], scores[:, 1])  # the submodels differ


def test_regression_averages_the_submodels_in_target_units():
    network = fresh("regression", ensemble_size=3).eval()
    x, _ = table()
    rows = torch.as_tensor(x[:4])
    with torch.inference_mode():
        standard = network.scores(rows).mean(dim=1)[:, 0]
        assert torch.allclose(network(rows), standard * network.y_std + network.y_mean)


def test_the_temperature_divides_the_logits():
    network = fresh().eval()
    x, _ = table()
    before = np.abs(predict(network, x[:6]) - 0.5)[:, 0]
    network.temperature.fill_(1000.0)
    flatter = np.abs(predict(network, x[:6]) - 0.5)[:, 0]
    network.temperature.fill_(0.001)
    sharper = np.abs(predict(network, x[:6]) - 0.5)[:, 0]
    assert (flatter < before).all() and (before < sharper).all()


def test_a_width_per_layer_is_refused():
    with pytest.raises(ValueError, match="one width"):
        fresh(hidden_layers=(64, 32))


# --------------------------------------------------------------------------- the graph
def test_the_graph_matches_torch_and_answers_nan_in_every_column(tmp_path):
    network = fresh().eval()
    x, _ = table(seed=1)
    path = export_onnx(network, x, tmp_path / "model.onnx")
    parity, _ = check_parity(path, network, x)
    assert parity.passed and parity.rows == N_ROWS

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    all_nan = np.full((3, x.shape[1]), np.nan, dtype=np.float32)
    unknown = x[:3].copy()
    unknown[:, 1], unknown[:, 3] = 3.0, 99.0  # codes no training row had
    for rows in (all_nan, unknown):
        answer = session.run(None, {INPUT_NAME: rows})[0]
        assert np.isfinite(answer).all()
        assert answer.sum(axis=1) == pytest.approx(np.ones(3), abs=1e-5)
        np.testing.assert_allclose(answer, predict(network, rows), atol=1e-5)


def test_an_unknown_code_encodes_like_nan():
    network = fresh().eval()
    x, _ = table()
    nan, unknown = x[:4].copy(), x[:4].copy()
    nan[:, 3], unknown[:, 3] = np.nan, 12.0
    np.testing.assert_array_equal(predict(network, nan), predict(network, unknown))


@pytest.mark.parametrize("family", ["tabm", "mlp"])
@pytest.mark.parametrize("task", ["classification", "regression"])
def test_nan_in_every_column_gives_a_finite_answer(family, task):
    """Even in columns that had no missing value in training (the serving contract)."""
    x, y = table()
    x[:, 0] = np.nan_to_num(x[:, 0])  # no missing cell anywhere in training
    target = y if task == "classification" else x[:, 5].astype(np.float64) * 1000.0
    with reproducible(0):
        network = build_tabular_network(
            task,
            x,
            target,
            n_classes=2 if task == "classification" else 0,
            model=ModelSection(family=family),
            category_counts=COUNTS,
        )
    rows = np.full((2, x.shape[1]), np.nan, dtype=np.float32)
    for j in range(x.shape[1]):  # and NaN in one column at a time
        one = x[:1].copy()
        one[0, j] = np.nan
        rows = np.vstack([rows, one])
    assert np.isfinite(predict(network, rows)).all()


def test_the_network_trains_under_bfloat16_autocast():
    """What a GPU run does (training.distributed: bf16 autocast), checked on the CPU's
    autocast: mixed float32 preprocessing and bfloat16 matmuls must train and stay finite."""
    x, y = table()
    placement = Placement(device=torch.device("cpu"), autocast_dtype=torch.bfloat16)
    trained = train_tabular(
        x,
        y,
        task="classification",
        n_classes=2,
        model=ModelSection(ensemble_size=4, hidden_layers=[32, 32]),
        training=TrainingSection(epochs=5, batch_size=32),
        category_counts=COUNTS,
        placement=placement,
        rows=np.arange(90),
        validation_rows=np.arange(90, N_ROWS),
    )
    assert all(np.isfinite(trained.losses)) and trained.losses[-1] < trained.losses[0]
    assert trained.network.output.weight.dtype == torch.float32
    assert np.isfinite(predict(trained.network, x)).all()


def test_a_table_of_categories_only_and_a_column_never_seen_train_and_export(tmp_path):
    rng = np.random.default_rng(3)
    codes = np.column_stack([rng.integers(0, 3, 60), rng.integers(0, 20, 60)]).astype(np.float32)
    y = (codes[:, 0] == 1).astype(np.int64)
    with reproducible(0):
        categories_only = build_tabm(
            "classification", codes, y, n_classes=2, category_counts={0: 3, 1: 20}
        )
    assert categories_only.numeric_embedding is None
    empty = np.column_stack([codes[:, 0], np.full(60, np.nan, dtype=np.float32)])
    with reproducible(0):
        never_seen = build_tabm("classification", empty, y, n_classes=2, category_counts={0: 3})
    assert never_seen.x_median.tolist() == [0.0] and never_seen.missing_columns.tolist() == [1]
    for network, rows in ((categories_only, codes), (never_seen, empty)):
        network.eval()
        path = export_onnx(network, rows, tmp_path / "model.onnx")
        parity, _ = check_parity(path, network, rows)
        assert parity.passed and np.isfinite(predict(network, rows)).all()
