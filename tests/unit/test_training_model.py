"""The MLP (training.model, `model: {family: mlp}`): preprocessing inside, outputs in the shapes
and units the card promises. The default network's own tests: test_tabm_model.py."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dropflow.errors import UserInputError
from dropflow.vocabulary.spec import ModelSection, TrainingSection
from tests.training_jobs import train_tabular
from training.metrics import baseline_outputs, classification_metrics, regression_metrics
from training.model import Network, build_network, medians, predict, standardisation


def test_standardisation_uses_std_one_for_a_constant_column():
    mean, std = standardisation(np.array([[1.0, 5.0], [3.0, 5.0]]))
    assert mean.tolist() == [2.0, 5.0]
    assert std.tolist() == [1.0, 1.0]  # column 0: population std 1; column 1: constant


def test_the_module_standardises_its_raw_inputs():
    x = np.array([[0.0, 10.0], [2.0, 30.0], [4.0, 50.0]])
    network = build_network("classification", x, np.array([0, 1, 0]), n_classes=2)
    assert network.x_mean.tolist() == pytest.approx([2.0, 30.0])
    raw = torch.tensor(x, dtype=torch.float32)
    standardised = (raw - network.x_mean) / network.x_std
    assert standardised.mean(dim=0).tolist() == pytest.approx([0.0, 0.0], abs=1e-6)
    # The MLP sees standardised values: feeding them to it directly gives the same scores.
    assert torch.allclose(network.scores(raw), network.mlp(standardised))


def test_the_buffers_travel_with_the_state_dict():
    x = np.array([[1.0], [3.0]])
    network = build_network("regression", x, np.array([10.0, 20.0]))
    state = network.state_dict()
    assert {"x_mean", "x_std", "y_mean", "y_std"} <= set(state)
    assert state["y_mean"].item() == pytest.approx(15.0)
    assert state["y_std"].item() == pytest.approx(5.0)


def test_classification_returns_probabilities_per_class():
    x = np.random.default_rng(0).normal(size=(8, 4))
    network = build_network("classification", x, np.arange(8) % 3, n_classes=3)
    out = predict(network, x)
    assert out.shape == (8, 3) and out.dtype == np.float32
    assert out.sum(axis=1) == pytest.approx(np.ones(8), abs=1e-6)
    assert (out >= 0).all()


def test_regression_returns_a_flat_prediction_in_target_units():
    x = np.random.default_rng(0).normal(size=(8, 2))
    y = np.linspace(1000.0, 2000.0, 8)
    network = build_network("regression", x, y)
    out = predict(network, x)
    assert out.shape == (8,)
    # The head sees standardised units: its output is de-standardised with the target's stats.
    standard = network.scores(torch.tensor(x, dtype=torch.float32))[:, 0].detach().numpy()
    assert out == pytest.approx(standard * y.std() + y.mean(), rel=1e-5)


def test_an_empty_hidden_layer_list_is_a_linear_model():
    network = Network("classification", 3, 2, hidden_layers=[])
    assert [type(m) for m in network.mlp] == [torch.nn.Linear]


def test_missing_numbers_are_filled_with_the_training_median_inside_the_module():
    x = np.array([[1.0, 10.0], [np.nan, 20.0], [3.0, np.nan], [100.0, 40.0]])
    network = build_network("classification", x, np.array([0, 1, 0, 1]), n_classes=2)
    assert network.x_median.tolist() == pytest.approx([3.0, 20.0])
    # Standardisation is fitted on the filled values, as the MLP will see them.
    filled = np.array([[1.0, 10.0], [3.0, 20.0], [3.0, 20.0], [100.0, 40.0]])
    assert network.x_mean.tolist() == pytest.approx(filled.mean(axis=0).tolist())
    assert np.array_equal(predict(network, x), predict(network, filled))


def test_a_column_missing_in_every_training_row_is_filled_with_zero():
    assert medians(np.array([[np.nan, 1.0], [np.nan, 3.0]])).tolist() == [0.0, 2.0]


def test_category_codes_are_one_hot_encoded_and_numbers_standardised():
    # Columns: a number, a category with 3 values, a number, a category with 2 values.
    x = np.array([[1.0, 0, 10.0, 1], [3.0, 2, 30.0, 0], [np.nan, 1, 20.0, 1]])
    network = build_network(
        "classification", x, np.array([0, 1, 0]), n_classes=2, category_counts={1: 3, 3: 2}
    )
    assert network.category_counts == {1: 3, 3: 2}
    assert network.x_mean.shape == (2,)  # numbers only: one-hot columns are not standardised
    encoded = network.encode(torch.tensor(x, dtype=torch.float32))
    assert encoded.shape == (3, 2 + 3 + 2)
    assert encoded[:, 2:].tolist() == [[1, 0, 0, 0, 1], [0, 0, 1, 1, 0], [0, 1, 0, 0, 1]]
    assert network.mlp[0].in_features == 7


def test_an_unseen_code_encodes_as_no_category():
    x = np.array([[0.0], [1.0]])
    network = build_network("regression", x, np.array([1.0, 2.0]), category_counts={0: 2})
    assert network.encode(torch.tensor([[5.0]])).tolist() == [[0.0, 0.0]]


def test_category_codes_outside_the_categories_are_a_bug():
    with pytest.raises(ValueError, match="column 0: category codes must be integers in"):
        build_network("regression", np.array([[0.0], [2.0]]), np.ones(2), category_counts={0: 2})


def test_the_layout_constants_are_not_state():
    x = np.array([[0.0, 1.0], [1.0, 2.0]])
    network = build_network("regression", x, np.ones(2), category_counts={0: 2})
    assert set(network.state_dict()) >= {"x_median", "x_mean", "x_std"}
    assert not {"numeric_columns", "one_hot_columns", "one_hot_codes"} & set(network.state_dict())


def test_training_learns_a_regression_in_target_units():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 2))
    y = 5000.0 + 300.0 * x[:, 0] - 200.0 * x[:, 1]
    trained = train_tabular(
        x.astype(np.float32),
        y,
        task="regression",
        n_classes=0,
        model=ModelSection(family="mlp", hidden_layers=[16]),
        training=TrainingSection(epochs=60, batch_size=64, learning_rate=1e-2),
    )
    rmse = regression_metrics(y, predict(trained.network, x))["rmse"]
    assert rmse < 0.05 * y.std()
    assert trained.losses[-1] < trained.losses[0]


def test_training_twice_with_one_seed_gives_identical_weights():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(100, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    settings = {"task": "classification", "n_classes": 2, "model": ModelSection()}
    first = train_tabular(x, y, training=TrainingSection(epochs=3, seed=4), **settings)
    again = train_tabular(x, y, training=TrainingSection(epochs=3, seed=4), **settings)
    for a, b in zip(
        first.network.state_dict().values(), again.network.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b)


class _ExplodingLoss(torch.nn.MSELoss):
    """What a too-high learning rate eventually produces: a NaN loss."""

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return super().forward(input, target) * float("nan")


def test_a_diverging_run_fails_with_advice(monkeypatch):
    monkeypatch.setattr("training.loop.nn.MSELoss", _ExplodingLoss)
    x = np.random.default_rng(0).normal(size=(16, 2)).astype(np.float32)
    with pytest.raises(UserInputError, match=r"diverged at epoch 1 .*learning_rate"):
        train_tabular(
            x,
            x[:, 0].astype(np.float64),
            task="regression",
            n_classes=0,
            model=ModelSection(),
            training=TrainingSection(epochs=2),
        )


def test_classification_metrics_and_majority_baseline():
    y = np.array([0, 0, 0, 1])
    probabilities = np.array([[0.9, 0.1], [0.8, 0.2], [0.4, 0.6], [0.3, 0.7]])
    metrics = classification_metrics(y, probabilities)
    assert metrics["accuracy"] == pytest.approx(0.75)
    assert metrics["macro_f1"] == pytest.approx((0.8 + 2 / 3) / 2)
    expected_loss = -np.mean(np.log([0.9, 0.8, 0.4, 0.7]))
    assert metrics["log_loss"] == pytest.approx(expected_loss)
    baseline = baseline_outputs("classification", np.array([0, 0, 1]), 2, n_classes=2)
    assert np.allclose(baseline, [[2 / 3, 1 / 3]] * 2)


def test_regression_metrics_and_mean_baseline():
    metrics = regression_metrics(np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 5.0]))
    assert metrics["rmse"] == pytest.approx(np.sqrt(4 / 3))
    assert metrics["mae"] == pytest.approx(2 / 3)
    assert metrics["r2"] == pytest.approx(1 - 4 / 2)
    assert baseline_outputs("regression", np.array([1.0, 3.0]), 2).tolist() == [2.0, 2.0]
