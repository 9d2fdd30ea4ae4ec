"""The training loop: AdamW on shuffled mini-batches, early stopping on validation rows, the
best weights restored and the probabilities calibrated; reproducible, resumable, CPU, GPU or
DDP.

It trains any family's network (training.network.TaskNetwork) on its input rows: the loss is
the task's (cross-entropy on the logits, or the mean squared error in standardised target
units), never the family's, so a new family needs nothing here. A network whose scores have a
submodel axis ([batch, k, ...]: an ensemble in one network) has each submodel trained on the
batch: the loss is the mean over the k of them.

How long: `training.epochs` when the spec sets it, else a budget that scales with the data
(training.budget). The rows are indices into one matrix (training.split): the loop never
copies it. After every epoch the main rank computes the loss of the validation rows (of the
averaged prediction, as the graph will answer: the error rate, then the log loss once the
temperature is fitted; for regression the mean squared error); with `training.early_stopping`,
training ends once it has not improved for training.budget.patience epochs, and the weights
of the best epoch are put back. Then, for classification, the temperature of the head is
fitted to the validation rows (TaskNetwork.calibrate): the exported graph carries it. The
best weights so far, the early-stopping counters and whether calibration is done are in every
checkpoint, so a resumed run stops at the same epoch with the same weights as an
uninterrupted one.

Same data + same spec + same seed gives the same weights, hence the same holdout metrics: the
seed drives the weight init and the batch order, deterministic algorithms are required, and on
the CPU the loop runs on one thread (small networks gain nothing from more threads, and a
fixed thread count keeps floating-point reductions in one order).

Resumable: at any step boundary the loop can hand a checkpoint to a sink (training.checkpoint)
holding everything it needs to carry on, and `TrainingLoop(..., resume=checkpoint)` continues
from that very batch. On the CPU an interrupted and resumed run ends with the same weights as
an uninterrupted one (the tests compare them).

When it checkpoints (`checkpoint_seconds`, from the spec's training.checkpoint_interval_seconds):
- at a step boundary once `checkpoint_seconds` have passed since the last checkpoint (0 turns
  this off);
- at the end of an epoch, unless the last checkpoint cost more than EPOCH_CHECKPOINT_SHARE of
  the time since it: epochs of milliseconds are not worth a checkpoint each, and this keeps
  checkpointing under ~5 % of the wall time while long epochs still get one each;
- at the end of training, after the best weights were restored and the temperature fitted
  (`finished`: an attempt interrupted while exporting neither trains nor calibrates again);
- at once when `stop` says so, after which the loop returns with `completed=False`.

Examples that stream (a family whose inputs do not fit in memory, e.g. images): the loop is
given a BatchSource instead of a matrix. It draws the same permutation and splits it into the
same batches, and the source turns each batch of row indices (this rank's share of it) into
the input tensor, decoded ahead in DataLoader workers and augmented in this process; the
validation rows are read through it pass by pass. The batch order is the loop's own, so a
resumed run reads the same batches as an uninterrupted one; augmentation draws from torch's
generators, whose states every checkpoint holds.

Several ranks (torchrun): every global batch is the same permutation slice on every rank, and
each rank takes its share of the rows. The loss of a rank is its rows' summed loss times
world_size / rows in the global batch, so DistributedDataParallel's gradient average equals
the gradient of the global batch's mean loss: N ranks with B/N rows each take the steps that
1 rank takes with B rows (up to floating-point summation order).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from dropflow.errors import UserInputError
from dropflow.vocabulary.spec import TrainingSection
from training import budget
from training.checkpoint import capture_rng, restore_rng
from training.distributed import Placement, plain_batchnorm, synced_batchnorm
from training.network import TaskNetwork, averaged_probabilities, fit_temperature, in_passes

log = logging.getLogger(__name__)

# An end-of-epoch checkpoint is skipped while the last one cost more than this share of the
# time since it was written (see the module docstring).
EPOCH_CHECKPOINT_SHARE = 0.05
# Cosine decay ends at this fraction of the spec's learning rate.
COSINE_FLOOR = 0.1


@dataclass(frozen=True)
class Progress:
    """Where a run is, for heartbeats: steps count optimizer steps since the job began."""

    epoch: int  # epochs completed
    epochs: int
    step: int
    steps: int
    loss: float | None  # mean training loss of the epoch in progress (or the last one)
    samples_per_second: float
    eta_seconds: float | None


class BatchSource(Protocol):
    """Input rows read on demand (the module docstring: examples that stream).

    `len()` is the number of rows (indices refer to them, as to a matrix's rows).
    """

    def __len__(self) -> int: ...

    def take(self, rows: np.ndarray) -> np.ndarray:
        """Rows `rows` as they are evaluated (no augmentation), in the graph's input dtype."""
        ...

    def training_batches(
        self, batches: Sequence[torch.Tensor], device: torch.device
    ) -> Iterator[torch.Tensor]:
        """The input tensor of each batch of row indices, in order, on `device`, as training
        sees it (augmented); its random draws come from torch's generators."""
        ...


class CheckpointSink(Protocol):
    """Where the loop's checkpoints go (training.checkpoint.CheckpointStore, or a test's list).

    `save` gets the state with live tensors (the network's and optimizer's own): it must
    serialise or copy them before it returns.
    """

    def save(self, state: Mapping[str, Any]) -> object: ...


StopCheck = Callable[[], bool]
Score = Callable[[TaskNetwork], float]
ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class Trained:
    """What a run of the loop leaves: the network (eval mode, CPU, float32) and its history."""

    network: TaskNetwork
    losses: list[float]  # mean training loss per epoch, over the whole job
    seconds: float  # wall time of this run
    scores: list[float] = field(default_factory=list)  # score() per epoch, when given one
    completed: bool = True  # False: stopped early (a checkpoint was handed to the sink)
    step: int = 0  # optimizer steps taken since the job began
    steps: int = 0  # optimizer steps of the whole budget (training.budget)
    steps_per_epoch: int = 1
    resumed_from: int | None = None  # the step this run resumed from
    # Every step the job's runs resumed from, oldest first (this run's last), for the curve.
    resumes: list[int] = field(default_factory=list)
    checkpoints: int = 0  # checkpoints handed to the sink by this run
    checkpoint_seconds: float = 0.0  # time spent in them
    samples: int = 0  # training rows processed by this run, all ranks together
    training_seconds: float = 0.0  # time in the loop over every attempt of the job
    validation_losses: list[float] = field(default_factory=list)  # per epoch, when validated
    best_epoch: int | None = None  # 1-based epoch whose weights the network has
    stopped_early: bool = False  # early stopping ended training before the budget
    # Validation log loss before and after the temperature was fitted (classification).
    calibration: tuple[float, float] | None = None

    @property
    def samples_per_second(self) -> float:
        return self.samples / self.seconds if self.seconds > 0 else 0.0


@contextmanager
def reproducible(seed: int, *, strict: bool = True) -> Iterator[None]:
    """Seed torch, require deterministic kernels and use one thread; restore on exit.

    `strict=False` only warns about an operation without a deterministic implementation
    (some CUDA kernels) instead of failing the job.
    """
    threads = torch.get_num_threads()
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True, warn_only=not strict)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)


def learning_rate_factor(schedule: str, step: int, total: int) -> float:
    """The multiplier of the spec's learning rate after `step` of `total` optimizer steps."""
    if schedule == "constant" or total <= 0:
        return 1.0
    progress = min(step, total) / total
    return COSINE_FLOOR + (1.0 - COSINE_FLOOR) * 0.5 * (1.0 + math.cos(math.pi * progress))


class _Scores(nn.Module):
    """Calls the network's scores() as forward(): what DDP wraps (it hooks forward only)."""

    def __init__(self, network: TaskNetwork) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.network.scores(x)


def _stop_check(stop: StopCheck | Any | None) -> StopCheck:
    if stop is None:
        return lambda: False
    if hasattr(stop, "is_set"):  # a threading.Event
        return stop.is_set
    return stop


class TrainingLoop:
    """One run of the optimisation of `network` on the training rows, as the spec says.

    `y_train` holds class indices (classification) or target values (regression). `rows`
    (default: all) are the indices of the rows of `x_train` and `y_train` to train on, and
    `validation_rows` (default: none) those early stopping and calibration use; neither is
    copied out of the matrix. The network must be freshly built (seeded); `resume`, a
    checkpoint dict, carries it on from where that checkpoint was taken (it must come from the
    same data and spec).
    `sink` receives checkpoints (main rank only), `stop` is polled at every step boundary,
    `score(network)` runs on the main rank after every epoch (e.g. the holdout metric), and
    `on_progress` is called on the main rank every `progress_seconds`.

    This is also the benchmark's handle on the job's loop: build a network, give it the same
    tensors as a hand-written loop, run(), and read samples_per_second and
    checkpoint_seconds from the result.
    """

    def __init__(
        self,
        network: TaskNetwork,
        x_train: np.ndarray | BatchSource,
        y_train: np.ndarray,
        *,
        training: TrainingSection,
        rows: np.ndarray | None = None,
        validation_rows: np.ndarray | None = None,
        placement: Placement | None = None,
        sink: CheckpointSink | None = None,
        checkpoint_seconds: float | None = None,
        stop: StopCheck | Any | None = None,
        score: Score | None = None,
        on_progress: ProgressCallback | None = None,
        progress_seconds: float = 30.0,
        resume: Mapping[str, Any] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.placement = placement or Placement(device=torch.device("cpu"))
        self.network = network.to(self.placement.device)
        self.training = training
        self.sink = sink if self.placement.is_main else None
        self.checkpoint_seconds = (
            training.checkpoint_interval_seconds
            if checkpoint_seconds is None
            else checkpoint_seconds
        )
        self.stop = _stop_check(stop)
        self.score = score if self.placement.is_main else None
        self.on_progress = on_progress if self.placement.is_main else None
        self.progress_seconds = progress_seconds
        self.clock = clock
        self.resume = resume

        device = self.placement.device
        # A matrix, or a source that reads rows on demand (the module docstring).
        self.source: BatchSource | None = None
        if isinstance(x_train, np.ndarray):
            # as_input copies nothing when the matrix is already float32 and contiguous, nor
            # does as_tensor, nor .to() on the CPU: the loop indexes the caller's matrix.
            self.x = torch.as_tensor(network.as_input(x_train)).to(device)
        else:
            self.source = x_train
            self.x = torch.empty(0)
        if network.task == "classification":
            self.y = torch.as_tensor(y_train, dtype=torch.int64).to(device)
            self.loss_fn: nn.Module = nn.CrossEntropyLoss(reduction=self._reduction)
        else:
            # The network's scores are in standardised target units; so is the target here.
            standard = network.standardised(y_train)
            self.y = torch.as_tensor(standard, dtype=torch.float32).unsqueeze(1).to(device)
            self.loss_fn = nn.MSELoss(reduction=self._reduction)
        every_row = np.arange(len(self.source or self.x), dtype=np.int64)
        self.rows = torch.as_tensor(every_row if rows is None else np.asarray(rows, np.int64))
        self.validation_rows = torch.as_tensor(
            np.asarray([] if validation_rows is None else validation_rows, dtype=np.int64)
        )
        self.optimizer = torch.optim.AdamW(
            self.network.parameters(),
            lr=training.learning_rate,
            weight_decay=training.weight_decay,
        )
        self.n = len(self.rows)
        self.batch_size = budget.batch_size(self.n, training.batch_size)
        self.epochs = budget.epoch_budget(self.n, self.batch_size, training.epochs)
        self.patience = budget.patience(self.n, self.batch_size)
        self.early_stopping = training.early_stopping and len(self.validation_rows) > 0
        self.steps_per_epoch = budget.steps_per_epoch(self.n, self.batch_size)
        self.total_steps = self.epochs * self.steps_per_epoch
        schedule, total = training.lr_schedule, self.total_steps
        self.schedules = schedule != "constant"
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: learning_rate_factor(schedule, step, total)
        )

    @property
    def _reduction(self) -> str:
        # One rank: the batch mean. Several: a rank's sum, scaled in run() (module docstring).
        return "sum" if self.placement.distributed else "mean"

    def _loss(self, scores: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The task's loss; with a submodel axis, the mean of the submodels' losses."""
        if scores.dim() != 3:
            return self.loss_fn(scores, target)
        members = scores.shape[1]
        if self.network.task == "classification":
            loss = self.loss_fn(scores.flatten(0, 1), target.repeat_interleave(members))
        else:
            loss = self.loss_fn(scores, target[:, None, :].expand(-1, members, -1))
        # A sum (several ranks) counts each row k times: back to one row's worth.
        return loss / members if self._reduction == "sum" else loss

    def _validation_scores(self) -> torch.Tensor:
        """The network's scores() of the validation rows (eval mode, float32, on the CPU)."""
        self.network.eval()
        if self.source is not None:
            scores = self._streamed_scores(self.source, self.validation_rows)
        else:
            # Passes of bounded memory (an ensemble's activations are k times a network's).
            scores = in_passes(self.network, self.x, rows=self.validation_rows, scores=True)
        self.network.train()
        return scores

    def _streamed_scores(self, source: BatchSource, rows: torch.Tensor) -> torch.Tensor:
        """scores() of `rows` read from `source` a batch at a time (float32, on the CPU)."""
        device = self.placement.device
        parts = [
            in_passes(
                self.network, torch.as_tensor(source.take(chunk.numpy())).to(device), scores=True
            )
            for chunk in rows.split(self.batch_size)
        ]
        return torch.cat(parts) if parts else torch.empty(0)

    def _validation_key(self, scores: torch.Tensor) -> list[float]:
        """What early stopping minimises, from the validation rows' scores (compared as a
        list, first element first): for classification the error rate of the averaged
        prediction, then its log loss once the temperature is fitted (the answers as they will
        be served: an epoch is not judged worse for a confidence that calibration takes back);
        for regression the mean squared error of the averaged prediction in standardised
        target units."""
        target = self.y[self.validation_rows.to(self.y.device)].cpu()
        if self.network.task == "classification":
            wrong = sum(
                int((mean.argmax(dim=1) != target[start : start + len(mean)]).sum())
                for start, mean in averaged_probabilities(scores)
            )
            loss = fit_temperature(scores, target)[2]
            return [wrong / len(target), loss]
        values = scores.mean(dim=1) if scores.dim() == 3 else scores
        return [float(((values.double() - target.double()) ** 2).mean())]

    # ------------------------------------------------------------------ the run
    def run(self) -> Trained:
        """Train to the end of the budget or to early stopping, or until `stop` says so;
        see Trained."""
        started = self.clock()
        p = self.placement
        epochs, batch = self.epochs, self.batch_size
        order = torch.Generator().manual_seed(self.training.seed)

        epoch = step_in_epoch = global_step = 0
        losses: list[float] = []
        scores: list[float] = []
        done: list[float] = []  # global mean loss of each finished step of this epoch
        resumes: list[int] = []  # the steps earlier runs and this one resumed from
        prior_seconds = 0.0
        resumed_from: int | None = None
        # Early stopping (main rank): validation loss per epoch, the best one's epoch (1-based)
        # and weights, epochs since it; `stopping`: the last epoch was the last one.
        validation: list[float] = []
        best: dict[str, torch.Tensor] | None = None
        best_key: list[float] = [math.inf]
        best_epoch, bad_epochs = 0, 0
        stopping = finished = False
        calibration: tuple[float, float] | None = None
        if self.resume is not None:
            state = self.resume
            if int(state["steps_per_epoch"]) != self.steps_per_epoch:
                raise ValueError(
                    f"checkpoint has {state['steps_per_epoch']} steps per epoch, "
                    f"this run {self.steps_per_epoch}: not the same data or batch size"
                )
            self.network.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            epoch, step_in_epoch = int(state["epoch"]), int(state["step_in_epoch"])
            global_step = resumed_from = int(state["global_step"])
            order.set_state(state["rng"]["order"])
            ranks = state["rng"]["ranks"]
            if len(ranks) != p.world_size:
                log.info(
                    "resuming a %d-rank checkpoint on %d rank(s): same batches, "
                    "other dropout draws",
                    len(ranks),
                    p.world_size,
                )
            restore_rng(ranks[p.rank % len(ranks)])
            history = state["history"]
            losses, scores = list(history["loss"]), list(history["score"])
            done = list(history["step_losses"])
            # Checkpoints before this list was kept know only of this run's resume.
            resumes = [int(v) for v in history.get("resumes", [])] + [global_step]
            prior_seconds = float(state.get("training_seconds", 0.0))
            early = state.get("early_stopping") or {}
            validation = list(history.get("validation", []))
            if early.get("best") is not None:
                best = {k: v.to(p.device) for k, v in early["best"].items()}
            best_key = [float(v) for v in early.get("best_key", [math.inf])]
            best_epoch, bad_epochs = int(early.get("best_epoch", 0)), int(early.get("bad", 0))
            stopping = bool(early.get("stopping", False))
            finished = bool(state.get("finished", False))
            if state.get("calibration") is not None:
                calibration = tuple(state["calibration"])  # type: ignore[assignment]

        # One process calls scores() directly: a wrapper module's __call__ costs a few
        # percent of a small network's step.
        module: Callable[[torch.Tensor], torch.Tensor] = self.network.scores
        # BatchNorm statistics over all ranks on CUDA, plain layers again once the run ends
        # (training.distributed: the export and the checkpoints see plain BatchNorm).
        batchnorms = synced_batchnorm(self.network) if p.syncs_batchnorm else {}
        if p.distributed:
            module = nn.parallel.DistributedDataParallel(
                _Scores(self.network),
                device_ids=[p.device.index] if p.device.type == "cuda" else None,
                # The preprocessing buffers never change in training: synced once, at init.
                forward_sync_buffers=False,
            )
        autocast = p.autocast_dtype
        every = max(1, epochs // 10)  # about ten progress lines per job
        # This rank's loss of each step of the epoch, written in place: a list of one small
        # tensor per step, alive between big freed activations, kept glibc from giving the
        # heap back (about 0.5 GB more resident by the end of an epoch at 1,000,000 rows).
        step_losses: torch.Tensor | None = None
        reduced = step_in_epoch  # steps of this epoch whose loss is already in `done`
        epoch_order = order.get_state()
        last_checkpoint = last_progress = started
        checkpoint_cost: float | None = None
        saved_step = resumed_from
        checkpoints, checkpoint_seconds = 0, 0.0
        samples = 0
        completed = True
        rows_on_device = self.rows.to(p.device)

        def reduce_pending() -> None:
            nonlocal reduced
            if step_losses is not None and reduced < step_in_epoch:
                local = step_losses[reduced:step_in_epoch].tolist()
                reduced = step_in_epoch
                if p.distributed:
                    local = [v / p.world_size for v in p.total(local)]
                done.extend(local)

        def checkpoint() -> None:
            # Every rank takes part (collectives); only the main rank has a sink.
            nonlocal last_checkpoint, checkpoint_cost, saved_step, checkpoints, checkpoint_seconds
            began = self.clock()
            reduce_pending()
            rngs = p.gather(capture_rng())
            if self.sink is not None:
                self.sink.save(
                    {
                        "model": self.network.state_dict(),
                        "optimizer": self.optimizer.state_dict(),
                        "scheduler": self.scheduler.state_dict(),
                        "epoch": epoch,
                        "step_in_epoch": step_in_epoch,
                        "global_step": global_step,
                        "epochs": epochs,
                        "steps_per_epoch": self.steps_per_epoch,
                        "world_size": p.world_size,
                        "rng": {"order": epoch_order.clone(), "ranks": rngs},
                        "history": {
                            "loss": list(losses),
                            "score": list(scores),
                            "step_losses": list(done),
                            "validation": list(validation),
                            "resumes": list(resumes),
                        },
                        "early_stopping": {
                            "best": best,
                            "best_key": list(best_key),
                            "best_epoch": best_epoch,
                            "bad": bad_epochs,
                            "stopping": stopping,
                        },
                        "finished": finished,
                        "calibration": None if calibration is None else list(calibration),
                        "training_seconds": prior_seconds + (began - started),
                    }
                )
            ended = self.clock()
            checkpoints += 1
            checkpoint_seconds += ended - began
            checkpoint_cost = ended - began
            last_checkpoint = ended
            saved_step = global_step

        def progress(now: float) -> Progress:
            ran = global_step - (resumed_from or 0)
            elapsed = max(now - started, 1e-9)
            running = done + (
                step_losses[reduced:step_in_epoch].tolist() if step_losses is not None else []
            )
            loss = sum(running) / len(running) if running else (losses[-1] if losses else None)
            left = self.total_steps - global_step
            if self.early_stopping and not finished:
                # The budget is an upper bound: early stopping ends training once `patience`
                # epochs bring nothing better, so that is as long as it can take from here
                # unless an epoch improves (the estimate then moves out again).
                left = min(
                    left, (self.patience - bad_epochs) * self.steps_per_epoch - step_in_epoch
                )
            return Progress(
                epoch=epoch,
                epochs=epochs,
                step=global_step,
                steps=self.total_steps,
                loss=loss,
                samples_per_second=samples / elapsed,
                eta_seconds=max(0, left) * elapsed / ran if ran else None,
            )

        self.network.train()
        while epoch < epochs and not stopping and not finished:
            # The state before this epoch's draw: a checkpoint stores it, a resume replays it.
            epoch_order = order.get_state()
            permutation = rows_on_device[torch.randperm(self.n, generator=order).to(p.device)]
            batches = permutation.split(batch)
            streamed: Iterator[torch.Tensor] | None = None
            if self.source is not None:
                # This rank's share of each batch still to come, read ahead by the source.
                streamed = self.source.training_batches(
                    [
                        b.tensor_split(p.world_size)[p.rank] if p.distributed else b
                        for b in batches[step_in_epoch:]
                    ],
                    p.device,
                )
            if step_losses is None or len(step_losses) != len(batches):
                step_losses = torch.zeros(len(batches), device=p.device)
            for i in range(step_in_epoch, len(batches)):
                # ---- step boundary
                now = self.clock()
                stop = self.stop()
                due = 0 < self.checkpoint_seconds <= now - last_checkpoint
                if p.distributed:
                    stop, due = p.agree(stop, due)
                if (stop or due) and saved_step != global_step:
                    checkpoint()
                if stop:
                    completed = False
                    break
                if self.on_progress is not None and now - last_progress >= self.progress_seconds:
                    last_progress = now
                    self.on_progress(progress(now))
                # ---- one optimizer step
                rows = batches[i]
                size = len(rows)
                if p.distributed:
                    rows = rows.tensor_split(p.world_size)[p.rank]
                x = self.x[rows] if streamed is None else next(streamed)
                if autocast is not None:
                    with torch.autocast(device_type=p.device.type, dtype=autocast):
                        loss = self._loss(module(x), self.y[rows])
                else:
                    loss = self._loss(module(x), self.y[rows])
                if p.distributed:
                    loss = loss * (p.world_size / size)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                if self.schedules:  # a constant rate needs no per-step update
                    self.scheduler.step()
                step_losses[i] = loss.detach()
                step_in_epoch = i + 1
                global_step += 1
                samples += size
            if streamed is not None and hasattr(streamed, "close"):
                streamed.close()  # its workers end now, not when it is collected
            if not completed:
                break

            # ---- end of epoch
            reduce_pending()
            sizes = [len(b) for b in batches]
            losses.append(sum(v * s for v, s in zip(done, sizes, strict=True)) / self.n)
            done = []
            epoch += 1
            step_in_epoch = reduced = 0
            epoch_order = order.get_state()
            if not math.isfinite(losses[-1]):
                # Deterministic, so another attempt would diverge the same way.
                raise UserInputError(
                    f"training diverged at epoch {epoch} (loss is {losses[-1]}); "
                    "lower training.learning_rate in dropflow.yaml"
                )
            if self.score is not None:
                self.network.eval()
                scores.append(float(self.score(self.network)))
                self.network.train()
            if p.is_main and len(self.validation_rows):
                key = self._validation_key(self._validation_scores())
                validation.append(key[-1])
                if key < best_key:
                    best_key, best_epoch, bad_epochs = key, epoch, 0
                    if self.early_stopping:
                        best = {k: v.detach().clone() for k, v in self.network.state_dict().items()}
                else:
                    bad_epochs += 1
                stopping = self.early_stopping and bad_epochs >= self.patience
            if p.distributed:
                (stopping,) = p.agree(stopping)
            last = epoch == epochs or stopping
            if epoch % every == 0 or last:
                shown = f" score {scores[-1]:.4f}" if self.score is not None else ""
                if validation:
                    shown += f" validation loss {validation[-1]:.4f}"
                log.info("epoch %d/%d loss %.4f%s", epoch, epochs, losses[-1], shown)
            if stopping:
                log.info(
                    "early stopping: no better validation loss in %d epochs; best epoch %d (%.4f)",
                    bad_epochs,
                    best_epoch,
                    best_key[-1],
                )
            now = self.clock()
            want = (
                self.sink is not None
                and not last
                and (
                    checkpoint_cost is None
                    or checkpoint_cost <= EPOCH_CHECKPOINT_SHARE * (now - last_checkpoint)
                )
            )
            if p.distributed:
                (want,) = p.agree(want)
            if want and saved_step != global_step:
                checkpoint()

        if completed and not finished:
            # ---- the end: best weights back, temperature fitted, then one last checkpoint
            if p.is_main and best is not None:
                self.network.load_state_dict(best)
            if p.is_main and len(self.validation_rows):
                validation_scores = self._validation_scores()
                target = self.y[self.validation_rows.to(self.y.device)].cpu()
                calibration = self.network.calibrate(validation_scores, target)
                if self.network.task == "classification":
                    log.info(
                        "calibrated on %d validation rows: temperature %.3f, log loss %.4f -> %.4f",
                        len(self.validation_rows),
                        self.network.temperature.item(),
                        *calibration,
                    )
                else:
                    calibration = None
            finished = True
            if self.sink is not None or p.distributed:
                saved_step = None  # the finished state is new even at the same step
                checkpoint()

        plain_batchnorm(self.network, batchnorms)
        self.network.eval()
        ended = self.clock()
        if self.on_progress is not None:
            self.on_progress(progress(ended))
        return Trained(
            network=self.network.to("cpu"),
            losses=losses,
            seconds=ended - started,
            scores=scores,
            completed=completed,
            step=global_step,
            steps=self.total_steps,
            steps_per_epoch=self.steps_per_epoch,
            resumed_from=resumed_from,
            resumes=resumes,
            checkpoints=checkpoints,
            checkpoint_seconds=checkpoint_seconds,
            samples=samples,
            training_seconds=prior_seconds + (ended - started),
            validation_losses=validation,
            best_epoch=best_epoch if best is not None else None,
            stopped_early=stopping,
            calibration=calibration,
        )


def train(
    build: Callable[[], TaskNetwork],
    x_train: np.ndarray | BatchSource,
    y_train: np.ndarray,
    *,
    training: TrainingSection,
    placement: Placement | None = None,
    **loop_options: Any,
) -> Trained:
    """Build a seeded network with `build()` and run a TrainingLoop on the training rows.

    `build` is called inside reproducible(training.seed): the weights it draws from torch's
    global generator are the same on every run (a family's build, e.g.
    `lambda: family.build(examples, x_train, y_train, spec)`). `y_train` holds class indices
    (classification) or target values (regression). `loop_options` go to TrainingLoop (sink,
    stop, resume, score, on_progress, ...).
    """
    placement = placement or Placement(device=torch.device("cpu"))
    with reproducible(training.seed, strict=placement.device.type == "cpu"):
        network = build()
        loop = TrainingLoop(
            network, x_train, y_train, training=training, placement=placement, **loop_options
        )
        return loop.run()


__all__ = [
    "EPOCH_CHECKPOINT_SHARE",
    "BatchSource",
    "CheckpointSink",
    "Progress",
    "Trained",
    "TrainingLoop",
    "learning_rate_factor",
    "reproducible",
    "train",
]
