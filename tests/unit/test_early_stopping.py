"""How long training runs and what it keeps (training.budget, training.loop): the budget that
scales with the data, early stopping on validation rows with the best weights restored, and
the temperature fitted on them."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dropflow.vocabulary.spec import ModelSection, TrainingSection, load_spec
from tests.training_jobs import train_tabular
from training import budget
from training.network import fit_temperature, predict

# --------------------------------------------------------------------------- the budget


@pytest.mark.parametrize(
    ("rows", "batch", "epochs", "steps"),
    [
        (100, 32, 2000, 8000),
        (400, 64, 2000, 14_000),
        (10_000, 256, 300, 12_000),
        (100_000, 256, 30, 11_730),
        (1_000_000, 256, 3, 11_721),
    ],
)
def test_the_budget_scales_with_the_data(rows, batch, epochs, steps):
    assert budget.batch_size(rows, 256) == batch
    assert budget.epoch_budget(rows, batch) == epochs
    assert epochs * budget.steps_per_epoch(rows, batch) == steps


def test_a_small_table_gets_enough_steps_and_iris_no_longer_stops_at_120():
    # Issue 13: 60 epochs of 120 rows at batch 64 was 120 optimizer steps.
    batch = budget.batch_size(96, 256)
    assert budget.epoch_budget(96, batch) * budget.steps_per_epoch(96, batch) >= budget.MIN_STEPS


def test_a_small_table_trains_in_smaller_batches_but_never_larger_than_asked():
    assert budget.batch_size(96, 256) == 32  # 3 steps an epoch, not 1
    assert budget.batch_size(365, 256) == 64
    assert budget.batch_size(365, 16) == 16  # a smaller batch asked for is kept
    assert budget.batch_size(5_000, 256) == 256
    assert budget.batch_size(10, 256) == 32  # one step an epoch: nothing smaller helps


def test_an_explicit_epoch_count_wins():
    assert budget.epoch_budget(1_000_000, 256, epochs=7) == 7
    assert budget.epoch_budget(50, 256, epochs=7) == 7
    assert load_spec(None).training.epochs is None
    assert load_spec("training: {epochs: 7}").training.epochs == 7


def test_patience_is_at_least_16_epochs_and_200_steps():
    assert budget.patience(100_000, 256) == 16
    assert budget.patience(100, 256) == 200  # one step per epoch


# --------------------------------------------------------------------------- early stopping
def noisy_regression(rows: int = 80) -> tuple[np.ndarray, np.ndarray]:
    """Targets that are mostly noise: a wide network overfits them within a few epochs."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(rows, 4)).astype(np.float32)
    y = x[:, 0] + rng.normal(scale=2.0, size=rows)
    return x, y


def test_early_stopping_ends_training_and_restores_the_best_epochs_weights():
    x, y = noisy_regression()
    snapshots: list[dict[str, torch.Tensor]] = []

    def snapshot(network: torch.nn.Module) -> float:  # called after every epoch
        snapshots.append({k: v.clone() for k, v in network.state_dict().items()})
        return 0.0

    trained = train_tabular(
        x,
        y,
        task="regression",
        n_classes=0,
        model=ModelSection(family="mlp", hidden_layers=[128, 128]),
        training=TrainingSection(epochs=400, batch_size=16, learning_rate=1e-2),
        rows=np.arange(60),
        validation_rows=np.arange(60, 80),
        score=snapshot,
    )

    assert trained.stopped_early and len(trained.losses) < 400
    best = trained.best_epoch
    assert best is not None and best < len(trained.losses)
    assert trained.validation_losses[best - 1] == min(trained.validation_losses)
    # The last epoch's weights were replaced by the best epoch's.
    final = trained.network.state_dict()
    assert all(torch.equal(final[k], snapshots[best - 1][k]) for k in final)
    assert not all(torch.equal(final[k], snapshots[-1][k]) for k in final)


def test_without_early_stopping_every_epoch_runs_and_the_last_weights_stay():
    x, y = noisy_regression()
    trained = train_tabular(
        x,
        y,
        task="regression",
        n_classes=0,
        model=ModelSection(family="mlp", hidden_layers=[32]),
        training=TrainingSection(epochs=30, batch_size=16, early_stopping=False),
        rows=np.arange(60),
        validation_rows=np.arange(60, 80),
    )
    assert len(trained.losses) == 30 and not trained.stopped_early
    assert trained.best_epoch is None and len(trained.validation_losses) == 30


def test_without_validation_rows_the_whole_budget_runs():
    x, y = noisy_regression(40)
    trained = train_tabular(
        x,
        y,
        task="regression",
        n_classes=0,
        model=ModelSection(family="mlp", hidden_layers=[8]),
        training=TrainingSection(epochs=5),
    )
    assert len(trained.losses) == 5 and trained.validation_losses == []


# --------------------------------------------------------------------------- calibration
def sample_classes(logits: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Labels drawn from softmax(logits): what a perfectly calibrated model would expect."""
    p = torch.softmax(logits, dim=1).numpy()
    drawn = (rng.uniform(size=(len(p), 1)) > p.cumsum(axis=1)).sum(axis=1)
    return torch.as_tensor(np.minimum(drawn, p.shape[1] - 1))


@pytest.mark.parametrize(("scale", "direction"), [(6.0, "above"), (0.3, "below")])
def test_the_temperature_undoes_over_and_under_confidence(scale, direction):
    rng = np.random.default_rng(0)
    true_logits = torch.as_tensor(rng.normal(size=(5000, 3)) * 2.0)
    y = sample_classes(true_logits, rng)
    temperature, before, after = fit_temperature(true_logits * scale, y)
    assert after < before
    assert temperature == pytest.approx(scale, rel=0.15)
    assert (temperature > 1) == (direction == "above")


def test_a_calibrated_model_keeps_temperature_one_and_sharpening_is_bounded():
    rng = np.random.default_rng(1)
    logits = torch.as_tensor(rng.normal(size=(5000, 2)) * 3.0)
    y = sample_classes(logits, rng)
    assert fit_temperature(logits, y)[0] == pytest.approx(1.0, rel=0.15)
    # Every row right with a small margin: the loss falls as T -> 0; T stays >= 1/4.
    margin = torch.stack([torch.full((50,), 0.1), torch.zeros(50)], dim=1)
    assert fit_temperature(margin, torch.zeros(50, dtype=torch.int64))[0] >= 0.25 - 1e-9


def test_calibration_lowers_the_validation_log_loss_of_the_trained_ensemble():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(300, 5)).astype(np.float32)
    logits = x[:, 0] + 0.5 * x[:, 1]
    y = (rng.uniform(size=300) < 1 / (1 + np.exp(-logits))).astype(np.int64)  # noisy labels
    trained = train_tabular(
        x,
        y,
        task="classification",
        n_classes=2,
        model=ModelSection(ensemble_size=4, hidden_layers=[64, 64]),
        training=TrainingSection(epochs=60, batch_size=32, early_stopping=False),
        rows=np.arange(200),
        validation_rows=np.arange(200, 300),
    )
    assert trained.calibration is not None
    before, after = trained.calibration
    assert after < before
    network = trained.network
    assert network.temperature.item() != 1.0
    # What the exported graph answers carries the temperature: its log loss is `after`.
    probabilities = predict(network, x[200:])
    served = -np.log(probabilities[np.arange(100), y[200:]]).mean()
    assert served == pytest.approx(after, rel=1e-3)
    assert not math.isnan(before)


def test_regression_has_nothing_to_calibrate():
    x, y = noisy_regression()
    trained = train_tabular(
        x,
        y,
        task="regression",
        n_classes=0,
        model=ModelSection(ensemble_size=2, hidden_layers=[16]),
        training=TrainingSection(epochs=3),
        rows=np.arange(60),
        validation_rows=np.arange(60, 80),
    )
    assert trained.calibration is None and trained.network.temperature.item() == 1.0


class TickClock:
    """One second per reading: time passes only as the loop looks at it."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        self.now += 1.0
        return self.now


def test_the_eta_counts_to_where_patience_would_stop_not_to_the_end_of_the_budget():
    x, y = noisy_regression()
    etas = {}
    for early in (True, False):
        reports: list = []
        train_tabular(
            x,
            y,
            task="regression",
            n_classes=0,
            model=ModelSection(family="mlp", hidden_layers=[8]),
            training=TrainingSection(epochs=2000, batch_size=16, early_stopping=early),
            rows=np.arange(60),
            validation_rows=np.arange(60, 80),
            stop=lambda reports=reports: len(reports) >= 10,  # ten reports are enough
            on_progress=reports.append,
            progress_seconds=0.0,
            clock=TickClock(),
        )
        etas[early] = reports[5].eta_seconds
    # 2,000 epochs of 4 steps, against a patience of 50 epochs (200 steps).
    assert etas[True] is not None and etas[False] is not None
    assert etas[True] * 30 < etas[False]
