"""onnxruntime sessions, opened one way for serving, promotion and the training job's parity run,
and run over many rows in slices of bounded memory (`run_in_slices`).

onnxruntime is imported on the first session, not with this module: the vocabulary is read by
functions that never run a graph (the launch and track functions ship without the runtime).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import TYPE_CHECKING

from dropflow.vocabulary.card import INPUT_NAME

if TYPE_CHECKING:
    import numpy as np
    import onnxruntime as ort

# Rows per run when a graph answers many rows (promotion's parity re-check and fair scores on
# reference.npz, the training job's parity run). onnxruntime holds every intermediate of a run
# and keeps its arena grown afterwards: the default tabular graph (16 submodels x 128 wide)
# needs about 50-90 KB a row, so 200,000 holdout rows in one run took over 10 GB, and 512 rows
# take about 45 MB, well within the promote function's memory.
SLICE_ROWS = 512
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def available_cpus() -> int:
    """CPUs this process may run on (Lambda grants vCPUs in proportion to memory)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def open_session(
    model: bytes | str | os.PathLike[str], *, threads: int | None = None, gpu: bool = False
) -> ort.InferenceSession:
    """An onnxruntime session for a serialized model or the path of one.

    `threads` intra-op threads (default: available_cpus()); operators run one after another.
    On the CPU, unless `gpu`: then CUDA first where this onnxruntime has it (onnxruntime-gpu in
    the container tier on a GPU instance); the Lambda's CPU wheel only ever has the CPU.
    Raises whatever onnxruntime raises for a graph it cannot load.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or available_cpus()
    # One request at a time per environment: parallelism inside the operators is what pays.
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    providers = execution_providers(gpu=gpu, available=ort.get_available_providers())
    source = model if isinstance(model, bytes) else os.fspath(model)
    return ort.InferenceSession(source, options, providers=providers)


def execution_providers(*, gpu: bool, available: Sequence[str]) -> list[str]:
    """The onnxruntime execution providers a session asks for, in order of preference: CUDA
    first when `gpu` and this onnxruntime has it (`available`, onnxruntime's
    get_available_providers()), then the CPU, which every build has and which takes the
    operators CUDA lacks (and the whole graph where CUDA cannot start on this machine)."""
    cuda = gpu and CUDA in available
    return [*([CUDA] if cuda else []), CPU]


def provider_in_use(session: ort.InferenceSession) -> str:
    """The provider a session runs its graph on: the first it holds (get_providers() lists
    only those that started, so a CUDA provider that could not reach a GPU is not there)."""
    providers = session.get_providers()
    return providers[0] if providers else CPU


def run_in_slices(
    session: ort.InferenceSession,
    output: str,
    inputs: np.ndarray,
    *,
    rows: int | None = None,
) -> np.ndarray:
    """The graph's `output` for every row of `inputs` (fed as the graph's input,
    dropflow.vocabulary.card.INPUT_NAME), run `rows` rows at a time (default SLICE_ROWS, at
    least 1): the array one run over all rows gives, up to floating-point rounding, with the
    memory of one slice. Raises whatever onnxruntime raises."""
    import numpy as np

    step = max(1, SLICE_ROWS if rows is None else rows)
    if len(inputs) <= step:
        return session.run([output], {INPUT_NAME: inputs})[0]
    parts = [
        session.run([output], {INPUT_NAME: inputs[start : start + step]})[0]
        for start in range(0, len(inputs), step)
    ]
    return np.concatenate(parts)
