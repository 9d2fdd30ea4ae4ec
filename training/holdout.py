"""The holdout rows, read a chunk at a time: what the job scores, exports and checks parity on.

A table's holdout is a matrix already in memory. An image family's is a source of rows decoded
on demand (training.images.ImageRows): a fifth of 100,000 images at 224 x 224 is 3 GB of
pixels, more than a training instance should hold beside the network. So everything the job
does with the holdout (the score after every epoch, the card's metrics, the export example, the
ONNX parity check) reads it through `chunks()`: a matrix whole, as before, and a source in
chunks of at most CHUNK_BYTES of input rows, each decoded, used and dropped before the next.
The outputs (a few floats a row) are what is kept. reference.npz's rows are a separate,
bounded sample (training.export.reference_rows).

The price is time: a streamed holdout is decoded again for every epoch's score, where a
matrix was moved to the device once; the source decodes its chunks in its DataLoader workers,
as it decodes training batches, so that this takes the workers' time, not one core's.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import numpy as np
import torch

from training.network import TaskNetwork, in_passes

# The most bytes of input rows decoded at once from a streamed holdout: about 440 images at
# 224 x 224 (150 KB each), far more rows than a pass over the network takes anyway.
CHUNK_BYTES = 64 * 2**20


class StreamedRows(Protocol):
    """Input rows decoded on demand (training.images.ImageRows): how many, their shape and
    dtype, `take(rows)`, which decodes those rows into one array, and `chunks(n)`, every row
    in order with at most n of them decoded at any moment."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> np.dtype: ...

    def __len__(self) -> int: ...

    def take(self, rows: np.ndarray) -> np.ndarray: ...

    def chunks(self, rows_at_once: int) -> Iterator[np.ndarray]: ...


Rows = np.ndarray | StreamedRows


def chunk_rows(x: Rows) -> int:
    """How many rows of `x` one chunk holds: every row of a matrix, else as many as fit in
    CHUNK_BYTES (at least one)."""
    if isinstance(x, np.ndarray):
        return max(1, len(x))
    row_bytes = max(1, int(np.prod(x.shape[1:])) * np.dtype(x.dtype).itemsize)
    return max(1, CHUNK_BYTES // row_bytes)


def chunks(x: Rows) -> Iterator[np.ndarray]:
    """The rows of `x` in order, as arrays, with at most chunk_rows(x) rows decoded at any
    moment (a matrix: itself, whole). An empty source gives one empty chunk, so that outputs
    computed from it still have their shape."""
    if isinstance(x, np.ndarray):
        yield x
        return
    yield from x.chunks(chunk_rows(x))


def head(x: Rows, rows: int) -> np.ndarray:
    """The first `rows` rows of `x` (fewer when it has fewer) as one array."""
    if isinstance(x, np.ndarray):
        return x[:rows]
    return x.take(np.arange(min(rows, len(x))))


def outputs(network: TaskNetwork, x: Rows) -> np.ndarray:
    """The network's forward() (what the graph returns) of every row of `x`, in eval mode, as
    float32 numpy, read chunk by chunk and run in passes of bounded memory (in_passes) on the
    network's device."""
    network.eval()
    device = next(network.parameters()).device
    parts = [
        in_passes(network, torch.as_tensor(network.as_input(chunk)).to(device)).numpy()
        for chunk in chunks(x)
    ]
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


__all__ = ["CHUNK_BYTES", "Rows", "StreamedRows", "chunk_rows", "chunks", "head", "outputs"]
