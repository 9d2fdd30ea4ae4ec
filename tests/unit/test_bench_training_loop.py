"""The training benchmark's fairness (bench/training_loop.py): its bare loop trains the recipe
the job's loop trains (optimizer, batch size, batches, loss, data), so that the ratio of their
samples/s measures the job loop's own machinery and nothing else."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench import training_loop
from training.loop import reproducible
from training.split import fitting_rows, split, split_for


@pytest.mark.parametrize("model", [None, "{family: mlp}"], ids=["default network", "mlp"])
def test_the_bare_loop_ends_an_epoch_with_the_weights_the_job_loop_ends_it_with(
    model: str | None, tmp_path: Path
) -> None:
    spec = training_loop.spec_for(None, model)
    examples = training_loop.synthetic(1_500, 6)
    parts = split_for(examples, spec.training)
    fit = fitting_rows(parts.train, spec.training.seed)
    cfg = spec.training.model_copy(update={"epochs": 1})
    build = training_loop.family_builder(spec)
    initial = dict(build(examples, fit).named_parameters())

    with reproducible(cfg.seed):
        bare = build(examples, fit)
        training_loop.bare_loop(bare, examples, parts, cfg)
    with reproducible(cfg.seed):
        job = build(examples, fit)
        training_loop.job_loop(job, examples, parts, cfg, tmp_path / "bucket")

    trained = dict(bare.named_parameters())
    assert any(not torch.equal(trained[name], initial[name]) for name in initial)
    for name, weights in job.named_parameters():
        torch.testing.assert_close(trained[name], weights, rtol=0, atol=0, msg=name)


def test_the_job_side_reports_the_time_it_spent_fitting_temperatures(tmp_path: Path) -> None:
    spec = training_loop.spec_for(None, "{family: mlp}")
    examples = training_loop.synthetic(1_000, 4)
    parts = split(examples, 0.2, 0, validation_fraction=0.2)
    cfg = spec.training.model_copy(update={"epochs": 2})
    network = training_loop.family_builder(spec)(examples, fitting_rows(parts.train, 0))

    with reproducible(cfg.seed):
        rate, overhead, checkpoints, temperature = training_loop.job_loop(
            network, examples, parts, cfg, tmp_path / "bucket"
        )

    assert rate > 0 and checkpoints >= 1
    # Two epochs' validation keys and the calibration: some time, and a share of the run.
    assert 0.0 < temperature < 1.0 and 0.0 <= overhead < 1.0
