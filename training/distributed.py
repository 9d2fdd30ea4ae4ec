"""Where the training loop runs: one CPU or GPU, or several processes under torchrun (DDP).

`place()` reads what torchrun sets (WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR, MASTER_PORT).
Without them the job is one process: CUDA when torch sees a GPU, the CPU otherwise. With them
it joins the process group (NCCL on GPUs, gloo on CPUs), one GPU per process.

Rank 0 is the main rank: it alone talks to the store and the registry (checkpoints,
heartbeats, log, artifacts). The other ranks train their share of every batch and exit.
Decisions that every rank must take at the same step (stop now, checkpoint now) go through
`agree()`, an all-reduce over a gloo group of CPU tensors: it never waits for the GPU stream,
so it does not stall the CUDA work queued behind it.

BatchNorm under DDP: each rank would normalise with the statistics of its own share of the
batch (B/N rows: noisier the more ranks, and not what one rank with B rows computes), and the
published running statistics would be those of rank 0's shares alone. On several CUDA ranks
the network's BatchNorm layers therefore become SyncBatchNorm for the training run
(`synced_batchnorm`), which reduces the statistics over all ranks, and go back to the plain
layers, with the same weights and statistics, when the run ends (`plain_batchnorm`): the
exported graph and the published network hold plain BatchNorm, and a checkpoint has the same
keys either way (a resume on another number of ranks loads it). torch's SyncBatchNorm runs
on CUDA only, so CPU ranks (gloo, the tests) keep per-rank statistics as before.

`DROPFLOW_DEVICE=cpu` keeps a job on the CPU on a machine that has a GPU (e.g. to reproduce a
CPU run bit for bit).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, NoReturn

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

log = logging.getLogger(__name__)

# How long a collective waits for the slowest rank before the job fails. A rank that died is
# noticed by torchrun first (it stops the others); this bounds the wait when it does not.
COLLECTIVE_TIMEOUT = timedelta(minutes=5)
DEVICE_ENV = "DROPFLOW_DEVICE"


@dataclass(frozen=True)
class Placement:
    """This process's place in the job: its device, its rank and how many ranks there are."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    # bfloat16 autocast on GPUs that support it; None means plain float32.
    autocast_dtype: torch.dtype | None = None
    # The process group for control flags (gloo, CPU tensors); None for one process.
    control: Any = field(default=None, repr=False, compare=False)

    @property
    def is_main(self) -> bool:
        """True on the rank that writes checkpoints, heartbeats and artifacts."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def syncs_batchnorm(self) -> bool:
        """True when BatchNorm statistics are reduced over the ranks (module docstring):
        several ranks on CUDA, where torch's SyncBatchNorm runs."""
        return self.distributed and self.device.type == "cuda"

    @property
    def description(self) -> str:
        """E.g. "cpu", "cuda:0 (bf16 autocast)", "cuda x4 (DDP, bf16 autocast)"."""
        notes = (["DDP"] if self.distributed else []) + (
            ["bf16 autocast"] if self.autocast_dtype is not None else []
        )
        name = f"{self.device.type} x{self.world_size}" if self.distributed else str(self.device)
        return f"{name} ({', '.join(notes)})" if notes else name

    # ------------------------------------------------------------------ collectives
    def agree(self, *flags: bool) -> tuple[bool, ...]:
        """Each flag OR-ed over all ranks (every rank must call this at the same point)."""
        if not self.distributed:
            return tuple(bool(f) for f in flags)
        values = torch.tensor([int(bool(f)) for f in flags], dtype=torch.int32)
        dist.all_reduce(values, op=dist.ReduceOp.MAX, group=self.control)
        return tuple(bool(v) for v in values.tolist())

    def total(self, values: list[float]) -> list[float]:
        """Element-wise sums of `values` over all ranks (float64)."""
        if not self.distributed or not values:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=self.control)
        return tensor.tolist()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's `obj`, in rank order (on every rank)."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj, group=self.control)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        if not self.distributed:
            return obj
        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0, group=self.control)
        return box[0]


def synced_batchnorm(network: nn.Module) -> dict[str, type[nn.Module]]:
    """Replace every BatchNorm layer inside `network` by a SyncBatchNorm sharing its weights
    and statistics (the optimizer's parameters stay the same objects); return the replaced
    layers' names and classes, for plain_batchnorm. `network` itself must not be one."""
    kinds = {
        name: type(module)
        for name, module in network.named_modules()
        if isinstance(module, _BatchNorm) and not isinstance(module, nn.SyncBatchNorm)
    }
    if "" in kinds:
        raise ValueError("the network itself is a BatchNorm layer: convert its parent")
    nn.SyncBatchNorm.convert_sync_batchnorm(network)
    return kinds


def plain_batchnorm(network: nn.Module, kinds: Mapping[str, type[nn.Module]]) -> None:
    """Put back the BatchNorm layers synced_batchnorm replaced (`kinds`, what it returned),
    sharing the SyncBatchNorm layers' weights and statistics and their train/eval mode."""
    for name, kind in kinds.items():
        synced = network.get_submodule(name)
        plain = kind(
            synced.num_features,
            eps=synced.eps,
            momentum=synced.momentum,
            affine=synced.affine,
            track_running_stats=synced.track_running_stats,
        )
        if synced.affine:
            plain.weight, plain.bias = synced.weight, synced.bias
        if synced.track_running_stats:
            plain.running_mean = synced.running_mean
            plain.running_var = synced.running_var
            plain.num_batches_tracked = synced.num_batches_tracked
        plain.train(synced.training)
        parent, _, child = name.rpartition(".")
        setattr(network.get_submodule(parent), child, plain)


def place(env: Mapping[str, str] | None = None) -> Placement:
    """This process's Placement; joins the process group when torchrun started it.

    Raises RuntimeError when the torchrun variables are inconsistent, or when the group
    cannot be formed within COLLECTIVE_TIMEOUT.
    """
    env = os.environ if env is None else env
    want_cpu = env.get(DEVICE_ENV, "").strip().lower() == "cpu"
    cuda = torch.cuda.is_available() and not want_cpu
    world_size = int(env.get("WORLD_SIZE", "1") or 1)
    rank = int(env.get("RANK", "0") or 0)
    local_rank = int(env.get("LOCAL_RANK", "0") or 0)
    if world_size < 1 or not 0 <= rank < world_size:
        raise RuntimeError(f"RANK={rank} does not fit WORLD_SIZE={world_size}")
    if cuda:
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"LOCAL_RANK={local_rank} but torch sees {torch.cuda.device_count()} GPU(s); "
                "start one process per GPU (torchrun --nproc_per_node=<gpus>)"
            )
        # cuBLAS needs this to honour deterministic algorithms; it must be set before its
        # first call in the process.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
        autocast = torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    else:
        device, autocast = torch.device("cpu"), None
    if world_size == 1:
        return Placement(device=device, autocast_dtype=autocast)

    backend = "nccl" if cuda else "gloo"
    if not dist.is_initialized():
        dist.init_process_group(
            backend=backend,
            rank=rank,
            world_size=world_size,
            timeout=COLLECTIVE_TIMEOUT,
            **({"device_id": device} if cuda else {}),
        )
    # Control flags travel as CPU tensors; NCCL only moves GPU tensors.
    control = dist.new_group(backend="gloo", timeout=COLLECTIVE_TIMEOUT) if cuda else None
    placement = Placement(
        device=device,
        rank=rank,
        world_size=world_size,
        local_rank=local_rank,
        autocast_dtype=autocast,
        control=control,
    )
    log.info("rank %d of %d on %s (%s)", rank, world_size, device, backend)
    return placement


def release(placement: Placement) -> None:
    """Leave the process group (a no-op for one process)."""
    if placement.distributed and dist.is_initialized():
        # Leave together, so that no rank destroys its group while a peer is still inside a
        # collective with it. The process itself must then end by end_process (see there).
        with contextlib.suppress(RuntimeError):
            dist.barrier(group=placement.control)
        dist.destroy_process_group()


def end_process(code: int) -> NoReturn:
    """End a rank of a torchrun job with `code`, without the interpreter's teardown.

    Once DDP has been built, torch keeps the gloo group and its worker threads alive after
    destroy_process_group(). A worker drops each finished collective a moment after the
    caller's wait() returns, and that releases tensors Python made, which takes the GIL. When
    the main thread is already finalizing the interpreter by then, the worker thread is
    unwound through a noexcept destructor and the rank aborts ("terminate called without an
    active exception", SIGABRT): torchrun then fails the whole launch although the job has
    published (1 launch in about 60 on a busy 2-core machine). Call this when every durable
    write is done: it flushes the logs and ends the process at once.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


__all__ = [
    "COLLECTIVE_TIMEOUT",
    "Placement",
    "end_process",
    "place",
    "plain_batchnorm",
    "release",
    "synced_batchnorm",
]
