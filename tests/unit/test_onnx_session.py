"""Which onnxruntime execution providers a session asks for (dropflow.vocabulary.onnx_session):
CUDA first in the container tier's GPU runtime, the CPU always, and the provider a session
really runs on."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper

from dropflow.vocabulary.onnx_session import (
    CPU,
    CUDA,
    execution_providers,
    open_session,
    provider_in_use,
)

# What onnxruntime-gpu's wheel reports (onnxruntime's get_available_providers()), and the CPU
# wheel's: the container tier's image on a GPU instance, and the Lambda's layer.
GPU_BUILD = ["TensorrtExecutionProvider", CUDA, CPU]
CPU_BUILD = ["AzureExecutionProvider", CPU]


def test_a_gpu_runtime_asks_for_cuda_first_then_the_cpu():
    assert execution_providers(gpu=True, available=GPU_BUILD) == [CUDA, CPU]


def test_a_cpu_runtime_asks_for_the_cpu_alone():
    assert execution_providers(gpu=True, available=CPU_BUILD) == [CPU]


def test_a_session_not_meant_for_the_gpu_stays_on_the_cpu_even_with_cuda_there():
    # The training job's parity run and promotion's re-check compare with torch on the CPU.
    assert execution_providers(gpu=False, available=GPU_BUILD) == [CPU]


def _identity_graph() -> bytes:
    node = helper.make_node("Identity", ["input"], ["output"])
    graph = helper.make_graph(
        [node],
        "identity",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 2])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [None, 2])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model.SerializeToString()


def test_a_session_asked_for_the_gpu_reports_the_provider_it_runs_on():
    session = open_session(_identity_graph(), threads=1, gpu=True)

    # Here (onnxruntime's CPU wheel) that is the CPU; on a GPU instance with onnxruntime-gpu
    # it is CUDA, the first this runtime offers.
    expected = execution_providers(gpu=True, available=ort.get_available_providers())[0]
    assert provider_in_use(session) == expected
    out = session.run(None, {"input": np.ones((1, 2), np.float32)})[0]
    assert out.tolist() == [[1.0, 1.0]]
