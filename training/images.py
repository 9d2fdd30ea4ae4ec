"""Image datasets: which files are the examples, their labels, and their pixels on demand.

Layout (the spec's `data:` section, dropflow.vocabulary.spec.DataSection):
- folders: every image under datasets/<model>/ (IMAGE_SUFFIXES) is an example whose label is
  its first folder: `datasets/<model>/<label>/<file>` (deeper folders keep the first one's
  label). An image directly under datasets/<model>/ has no label: the job fails naming it.
- manifest: a CSV file under datasets/<model>/ with an image column (the key relative to
  datasets/<model>/) and a label column; every row must name an image that is there.
Classes are the labels in sorted order; a single label, or a label folder without images, is
a clear error.

Pixels are never all in memory: ImageRows is a torch Dataset that reads an image's bytes
through the ObjectStore port and decodes them (Pillow) when a DataLoader worker asks for it.
Every image is decoded once, at its own size, when the job reads the dataset (check_images,
in DataLoader workers), so that a corrupt file fails the job before training, naming it, or,
with `data: {skip_bad: true}`, is left out of the examples and counted on the card; the same
pass measures each image's size, from which training.families.image picks image_size when
the spec leaves it out.

Pixels (the same in training, evaluation, export and serving): dropflow.vocabulary.pixels's
one rule, JPEG, PNG or WebP decoded by Pillow, turned upright by its EXIF orientation,
converted to RGB and resized directly to image_size x image_size (bilinear, no crop: the
aspect ratio is not kept). Training augments the batch afterwards (training.families.image).
"""

from __future__ import annotations

import csv
import io
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from dropflow.errors import UserInputError
from dropflow.ports import ObjectNotFound, ObjectStore
from dropflow.vocabulary.datasets import IMAGE_SUFFIXES, SPEC_FILE, dataset_prefix, image_files
from dropflow.vocabulary.pixels import BadImage, image_pixels, image_size
from dropflow.vocabulary.spec import DataSection
from training.reading import ReadMeter

log = logging.getLogger(__name__)

# How many image problems a failure lists before "and N more".
_SHOWN = 5


def decode(data: bytes, size: int, key: str) -> np.ndarray:
    """The image file `data` as the graph takes it: uint8 [size, size, 3] by the one pixel
    rule serving applies too (dropflow.vocabulary.pixels). Raises UserInputError naming `key`
    when it is not an image that rule takes."""
    try:
        return image_pixels(data, size, size)
    except BadImage as exc:
        raise decode_error(key, exc) from None


def decode_error(key: str, problem: BadImage) -> UserInputError:
    """The job's error for the image at `key` that is not one the pixel rule takes."""
    return UserInputError(
        f"{key}: {problem}; replace or remove the file, or set `data: {{skip_bad: true}}` in "
        "dropflow.yaml to leave such files out"
    )


@dataclass(frozen=True)
class Listing:
    """The examples of an image dataset: keys in the store and their labels (same order)."""

    keys: list[str]
    labels: list[str]
    sources: list[str] = field(default_factory=list)  # the manifest, when there is one


def _folder_listing(store: ObjectStore, prefix: str) -> Listing:
    objects = store.list(prefix)
    keys, labels = [], []
    unlabelled: list[str] = []
    folders: set[str] = set()
    for info in objects:
        relative = info.key[len(prefix) :]
        if "/" in relative:
            folders.add(relative.split("/", 1)[0])
    for info in image_files(objects):
        relative = info.key[len(prefix) :]
        if "/" not in relative:
            unlabelled.append(info.key)
            continue
        keys.append(info.key)
        labels.append(relative.split("/", 1)[0])
    if unlabelled:
        raise UserInputError(
            f"{_listed(unlabelled)}: an image directly under {prefix} has no label; put each "
            f"image in a folder named for its label ({prefix}<label>/<file>), or list them in "
            "a CSV manifest (data: {manifest: <file>.csv} in dropflow.yaml)"
        )
    empty = sorted(folders - set(labels))
    if empty:
        raise UserInputError(
            f"{', '.join(prefix + name + '/' for name in empty)}: no image "
            f"({', '.join(IMAGE_SUFFIXES)}) in this label folder; add images or remove it"
        )
    return Listing(keys, labels)


def _manifest_listing(store: ObjectStore, prefix: str, data: DataSection) -> Listing:
    assert data.manifest is not None
    key = prefix + data.manifest
    try:
        text = store.get(key).decode("utf-8-sig")
    except ObjectNotFound:
        raise UserInputError(
            f"{SPEC_FILE}: data.manifest: {key} does not exist; drop it or fix the name"
        ) from None
    except UnicodeDecodeError as exc:
        raise UserInputError(f"{key}: not UTF-8 text ({exc.reason})") from None
    reader = csv.DictReader(io.StringIO(text))
    columns = reader.fieldnames or []
    missing = [c for c in (data.image, data.label) if c not in columns]
    if missing:
        raise UserInputError(
            f"{key}: no column {' or '.join(map(repr, missing))} (columns: "
            f"{', '.join(columns) or 'none'}); name them in data.image and data.label"
        )
    present = {info.key for info in image_files(store.list(prefix))}
    keys, labels = [], []
    for line, row in enumerate(reader, start=2):
        name = (row.get(data.image) or "").strip().removeprefix("./")
        label = (row.get(data.label) or "").strip()
        if not name or not label:
            raise UserInputError(
                f"{key} line {line}: empty {data.image if not name else data.label}"
            )
        if not name.lower().endswith(IMAGE_SUFFIXES):
            raise UserInputError(
                f"{key} line {line}: {name!r} is not an image file ({', '.join(IMAGE_SUFFIXES)})"
            )
        if prefix + name not in present:
            raise UserInputError(
                f"{key} line {line}: no image {prefix + name}; drop it, or fix the row "
                f"(paths are relative to {prefix})"
            )
        keys.append(prefix + name)
        labels.append(label)
    return Listing(keys, labels, [key])


def _listed(keys: Sequence[str]) -> str:
    shown = ", ".join(keys[:_SHOWN])
    return shown + (f" and {len(keys) - _SHOWN} more" if len(keys) > _SHOWN else "")


def list_images(store: ObjectStore, model: str, data: DataSection | None) -> Listing:
    """The model's examples as its layout says (module docstring), in key order.

    Raises UserInputError naming the file, the folder or the manifest line at fault, and when
    there are fewer than two labels.
    """
    prefix = dataset_prefix(model)
    data = data or DataSection()
    listing = (
        _manifest_listing(store, prefix, data) if data.manifest else _folder_listing(store, prefix)
    )
    if not listing.keys:
        raise UserInputError(
            f"no image ({', '.join(IMAGE_SUFFIXES)}) under {prefix}; drop images in folders "
            f"named for their labels ({prefix}<label>/<file>)"
        )
    classes = sorted(set(listing.labels))
    if len(classes) < 2:
        raise UserInputError(
            f"only one label ({classes[0]!r}) under {prefix}: a classifier needs images of at "
            "least two labels, one folder (or manifest label) each"
        )
    order = np.argsort(np.array(listing.keys), kind="stable")
    return Listing(
        [listing.keys[i] for i in order], [listing.labels[i] for i in order], listing.sources
    )


class ImageRows(torch.utils.data.Dataset[torch.Tensor]):
    """The pixels of images in the store, decoded on demand: row i is `keys[i]` as uint8
    [size, size, 3] (decode); `take(rows)` decodes some rows into one array here (for the few
    rows the job holds: the holdout), `training_batches` streams the training batches through
    `workers` DataLoader workers (0: in this process) and `augment`.

    Keeps only the keys: a DataLoader worker (a forked process) reads through the store it
    inherits.
    """

    dtype = np.dtype(np.uint8)

    def __init__(
        self,
        store: ObjectStore,
        keys: Sequence[str],
        size: int,
        *,
        augment: Callable[[torch.Tensor], torch.Tensor] | None = None,
        workers: int = 0,
    ) -> None:
        self.store = store
        self.keys = list(keys)
        self.size = size
        self.augment = augment
        self.workers = workers

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.keys), self.size, self.size, 3)

    def pixels(self, row: int) -> np.ndarray:
        key = self.keys[row]
        return decode(self.store.get(key), self.size, key)

    def __getitem__(self, row: int) -> torch.Tensor:  # type: ignore[override]
        if isinstance(row, np.ndarray):
            # What the job does to a matrix (examples.x[rows], rows or a mask): a lazy subset.
            rows = np.flatnonzero(row) if row.dtype == bool else row
            return self.subset(rows)  # type: ignore[return-value]
        # Pillow's arrays are read-only views, which torch warns of; copy only those.
        return torch.from_numpy(np.require(self.pixels(int(row)), requirements="W"))

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        """Every row decoded into one array (np.asarray(rows)): for the few rows the job holds."""
        pixels = self.take(range(len(self)))
        return pixels if dtype is None else pixels.astype(dtype, copy=False)

    def take(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """Rows `rows`, decoded here, as one uint8 array [len(rows), size, size, 3]."""
        out = np.empty((len(rows), self.size, self.size, 3), dtype=np.uint8)
        for i, row in enumerate(rows):
            out[i] = self.pixels(int(row))
        return out

    def chunks(self, rows_at_once: int) -> Iterator[np.ndarray]:
        """Every row, in order, as uint8 arrays [rows, size, size, 3] (no augmentation), with
        at most `rows_at_once` rows decoded at any moment: those handed out and those the
        DataLoader workers have decoded ahead (each worker holds one batch). Without workers,
        `take` here, `rows_at_once` rows a time."""
        if not self.workers or not len(self):
            # (An empty view too: one empty array, whose shape the caller still gets.)
            for start in range(0, max(1, len(self)), rows_at_once):
                yield self.take(np.arange(start, min(len(self), start + rows_at_once)))
            return
        # A batch in each worker, the one handed out and the one the loader holds ready.
        batch = max(1, rows_at_once // (self.workers + 2))
        loader = torch.utils.data.DataLoader(
            self,
            batch_size=batch,
            num_workers=self.workers,
            prefetch_factor=1,
            generator=torch.Generator(),
            multiprocessing_context="fork",
        )
        for pixels in loader:
            yield pixels.numpy()

    def subset(self, rows: Sequence[int] | np.ndarray) -> ImageRows:
        """These rows only, read the same way."""
        return ImageRows(
            self.store,
            [self.keys[int(r)] for r in rows],
            self.size,
            augment=self.augment,
            workers=self.workers,
        )

    def training_batches(
        self, batches: Sequence[torch.Tensor], device: torch.device
    ) -> Iterator[torch.Tensor]:
        """The pixels of each batch of rows in `batches`, in order, on `device`: uint8
        [len(batch), size, size, 3], decoded by DataLoader workers a few batches ahead, then
        passed through `augment` here (training.loop.BatchSource)."""
        loader = torch.utils.data.DataLoader(
            self,
            batch_sampler=[batch.tolist() for batch in batches],
            num_workers=self.workers,
            pin_memory=device.type == "cuda",
            # Its own generator: a loader draws a seed for its workers when it starts, which
            # from torch's global generator would shift the dropout and augmentation draws
            # of a resumed run away from an uninterrupted one's.
            generator=torch.Generator(),
            multiprocessing_context="fork" if self.workers else None,
        )
        for pixels in loader:
            pixels = pixels.to(device, non_blocking=True)
            yield pixels if self.augment is None else self.augment(pixels)


def loader_workers() -> int:
    """DataLoader worker processes for decoding: the CPUs but one (for the training process),
    at most 8, at least 1."""
    return max(1, min(8, (os.cpu_count() or 2) - 1))


class _Checked(torch.utils.data.Dataset[tuple[int, str | None, int]]):
    """Row i -> (i, None, the longer side in pixels) when keys[i] decodes, else (i, the
    problem, 0). Decodes at the image's own size: no size is chosen yet when this runs."""

    def __init__(self, store: ObjectStore, keys: Sequence[str]) -> None:
        self.store = store
        self.keys = keys

    def __len__(self) -> int:
        return len(self.keys)

    def __getitem__(self, row: int) -> tuple[int, str | None, int]:
        key = self.keys[row]
        try:
            data = self.store.get(key)
            width, height = image_size(data)
            # Every pixel decoded (a truncated file fails here, not in training), no resize.
            image_pixels(data, height, width)
        except BadImage as exc:
            return row, str(decode_error(key, exc)), 0
        except ObjectNotFound:
            return row, f"{key}: deleted while the job read the dataset", 0
        return row, None, max(width, height)


@dataclass(frozen=True)
class Checked:
    """What check_images found: row -> the problem of each image that does not decode (empty
    when all do), and each row's longer side in pixels (0 for a bad one)."""

    problems: dict[int, str]
    sides: list[int]


def check_images(
    store: ObjectStore,
    keys: Sequence[str],
    *,
    workers: int,
    meter: ReadMeter | None = None,
) -> Checked:
    """Decode every image of `keys` once, at its own size (in `workers` DataLoader workers):
    the problems of those that do not decode and the longer side of each. `meter` hears of
    every image decoded (the loading stage's progress)."""
    loader = torch.utils.data.DataLoader(
        _Checked(store, keys),
        batch_size=64,
        num_workers=workers,
        collate_fn=list,
        generator=torch.Generator(),
        multiprocessing_context="fork" if workers else None,
    )
    problems: dict[int, str] = {}
    sides = [0] * len(keys)
    if meter is not None:
        meter.expect(len(keys))
    for batch in loader:
        if meter is not None:
            meter.advance(len(batch), rows=len(batch))
        for row, problem, side in batch:
            if problem is not None:
                problems[row] = problem
            sides[row] = side
    return Checked(problems, sides)


__all__ = [
    "Checked",
    "ImageRows",
    "Listing",
    "check_images",
    "decode",
    "decode_error",
    "list_images",
    "loader_workers",
]
