"""The training loop: Adam on shuffled mini-batches, reproducible for a given seed.

Same data + same spec + same seed gives the same weights, hence the same holdout metrics: the
seed drives the weight init and the batch order, deterministic algorithms are required, and
the loop runs on one CPU thread (these small MLPs gain nothing from more threads, and a fixed
thread count keeps floating-point reductions in one order).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from dropflow.card import Task
from dropflow.errors import UserInputError
from dropflow.spec import ModelSection, TrainingSection
from training.model import Network, build_network

log = logging.getLogger(__name__)

# (epoch, epochs, mean training loss): called after every epoch, e.g. for the job heartbeat.
EpochCallback = Callable[[int, int, float], None]


@dataclass(frozen=True)
class Trained:
    network: Network  # in eval mode
    losses: list[float]  # mean training loss per epoch
    seconds: float


@contextmanager
def reproducible(seed: int) -> Iterator[None]:
    """Seed torch, require deterministic kernels and use one thread; restore on exit."""
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic)


def train(
    x_train: np.ndarray,
    y_train: np.ndarray,
    *,
    task: Task,
    n_classes: int,
    model: ModelSection,
    training: TrainingSection,
    on_epoch: EpochCallback | None = None,
) -> Trained:
    """Build a network for the training rows and fit it with the spec's settings.

    `y_train` holds class indices (classification) or target values (regression).
    """
    started = time.perf_counter()
    with reproducible(training.seed):
        network = build_network(
            task,
            x_train,
            y_train,
            n_classes=n_classes,
            hidden_layers=model.hidden_layers,
            dropout=model.dropout,
        )
        x = torch.as_tensor(x_train, dtype=torch.float32)
        if task == "classification":
            y = torch.as_tensor(y_train, dtype=torch.int64)
            loss_fn: nn.Module = nn.CrossEntropyLoss()
        else:
            # The network's scores are in standardised target units; so is the target here.
            standard = (
                np.asarray(y_train, np.float64) - network.y_mean.item()
            ) / network.y_std.item()
            y = torch.as_tensor(standard, dtype=torch.float32).unsqueeze(1)
            loss_fn = nn.MSELoss()
        optimizer = torch.optim.Adam(
            network.parameters(), lr=training.learning_rate, weight_decay=training.weight_decay
        )
        order = torch.Generator().manual_seed(training.seed)
        n, epochs, batch = len(x), training.epochs, training.batch_size
        every = max(1, epochs // 10)  # about ten progress lines per job
        losses: list[float] = []
        network.train()
        for epoch in range(1, epochs + 1):
            total = 0.0
            for index in torch.randperm(n, generator=order).split(batch):
                loss = loss_fn(network.scores(x[index]), y[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                total += loss.item() * len(index)
            losses.append(total / n)
            if not math.isfinite(losses[-1]):
                # Deterministic, so another attempt would diverge the same way.
                raise UserInputError(
                    f"training diverged at epoch {epoch} (loss is {losses[-1]}); "
                    "lower training.learning_rate in dropflow.yaml"
                )
            if epoch % every == 0 or epoch == epochs:
                log.info("epoch %d/%d loss %.4f", epoch, epochs, losses[-1])
            if on_epoch is not None:
                on_epoch(epoch, epochs, losses[-1])
        network.eval()
    return Trained(network=network, losses=losses, seconds=time.perf_counter() - started)
