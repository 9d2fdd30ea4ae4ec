"""Benchmark: fine-tuning throughput of the image and text families, per device, precision and
number of GPUs (issue 14: "images/s, tokens/s on GPU vs CPU, bf16 vs fp32, 1 vs all GPUs").

    python bench/finetune_throughput.py [--budget 300] [--seconds 10] [--warmup 5]
        [--workloads resnet-18,bert-base,bert-small] [--devices cuda,cpu] [--cpu-ranks N]
        [--tiny]

What is timed is the training job's own step, not a copy of it: the network comes from the
family's build (training.families: `family_for(spec).build`, as the job calls it), and
training.loop.TrainingLoop runs it inside training.loop.reproducible (the job's seed,
deterministic kernels, one CPU thread on the CPU), with the job's placement
(training.distributed.place: CUDA with bf16 autocast when the GPU has it, the CPU otherwise)
and, on several GPUs, the job's DDP under torchrun (this script starts itself once per GPU
through `python -m torch.distributed.run`). So each step is the job's: the family's input
path to the device, the image family's kornia augmentation, the network's scores, the task's
loss, AdamW. A case's spec sets `training.batch_size` (the spec's 256 on a GPU; smaller on the
CPU, see WORKLOADS), a large `epochs` and no early stopping, so that the loop only stops when
this script asks it to.

The inputs are synthetic, which changes nothing a step computes: random uint8 images (a pool
of POOL_IMAGES kept on the device, each batch gathered there and augmented there, as the image
family augments a decoded batch from ImageRows once it is on the device), and random token
ids for the text family (a [CLS] id, ids from the encoder's vocabulary, a [SEP] id, then
padding: lengths uniform between a quarter of max_length and max_length). Left out: reading
and decoding image files and their copy to the GPU (ImageRows decodes in DataLoader workers
and copies from pinned memory, both overlapping the steps; bench/image_listing.py times the
listing), and tokenizing (the text family tokenizes once, when it reads the table). The
networks have random weights (`pretrained: false`): fine-tuning pretrained weights costs the
same per step. fp32 is torch's default (TF32 off for matrix products, on for cuDNN
convolutions), as in the job.

Timed by the clock, not by steps: the loop's stop check (polled at every step boundary) lets
--warmup seconds and at least MIN_WARM_STEPS steps pass, then counts the steps of the next
--seconds (at least MIN_STEPS), draining the CUDA queue at both ends, and stops the loop.
samples/s is steps x global batch / seconds; images/s is samples/s for images; tokens/s
counts the real (non-pad) tokens, samples/s x the synthetic rows' mean length, while the
encoder computes every position of max_length (padded tokens/s = samples/s x max_length).
A batch that does not fit the GPU is halved until it does (the row says so).

Cases, in this order so that a short --budget measures what matters first: each workload on
CUDA in bf16 autocast (the job's choice on a GPU) and fp32; on the CPU in fp32 (the job's
CPU path, one thread) and bf16 autocast (which the job never uses on a CPU: measured for
comparison); then, when torch sees more than one GPU, each workload on all of them under
torchrun in the job's precision. --cpu-ranks N adds DDP on N CPU processes (gloo), the same
code path without a GPU. Cases that cannot run are rows with the reason (no GPU, one GPU,
budget spent). --budget bounds the whole run: a case starts only when its warm-up and timing
fit in what is left, and stops at the budget whatever it has measured.

Prints one JSON line per case, then a markdown table. Exits 0 when every case was measured or
skipped with its reason, 1 when one failed (its row says why).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The repository and the dropflow package, for a machine where the project is not installed
# (a GPU machine with its own CUDA torch: BENCHMARKS.md, Fine-tuning throughput).
ROOT = Path(__file__).resolve().parents[1]
for _path in (ROOT, ROOT / "layers" / "dropflow"):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from dropflow.adapters.local.directory_store import DirectoryStore  # noqa: E402
from dropflow.vocabulary.card import Feature  # noqa: E402
from dropflow.vocabulary.spec import Spec  # noqa: E402
from training.distributed import (  # noqa: E402
    DEVICE_ENV,
    Placement,
    end_process,
    place,
    release,
)
from training.families import family_for  # noqa: E402
from training.families.image import IMAGE_FIELD, Augment, ImageExamples  # noqa: E402
from training.families.text import SIZES, SPECIAL_TOKENS, TextExamples  # noqa: E402
from training.loop import TrainingLoop, reproducible  # noqa: E402

log = logging.getLogger("finetune_throughput")

MIN_WARM_STEPS = 2
MIN_STEPS = 3
STEPS_PER_EPOCH = 8  # rows = batch x this: the loop's epoch boundaries are part of the timing
POOL_IMAGES = 64  # distinct synthetic images (rows index them modulo this)
IMAGE_CLASSES = 10
TEXT_CLASSES = 4
EPOCHS = 10_000  # the spec's largest: the loop never ends before this script stops it
SMALLEST_BATCH = 8  # halving a batch that does not fit the GPU stops here
# Seconds a case needs beyond its warm-up and timing (building the network, the first step's
# allocations), when deciding whether it fits in what is left of --budget.
CASE_OVERHEAD = 5.0
# Seconds a torchrun launch needs beyond that (interpreters importing torch, the group).
LAUNCH_OVERHEAD = 30.0


@dataclass(frozen=True)
class Workload:
    """One network to time: its spec's `model:` section and its batch per device type."""

    name: str
    family: str  # image | text
    model: dict[str, Any]
    gpu_batch: int  # the spec's default batch_size
    cpu_batch: int  # small enough for a few steps in seconds on one CPU thread

    @property
    def image_size(self) -> int:
        return int(self.model.get("image_size", 224))

    @property
    def max_length(self) -> int:
        return int(self.model.get("max_length", 128))

    def spec(self, batch: int) -> Spec:
        return Spec.model_validate(
            {
                "family": self.family,
                "model": {"family": self.family, "pretrained": False, **self.model},
                "training": {
                    "batch_size": batch,
                    "epochs": EPOCHS,
                    "early_stopping": False,
                    "checkpoint_interval_seconds": 0,
                },
            }
        )


WORKLOADS = {
    w.name: w
    for w in (
        Workload("resnet-18", "image", {"backbone": "resnet-18", "image_size": 224}, 256, 16),
        Workload("bert-base", "text", {"size": "base", "max_length": 128}, 256, 4),
        Workload("bert-small", "text", {"size": "small", "max_length": 128}, 256, 32),
    )
}
# --tiny: networks of a few thousand weights, for the test of this script.
TINY = {
    w.name: w
    for w in (
        Workload("resnet-tiny", "image", {"backbone": "resnet-tiny", "image_size": 32}, 8, 8),
        Workload("bert-tiny", "text", {"size": "tiny", "max_length": 16}, 8, 8),
    )
}


@dataclass(frozen=True)
class Case:
    workload: Workload
    device: str  # cuda | cpu
    precision: str  # fp32 | bf16
    ranks: int = 1  # processes (one GPU each on CUDA); > 1 runs under torchrun

    @property
    def batch(self) -> int:
        return self.workload.gpu_batch if self.device == "cuda" else self.workload.cpu_batch


# --------------------------------------------------------------------------- the inputs
class SyntheticPixels:
    """A training.loop.BatchSource of random uint8 images: row i is image i % pool. A training
    batch is gathered on the device from a copy of the pool there and goes through `augment`
    (the family's), as a decoded batch from ImageRows does once it is on the device."""

    def __init__(
        self, rows: int, size: int, augment: Callable[[torch.Tensor], torch.Tensor]
    ) -> None:
        generator = torch.Generator().manual_seed(0)
        shape = (min(rows, POOL_IMAGES), size, size, 3)
        self.pool = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
        self.rows = rows
        self.augment = augment
        self.on_device: dict[torch.device, torch.Tensor] = {}

    def __len__(self) -> int:
        return self.rows

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.rows, *self.pool.shape[1:])

    def take(self, rows: np.ndarray) -> np.ndarray:
        return self.pool[torch.as_tensor(rows) % len(self.pool)].numpy()

    def training_batches(
        self, batches: Sequence[torch.Tensor], device: torch.device
    ) -> Iterator[torch.Tensor]:
        # Gathered where the row indices already are: reading them back to the host would
        # wait for the GPU at every step, which the job's loader does not (ImageRows lists
        # an epoch's batches once, and its pinned copies overlap the steps).
        pool = self.on_device.setdefault(device, self.pool.to(device))
        for batch in batches:
            yield self.augment(pool[batch % len(pool)])


def synthetic_ids(rows: int, max_length: int, vocabulary: int) -> np.ndarray:
    """int64 [rows, max_length]: [CLS], random ids, [SEP], then [PAD] (the learnt WordPiece
    tokenizer's ids: SPECIAL_TOKENS in order), lengths uniform in [max_length/4, max_length]."""
    pad, cls, sep = (SPECIAL_TOKENS.index(t) for t in ("[PAD]", "[CLS]", "[SEP]"))
    rng = np.random.default_rng(0)
    ids = rng.integers(len(SPECIAL_TOKENS), vocabulary, size=(rows, max_length), dtype=np.int64)
    lengths = rng.integers(max(2, max_length // 4), max_length + 1, size=rows)
    ids[np.arange(max_length)[None, :] >= lengths[:, None]] = pad
    ids[:, 0] = cls
    ids[np.arange(rows), lengths - 1] = sep
    return ids


def examples_for(workload: Workload, rows: int, store: DirectoryStore) -> Any:
    """What the family's read would give for `rows` synthetic rows of this workload."""
    if workload.family == "image":
        size = workload.image_size
        return ImageExamples(
            task="classification",
            target="label",
            x=SyntheticPixels(rows, size, Augment(size)),  # type: ignore[arg-type]
            y=np.arange(rows, dtype=np.int64) % IMAGE_CLASSES,
            classes=[str(c) for c in range(IMAGE_CLASSES)],
            features=[Feature(name=IMAGE_FIELD, dtype="image")],
            sources=[],
            store=store,
        )
    vocabulary = SIZES[workload.model["size"]].vocabulary
    return TextExamples(
        task="classification",
        target="label",
        x=synthetic_ids(rows, workload.max_length, vocabulary),
        y=np.arange(rows, dtype=np.int64) % TEXT_CLASSES,
        classes=[str(c) for c in range(TEXT_CLASSES)],
        features=[Feature(name="text", dtype="text")],
        sources=[],
        field="text",
        tokenizer_json="",
        pad_id=SPECIAL_TOKENS.index("[PAD]"),
        max_length=workload.max_length,
        vocab_size=vocabulary,
    )


# --------------------------------------------------------------------------- the timing
class Meter:
    """The loop's stop check (polled before every step): warm up, time, then stop.

    `active` False (a rank other than 0) never stops the loop: rank 0's check is agreed by
    every rank at the same step boundary. `deadline` (time.monotonic) stops the loop whatever
    has been measured.
    """

    def __init__(
        self,
        *,
        warmup: float,
        seconds: float,
        deadline: float,
        sync: Callable[[], None],
        active: bool = True,
    ) -> None:
        self.warmup, self.seconds, self.deadline = warmup, seconds, deadline
        self.sync, self.active = sync, active
        self.polls = 0
        self.opened: float | None = None
        self.began: float | None = None
        self.first = 0
        self.steps = 0
        self.elapsed = 0.0

    def __call__(self) -> bool:
        done, self.polls = self.polls, self.polls + 1  # steps finished before this poll
        if not self.active:
            return False
        now = time.monotonic()
        if self.opened is None:
            self.opened = now
        if self.began is None:
            if done >= MIN_WARM_STEPS and now - self.opened >= self.warmup:
                self.sync()
                self.began, self.first = time.monotonic(), done
                return False
            return now >= self.deadline
        timed = done - self.first
        if (timed >= MIN_STEPS and now - self.began >= self.seconds) or now >= self.deadline:
            self.sync()
            self.steps, self.elapsed = timed, time.monotonic() - self.began
            return True
        return False


def _sync(device: torch.device) -> Callable[[], None]:
    if device.type == "cuda":
        return lambda: torch.cuda.synchronize(device)
    return lambda: None


def measure(
    case: Case,
    placement: Placement,
    *,
    batch: int,
    warmup: float,
    seconds: float,
    deadline: float,
) -> dict[str, Any]:
    """Train `case` with the job's loop on `placement` until the meter stops it: the timed
    steps and seconds, the throughputs and (CUDA) the peak GPU memory."""
    workload = case.workload
    spec = workload.spec(batch)
    rows = batch * STEPS_PER_EPOCH
    device = placement.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with tempfile.TemporaryDirectory(prefix="dropflow-bench-") as folder:
        examples = examples_for(workload, rows, DirectoryStore(Path(folder)))
        family = family_for(spec)
        meter = Meter(
            warmup=warmup,
            seconds=seconds,
            deadline=deadline,
            sync=_sync(device),
            active=placement.is_main,
        )
        # What training.loop.train does, keeping the loop to read its batch size.
        with reproducible(spec.training.seed, strict=device.type == "cpu"):
            network = family.build(examples, examples.x, examples.y, spec)
            loop = TrainingLoop(
                network,
                examples.x,
                examples.y,
                training=spec.training,
                placement=placement,
                stop=meter,
            )
            threads = torch.get_num_threads()
            loop.run()
        parameters = sum(p.numel() for p in network.parameters())
        fill = (
            float((examples.x != examples.pad_id).sum(axis=1).mean())
            if workload.family == "text"
            else None
        )
        del loop, network, examples
    result: dict[str, Any] = {
        "batch": batch,
        "parameters": parameters,
        "threads": threads if device.type == "cpu" else None,
        "steps": meter.steps,
        "seconds": round(meter.elapsed, 3),
    }
    if device.type == "cuda":
        result["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    if meter.steps == 0 or meter.elapsed <= 0:
        result.update(status="skipped", reason="the budget ended before a step was timed")
        return result
    samples = meter.steps * batch / meter.elapsed
    result.update(status="measured", samples_per_s=round(samples, 2))
    if workload.family == "image":
        result["images_per_s"] = round(samples, 2)
    else:
        assert fill is not None
        result["tokens_per_s"] = round(samples * fill, 1)
        result["padded_tokens_per_s"] = round(samples * workload.max_length, 1)
        result["mean_tokens"] = round(fill, 1)
    return result


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_in_process(
    case: Case, base: Placement | None, *, warmup: float, seconds: float, deadline: float
) -> dict[str, Any]:
    """One process: the job's placement on CUDA (bf16 autocast as the job sets it, or fp32),
    or the CPU in fp32 or bf16 autocast. A batch that does not fit the GPU is halved."""
    if case.device == "cuda":
        assert base is not None
        placement = dataclasses.replace(
            base, autocast_dtype=torch.bfloat16 if case.precision == "bf16" else None
        )
    else:
        placement = Placement(
            device=torch.device("cpu"),
            autocast_dtype=torch.bfloat16 if case.precision == "bf16" else None,
        )
    batch, halved_from = case.batch, None
    while True:
        result = None
        try:
            result = measure(
                case, placement, batch=batch, warmup=warmup, seconds=seconds, deadline=deadline
            )
        except torch.OutOfMemoryError:
            if batch // 2 < SMALLEST_BATCH:
                raise
        # Out of the except block: its traceback held the failed attempt's tensors.
        _free(placement.device)
        if result is not None:
            break
        halved_from = halved_from or batch
        batch //= 2
    if halved_from is not None:
        result["reason"] = f"batch {halved_from} did not fit the GPU's memory"
    return result


def run_under_torchrun(
    case: Case, args: argparse.Namespace, *, warmup: float, seconds: float, remaining: float
) -> dict[str, Any]:
    """`case.ranks` processes of this script under torchrun, DDP as the job sets it up; rank 0
    writes its measurement to a file read here."""
    with tempfile.TemporaryDirectory(prefix="dropflow-bench-") as folder:
        out = Path(folder) / "rank0.json"
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={case.ranks}",
            str(Path(__file__).resolve()),
            "--rank-of",
            case.workload.name,
            "--batch",
            str(case.batch),
            "--warmup",
            str(warmup),
            "--seconds",
            str(seconds),
            "--budget",
            str(max(1.0, remaining - LAUNCH_OVERHEAD)),
            "--result",
            str(out),
            *(["--tiny"] if args.tiny else []),
        ]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        if case.device == "cpu":
            env["DROPFLOW_DEVICE"] = "cpu"
        try:
            done = subprocess.run(
                command, env=env, capture_output=True, text=True, timeout=remaining + 30
            )
        except subprocess.TimeoutExpired:
            return {"status": "failed", "reason": f"torchrun ran past {remaining + 30:.0f} s"}
        if done.returncode != 0 or not out.is_file():
            # torchrun's own summary ends its output; the rank's exception is above it.
            lines = (done.stderr or done.stdout).splitlines()
            errors = [line for line in lines if re.match(r"^[\w.]*(Error|Exception)\b", line)]
            why = errors[-1] if errors else " ".join(lines[-3:])
            return {"status": "failed", "reason": f"torchrun exit {done.returncode}: {why}"}
        result: dict[str, Any] = json.loads(out.read_text())
        return result


def rank_main(args: argparse.Namespace) -> None:
    """A rank under torchrun (--rank-of): join the job's group, train, rank 0 writes."""
    workload = (TINY if args.tiny else WORKLOADS)[args.rank_of]
    placement = place()
    case = Case(
        workload,
        placement.device.type,
        "bf16" if placement.autocast_dtype is not None else "fp32",
        placement.world_size,
    )
    code = 0
    try:
        result = measure(
            case,
            placement,
            batch=args.batch,
            warmup=args.warmup,
            seconds=args.seconds,
            deadline=time.monotonic() + args.budget,
        )
        if placement.is_main:
            args.result.write_text(json.dumps(result))
    except Exception:
        log.exception("rank %d failed", placement.rank)
        code = 1
    release(placement)
    end_process(code)


# --------------------------------------------------------------------------- the report
def cases_for(
    workloads: Sequence[Workload], devices: Sequence[str], cuda_devices: int, cpu_ranks: int
) -> list[tuple[Case, str | None]]:
    """Every case in the order they run, each with the reason it cannot run (or None)."""
    cases: list[tuple[Case, str | None]] = []
    no_gpu = (
        f"no GPU: torch sees none, or {DEVICE_ENV}=cpu keeps the job on the CPU"
        if cuda_devices == 0
        else None
    )
    for device in devices:
        for w in workloads:
            for precision in ("bf16", "fp32") if device == "cuda" else ("fp32", "bf16"):
                cases.append((Case(w, device, precision), no_gpu if device == "cuda" else None))
    if "cuda" in devices:
        for w in workloads:
            why = no_gpu or (
                f"torch sees {cuda_devices} GPU: DDP needs more than one"
                if cuda_devices < 2
                else None
            )
            cases.append((Case(w, "cuda", "bf16", max(2, cuda_devices)), why))
    if cpu_ranks > 1:
        cases.extend((Case(w, "cpu", "fp32", cpu_ranks), None) for w in workloads)
    return cases


def _row(case: Case, result: dict[str, Any], device_name: str) -> dict[str, Any]:
    return {
        "bench": "finetune_throughput",
        "workload": case.workload.name,
        "family": case.workload.family,
        "device": case.device,
        "device_name": device_name,
        "ranks": case.ranks,
        "precision": case.precision,
        **({"batch": case.batch} | result),
    }


def _number(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:,.1f}" if value >= 100 else f"{value:.2f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def table(rows: Sequence[dict[str, Any]]) -> str:
    """The rows as one markdown table."""
    head = (
        "| workload | device | ranks | precision | batch | samples/s | images/s | tokens/s "
        "(non-pad) | steps | seconds | peak GPU GiB | note |"
    )
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        device = r["device"]
        if r["device"] == "cuda" and r["device_name"]:
            device += f" ({r['device_name']})"
        if r["device"] == "cpu" and r.get("threads"):
            device += f", {r['threads']} thread(s)"
        note = r.get("reason", "") if r["status"] == "measured" else f"{r['status']}: {r['reason']}"
        cells = [
            r["workload"],
            device,
            r["ranks"],
            r["precision"] + (" autocast" if r["precision"] == "bf16" else ""),
            r.get("batch"),
            r.get("samples_per_s"),
            r.get("images_per_s"),
            r.get("tokens_per_s"),
            r.get("steps") if r["status"] == "measured" else None,
            r.get("seconds") if r["status"] == "measured" else None,
            r.get("peak_gpu_gib"),
            note.replace("|", "/"),
        ]
        lines.append("| " + " | ".join(_number(c) for c in cells) + " |")
    return "\n".join(lines)


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--budget", type=float, default=300.0, help="seconds for the whole run")
    parser.add_argument("--seconds", type=float, default=10.0, help="timed seconds per case")
    parser.add_argument("--warmup", type=float, default=5.0, help="warm-up seconds per case")
    parser.add_argument("--workloads", default=None, help="comma-separated: " + ",".join(WORKLOADS))
    parser.add_argument("--devices", default="cuda,cpu", help="comma-separated: cuda,cpu")
    parser.add_argument(
        "--cpu-ranks", type=int, default=0, help="also DDP on this many CPU processes (gloo)"
    )
    parser.add_argument(
        "--tiny", action="store_true", help="tiny networks and batches (" + ",".join(TINY) + ")"
    )
    # A rank under torchrun (started by this script).
    parser.add_argument("--rank-of", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--batch", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Deterministic kernels on CUDA warn (once per operation) where none exists: the job's too.
    warnings.filterwarnings("ignore", message=".*deterministic.*")
    if args.rank_of is not None:
        rank_main(args)
        return 0

    known = TINY if args.tiny else WORKLOADS
    names = args.workloads.split(",") if args.workloads else list(known)
    unknown = [n for n in names if n not in known]
    devices = [d.strip() for d in args.devices.split(",") if d.strip()]
    if unknown or not set(devices) <= {"cuda", "cpu"}:
        parser.error(
            f"--workloads: choose from {', '.join(known)}; --devices: from cuda, cpu "
            f"(got {names}, {devices})"
        )
    started = time.monotonic()
    deadline = started + args.budget
    base = place() if "cuda" in devices else None  # what the job's one process would get
    cuda_devices = (
        torch.cuda.device_count() if base is not None and base.device.type == "cuda" else 0
    )
    gpu_name = torch.cuda.get_device_name(0) if cuda_devices else ""
    cpu_name = f"{_cpu_name()}, {os.cpu_count()} CPUs"
    rows, failed = [], False
    for case, why in cases_for([known[n] for n in names], devices, cuda_devices, args.cpu_ranks):
        left = deadline - time.monotonic()
        need = args.warmup + args.seconds + CASE_OVERHEAD
        need += LAUNCH_OVERHEAD if case.ranks > 1 else 0.0
        if why is None and left < need:
            why = f"budget: {max(left, 0):.0f} s of {args.budget:.0f} s left, {need:.0f} s needed"
        if why is not None:
            result: dict[str, Any] = {"status": "skipped", "reason": why}
        else:
            try:
                if case.ranks > 1:
                    result = run_under_torchrun(
                        case, args, warmup=args.warmup, seconds=args.seconds, remaining=left
                    )
                else:
                    result = run_in_process(
                        case, base, warmup=args.warmup, seconds=args.seconds, deadline=deadline
                    )
            except Exception as exc:  # one case's failure is its row; the others still run
                log.exception("%s failed", case)
                result = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"[:300]}
        failed = failed or result["status"] == "failed"
        row = _row(case, result, gpu_name if case.device == "cuda" else cpu_name)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print()
    print(f"torch {torch.__version__}; CPU: {cpu_name}; GPUs: {cuda_devices} {gpu_name}".rstrip())
    print(f"{time.monotonic() - started:.0f} s of a {args.budget:.0f} s budget")
    print(table(rows))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
