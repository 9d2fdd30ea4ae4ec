"""Benchmark: the training job's loop against a minimal hand-written torch loop.

Both train the same freshly built network (same seed, same weights at the start) on the same
tensors with Adam and the same batch size, on one CPU thread (what the job uses on CPU, for
reproducibility). The job's loop runs as the job runs it: checkpointing to an ObjectStore at
the default interval and scoring the holdout after every epoch. Runs alternate A, B, A, B...
so that a busy machine slows both alike, and the median of each side is compared.

The network is the one the job would build for a spec's `family:` and `model:` sections
(--family, --model; by default the default family with its default network), built through
the family (training.families) on the benchmark's numeric columns: a new default network is
measured as soon as it is the family's default, and any other by naming it. The hand-written
loop trains it as the job's loop does (Adam with the spec's learning rate and weight decay,
cross-entropy on the network's scores); a loop that changes that should change it here too.

Targets (issue 3): job loop >= 0.9x the hand-written loop's samples/s; checkpoint overhead at
the default interval <= 5 % of the loop's wall time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from dropflow.adapters.local.directory_store import DirectoryStore
from dropflow.vocabulary.card import Feature
from dropflow.vocabulary.spec import Spec, TrainingSection, load_spec
from training.checkpoint import CheckpointStore, Lineage
from training.examples import Examples
from training.families import family_for
from training.loop import TrainingLoop, reproducible
from training.network import TaskNetwork, predict


def synthetic(rows: int, features: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A two-class problem with a noisy linear boundary: enough work per step to time."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, features)).astype(np.float32)
    w = rng.normal(size=features)
    y = ((x @ w + rng.normal(scale=0.5, size=rows)) > 0).astype(np.int64)
    return x, y


Builder = Callable[[np.ndarray, np.ndarray, int], TaskNetwork]


def spec_for(family: str | None, model: str | None) -> Spec:
    """The spec whose `family:` and `model:` (a YAML mapping) choose the network."""
    lines = [f"family: {family}" if family else "", f"model: {model}" if model else ""]
    return load_spec("\n".join(lines) + "\n")


def family_builder(spec: Spec) -> Builder:
    """Fresh networks as the job builds them for `spec`, on numeric columns, two classes."""
    family = family_for(spec)

    def build(x: np.ndarray, y: np.ndarray, seed: int) -> TaskNetwork:
        examples = Examples(
            task="classification",
            target="y",
            x=x,
            y=y,
            classes=[0, 1],
            features=[Feature(name=f"x{j}", dtype="number") for j in range(x.shape[1])],
            sources=[],
        )
        with reproducible(seed):
            return family.build(examples, x, y, spec)

    return build


def hand_written(network: TaskNetwork, x: np.ndarray, y: np.ndarray, cfg: TrainingSection) -> float:
    """The loop a person writes in five minutes; returns samples/s."""
    xs, ys = torch.as_tensor(x), torch.as_tensor(y)
    optimizer = torch.optim.Adam(
        network.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay
    )
    loss_fn = nn.CrossEntropyLoss()
    order = torch.Generator().manual_seed(cfg.seed)
    network.train()
    started = time.perf_counter()
    for _ in range(cfg.epochs):
        for index in torch.randperm(len(xs), generator=order).split(cfg.batch_size):
            loss = loss_fn(network.scores(xs[index]), ys[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return len(xs) * cfg.epochs / (time.perf_counter() - started)


def job_loop(
    network: TaskNetwork,
    x: np.ndarray,
    y: np.ndarray,
    holdout: tuple[np.ndarray, np.ndarray],
    cfg: TrainingSection,
    bucket: Path,
) -> tuple[float, float, int]:
    """The job's TrainingLoop with its checkpoint sink and per-epoch holdout score.

    Returns (samples/s, share of wall time spent checkpointing, checkpoints taken)."""
    x_hold, y_hold = holdout
    sink = CheckpointStore(DirectoryStore(bucket), "bench", Lineage("bench-job", 1, "d", "s"))

    def score(net: TaskNetwork) -> float:
        return float((predict(net, x_hold).argmax(axis=1) == y_hold).mean())

    trained = TrainingLoop(network, x, y, training=cfg, sink=sink, score=score).run()
    return (
        trained.samples_per_second,
        trained.checkpoint_seconds / trained.seconds,
        trained.checkpoints,
    )


def main(argv: list[str] | None = None, *, build: Builder | None = None) -> dict[str, float]:
    """Run the benchmark and print its report; `build` (x, y, seed -> a fresh network)
    replaces the spec's network, for a network no spec names yet."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=30)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--overhead-epochs", type=int, default=40)
    parser.add_argument("--family", help="the spec's family: (default: the default family)")
    parser.add_argument(
        "--model", help="the spec's model: section as YAML, e.g. '{hidden_layers: [64, 32]}'"
    )
    args = parser.parse_args(argv)
    spec = spec_for(args.family, args.model)
    fresh_network = build or family_builder(spec)

    x, y = synthetic(args.rows + args.rows // 4, args.features)
    x_train, y_train = x[: args.rows], y[: args.rows]
    holdout = (x[args.rows :], y[args.rows :])
    cfg = spec.training.model_copy(update={"epochs": args.epochs})  # the spec otherwise

    hand, job = [], []
    with tempfile.TemporaryDirectory(prefix="dropflow-bench-") as tmp:
        for repeat in range(args.repeats):
            torch.set_num_threads(1)
            hand.append(hand_written(fresh_network(x_train, y_train, 0), x_train, y_train, cfg))
            rate, _, _ = job_loop(
                fresh_network(x_train, y_train, 0),
                x_train,
                y_train,
                holdout,
                cfg,
                Path(tmp) / f"throughput-{repeat}",
            )
            job.append(rate)
        # Overhead at the default interval over a longer run (every epoch end is a candidate).
        long_cfg = spec.training.model_copy(update={"epochs": args.overhead_epochs})
        _, overhead, checkpoints = job_loop(
            fresh_network(x_train, y_train, 0),
            x_train,
            y_train,
            holdout,
            long_cfg,
            Path(tmp) / "overhead",
        )

    results = {
        "hand_written_samples_per_s": statistics.median(hand),
        "job_loop_samples_per_s": statistics.median(job),
        "throughput_ratio": statistics.median(job) / statistics.median(hand),
        "checkpoint_overhead": overhead,
        "checkpoints": checkpoints,
    }
    network = fresh_network(x_train, y_train, 0)
    parameters = sum(p.numel() for p in network.parameters())
    print(
        f"training loop, CPU ({torch.get_num_threads()} thread), {args.rows} rows x "
        f"{args.features} features, batch {cfg.batch_size}, {args.repeats} alternating runs; "
        f"network {type(network).__name__} ({parameters:,} parameters; family {spec.family}, "
        f"model {spec.model.model_dump(mode='json')})"
    )
    print(f"  hand-written torch loop   {results['hand_written_samples_per_s']:>12,.0f} samples/s")
    print(f"  dropflow job loop         {results['job_loop_samples_per_s']:>12,.0f} samples/s")
    print(f"  ratio job/hand-written    {results['throughput_ratio']:>12.3f}x   (target >= 0.9x)")
    print(
        f"  checkpoint overhead       {results['checkpoint_overhead']:>12.2%}    (target <= 5%; "
        f"{checkpoints} checkpoints in {args.overhead_epochs} epochs at the default interval)"
    )
    print("json " + json.dumps(results))
    return results


if __name__ == "__main__":
    main()
