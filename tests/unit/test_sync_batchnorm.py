"""BatchNorm under DDP (training.distributed): SyncBatchNorm on several CUDA ranks only, and
plain BatchNorm again after the run, in the network and in its exported graph.

SyncBatchNorm's forward in training mode needs CUDA and a process group; what a CPU can show is
the choice and the round trip. That the synced statistics train as one rank with the whole
batch does needs a machine with several GPUs.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from tests.unit.fakes import MemoryStore
from training.distributed import Placement, plain_batchnorm, synced_batchnorm
from training.export import check_parity, export_onnx
from training.image_network import build_image_network


@pytest.mark.parametrize(
    ("device", "world_size", "syncs"),
    [
        (torch.device("cuda", 0), 4, True),
        (torch.device("cuda", 0), 1, False),  # one GPU sees the whole batch
        (torch.device("cpu"), 2, False),  # gloo ranks: SyncBatchNorm is CUDA-only in torch
        (torch.device("cpu"), 1, False),
    ],
)
def test_batchnorm_is_synced_on_several_cuda_ranks_only(device, world_size, syncs):
    placement = Placement(device=device, rank=0, world_size=world_size)

    assert placement.syncs_batchnorm is syncs


def resnet():
    torch.manual_seed(0)
    return build_image_network(
        MemoryStore(), backbone="resnet-tiny", pretrained=False, image_size=32, n_classes=3
    )


def batchnorm_kinds(network: nn.Module) -> set[type]:
    return {type(m) for m in network.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}


def test_the_round_trip_keeps_the_parameters_the_optimizer_holds_and_the_statistics():
    network = resnet()
    optimizer = torch.optim.AdamW(network.parameters(), lr=0.01)
    # Statistics worth keeping: one training step in float32 on the plain layers.
    network.train()
    pixels = torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8)
    network.scores(pixels).sum().backward()
    optimizer.step()
    before = {k: v.clone() for k, v in network.state_dict().items()}
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}

    kinds = synced_batchnorm(network)

    assert kinds and set(kinds.values()) == {nn.BatchNorm2d}
    assert batchnorm_kinds(network) == {nn.SyncBatchNorm}
    assert {id(p) for p in network.parameters()} == held
    assert network.state_dict().keys() == before.keys()  # checkpoints look the same

    plain_batchnorm(network, kinds)

    assert batchnorm_kinds(network) == {nn.BatchNorm2d}
    assert {id(p) for p in network.parameters()} == held
    assert all(m.training for m in network.modules())
    after = network.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], before[k]) for k in before)


def test_after_the_round_trip_the_graph_is_the_never_synced_network_s(tmp_path):
    # The exporter folds an eval-mode BatchNorm into the convolution before it: the graph of a
    # round-tripped network must be node for node that of a network never converted.
    pixels = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    never = resnet().eval()
    network = resnet()
    plain_batchnorm(network, synced_batchnorm(network))
    network.eval()

    path = export_onnx(network, pixels, tmp_path / "m.onnx")
    parity, outputs = check_parity(path, network, pixels)
    twin = export_onnx(never, pixels, tmp_path / "never.onnx")
    _, twin_outputs = check_parity(twin, never, pixels)

    nodes = [(n.domain, n.op_type) for n in onnx.load(str(path)).graph.node]
    assert parity.passed
    assert nodes == [(n.domain, n.op_type) for n in onnx.load(str(twin)).graph.node]
    assert {domain for domain, _ in nodes} <= {"", "ai.onnx"}
    assert np.array_equal(outputs, twin_outputs)
