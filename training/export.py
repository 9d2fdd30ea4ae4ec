"""ONNX export and the parity check that must pass before anything is published.

The graph is exported here, on the training machine, because the exporter needs the exact torch
and model code that trained it (see DESIGN.md). It is one self-contained file with a dynamic
batch axis: input `input` float32 [batch, n_features], output `probabilities` or `prediction`
(dropflow.vocabulary.card). Parity runs onnxruntime on the holdout rows and compares with torch;
the same
rows and torch outputs are published as reference.npz so that promotion can re-check them
without torch.
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from dropflow.errors import UserInputError
from dropflow.vocabulary.card import INPUT_NAME, PREDICTION, PROBABILITIES, Parity
from training.model import Network, predict

log = logging.getLogger(__name__)

# Opset 20 runs on onnxruntime >= 1.17, which the predict Lambda's layer exceeds.
OPSET = 20
# Max |onnx - torch| for probabilities, and for a regression target of unit scale.
PARITY_TOLERANCE = 1e-4
# Loggers of the exporter's internals that narrate every pass at INFO.
_CHATTY_LOGGERS = (
    "torch.onnx._internal.exporter._registration",  # "torchvision is not installed"
    "onnx_ir",
    "onnxscript",
)
_EXAMPLE_ROWS = 8


class ExportCheckFailed(UserInputError):
    """The exported graph does not behave like the trained network.

    Export and training are deterministic, so another attempt would produce the same graph:
    the job fails (like a user error) instead of being retried.
    """

    def __init__(self, message: str, parity: Parity | None = None) -> None:
        super().__init__(message)
        self.parity = parity


def output_name(network: Network) -> str:
    """The graph's output name for the network's task (see dropflow.vocabulary.card)."""
    return PROBABILITIES if network.task == "classification" else PREDICTION


def parity_tolerance(network: Network) -> float:
    """The largest |onnx - torch| accepted for this network's outputs.

    Probabilities get PARITY_TOLERANCE. A regression prediction is `s * y_std + y_mean` in float32,
    so rounding grows with the target's scale (house prices differ in the 3rd decimal): its
    tolerance is PARITY_TOLERANCE per unit of that scale. The card records the value used.
    """
    if network.task == "classification":
        return PARITY_TOLERANCE
    scale = max(1.0, abs(network.y_mean.item()), network.y_std.item())
    return PARITY_TOLERANCE * scale


def export_onnx(network: Network, example: np.ndarray, path: Path) -> Path:
    """Export `network` (eval mode) to one ONNX file at `path` with a dynamic batch axis.

    `example` is a few representative input rows; they fix the dtype and feature count only.
    """
    network.eval()
    rows = np.asarray(example, dtype=np.float32)[:_EXAMPLE_ROWS]
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
                output_names=[output_name(network)],
                dynamic_shapes=({0: batch},),
            )
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
    return path


def _check_signature(model: onnx.ModelProto, n_features: int, output: str) -> None:
    inputs = [i for i in model.graph.input]
    outputs = [o.name for o in model.graph.output]
    if [i.name for i in inputs] != [INPUT_NAME] or outputs != [output]:
        raise ExportCheckFailed(
            f"exported graph has inputs {[i.name for i in inputs]} and outputs {outputs}; "
            f"expected [{INPUT_NAME!r}] and [{output!r}]"
        )
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != 2 or not dims[0].dim_param or dims[1].dim_value != n_features:
        raise ExportCheckFailed(
            f"exported input shape is {[d.dim_param or d.dim_value for d in dims]}; "
            f"expected [batch, {n_features}] with a dynamic batch axis"
        )


def check_parity(
    path: Path, network: Network, inputs: np.ndarray, *, tolerance: float | None = None
) -> tuple[Parity, np.ndarray]:
    """Check the ONNX file against `network` on `inputs`; return (Parity, torch outputs).

    Validates the file with onnx.checker, its input/output names and dynamic batch axis, then
    runs onnxruntime (CPU) on all rows at once and on a batch of one. Raises ExportCheckFailed
    when anything differs: max |onnx - torch| > tolerance (default: parity_tolerance) or, for
    classification, any predicted class.
    """
    if tolerance is None:
        tolerance = parity_tolerance(network)
    inputs = np.ascontiguousarray(inputs, dtype=np.float32)
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ExportCheckFailed(f"exported graph is not valid ONNX: {exc}") from None
    _check_signature(onnx.load(str(path)), inputs.shape[1], output_name(network))

    expected = predict(network, inputs)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    many = session.run(None, {INPUT_NAME: inputs})[0]
    one = session.run(None, {INPUT_NAME: inputs[:1]})[0]
    if many.shape != expected.shape or one.shape != expected[:1].shape:
        raise ExportCheckFailed(
            f"exported graph returns shapes {many.shape} (all rows) and {one.shape} (one row); "
            f"torch returns {expected.shape}"
        )
    diff = float(max(np.max(np.abs(many - expected)), np.max(np.abs(one - expected[:1]))))
    argmax_equal = None
    if network.task == "classification":
        argmax_equal = bool(
            np.array_equal(many.argmax(axis=1), expected.argmax(axis=1))
            and np.array_equal(one.argmax(axis=1), expected[:1].argmax(axis=1))
        )
    passed = diff <= tolerance and argmax_equal is not False
    parity = Parity(
        max_abs_diff=diff,
        tolerance=tolerance,
        argmax_equal=argmax_equal,
        rows=len(inputs),
        passed=passed,
    )
    if not passed:
        detail = f"max |onnx - torch| = {diff:.3g} (tolerance {tolerance:g})"
        if argmax_equal is False:
            detail += ", predicted classes differ"
        raise ExportCheckFailed(
            f"ONNX parity check failed on {len(inputs)} holdout rows: {detail}", parity
        )
    log.info("parity ok: max |onnx - torch| = %.3g on %d rows", diff, len(inputs))
    return parity, expected


def reference_npz(
    network: Network,
    inputs: np.ndarray,
    outputs: np.ndarray,
    target: np.ndarray | None = None,
) -> bytes:
    """reference.npz: the holdout rows (float32), torch's answers for them and, when given,
    the holdout's true `target` (class ids, or values in the target's units).

    Keyed by the graph's own names (`input`, and `probabilities` or `prediction`) so that the
    file is a ready onnxruntime feed for promotion's parity re-check; `target` lets promotion
    score the candidate and the champion on the same rows.
    """
    arrays = {
        INPUT_NAME: np.asarray(inputs, dtype=np.float32),
        output_name(network): np.asarray(outputs, dtype=np.float32),
    }
    if target is not None:
        arrays["target"] = np.asarray(target)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()
