"""onnxruntime sessions, opened one way for serving, promotion and the training job's parity run.

onnxruntime is imported on the first session, not with this module: the vocabulary is read by
functions that never run a graph (the launch and track functions ship without the runtime).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import onnxruntime as ort


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
    cuda = gpu and "CUDAExecutionProvider" in ort.get_available_providers()
    providers = [*(["CUDAExecutionProvider"] if cuda else []), "CPUExecutionProvider"]
    source = model if isinstance(model, bytes) else os.fspath(model)
    return ort.InferenceSession(source, options, providers=providers)
