"""The quality benchmark end to end on one small dataset (iris): the real job, promotion, the
predict path and both baselines, as `make bench-quality` runs them, so that a change to the
job or to serving cannot silently break the harness (bench/quality.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bench import quality
from bench.quality_datasets import load
from dropflow.records.jobs import JobState, JobStore
from dropflow.vocabulary.card import read_card
from dropflow.wiring import open_registry, open_store
from training.examples import holdout_mask

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[int, Path, str]:
    """`python -m bench.quality --datasets iris`, its home kept: (exit code, home, report)."""
    home = tmp_path_factory.mktemp("bench-home")
    report = home / "report.md"
    code = quality.main(["--datasets", "iris", "--home", str(home), "--markdown", str(report)])
    return code, home, report.read_text()


def published_card(home: Path):
    store = open_store(f"file://{home.resolve()}/bucket")
    registry = open_registry(f"sqlite://{home.resolve()}/registry.db")
    (job,) = JobStore(registry).for_model("iris")
    assert job.state == JobState.PUBLISHED, job.reason
    assert job.version is not None
    return store, read_card(store, "iris", job.version)


def test_the_report_holds_the_table_and_a_verdict_that_matches_the_exit_code(run):
    code, _, report = run

    assert code in (0, 1)
    assert "| iris | 120 / 30 | 4 (0) | accuracy |" in report
    assert ("Verdict: **all targets met**" in report) == (code == 0)
    assert "iris accuracy at least 0.95" in report
    assert "- iris:" not in report  # no problem and no note: scored, and as the card says


def test_the_served_holdout_scores_what_the_job_put_on_its_card(run):
    _, home, report = run
    _, card = published_card(home)
    row = next(line for line in report.splitlines() if line.startswith("| iris |"))
    dropflow, hgb, lightgbm = (float(cell) for cell in row.split("|")[5:8])

    assert dropflow == pytest.approx(card.metrics.holdout["accuracy"], abs=1e-4)
    assert 0.8 <= hgb <= 1.0 and 0.8 <= lightgbm <= 1.0  # fitted, not a constant guess
    assert card.metrics.holdout_rows == 30 and card.metrics.train_rows == 120


def test_the_harness_refuses_a_holdout_that_is_not_the_jobs(run):
    _, home, _ = run
    store, card = published_card(home)
    dataset = load("iris")
    y = quality.targets_of(dataset, card)
    own = holdout_mask("classification", y, 3, 0.2, 0)
    other = holdout_mask("classification", y, 3, 0.2, 1)

    quality.check_holdout(store, card, dataset, own)
    with pytest.raises(quality.HarnessError, match="the job's holdout is not the harness's"):
        quality.check_holdout(store, card, dataset, other)
    assert not np.array_equal(own, other)


def test_a_job_over_its_budget_is_stopped_and_the_dataset_counts_as_missed(tmp_path):
    store = open_store(f"file://{tmp_path}/bucket")
    registry = open_registry(f"sqlite://{tmp_path}/registry.db")
    quality.drop(store, load("iris"))

    answer = quality.train_dropflow(store, registry, "iris", budget_seconds=0.0)

    assert isinstance(answer, str) and answer.startswith("over the 0 s budget")
    assert store.list("models/iris/") == []
