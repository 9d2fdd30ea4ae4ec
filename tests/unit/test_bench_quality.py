"""The quality benchmark's own logic (bench/quality.py): the verdict against issue 13's targets,
the table, what the baselines and the client are given, and the datasets it builds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bench import quality_datasets
from bench.quality import (
    Outcome,
    Scores,
    boosting_inputs,
    client_rows,
    drop,
    fit_baseline,
    main,
    table,
    verdict,
)
from bench.quality_datasets import QUICK, SUITE, Dataset, synthetic
from dropflow.vocabulary.card import Card, Feature, Metrics, Parity


def outcome(
    name: str,
    ours: float | None,
    hgb: float,
    lightgbm: float,
    *,
    task: str = "classification",
    losses: tuple[float, float, float] = (0.3, 0.4, 0.5),
) -> Outcome:
    """A dataset's row: primary metrics of dropflow (None: no score), HGB and LightGBM."""
    result = Outcome(name, task)  # type: ignore[arg-type]
    if ours is not None:
        result.scores["dropflow"] = Scores(ours, losses[0], 1.0)
    else:
        result.problem = "job failed (exit 2): bad data"
    result.scores["hgb"] = Scores(hgb, losses[1], 1.0)
    result.scores["lightgbm"] = Scores(lightgbm, losses[2], 1.0)
    return result


# --------------------------------------------------------------------------- verdict
def test_the_difference_is_taken_against_the_better_baseline_per_dataset():
    row = outcome("a", 0.90, 0.85, 0.88)

    assert row.best_baseline == row.scores["lightgbm"]
    assert row.delta == pytest.approx(0.02)
    assert row.lowest_baseline_loss == 0.4


def test_all_targets_met_when_dropflow_is_a_point_ahead_everywhere():
    outcomes = [outcome("a", 0.91, 0.90, 0.89), outcome("b", 0.81, 0.79, 0.80)]

    checks = verdict(outcomes)

    assert [c.passed for c in checks] == [True, True, True]
    assert "mean difference +0.0100 over 2 datasets" in checks[0].detail


def test_an_average_gain_under_a_point_misses_the_first_target_only():
    checks = verdict([outcome("a", 0.905, 0.90, 0.89), outcome("b", 0.80, 0.79, 0.80)])

    assert [c.passed for c in checks] == [False, True, True]
    assert "mean difference +0.0025" in checks[0].detail


def test_one_dataset_more_than_a_point_below_misses_even_with_a_large_average_gain():
    outcomes = [outcome("a", 0.99, 0.80, 0.80), outcome("b", 0.788, 0.80, 0.75)]

    checks = verdict(outcomes)

    assert checks[0].passed
    assert not checks[1].passed
    assert "more than 0.01 below on b" in checks[1].detail
    assert "worst b -0.0120" in checks[1].detail


def test_exactly_a_point_below_is_still_within_the_target():
    checks = verdict([outcome("a", 0.95, 0.96, 0.90), outcome("b", 0.99, 0.95, 0.95)])

    assert checks[1].passed


def test_a_dataset_dropflow_could_not_score_misses_both_metric_targets():
    checks = verdict([outcome("a", 0.99, 0.80, 0.80), outcome("b", None, 0.80, 0.80)])

    assert not checks[0].passed and not checks[1].passed
    assert "no dropflow score on b" in checks[0].detail


def test_log_loss_must_be_at_or_below_boosting_on_more_than_half_the_classification_sets():
    better, worse = (0.2, 0.3, 0.3), (0.4, 0.3, 0.35)
    two_of_three = [
        outcome("a", 0.9, 0.9, 0.9, losses=better),
        outcome("b", 0.9, 0.9, 0.9, losses=(0.3, 0.3, 0.4)),  # equal counts as at or below
        outcome("c", 0.9, 0.9, 0.9, losses=worse),
    ]
    one_of_two = [two_of_three[0], two_of_three[2]]

    assert verdict(two_of_three)[2].passed
    assert "2 of 3 (a, b)" in verdict(two_of_three)[2].detail
    assert not verdict(one_of_two)[2].passed


def test_regression_sets_do_not_count_in_the_log_loss_target():
    outcomes = [
        outcome("a", 0.9, 0.9, 0.9, losses=(0.2, 0.3, 0.3)),
        outcome("r", 0.8, 0.7, 0.7, task="regression", losses=(9.0, 1.0, 1.0)),
    ]

    assert "1 of 1" in verdict(outcomes)[2].detail
    assert len(verdict([outcomes[1]])) == 2  # no classification set: no log-loss target


def test_the_small_sets_need_095_accuracy_each_and_are_checked_only_when_run():
    small = [
        outcome("iris", 0.9667, 0.9, 0.9),
        outcome("wine", 0.9722, 0.9, 0.9),
        outcome("breast-cancer", 0.9474, 0.9, 0.9),
    ]

    check = verdict(small)[-1]

    assert check.target == "iris, wine, breast-cancer accuracy at least 0.95"
    assert not check.passed
    assert "breast-cancer 0.9474" in check.detail
    assert verdict(small[:2])[-1].passed
    assert all("accuracy at least" not in c.target for c in verdict([outcome("a", 1, 0, 0)]))


# --------------------------------------------------------------------------- table
def test_the_table_has_one_row_per_dataset_and_says_why_a_score_is_missing():
    text = table([outcome("a", 0.91, 0.90, 0.89), outcome("b", None, 0.80, 0.79)])
    lines = text.splitlines()

    assert lines[0].startswith("| dataset |")
    assert lines[2].startswith("| a |") and "**+0.0100**" in lines[2]
    assert lines[3].startswith("| b |") and "| - |" in lines[3]
    assert "- b: dropflow has no score: job failed (exit 2): bad data" in text
    assert all(line.count("|") == lines[0].count("|") for line in lines[:4])


# --------------------------------------------------------------------------- inputs
def categorical_dataset() -> Dataset:
    frame = pd.DataFrame(
        {
            "size": [1.0, np.nan, 3.0, 4.0],
            "color": ["red", None, "blue", "purple"],
            "target": ["x", "y", "x", "y"],
        }
    )
    return Dataset("t", "classification", "target", frame, "test")


def test_baselines_get_categories_of_the_training_rows_and_an_unseen_one_as_missing():
    held = np.array([False, False, True, True])

    x_train, x_holdout = boosting_inputs(categorical_dataset(), held)

    assert list(x_train["color"].cat.categories) == ["red"]
    assert x_holdout["color"].isna().tolist() == [True, True]  # blue, purple: unseen
    assert x_holdout["size"].tolist() == [3.0, 4.0]


@pytest.mark.parametrize("name", ["hgb", "lightgbm"])
def test_each_baseline_gives_one_probability_column_per_class_id(name):
    rng = np.random.default_rng(0)
    x = pd.DataFrame({"a": rng.normal(size=200)})
    y = (x["a"] > 0).to_numpy(dtype=np.int64)

    probabilities, seconds = fit_baseline(name, "classification", x, y, x.iloc[:5], 3)

    assert probabilities.shape == (5, 3)
    assert np.allclose(probabilities[:, 2], 0.0)  # a class no training row has
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0)
    assert seconds > 0


def test_client_rows_follow_the_card_order_with_raw_text_and_none_for_missing():
    dataset = categorical_dataset()
    card = Card(
        model="t",
        version="v1",
        job_id="j",
        task="classification",
        target="target",
        features=[
            Feature(name="color", dtype="category", categories=["blue", "purple", "red"]),
            Feature(name="size", dtype="number"),
        ],
        classes=["x", "y"],
        metrics=Metrics(primary="accuracy", holdout={}, holdout_rows=2, train_rows=2),
        parity=Parity(passed=True, max_abs_diff=0.0, tolerance=1e-5, rows=1),
        data_version="d",
        spec_hash="s",
        created_at="2026-12-06T00:00:00+00:00",
    )

    rows = client_rows(dataset, card, np.array([False, True, False, True]))

    assert rows == [[None, None], ["purple", 4.0]]


# --------------------------------------------------------------------------- datasets
def test_the_suite_has_at_least_eight_datasets_and_quick_is_three_of_them():
    assert len(SUITE) >= 8
    assert len(QUICK) == 3 and set(QUICK) <= set(SUITE)


def test_a_generated_set_is_the_same_for_the_same_seed_and_has_what_it_promises():
    first, again = synthetic("classification", 2_000, 5), synthetic("classification", 2_000, 5)

    pd.testing.assert_frame_equal(first, again)
    assert list(first.columns)[-1] == "target"
    assert set(first["target"]) == {"yes", "no"}
    for name, levels in quality_datasets.CATEGORY_LEVELS.items():
        assert first[name].nunique() == levels
    for column in ("x0", "x2", "income", "color", "region"):
        assert 0.02 < first[column].isna().mean() < 0.08
    assert not first[["x1", "product", "noise0", "target"]].isna().any().any()


def test_a_generated_regression_target_is_numeric():
    frame = synthetic("regression", 500, 5)

    assert pd.api.types.is_float_dtype(frame["target"])
    assert frame["target"].nunique() == 500


# --------------------------------------------------------------------------- command line
def test_an_unknown_dataset_is_a_usage_error_naming_the_known_ones(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["--datasets", "iris,titanic"])

    assert stopped.value.code == 2
    message = capsys.readouterr().err
    assert "unknown dataset(s) titanic; known: iris, wine, breast-cancer" in message


def test_rmse_is_shown_with_four_significant_digits_whatever_its_scale():
    rows = [
        outcome("r1", 0.5, 0.4, 0.4, task="regression", losses=(54.7, 60.2, 1234.5)),
        outcome("r2", 0.5, 0.4, 0.4, task="regression", losses=(0.98781, 0.05, 0.0)),
    ]

    lines = table(rows).splitlines()

    assert "| RMSE | 54.70 | 60.20 | 1234 |" in lines[2]
    assert "| RMSE | 0.9878 | 0.05000 | 0.0000 |" in lines[3]


@pytest.mark.parametrize(
    ("target", "spec", "written"),
    [
        ("species", None, 'target: "species"\n'),
        ("species", "training: {epochs: 3}\n", 'target: "species"\ntraining: {epochs: 3}\n'),
        ("species", "target: island\n", "target: island\n"),
        ("Label", None, None),
    ],
)
def test_a_drop_names_its_label_where_the_job_would_not_find_it(tmp_path, target, spec, written):
    from dropflow.adapters.local.directory_store import DirectoryStore
    from dropflow.ports import ObjectNotFound

    store = DirectoryStore(tmp_path)
    frame = pd.DataFrame({"island": ["a", "b"], target: ["x", "y"]})
    drop(store, Dataset("pets", "classification", target, frame, "test"), spec)

    try:
        found = store.get("datasets/pets/dropflow.yaml").decode()
    except ObjectNotFound:
        found = None
    assert found == written
