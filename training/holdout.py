"""The holdout rows, read a chunk at a time: what the job scores, exports and checks parity on.

A table's holdout is a matrix already in memory. An image family's is a source of rows decoded
on demand (training.images.ImageRows): a fifth of 100,000 images at 224 x 224 is 3 GB of
pixels, more than a training instance should hold beside the network. So everything the job
does with the holdout (the score after every epoch, the card's metrics, the export example, the
ONNX parity check) reads it through `chunks()`: a matrix whole, as before, and a source in
chunks of at most CHUNK_BYTES of input rows, each decoded, used and dropped before the next.
The outputs (a few floats a row) are what is kept. reference.npz's rows are a separate,
bounded sample (training.export.reference_rows).

The price is time: a streamed holdout is decoded again for every epoch's score, in the
training process (`take`, one core), where a matrix was moved to the device once. Decoding
those chunks in the DataLoader workers, as training batches are, would cut it.
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
    dtype, and `take(rows)`, which decodes those rows into one array."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    @property
    def dtype(self) -> np.dtype: ...

    def __len__(self) -> int: ...

    def take(self, rows: np.ndarray) -> np.ndarray: ...


Rows = np.ndarray | StreamedRows


def chunk_rows(x: Rows) -> int:
    """How many rows of `x` one chunk holds: every row of a matrix, else as many as fit in
    CHUNK_BYTES (at least one)."""
    if isinstance(x, np.ndarray):
        return max(1, len(x))
    row_bytes = max(1, int(np.prod(x.shape[1:])) * np.dtype(x.dtype).itemsize)
    return max(1, CHUNK_BYTES // row_bytes)


def chunks(x: Rows) -> Iterator[np.ndarray]:
    """The rows of `x` in order, as arrays of at most chunk_rows(x) rows (a matrix: itself)."""
    if isinstance(x, np.ndarray):
        yield x
        return
    size = chunk_rows(x)
    # An empty source still gives one (empty) chunk: its outputs have the right shape.
    for start in range(0, max(1, len(x)), size):
        yield x.take(np.arange(start, min(len(x), start + size)))


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
