"""The tabular family's default network: TabM-mini with piecewise-linear numeric embeddings.

What it learns from (docs/architecture.md, Model families): TabM (Gorishniy et al., ICLR 2025)
trains k MLPs at once in one network that share all their weights but a per-submodel scaling
of the input (TabM-mini), and averages their predictions: most of a deep ensemble's gain at
the cost of one network's parameters. RealMLP (Holzmüller et al., 2024) scales numbers
robustly and clips them smoothly so that an outlier cannot dominate. Numeric embeddings
(Gorishniy et al., 2022) give each number a piecewise-linear code over its training quantiles,
so one layer can bend where the data bends, as a tree split would.

The graph's input is the tabular family's: one float32 column per feature, the raw number
(NaN when missing) or the category's code. Everything else happens inside the module, as
buffers fitted to the training rows (build_tabm), so the exported graph needs no client code:
- a number: NaN (missing, in any column, seen in training or not) is filled with the training
  median; then (x - median) / spread, the spread being the interquartile range (half the range,
  or 1, when that is 0), and the smooth clip x / sqrt(1 + (x / 3)^2); then the piecewise-linear
  embedding over the training rows' quantiles (at most one bin per ROWS_PER_BIN rows;
  rtdl_num_embeddings, version "B": a linear embedding plus a piecewise-linear part that
  starts at zero). A column that had missing
  values in training also gets a 0/1 "was missing" input, so the network can treat missing
  apart from the median;
- a category code: compared with the codes 0..n-1 (as training.model does), which gives a
  one-hot row, all zeros for NaN or any code outside the training categories: what serving
  sends for a value training never saw. Columns with more than ONE_HOT_MAX categories go on
  through a learned embedding matrix (one-hot @ weights: an embedding lookup whose unknown row
  is zero, with no Gather and no index arithmetic in the graph);
- the concatenated inputs go through TabM-mini (the `tabm` package's backbone and output
  layers) and come out as scores [batch, k, n_outputs]; the task head (training.network)
  averages the k submodels' probabilities or predictions.

The `tabm` and `rtdl_num_embeddings` packages provide the backbone, the output layer and the
numeric embeddings; they export to ONNX as they are (tests/unit/test_tabm_model.py checks the
graph with onnxruntime). Two things are this module's own: the preprocessing above (TabM's
recommended preprocessing is scikit-learn's quantile transform, which cannot live in the
graph) and the categorical encoding (tabm's one-hot encoder takes int64 codes and fails on an
unknown one; the graph's contract is a float32 code, NaN when unknown).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import rtdl_num_embeddings
import tabm
import torch
from torch import nn

from dropflow.vocabulary.card import Task
from training.network import TaskNetwork

# Defaults, from TabM's and RealMLP's papers, sized for a CPU as much as for a GPU: a step of
# k=16 x 128 wide costs about a sixteenth of TabM's own k=32 x 512 default, and on a
# 10,000-row table it did as well as 256 wide in a third of the time.
ENSEMBLE_SIZE = 16
HIDDEN_LAYERS = (128, 128)
DROPOUT = 0.1
N_BINS = 48  # quantile bins per numeric feature (fewer when a column has fewer values)
ROWS_PER_BIN = 16  # and at most one bin per this many training rows, but at least MIN_BINS
MIN_BINS = 4
D_EMBEDDING = 8  # numeric embedding width
# Categories per column up to which a column is one-hot encoded; beyond, embedded.
ONE_HOT_MAX = 8
D_CATEGORY = 8  # categorical embedding width
# Smooth clipping: values stay about linear up to CLIP_AT spreads from the median.
CLIP_AT = 3.0


def _smooth_clip(x: torch.Tensor) -> torch.Tensor:
    return x / torch.sqrt(1 + (x / CLIP_AT) ** 2)


def _smooth_clip_np(x: np.ndarray) -> np.ndarray:
    return x / np.sqrt(1 + (x / CLIP_AT) ** 2)


def column_scaling(column: np.ndarray) -> tuple[float, float]:
    """The median (which also fills a missing value and centres) and the spread of one
    column's values (NaN = missing): the interquartile range, else half the range, else 1.
    A column with no value at all gets 0 and 1."""
    data = np.asarray(column, dtype=np.float64)
    present = data[~np.isnan(data)]
    if not len(present):
        return 0.0, 1.0
    low, q1, median, q3, high = np.quantile(present, [0.0, 0.25, 0.5, 0.75, 1.0])
    iqr, half_range = q3 - q1, (high - low) / 2
    return float(median), float(iqr if iqr > 0 else half_range if half_range > 0 else 1.0)


def robust_scaling(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per column of `values` (NaN = missing): the median that fills a missing value, the
    centre and the spread that scale it (float64; column_scaling, one column at a time, so
    that no float64 copy of the whole matrix is made)."""
    n = values.shape[1]
    median, spread = np.zeros(n), np.ones(n)
    for j in range(n):
        median[j], spread[j] = column_scaling(values[:, j])
    return median, median.copy(), spread


def column_bins(scaled: np.ndarray, n_bins: int = N_BINS) -> torch.Tensor:
    """The piecewise-linear embedding's bin edges for one column of scaled values (no NaN): its
    distinct quantiles at 0, 1/n_bins, ..., 1; a column with a single value gets one bin
    around it."""
    edges = np.unique(np.quantile(scaled, np.linspace(0.0, 1.0, n_bins + 1)).astype(np.float32))
    if len(edges) < 2:
        edges = np.array([edges[0] - 1.0, edges[0] + 1.0], dtype=np.float32)
    return torch.as_tensor(edges)


def quantile_bins(scaled: np.ndarray, n_bins: int = N_BINS) -> list[torch.Tensor]:
    """column_bins of every column of `scaled` (no NaN), one column at a time."""
    return [column_bins(scaled[:, j], n_bins) for j in range(scaled.shape[1])]


class TabMNetwork(TaskNetwork):
    """TabM-mini on robustly scaled, embedded numbers and encoded categories; see the module
    docstring. Build it with build_tabm, which fits the buffers to the training rows."""

    def __init__(
        self,
        task: Task,
        n_features: int,
        n_outputs: int,
        *,
        bins: Sequence[torch.Tensor],
        category_counts: Mapping[int, int] | None = None,
        missing_columns: Sequence[int] = (),
        ensemble_size: int = ENSEMBLE_SIZE,
        hidden_layers: Sequence[int] = HIDDEN_LAYERS,
        dropout: float = DROPOUT,
        d_embedding: int = D_EMBEDDING,
    ) -> None:
        """`bins`: one tensor of edges per numeric column (quantile_bins); `category_counts`:
        categorical column index -> number of categories (every other column is numeric);
        `missing_columns`: numeric input columns that get a "was missing" input."""
        super().__init__(task)
        counts = dict(category_counts or {})
        for column, count in counts.items():
            if not 0 <= column < n_features or count < 1:
                raise ValueError(f"category_counts: column {column} with {count} categories")
        if not hidden_layers or len(set(hidden_layers)) != 1:
            raise ValueError(f"hidden_layers: one width for every layer, got {hidden_layers}")
        numeric = [j for j in range(n_features) if j not in counts]
        if len(bins) != len(numeric):
            raise ValueError(f"{len(bins)} bin lists for {len(numeric)} numeric columns")
        unknown = sorted(set(missing_columns) - set(numeric))
        if unknown:
            raise ValueError(f"missing_columns {unknown} are not numeric columns")
        self.n_features = n_features
        self.ensemble_size = ensemble_size
        # Layout constants (rebuilt from the arguments, so kept out of state_dict).
        self.register_buffer("numeric_columns", torch.tensor(numeric, dtype=torch.int64), False)
        self.register_buffer(
            "missing_columns", torch.tensor(sorted(missing_columns), dtype=torch.int64), False
        )
        small = [j for j in sorted(counts) if counts[j] <= ONE_HOT_MAX]
        large = [j for j in sorted(counts) if counts[j] > ONE_HOT_MAX]
        self.register_buffer(
            "one_hot_columns",
            torch.tensor([j for j in small for _ in range(counts[j])], dtype=torch.int64),
            False,
        )
        self.register_buffer(
            "one_hot_codes",
            torch.tensor([c for j in small for c in range(counts[j])], dtype=torch.float32),
            False,
        )
        self._large = large
        for j in large:
            self.register_buffer(
                f"codes_{j}", torch.arange(counts[j], dtype=torch.float32)[None, :], False
            )
        # Statistics of the training rows (state: checkpointed and exported).
        self.register_buffer("x_median", torch.zeros(len(numeric)))
        self.register_buffer("x_center", torch.zeros(len(numeric)))
        self.register_buffer("x_spread", torch.ones(len(numeric)))

        chunks: list[int] = []  # the width of each feature's part of the input, in order
        self.numeric_embedding: nn.Module | None = None
        if numeric:
            with warnings.catch_warnings():
                # "just two bin edges": a binary or constant column has one bin, as it should.
                warnings.simplefilter("ignore", UserWarning)
                self.numeric_embedding = rtdl_num_embeddings.PiecewiseLinearEmbeddings(
                    list(bins), d_embedding, activation=False, version="B"
                )
            chunks += [d_embedding] * len(numeric)
        chunks += [1] * len(missing_columns) + [counts[j] for j in small]
        self.category_embeddings = nn.ParameterList(
            [nn.Parameter(torch.randn(counts[j], D_CATEGORY) / D_CATEGORY**0.5) for j in large]
        )
        chunks += [D_CATEGORY] * len(large)
        if not chunks:
            raise ValueError("no input columns")
        width = hidden_layers[0]
        self.ensemble_view = tabm.EnsembleView(k=ensemble_size)
        self.backbone = tabm.make_tabm_backbone(
            d_in=sum(chunks),
            n_blocks=len(hidden_layers),
            d_block=width,
            dropout=dropout,
            k=ensemble_size,
            arch_type="tabm-mini",
            # TabM's choice with numeric embeddings: a random per-submodel scaling of each
            # feature's whole part of the input (one draw per chunk).
            start_scaling_init="normal",
            start_scaling_init_chunks=chunks,
        )
        self.output = tabm.LinearEnsemble(width, n_outputs, k=ensemble_size)

    def set_scaling(self, median: np.ndarray, center: np.ndarray, spread: np.ndarray) -> None:
        """Store the numeric columns' fill, centre and spread (robust_scaling) in the buffers."""
        self.x_median.copy_(torch.as_tensor(median, dtype=torch.float32))
        self.x_center.copy_(torch.as_tensor(center, dtype=torch.float32))
        self.x_spread.copy_(torch.as_tensor(spread, dtype=torch.float32))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Raw input rows [batch, n_features] -> the backbone's input [batch, d_in]."""
        parts = []
        if self.numeric_embedding is not None:
            numbers = x.index_select(1, self.numeric_columns)
            numbers = torch.where(torch.isnan(numbers), self.x_median, numbers)
            scaled = _smooth_clip((numbers - self.x_center) / self.x_spread)
            parts.append(self.numeric_embedding(scaled).flatten(1))
        if len(self.missing_columns):
            parts.append(torch.isnan(x.index_select(1, self.missing_columns)).to(x.dtype))
        if len(self.one_hot_columns):
            codes = x.index_select(1, self.one_hot_columns)
            parts.append((codes == self.one_hot_codes).to(x.dtype))
        for j, weights in zip(self._large, self.category_embeddings, strict=True):
            one_hot = (x[:, j : j + 1] == getattr(self, f"codes_{j}")).to(weights.dtype)
            parts.append(one_hot @ weights)
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        """Each submodel's logits [batch, k, n_classes], or standardised values [batch, k, 1]."""
        return self.output(self.backbone(self.ensemble_view(self.encode(x))))


def build_tabm(
    task: Task,
    x_train: np.ndarray,
    y_train: np.ndarray,
    *,
    n_classes: int = 0,
    category_counts: Mapping[int, int] | None = None,
    ensemble_size: int = ENSEMBLE_SIZE,
    hidden_layers: Sequence[int] = HIDDEN_LAYERS,
    dropout: float = DROPOUT,
) -> TabMNetwork:
    """A fresh TabMNetwork with its preprocessing fitted to the training rows.

    `x_train` holds raw numbers (NaN where missing) and, in the columns `category_counts`
    names, category codes. The numeric columns' medians, spreads and quantile bins become
    buffers. They are fitted one column at a time (a float64 copy of one column, never of the
    matrix), on the rows given: the job gives at most training.split.FIT_ROWS of them, a seeded
    sample of the training rows on a larger table (quantiles and medians from a sample of a
    couple of hundred thousand rows are standard practice: more rows would not move them).
    Weights are drawn from torch's global generator: seed it first for a reproducible start.
    """
    counts = dict(category_counts or {})
    x = np.asarray(x_train)
    for column, count in counts.items():
        codes = x[:, column]
        if not np.all((codes >= 0) & (codes < count) & (codes == np.round(codes))):
            raise ValueError(f"column {column}: category codes must be integers in [0, {count})")
    numeric = [j for j in range(x.shape[1]) if j not in counts]
    # Fewer bins on a small table: a bin of a handful of rows is a place to overfit.
    n_bins = min(N_BINS, max(MIN_BINS, len(x) // ROWS_PER_BIN))
    median, spread = np.zeros(len(numeric)), np.ones(len(numeric))
    bins, missing = [], []
    for i, j in enumerate(numeric):
        numbers = x[:, j].astype(np.float64)
        absent = np.isnan(numbers)
        if absent.any():
            missing.append(j)
        median[i], spread[i] = column_scaling(numbers)
        filled = np.where(absent, median[i], numbers)
        bins.append(column_bins(_smooth_clip_np((filled - median[i]) / spread[i]), n_bins))
    n_outputs = n_classes if task == "classification" else 1
    network = TabMNetwork(
        task,
        x.shape[1],
        n_outputs,
        bins=bins,
        category_counts=counts,
        missing_columns=missing,
        ensemble_size=ensemble_size,
        hidden_layers=hidden_layers,
        dropout=dropout,
    )
    network.set_scaling(median, median, spread)
    if task == "regression":
        y = np.asarray(y_train, dtype=np.float64)
        std = float(y.std())
        network.set_target_scale(float(y.mean()), std if std >= 1e-8 else 1.0)
    return network


__all__ = [
    "TabMNetwork",
    "build_tabm",
    "column_bins",
    "column_scaling",
    "quantile_bins",
    "robust_scaling",
]
