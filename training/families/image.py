"""The image family: labelled images in folders (or listed by a CSV manifest), a
`transformers` backbone, pixels in, probabilities out.

Reading is training.images (the layout, every image decoded once up front so that a bad file
fails the job naming it or, with `data: {skip_bad: true}`, is skipped and counted); the
examples' `x` is an ImageRows, which the training loop streams (training.loop.BatchSource)
instead of holding the pixels. The network is training.image_network (the spec's
`model: {family: image, backbone, pretrained, image_size}`): the graph takes uint8 RGB
[batch, image_size, image_size, 3] and normalises inside. The card's `input` says so
(dropflow.vocabulary.card.InputSpec: serving resizes every image to it), and its one feature
is `image`, the instance key clients send a base64 image under.

image_size left out of the spec (default_image_size):
- pretrained (the default): 224, the size the built-in backbones' checkpoints were trained
  at; their filters expect objects at that scale.
- from scratch (`pretrained: false`): the training images' own size: the median longer side
  of the dataset's images (every one is measured when it is checked), rounded up to a multiple
  of 32 and kept within [32, 224]. Nothing then asks for 224: upsampling 32-pixel digits to
  224 costs 49 times the compute per image and adds no information, and a photo drop keeps
  224 (the cap), a resolution that trains on a GPU in reasonable time. A multiple of 32 because
  the ResNet and ConvNeXt backbones halve the resolution five times and ViT cuts 16-pixel
  patches: every stage then sees whole pixels.
The card's `training.image_size` records the size and why it was chosen.

Training batches are augmented (training only, on the batch tensor, with kornia): a random
resized crop back to image_size (a quarter to all of the image, aspect 3:4 to 4:3) and a
horizontal flip half of the time. The crop's lower bound is above ImageNet's usual 8 %:
drops are often small images of small things, which an 8 % crop leaves unrecognisable.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import kornia.augmentation as augmentation
import numpy as np
import torch

from dropflow.errors import UserInputError
from dropflow.ports import ObjectStore
from dropflow.vocabulary.card import Feature, InputSpec
from dropflow.vocabulary.spec import Spec
from training.examples import Examples
from training.families.base import Family
from training.image_network import DEFAULT_BACKBONE, ImageNetwork, build_image_network
from training.images import ImageRows, check_images, list_images, loader_workers
from training.reading import ReadMeter

log = logging.getLogger(__name__)

# image_size left out (module docstring): pretrained, the backbones' own training size; from
# scratch, the images' median longer side rounded up to SIZE_STEP within these bounds.
PRETRAINED_IMAGE_SIZE = 224
SIZE_STEP = 32
SMALLEST_IMAGE_SIZE = 32
LARGEST_DEFAULT_IMAGE_SIZE = 224
# The instance key of the image, and the name of the card's one feature.
IMAGE_FIELD = "image"
CROP_SCALE = (0.25, 1.0)
CROP_RATIO = (3 / 4, 4 / 3)


class Augment:
    """Random resized crop and horizontal flip of a uint8 [batch, H, W, 3] batch (see the
    module docstring), drawing from torch's generators (checkpointed by the loop)."""

    def __init__(self, size: int) -> None:
        self.transform = augmentation.AugmentationSequential(
            augmentation.RandomResizedCrop((size, size), scale=CROP_SCALE, ratio=CROP_RATIO),
            augmentation.RandomHorizontalFlip(),
        )

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            images = pixels.permute(0, 3, 1, 2).to(torch.float32) / 255.0
            out = self.transform(images)
            return (out * 255.0).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)


@dataclass(frozen=True)
class ImageExamples(Examples):
    """Examples whose `x` is an ImageRows (pixels on demand), with the files left out."""

    store: ObjectStore | None = None
    skipped: list[str] = field(default_factory=list)  # with skip_bad: "<key>: <problem>"
    size_reason: str = ""  # why the images are resized to x.shape[1] (the card says it)


def pretrained(spec: Spec) -> bool:
    """Whether the backbone starts from its checkpoint's weights (left out: yes)."""
    return True if spec.model.pretrained is None else spec.model.pretrained


def default_image_size(sides: Sequence[int]) -> int:
    """The image side a job from scratch resizes to when the spec leaves image_size out, from
    the longer side of each image (0: not measured) (see the module docstring)."""
    measured = [side for side in sides if side > 0]
    if not measured:
        return PRETRAINED_IMAGE_SIZE
    rounded = math.ceil(float(np.median(measured)) / SIZE_STEP) * SIZE_STEP
    return min(LARGEST_DEFAULT_IMAGE_SIZE, max(SMALLEST_IMAGE_SIZE, rounded))


def chosen_image_size(spec: Spec, sides: Sequence[int]) -> tuple[int, str]:
    """The side images are resized to, and why (for the card and the log)."""
    if spec.model.image_size is not None:
        return spec.model.image_size, "model.image_size in the spec"
    if pretrained(spec):
        return PRETRAINED_IMAGE_SIZE, "the pretrained backbones' training size (pretrained)"
    measured = [side for side in sides if side > 0]
    size = default_image_size(measured)
    median = float(np.median(measured)) if measured else 0.0
    return size, (
        f"from scratch: the images' median longer side ({median:g} px over {len(measured)} "
        f"images), rounded up to a multiple of {SIZE_STEP} within "
        f"[{SMALLEST_IMAGE_SIZE}, {LARGEST_DEFAULT_IMAGE_SIZE}]"
    )


class ImageFamily(Family[ImageExamples]):
    """Images: training.images reads them; training.image_network is the network."""

    name = "image"

    def read(self, store: ObjectStore, model: str, spec: Spec) -> ImageExamples:
        return self.read_metered(store, model, spec, None)

    def read_metered(
        self, store: ObjectStore, model: str, spec: Spec, meter: ReadMeter | None
    ) -> ImageExamples:
        listing = list_images(store, model, spec.data)
        workers = loader_workers()
        checked = check_images(store, listing.keys, workers=workers, meter=meter)
        problems = checked.problems
        size, reason = chosen_image_size(spec, checked.sides)
        log.info("images resized to %d x %d: %s", size, size, reason)
        rows = ImageRows(store, listing.keys, size, augment=Augment(size), workers=workers)
        labels = listing.labels
        skipped: list[str] = []
        if problems:
            first = problems[min(problems)]
            more = f" (and {len(problems) - 1} more bad image(s))" if len(problems) > 1 else ""
            if spec.data is None or not spec.data.skip_bad:
                raise UserInputError(first + more)
            skipped = [problems[row] for row in sorted(problems)]
            keep = [row for row in range(len(rows)) if row not in problems]
            log.warning("skipping %d bad image(s) (data.skip_bad): %s%s", len(skipped), first, more)
            rows = rows.subset(keep)
            labels = [labels[row] for row in keep]
            if len(set(labels)) < 2:
                raise UserInputError(
                    f"after skipping {len(skipped)} bad image(s) (data.skip_bad), images of "
                    f"{len(set(labels))} label(s) are left; a classifier needs two: {first}"
                )
        classes = sorted(set(labels))
        index = {label: i for i, label in enumerate(classes)}
        return ImageExamples(
            task="classification",
            target=spec.data.label if spec.data is not None and spec.data.manifest else "label",
            x=rows,  # type: ignore[arg-type]  # streamed: training.loop.BatchSource
            y=np.array([index[label] for label in labels], dtype=np.int64),
            classes=list(classes),
            features=[Feature(name=IMAGE_FIELD, dtype="image")],
            sources=listing.sources + rows.keys,
            store=store,
            skipped=skipped,
            size_reason=reason,
        )

    def build(
        self, examples: ImageExamples, x_train: Any, y_train: np.ndarray, spec: Spec
    ) -> ImageNetwork:
        assert examples.store is not None
        return build_image_network(
            examples.store,
            backbone=spec.model.backbone or DEFAULT_BACKBONE,
            pretrained=pretrained(spec),
            image_size=examples.x.shape[1],
            n_classes=examples.n_classes,
        )

    def input_spec(self, examples: ImageExamples) -> InputSpec:
        size = examples.x.shape[1]
        return InputSpec(
            kind="image",
            field=IMAGE_FIELD,
            height=size,
            width=size,
            channels=3,
            dtype="uint8",
            layout="NHWC",
        )

    def card_training(self, examples: ImageExamples) -> dict[str, Any]:
        return {
            "skipped_files": len(examples.skipped),
            "skipped": examples.skipped[:20],
            "image_size": {"pixels": examples.x.shape[1], "from": examples.size_reason},
        }


__all__ = [
    "Augment",
    "ImageExamples",
    "ImageFamily",
    "chosen_image_size",
    "default_image_size",
    "pretrained",
]
