"""The parity rule: when an exported graph's outputs count as the trained network's own.

One rule, two checks: the training job runs the graph with onnxruntime against torch before it
publishes anything (training.export), and promotion runs it again against the torch outputs in
reference.npz before anything is served (dropflow.promotion.gate). Both ask `compare`:

- outputs are compared as float32; a regression output is compared as [rows] (a [rows, 1]
  output reads the same);
- a mismatch is any of: a shape other than the reference's, a NaN or infinite graph output, a
  max |graph - reference| above the tolerance (a NaN difference counts as above), and, for
  classification, another predicted class (argmax) in any row;
- the tolerance (`tolerance`) is TOLERANCE for probabilities. A regression prediction is
  `s * std + mean` in float32, so its rounding grows with the target's scale (house prices
  differ in the 3rd decimal): TOLERANCE per unit of that scale. The card's Parity records the
  value used, and promotion re-checks with that value.

Numpy only: the promote function imports this without torch, and without onnxruntime.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dropflow.vocabulary.card import Parity, Task

# Max |onnx - torch| for probabilities, and for a regression target of unit scale.
TOLERANCE = 1e-4


def tolerance(task: Task, scale: float = 1.0) -> float:
    """The largest |graph - reference| accepted for a model of `task`.

    `scale` is a regression target's scale (max of |mean| and std of the training target);
    below 1 it counts as 1. Classification ignores it.
    """
    if task == "classification":
        return TOLERANCE
    return TOLERANCE * max(1.0, scale)


@dataclass(frozen=True)
class Verdict:
    """What `compare` found: the card's Parity record, and the problem when it did not pass."""

    parity: Parity
    problem: str | None = None  # a sentence a reader can act on; None when parity passed

    @property
    def passed(self) -> bool:
        return self.parity.passed


def compare(task: Task, *pairs: tuple[np.ndarray, np.ndarray], tolerance: float) -> Verdict:
    """Compare graph outputs with reference outputs, pair by pair, by the module's rule.

    Each pair is (graph output, reference output) for the same input rows, e.g. all holdout
    rows, and a batch of one. The Verdict's Parity holds the largest difference over all
    pairs, whether every predicted class agrees (classification only), and the rows of the
    first pair. Never raises for a mismatch: the caller decides what failing means.
    """
    if not pairs:
        raise ValueError("compare needs at least one (graph, reference) pair")
    classification = task == "classification"
    rows = len(pairs[0][1])
    problems: list[str] = []
    diffs: list[float] = []
    argmax_equal = shapes_agree = True
    for graph, reference in pairs:
        actual = np.asarray(graph, dtype=np.float32)
        expected = np.asarray(reference, dtype=np.float32)
        if not classification:
            actual, expected = actual.reshape(-1), expected.reshape(-1)
        if actual.shape != expected.shape:
            problems.append(
                f"the graph's output shape {list(actual.shape)} differs from the reference "
                f"{list(expected.shape)}"
            )
            diffs.append(math.inf)
            argmax_equal = shapes_agree = False
            continue
        if not np.all(np.isfinite(actual)):
            problems.append("the graph produced NaN or infinite outputs")
        if actual.size:
            diffs.append(float(np.max(np.abs(actual - expected))))
        if classification and not np.array_equal(actual.argmax(axis=1), expected.argmax(axis=1)):
            argmax_equal = False
    # NaN is kept (max() would drop it depending on order): it fails like a large difference.
    diff = math.nan if any(math.isnan(d) for d in diffs) else max(diffs, default=0.0)
    # `not <=` also fails a NaN difference. Outputs of another shape have no difference to tell.
    if shapes_agree and not diff <= tolerance:
        problems.append(f"max abs diff {diff:.3g} exceeds the tolerance {tolerance:.3g}")
    if shapes_agree and not argmax_equal:
        problems.append("the graph and the reference disagree on the predicted class")
    unique = list(dict.fromkeys(problems))
    parity = Parity(
        max_abs_diff=diff,
        tolerance=tolerance,
        argmax_equal=argmax_equal if classification else None,
        rows=rows,
        passed=not unique,
    )
    return Verdict(parity, "; ".join(unique) or None)


__all__ = ["TOLERANCE", "Verdict", "compare", "tolerance"]
