"""Jobs as the launcher leaves them, for tests that run the training entrypoint directly, and
the tabular network trained by the real loop, for tests of the loop itself."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from dropflow.records.jobs import Attempt, Job, JobState, JobStore
from dropflow.vocabulary.card import Task
from dropflow.vocabulary.names import new_job_id
from dropflow.vocabulary.spec import ModelSection, TrainingSection
from training.families.tabular import build_tabular_network
from training.loop import Trained, train


def launched_job(
    jobs: JobStore,
    model: str,
    *,
    data_version: str | None = None,
    state: JobState = JobState.LAUNCHING,
    **attempt: Any,
) -> str:
    """Record a job whose first attempt is on its instance (`local-1`, spot, unless `attempt`
    says otherwise); its id. The data version defaults to `<model>-v1`."""
    job_id = new_job_id(model)
    first = Attempt(number=1, **{"instance_id": "local-1", "lifecycle": "spot", **attempt})
    jobs.create(
        Job(
            job_id=job_id,
            model=model,
            data_version=data_version or f"{model}-v1",
            state=state,
            attempts=[first],
        )
    )
    return job_id


def train_tabular(
    x: np.ndarray,
    y: np.ndarray,
    *,
    task: Task,
    n_classes: int,
    model: ModelSection,
    training: TrainingSection,
    category_counts: Mapping[int, int] | None = None,
    **loop_options: Any,
) -> Trained:
    """training.loop.train on (x, y) with the tabular family's network that `model` names
    (family mlp or tabm), built as the job builds it (training.families.tabular);
    `loop_options` go to the TrainingLoop (rows, validation_rows, sink, stop, resume...)."""
    return train(
        lambda: build_tabular_network(
            task,
            x,
            y,
            n_classes=n_classes,
            model=model,
            category_counts=category_counts,
        ),
        x,
        y,
        training=training,
        **loop_options,
    )


def flip_tensor_byte(data: bytes, tensor: torch.Tensor) -> bytes:
    """`data` (a torch.save file) with one bit flipped inside the stored bytes of `tensor`:
    a change torch.load does not notice (the zip's checksums are not checked on load)."""
    raw = tensor.numpy().tobytes()
    at = data.find(raw)
    assert at >= 0 and data.find(raw, at + 1) < 0, "the tensor's bytes must be stored once"
    corrupted = bytearray(data)
    corrupted[at + len(raw) - 2] ^= 0x01  # a mantissa bit of the last value
    return bytes(corrupted)
