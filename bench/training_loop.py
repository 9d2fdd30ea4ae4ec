"""Benchmark: the training job's loop against a bare torch loop on the same network.

The data and the network are the job's: a synthetic two-class table is split by the job's own
split (training.split: the holdout, validation rows carved from the training part, the training
rows), and the network is the one the job would build for a spec's `family:` and `model:`
sections (--family, --model; by default the default family with its default network), its
preprocessing fitted on the job's fitting rows under the spec's seed. Both sides start from the
same weights and train the same recipe, the job's: AdamW with the spec's learning rate, weight
decay and learning-rate schedule; the batch size the job takes for that many rows
(training.budget: the spec's 256 by default); the task's loss on the network's scores (for an
ensemble, every submodel trained on the batch: the mean of their losses); the rows gathered
from one matrix by index; one CPU thread with deterministic kernels (training.loop.reproducible,
as the job trains on a CPU). A loop that changes that recipe should change it here too.

The same evaluation work on both sides, so that the ratio is the loop's own cost. After every
epoch the job scores the holdout (the card's curve) and the validation rows (early stopping on
the error rate, then the log loss at the fitted temperature), keeps a copy of the best weights,
and at the end puts them back and fits the temperature. The bare loop does what a person writes
for early stopping: after every epoch the validation rows' scores in the same chunks, their
error rate and log loss, the holdout's accuracy, a copy of the weights when validation
improved, the best weights back at the end. What is left to the job alone is its own
machinery: checkpoints (to an ObjectStore at the default interval), the temperature fits (one
per epoch to judge it, one at the end), its loss bookkeeping and stop checks. The report gives
the bare loop's share of time spent evaluating, so that the evaluation's weight is visible.

Runs alternate bare, job, bare, job... so that a busy machine slows both alike, and the median
of each side is compared.

Targets (issues 3 and 13): the job's loop >= 0.9x the bare loop's samples/s on the same
network; checkpoint overhead at the default interval <= 5 % of the loop's wall time. The exit
status is 1 when one is missed.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dropflow.adapters.local.directory_store import DirectoryStore
from dropflow.vocabulary.card import Feature
from dropflow.vocabulary.spec import Spec, TrainingSection, load_spec
from training import budget
from training import loop as training_loop
from training import network as training_network
from training.checkpoint import CheckpointStore, Lineage
from training.examples import Examples
from training.families import family_for
from training.job import _holdout_score  # the job's own per-epoch holdout score
from training.loop import TrainingLoop, learning_rate_factor, reproducible
from training.network import TaskNetwork
from training.split import Split, fitting_rows, split_for

THROUGHPUT_TARGET = 0.9
OVERHEAD_TARGET = 0.05
# Rows per forward pass when the bare loop evaluates: the job's validation chunk.
EVAL_ROWS = 4096


def synthetic(rows: int, features: int, seed: int = 0) -> Examples:
    """A two-class table with a noisy linear boundary (enough work per step to time), as the
    tabular family reads one: numeric columns x0..x{features-1}, classes 0 and 1."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features)).astype(np.float32)
    w = rng.normal(size=features)
    y = ((x @ w + rng.normal(scale=0.5, size=rows)) > 0).astype(np.int64)
    return Examples(
        task="classification",
        target="y",
        x=x,
        y=y,
        classes=[0, 1],
        features=[Feature(name=f"x{j}", dtype="number") for j in range(features)],
        sources=[],
    )


Builder = Callable[[Examples, np.ndarray], TaskNetwork]


def spec_for(family: str | None, model: str | None) -> Spec:
    """The spec whose `family:` and `model:` (a YAML mapping) choose the network."""
    lines = [f"family: {family}" if family else "", f"model: {model}" if model else ""]
    return load_spec("\n".join(lines) + "\n")


def family_builder(spec: Spec) -> Builder:
    """Fresh networks as the job builds them for `spec`: the family's build on the fitting
    rows, under the spec's seed."""
    family = family_for(spec)

    def build(examples: Examples, fit: np.ndarray) -> TaskNetwork:
        with reproducible(spec.training.seed):
            return family.build(examples, examples.x[fit], examples.y[fit], spec)

    return build


def bare_loop(
    network: TaskNetwork, examples: Examples, parts: Split, cfg: TrainingSection
) -> tuple[float, float]:
    """The loop a person writes for this network, with early stopping (module docstring);
    returns (samples/s over the whole run, share of its time spent evaluating)."""
    xs, ys = torch.as_tensor(examples.x), torch.as_tensor(examples.y)
    train_rows = torch.as_tensor(parts.train)
    validation_rows = torch.as_tensor(parts.validation)
    holdout_rows = torch.as_tensor(parts.holdout)
    n = len(train_rows)
    batch = budget.batch_size(n, cfg.batch_size)
    epochs = budget.epoch_budget(n, batch, cfg.epochs)
    patience = budget.patience(n, batch)
    total_steps = epochs * budget.steps_per_epoch(n, batch)
    optimizer = torch.optim.AdamW(
        network.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay
    )
    scheduler = None
    if cfg.lr_schedule != "constant":
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: learning_rate_factor(cfg.lr_schedule, step, total_steps)
        )
    loss_fn = nn.CrossEntropyLoss()
    order = torch.Generator().manual_seed(cfg.seed)

    def loss_of(scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if scores.dim() == 3:  # an ensemble: each submodel learns from the batch
            return loss_fn(scores.flatten(0, 1), target.repeat_interleave(scores.shape[1]))
        return loss_fn(scores, target)

    def probabilities(rows: torch.Tensor) -> torch.Tensor:
        return torch.cat([network(xs[chunk]) for chunk in rows.split(EVAL_ROWS)])

    best_key, best, bad, samples, evaluating = (math.inf, math.inf), None, 0, 0, 0.0
    holdout_accuracy: list[float] = []  # per epoch, as the job's curve keeps its score
    network.train()
    started = time.perf_counter()
    for _ in range(epochs):
        for rows in train_rows[torch.randperm(n, generator=order)].split(batch):
            loss = loss_of(network.scores(xs[rows]), ys[rows])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            samples += len(rows)
        began = time.perf_counter()
        network.eval()
        with torch.inference_mode():
            p = probabilities(validation_rows)
            target = ys[validation_rows]
            error = float((p.argmax(dim=1) != target).double().mean())
            log_loss = float(-p.gather(1, target[:, None]).clamp_min(1e-15).log().mean())
            hits = probabilities(holdout_rows).argmax(dim=1) == ys[holdout_rows]
            holdout_accuracy.append(float(hits.double().mean()))
        network.train()
        if (error, log_loss) < best_key:
            best_key, bad = (error, log_loss), 0
            best = {k: v.detach().clone() for k, v in network.state_dict().items()}
        else:
            bad += 1
        evaluating += time.perf_counter() - began
        if bad >= patience:
            break
    if best is not None:
        network.load_state_dict(best)
    network.eval()
    seconds = time.perf_counter() - started
    return samples / seconds, evaluating / seconds


@contextmanager
def timed_temperature_fits() -> Iterator[list[float]]:
    """Adds the seconds spent in fit_temperature, by the loop's per-epoch validation key and
    by the calibration at the end, to the list's one element while it is open. Measurement
    only: the function called is the job's own."""
    spent = [0.0]
    fit = training_network.fit_temperature

    def timed(*args: object, **kwargs: object) -> tuple[float, float, float]:
        began = time.perf_counter()
        try:
            return fit(*args, **kwargs)  # type: ignore[arg-type]
        finally:
            spent[0] += time.perf_counter() - began

    training_loop.fit_temperature = timed  # type: ignore[assignment]
    training_network.fit_temperature = timed  # type: ignore[assignment]
    try:
        yield spent
    finally:
        training_loop.fit_temperature = fit
        training_network.fit_temperature = fit


def job_loop(
    network: TaskNetwork, examples: Examples, parts: Split, cfg: TrainingSection, bucket: Path
) -> tuple[float, float, int, float]:
    """The job's TrainingLoop as the job runs it: its checkpoint sink, the job's per-epoch
    holdout score, early stopping on the validation rows, calibration at the end.

    Returns (samples/s, share of wall time spent checkpointing, checkpoints taken, share of
    wall time spent fitting temperatures)."""
    sink = CheckpointStore(DirectoryStore(bucket), "bench", Lineage("bench-job", 1, "d", "s"))
    score = _holdout_score(
        examples.task, "accuracy", examples.x[parts.holdout], examples.y[parts.holdout]
    )
    with timed_temperature_fits() as temperature_seconds:
        trained = TrainingLoop(
            network,
            examples.x,
            examples.y,
            training=cfg,
            rows=parts.train,
            validation_rows=parts.validation,
            sink=sink,
            score=score,
        ).run()
    return (
        trained.samples_per_second,
        trained.checkpoint_seconds / trained.seconds,
        trained.checkpoints,
        temperature_seconds[0] / trained.seconds,
    )


def check(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def main(argv: list[str] | None = None, *, build: Builder | None = None) -> dict[str, float]:
    """Run the benchmark and print its report; its figures, with `targets_met` (1.0 or 0.0).
    `build` (examples, fitting rows -> a fresh network) replaces the spec's network, for a
    network no spec names yet."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--rows", type=int, default=125_000, help="rows of the table, before the job's split"
    )
    parser.add_argument("--features", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--overhead-epochs", type=int, default=10)
    parser.add_argument("--family", help="the spec's family: (default: the default family)")
    parser.add_argument("--model", help="the spec's model: section as YAML, e.g. '{family: mlp}'")
    args = parser.parse_args(argv)
    spec = spec_for(args.family, args.model)
    fresh_network = build or family_builder(spec)

    examples = synthetic(args.rows, args.features)
    parts = split_for(examples, spec.training)
    fit = fitting_rows(parts.train, spec.training.seed)
    cfg = spec.training.model_copy(update={"epochs": args.epochs})  # the spec otherwise

    bare, job, evaluation, temperature = [], [], [], []
    with tempfile.TemporaryDirectory(prefix="dropflow-bench-") as tmp:
        for repeat in range(args.repeats):
            with reproducible(cfg.seed):
                rate, share = bare_loop(fresh_network(examples, fit), examples, parts, cfg)
            bare.append(rate)
            evaluation.append(share)
            with reproducible(cfg.seed):
                rate, _, _, fitting = job_loop(
                    fresh_network(examples, fit),
                    examples,
                    parts,
                    cfg,
                    Path(tmp) / f"throughput-{repeat}",
                )
            job.append(rate)
            temperature.append(fitting)
        # Overhead at the default interval over a longer run (every epoch end is a candidate).
        long_cfg = spec.training.model_copy(update={"epochs": args.overhead_epochs})
        with reproducible(cfg.seed):
            _, overhead, checkpoints, _ = job_loop(
                fresh_network(examples, fit), examples, parts, long_cfg, Path(tmp) / "overhead"
            )

    ratio = statistics.median(job) / statistics.median(bare)
    passed = [ratio >= THROUGHPUT_TARGET, overhead <= OVERHEAD_TARGET]
    results = {
        "bare_loop_samples_per_s": statistics.median(bare),
        "bare_loop_evaluation_share": statistics.median(evaluation),
        "job_loop_samples_per_s": statistics.median(job),
        "job_loop_temperature_share": statistics.median(temperature),
        "throughput_ratio": ratio,
        "checkpoint_overhead": overhead,
        "checkpoints": checkpoints,
        "targets_met": float(all(passed)),
    }
    network = fresh_network(examples, fit)
    parameters = sum(p.numel() for p in network.parameters())
    batch = budget.batch_size(len(parts.train), cfg.batch_size)
    print(
        f"training loop, CPU (1 thread), {args.rows:,} rows x {args.features} features split as "
        f"the job splits them: {len(parts.train):,} training, {len(parts.validation):,} "
        f"validation, {len(parts.holdout):,} holdout; batch {batch}, AdamW lr "
        f"{cfg.learning_rate:g} weight decay {cfg.weight_decay:g} ({cfg.lr_schedule}), "
        f"{args.epochs} epochs, {args.repeats} alternating runs"
    )
    print(
        f"  network {type(network).__name__} ({parameters:,} parameters; family {spec.family}, "
        f"model {spec.model.model_dump(mode='json', exclude_none=True)})"
    )
    print(
        f"  bare torch loop           {results['bare_loop_samples_per_s']:>12,.0f} samples/s "
        f"({results['bare_loop_evaluation_share']:.1%} of its time evaluating)"
    )
    print(
        f"  dropflow job loop         {results['job_loop_samples_per_s']:>12,.0f} samples/s "
        f"({results['job_loop_temperature_share']:.1%} of its time fitting temperatures)"
    )
    print(
        f"  ratio job/bare            {ratio:>12.3f}x   target >= {THROUGHPUT_TARGET}x   "
        f"{check(passed[0])}"
    )
    print(
        f"  checkpoint overhead       {overhead:>12.2%}    target <= {OVERHEAD_TARGET:.0%}     "
        f"{check(passed[1])}   ({checkpoints} checkpoints in {args.overhead_epochs} epochs at "
        f"the default interval)"
    )
    print(f"training loop: {sum(passed)} of {len(passed)} targets met")
    print("json " + json.dumps(results))
    return results


if __name__ == "__main__":
    sys.exit(0 if main()["targets_met"] else 1)
