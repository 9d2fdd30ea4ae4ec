"""ONNX export and the parity check that must pass before anything is published.

The graph is exported here, on the training machine, because the exporter needs the exact torch
and model code that trained it (docs/architecture.md, Why ONNX at the end of training). It is
one self-contained file with a dynamic batch axis: input `input` [batch, ...] in the family's
input dtype (float32 [batch, n_features] for tables), output `probabilities` or `prediction`
(dropflow.vocabulary.card). Nothing here knows a family: any training.network.TaskNetwork
exports and is checked the same way. Parity runs onnxruntime on the holdout rows and compares
with torch by the rule promotion applies too (dropflow.vocabulary.parity); the same rows (or, for
large inputs such as images, a seeded sample of them: reference_rows) and torch outputs are
published as reference.npz so that promotion can re-check them without torch.
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch

from dropflow.errors import UserInputError
from dropflow.vocabulary import parity as parity_rule
from dropflow.vocabulary.card import INPUT_NAME, Parity
from dropflow.vocabulary.onnx_session import open_session, run_in_slices
from training import holdout
from training.network import TaskNetwork, predict

log = logging.getLogger(__name__)

# Opset 20 runs on onnxruntime >= 1.17, which the predict Lambda's layer exceeds.
OPSET = 20
# Loggers of the exporter's internals that narrate every pass at INFO.
_CHATTY_LOGGERS = (
    "torch.onnx._internal.exporter._registration",  # "torchvision is not installed"
    "onnx_ir",
    "onnxscript",
)
_EXAMPLE_ROWS = 8
# The most bytes of input rows reference.npz carries: promotion loads the file whole (a table's
# holdout is far below it; 224 x 224 images, 150 KB a row, are not).
REFERENCE_INPUT_BYTES = 64 * 2**20


class ExportCheckFailed(UserInputError):
    """The exported graph does not behave like the trained network.

    Export and training are deterministic, so another attempt would produce the same graph:
    the job fails (like a user error) instead of being retried.
    """

    def __init__(self, message: str, parity: Parity | None = None) -> None:
        super().__init__(message)
        self.parity = parity


def parity_tolerance(network: TaskNetwork) -> float:
    """The largest |onnx - torch| accepted for this network's outputs: the parity rule's
    (dropflow.vocabulary.parity.tolerance) for its task and target scale."""
    return parity_rule.tolerance(network.task, network.target_scale)


def export_onnx(network: TaskNetwork, example: np.ndarray, path: Path) -> Path:
    """Export `network` (eval mode) to one ONNX file at `path` with a dynamic batch axis.

    `example` is a few representative input rows; they fix the dtype and the row shape only.
    """
    network.eval()
    rows = network.as_input(example)[:_EXAMPLE_ROWS]
    if len(rows) < 2:
        # torch.export specialises a size-1 dimension to a constant; show it a real batch.
        rows = np.repeat(rows[:1], 2, axis=0)
    batch = torch.export.Dim("batch")
    loggers = [logging.getLogger(name) for name in _CHATTY_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # deprecations inside the exporter
            torch.onnx.export(
                network,
                (torch.from_numpy(rows),),
                str(path),
                verbose=False,
                dynamo=True,
                external_data=False,  # one file: what the predict Lambda downloads and loads
                opset_version=OPSET,
                input_names=[INPUT_NAME],
                output_names=[network.output_name],
                dynamic_shapes=({0: batch},),
            )
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
    return path


def _check_signature(model: onnx.ModelProto, row_shape: tuple[int, ...], output: str) -> None:
    inputs = [i for i in model.graph.input]
    outputs = [o.name for o in model.graph.output]
    if [i.name for i in inputs] != [INPUT_NAME] or outputs != [output]:
        raise ExportCheckFailed(
            f"exported graph has inputs {[i.name for i in inputs]} and outputs {outputs}; "
            f"expected [{INPUT_NAME!r}] and [{output!r}]"
        )
    dims = inputs[0].type.tensor_type.shape.dim
    if (
        len(dims) != 1 + len(row_shape)
        or not dims[0].dim_param
        or tuple(d.dim_value for d in dims[1:]) != row_shape
    ):
        expected = ", ".join(["batch", *map(str, row_shape)])
        raise ExportCheckFailed(
            f"exported input shape is {[d.dim_param or d.dim_value for d in dims]}; "
            f"expected [{expected}] with a dynamic batch axis"
        )


def check_parity(
    path: Path, network: TaskNetwork, inputs: holdout.Rows, *, tolerance: float | None = None
) -> tuple[Parity, np.ndarray]:
    """Check the ONNX file against `network` on `inputs`; return (Parity, torch outputs).

    Validates the file with onnx.checker, its input/output names and dynamic batch axis, then
    runs onnxruntime (CPU) on every row and on a batch of one, and compares both with torch by
    the parity rule (dropflow.vocabulary.parity; `tolerance` defaults to parity_tolerance).
    Both sides run in slices of the rows torch's passes take (training.network.in_passes),
    so memory does not grow with the number of rows; streamed rows (an image holdout) are
    read a chunk at a time (training.holdout.chunks). Raises ExportCheckFailed saying what
    differs.
    """
    if tolerance is None:
        tolerance = parity_tolerance(network)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportCheckFailed(f"exported graph is not valid ONNX: {exc}") from None
    _check_signature(onnx.load(str(path)), tuple(inputs.shape[1:]), network.output_name)

    session = open_session(path)
    output = network.output_name
    first = network.as_input(holdout.head(inputs, 1))
    rows = network.pass_rows(torch.as_tensor(first)) if len(first) else 1
    expected_parts, many_parts = [], []
    for chunk in holdout.chunks(inputs):
        chunk = network.as_input(chunk)
        expected_parts.append(predict(network, chunk))
        many_parts.append(run_in_slices(session, output, chunk, rows=rows))
    expected = np.concatenate(expected_parts) if len(expected_parts) > 1 else expected_parts[0]
    many = np.concatenate(many_parts) if len(many_parts) > 1 else many_parts[0]
    one = session.run([output], {INPUT_NAME: first})[0]
    verdict = parity_rule.compare(
        network.task, (many, expected), (one, expected[:1]), tolerance=tolerance
    )
    if verdict.problem is not None:
        raise ExportCheckFailed(
            f"ONNX parity check failed on {len(inputs)} holdout rows: {verdict.problem}",
            verdict.parity,
        )
    log.info(
        "parity ok: max |onnx - torch| = %.3g on %d rows", verdict.parity.max_abs_diff, len(inputs)
    )
    return verdict.parity, expected


def reference_rows(inputs: holdout.Rows, seed: int) -> np.ndarray:
    """Which holdout rows reference.npz carries: all of them when their inputs are at most
    REFERENCE_INPUT_BYTES, else a seeded sample of as many as fit (in row order), so that
    promotion's parity re-check and fair scoring run on rows of every part of the holdout."""
    rows = len(inputs)
    row_bytes = max(1, int(np.prod(inputs.shape[1:])) * np.dtype(inputs.dtype).itemsize)
    keep = min(rows, max(1, REFERENCE_INPUT_BYTES // row_bytes))
    if keep == rows:
        return np.arange(rows)
    return np.sort(np.random.default_rng(seed).choice(rows, keep, replace=False))


def reference_npz(
    network: TaskNetwork,
    inputs: np.ndarray,
    outputs: np.ndarray,
    target: np.ndarray | None = None,
) -> bytes:
    """reference.npz: the holdout rows (in the graph's input dtype), torch's answers for them
    and, when given, the holdout's true `target` (class ids, or values in the target's units).

    Keyed by the graph's own names (`input`, and `probabilities` or `prediction`) so that the
    file is a ready onnxruntime feed for promotion's parity re-check; `target` lets promotion
    score the candidate and the champion on the same rows.
    """
    arrays = {
        INPUT_NAME: network.as_input(inputs),
        network.output_name: np.asarray(outputs, dtype=np.float32),
    }
    if target is not None:
        arrays["target"] = np.asarray(target)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()
