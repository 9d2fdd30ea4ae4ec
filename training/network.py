"""What every family's network is to the loop, the export and the parity check: a task head.

A family's network (training.families) computes `scores(x)` from the graph's input, with its
preprocessing inside; this base class puts the task's head on top, the same for every family:
- classification: forward() is softmax(scores / temperature), float32 [batch, n_classes]
  (`probabilities`); the temperature is 1 until calibrate() fits it on validation rows;
- regression: scores are [batch, 1] in standardised target units and forward() is
  `scores * y_std + y_mean`, float32 [batch] in the target's units (`prediction`).
An ensemble in one network (training.tabm_model) returns scores [batch, k, ...], one row per
submodel: the loss trains every submodel on the batch, and forward() averages the k
probabilities (or predictions), so the graph still answers one row per input row.
forward() is exactly what the exported graph computes (dropflow.vocabulary.card). The loop
trains on scores() (cross-entropy on logits, or the mean squared error in standardised units,
which keeps Adam's default step sizes sensible whatever the target's scale), and the target's
mean and std and the temperature are buffers, so they are checkpointed and exported with the
weights.

Whatever runs a network on many rows at once (predict, the loop's validation and holdout
scoring, the export's parity check) goes through `in_passes`: slices of at most `pass_rows`
rows, so that the activations of one pass stay within PASS_BYTES whatever the number of rows.
An ensemble's activations are k times a single network's ([rows, k, width] per layer): the
default network at 200,000 holdout rows in one pass took about 6.6 GB.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from dropflow.vocabulary.card import PREDICTION, PROBABILITIES, Task

# The activations one forward pass over many rows may hold (see in_passes).
PASS_BYTES = 64 * 2**20


class TaskNetwork(nn.Module):
    """A family's network with the task's head: subclasses implement `scores`.

    `input_dtype` is the dtype of the graph's input (float32 unless a family says otherwise):
    rows reach the network, the exporter and onnxruntime in it.
    """

    input_dtype: ClassVar[type[np.generic]] = np.float32

    def __init__(self, task: Task) -> None:
        super().__init__()
        self.task = task
        self.register_buffer("y_mean", torch.zeros(()))
        self.register_buffer("y_std", torch.ones(()))
        self.register_buffer("temperature", torch.ones(()))
        self._row_bytes: int | None = None  # measured by row_bytes on first use

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """What the loss sees: logits [batch, n_classes], or [batch, 1] standardised values;
        an ensemble adds a submodel axis: [batch, k, n_classes] or [batch, k, 1]."""
        raise NotImplementedError(f"{type(self).__name__} must define scores()")

    def head(self, scores: torch.Tensor) -> torch.Tensor:
        """What forward() makes of scores(): probabilities or predictions (module docstring)."""
        if self.task == "classification":
            probabilities = torch.softmax(scores / self.temperature, dim=-1)
            return probabilities.mean(dim=1) if probabilities.dim() == 3 else probabilities
        values = scores.mean(dim=1) if scores.dim() == 3 else scores
        return values[:, 0] * self.y_std + self.y_mean

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.scores(x))

    @property
    def output_name(self) -> str:
        """The graph's output name for the task (see dropflow.vocabulary.card)."""
        return PROBABILITIES if self.task == "classification" else PREDICTION

    def set_target_scale(self, mean: float, std: float) -> None:
        """Store the training target's mean and std (regression): forward() undoes them."""
        self.y_mean.fill_(float(mean))
        self.y_std.fill_(float(std))

    def calibrate(self, scores: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
        """Fit the temperature to held-out rows (classification; a no-op for regression).

        `scores` are this network's scores() of those rows (eval mode), `y` their class ids.
        Temperature scaling: one number divides every logit before the softmax, chosen to
        minimise the rows' log loss (fit_temperature). Returns (log loss before, after); the
        temperature stays 1 unless that lowers it.
        """
        if self.task != "classification" or len(y) == 0:
            return (math.nan, math.nan)
        temperature, before, after = fit_temperature(scores, y)
        self.temperature.fill_(temperature)
        return before, after

    def standardised(self, y: np.ndarray) -> np.ndarray:
        """Regression targets in the units scores() predicts (float64)."""
        return (np.asarray(y, np.float64) - self.y_mean.item()) / self.y_std.item()

    @property
    def target_scale(self) -> float:
        """How large the regression outputs are (max of |mean| and std of the training
        target; 1 for classification): float32 rounding, hence parity, scales with it."""
        if self.task == "classification":
            return 1.0
        return max(abs(self.y_mean.item()), self.y_std.item())

    def as_input(self, rows: np.ndarray) -> np.ndarray:
        """`rows` as the graph's input: a contiguous array of `input_dtype`."""
        return np.ascontiguousarray(rows, dtype=self.input_dtype)

    def row_bytes(self, example: torch.Tensor) -> int:
        """About how many bytes of activations one input row costs in a forward pass: the
        bytes of every module's output for one row of `example` (input rows, on the network's
        device), measured on the first call and remembered.

        On the safe side: it counts every module's output as if all were held at once, where a
        pass frees most of them as it goes (the default network's passes peak at about a third
        of it).
        """
        if self._row_bytes is None:
            if len(example) == 0:
                raise ValueError("row_bytes needs at least one example row")
            sizes: list[int] = []

            def count(_module: nn.Module, _inputs: object, output: object) -> None:
                for tensor in output if isinstance(output, tuple | list) else (output,):
                    if isinstance(tensor, torch.Tensor):
                        sizes.append(tensor.numel() * tensor.element_size())

            training = self.training
            hooks = [module.register_forward_hook(count) for module in self.modules()]
            try:
                # Eval mode: a layer that keeps statistics in training mode must not learn
                # from the probe, and dropout must not draw from the seeded generator.
                self.eval()
                with torch.inference_mode():
                    self(example[:1])
            finally:
                for hook in hooks:
                    hook.remove()
                self.train(training)
            self._row_bytes = max(1, sum(sizes) + example[:1].numel() * example.element_size())
        return self._row_bytes

    def pass_rows(self, example: torch.Tensor, budget: int | None = None) -> int:
        """How many input rows one forward pass may take so that its activations stay within
        `budget` bytes (default PASS_BYTES; row_bytes of `example`); at least 1."""
        return max(1, (PASS_BYTES if budget is None else budget) // self.row_bytes(example))


def averaged_probabilities(
    scores: torch.Tensor, temperature: float = 1.0
) -> Iterator[tuple[int, torch.Tensor]]:
    """softmax(scores / temperature) in float64, averaged over a submodel axis when there is
    one, as (first row, probabilities [rows, classes]) for one slice of rows after another: a
    float64 copy of all the scores at once would be twice their size (with many classes and
    submodels, hundreds of MB)."""
    per_row = 8 * max(1, scores[0].numel()) if len(scores) else 8
    step = max(1, PASS_BYTES // (3 * per_row))  # the float64 copy, its softmax, a quotient
    for start in range(0, len(scores), step):
        probabilities = torch.softmax(scores[start : start + step].double() / temperature, dim=-1)
        yield start, probabilities.mean(dim=1) if probabilities.dim() == 3 else probabilities


class _Margins:
    """Each row's logits less its true class's logit, in float64, for the log loss at many
    temperatures: the true class's averaged probability is mean over submodels of
    1 / sum_k exp(margin_k / T), with no softmax of every class and no gather per temperature.
    Kept in slices of at most PASS_BYTES each; all of them when they fit in PASS_BYTES
    together, else made again at every temperature (many classes and submodels)."""

    def __init__(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        self.logits, self.target = logits, target
        per_row = 8 * max(1, logits[0].numel()) if len(logits) else 8
        self.step = max(1, PASS_BYTES // (2 * per_row))  # the margins and their exp
        self.kept = list(self._slices()) if len(logits) * per_row <= PASS_BYTES else None

    def _slices(self) -> Iterator[torch.Tensor]:
        for start in range(0, len(self.logits), self.step):
            z = self.logits[start : start + self.step].double()
            rows = self.target[start : start + len(z)]
            # The true class's index on every submodel: [rows(, submodels), 1].
            index = rows.view(-1, *([1] * (z.dim() - 1))).expand(*z.shape[:-1], 1)
            yield z - z.gather(-1, index)

    def mean_log_loss(self, temperature: float) -> float:
        total = 0.0
        for margins in self.kept if self.kept is not None else self._slices():
            mass = torch.div(margins, temperature).exp_().sum(dim=-1)  # [rows(, submodels)]
            mine = mass.reciprocal_()
            true = mine.mean(dim=1) if mine.dim() == 2 else mine
            total += float(-true.clamp_min(1e-15).log().sum())
        return total / max(1, len(self.logits))


# fit_temperature's search: grid points over log T in [log 1/4, log 20], then golden-section turns.
GRID_STEPS = 22
SEARCH_TURNS = 24


def fit_temperature(scores: torch.Tensor, y: torch.Tensor) -> tuple[float, float, float]:
    """The temperature that minimises the log loss of softmax(scores / T) (averaged over a
    submodel axis when there is one) on rows with class ids `y`: (T, log loss at T = 1, log
    loss at T). T is 1 unless another value lowers the loss, and within [1/4, 20].

    One number for all logits: the class ranking of a single model does not move, so neither
    does its accuracy; for an ensemble the average of the submodels can move a little.
    """
    margins = _Margins(scores.detach().float().cpu(), y.detach().cpu().long())
    # A coarse grid of log T, then golden-section search around its best point: deterministic,
    # and robust to a mean of softmaxes not being convex in T. Sharpening is bounded (T >= 1/4):
    # a few rows that are all right would otherwise drive T towards 0, every answer certain.
    # Every evaluation is a pass over all the rows and the job fits once per epoch to judge it
    # (training.loop), so the grid is coarse (the search narrows a bracket of two grid steps to
    # ~1e-5 in log T) and the search evaluates one new point per turn.
    low_end, high_end = math.log(0.25), math.log(20.0)
    grid = [low_end + (high_end - low_end) * i / GRID_STEPS for i in range(GRID_STEPS + 1)]
    grid[min(range(len(grid)), key=lambda i: abs(grid[i]))] = 0.0  # T = 1 itself is a candidate
    values = [margins.mean_log_loss(math.exp(t)) for t in grid]
    best = min(range(len(grid)), key=lambda i: (values[i], abs(grid[i])))
    low, high = grid[max(0, best - 1)], grid[min(len(grid) - 1, best + 1)]
    ratio = (math.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    at_a, at_b = (margins.mean_log_loss(math.exp(t)) for t in (a, b))
    for _ in range(SEARCH_TURNS):
        if at_a <= at_b:
            high, b, at_b = b, a, at_a
            a = high - ratio * (high - low)
            at_a = margins.mean_log_loss(math.exp(a))
        else:
            low, a, at_a = a, b, at_b
            b = low + ratio * (high - low)
            at_b = margins.mean_log_loss(math.exp(b))
    fitted = math.exp((low + high) / 2)
    before, after = values[grid.index(0.0)], margins.mean_log_loss(fitted)
    if after < before:
        return fitted, before, after
    return 1.0, before, before


def in_passes(
    network: TaskNetwork,
    x: torch.Tensor,
    *,
    rows: torch.Tensor | None = None,
    scores: bool = False,
    budget: int | None = None,
) -> torch.Tensor:
    """The network's forward() (or, with `scores`, its scores()) of the input rows `x` (on
    the network's device), or of `x[rows]` for a tensor of row indices, run pass by pass over
    slices of at most network.pass_rows(budget) rows (`budget` defaults to PASS_BYTES):
    float32 on the CPU, one row per input row, the same as one pass over them all up to
    floating-point rounding.

    Runs under inference mode in the network's current mode (the caller sets eval()); only one
    slice of `x` is copied at a time, never the whole of `x[rows]`. On the CPU the passes run
    on one thread, as the training loop does: a pass of a few hundred rows gains little from
    more, and on a busy machine a thread pool waits for its slowest thread at every operator
    (on this project's 2-core test machine with another job running, 40,000 rows of the default
    network took 1 s on one thread and 12 s on two).
    """
    total = len(x) if rows is None else len(rows)
    function = network.scores if scores else network
    threads = torch.get_num_threads()
    single = x.device.type == "cpu" and threads != 1
    if single:
        torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            if total == 0:
                return function(x[:0]).float().cpu()
            first = x[:1] if rows is None else x[rows[:1].to(x.device)]
            step = network.pass_rows(first, budget)
            parts: list[torch.Tensor] = []
            for start in range(0, total, step):
                if rows is None:
                    batch = x[start : start + step]
                else:
                    batch = x[rows[start : start + step].to(x.device)]
                parts.append(function(batch).float().cpu())
    finally:
        if single:
            torch.set_num_threads(threads)
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def predict(network: TaskNetwork, rows: np.ndarray, *, budget: int | None = None) -> np.ndarray:
    """The network's forward() on `rows` in eval mode, as float32 numpy (what the graph returns),
    computed in passes of bounded memory (in_passes)."""
    network.eval()
    return in_passes(network, torch.as_tensor(network.as_input(rows)), budget=budget).numpy()


__all__ = [
    "PASS_BYTES",
    "TaskNetwork",
    "averaged_probabilities",
    "fit_temperature",
    "in_passes",
    "predict",
]
