"""The image family's network: a Hugging Face `transformers` image classifier behind the
graph's pixel input.

The graph takes what serving can make of any image without knowing the network: uint8 RGB
pixels, channels last, [batch, image_size, image_size, 3]. Everything else is inside it, so
the ONNX file does it too: the float conversion (x / 255), the backbone's own mean/std
normalisation (its preprocessor_config.json when the weights come with one, ImageNet's
otherwise), channels first, then the backbone's logits.

Backbones (the spec's `model.backbone`):
- a built-in architecture (BUILT_IN): its config is made here, so `pretrained: false` trains
  from scratch without reaching anything; `pretrained: true` loads the checkpoint it names;
- any other name is a Hugging Face checkpoint (e.g. microsoft/resnet-50,
  facebook/convnext-tiny-224): its config and weights come from where pretrained weights do.
Pretrained weights (and a checkpoint's config) come from the bucket's `weights/<checkpoint>/`
(a save_pretrained folder: for accounts whose instances cannot reach the internet) when it
holds a config.json, else from the Hugging Face Hub; the job fails naming both when neither
has them. timm and torchvision are not used: torchvision's PyPI wheels for the project's
torch need CUDA libraries the CPU build lacks (its operators fail to load), and timm imports
torchvision.
"""

from __future__ import annotations

import inspect
import json
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import (
    AutoConfig,
    AutoModelForImageClassification,
    ConvNextConfig,
    PretrainedConfig,
    ResNetConfig,
    ViTConfig,
)
from transformers.utils import cached_file

from dropflow.errors import UserInputError
from dropflow.ports import ObjectStore
from training.network import TaskNetwork

log = logging.getLogger(__name__)

# Where pretrained weights for accounts without internet go: weights/<checkpoint>/ holds what
# save_pretrained writes (config.json, model.safetensors, preprocessor_config.json).
WEIGHTS_PREFIX = "weights/"
PROCESSOR_FILE = "preprocessor_config.json"
# ImageNet's channel means and standard deviations, which most checkpoints were trained with.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DEFAULT_BACKBONE = "resnet-18"


def _resnet(depths: list[int], sizes: list[int], layer: str, embedding: int) -> ResNetConfig:
    return ResNetConfig(
        depths=depths, hidden_sizes=sizes, layer_type=layer, embedding_size=embedding
    )


# name -> (the config of a fresh network, the Hub checkpoint its pretrained weights are).
BUILT_IN: dict[str, tuple[Callable[[int], PretrainedConfig], str | None]] = {
    # A few thousand weights: for tests and for trying the loop end to end on a CPU.
    "resnet-tiny": (lambda size: _resnet([1, 1], [16, 32], "basic", 16), None),
    "resnet-18": (
        lambda size: _resnet([2, 2, 2, 2], [64, 128, 256, 512], "basic", 64),
        "microsoft/resnet-18",
    ),
    "resnet-50": (lambda size: ResNetConfig(), "microsoft/resnet-50"),
    "convnext-tiny": (lambda size: ConvNextConfig(), "facebook/convnext-tiny-224"),
    "vit-base": (lambda size: ViTConfig(image_size=size), "google/vit-base-patch16-224"),
}


class ImageNetwork(TaskNetwork):
    """scores(x): uint8 [batch, H, W, 3] -> the backbone's logits [batch, n_classes]."""

    input_dtype = np.uint8

    def __init__(
        self, backbone: torch.nn.Module, mean: tuple[float, ...], std: tuple[float, ...]
    ) -> None:
        super().__init__("classification")
        self.backbone = backbone
        # [1, 3, 1, 1]: broadcast over the batch and the pixels, after channels go first.
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))
        # Transformers (ViT and kin) learnt position embeddings for one image size: at another
        # image_size they are interpolated to it, in the graph too.
        parameters = inspect.signature(backbone.forward).parameters
        self.options = (
            {"interpolate_pos_encoding": True} if "interpolate_pos_encoding" in parameters else {}
        )

    def scores(self, x: torch.Tensor) -> torch.Tensor:
        pixels = x.permute(0, 3, 1, 2).to(torch.float32) / 255.0
        return self.backbone(pixel_values=(pixels - self.mean) / self.std, **self.options).logits


def _checkpoint_files(store: ObjectStore, checkpoint: str, folder: Path) -> bool:
    """Copy weights/<checkpoint>/ from the bucket into `folder`; False when it has no
    config.json (nothing usable there)."""
    prefix = f"{WEIGHTS_PREFIX}{checkpoint}/"
    objects = store.list(prefix)
    if not any(o.key == f"{prefix}config.json" for o in objects):
        return False
    for info in objects:
        relative = info.key[len(prefix) :]
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        store.get_file(info.key, target)
    log.info("backbone %s: %d file(s) from %s", checkpoint, len(objects), prefix)
    return True


def _hub_processor(checkpoint: str) -> Path | None:
    """The Hub checkpoint's preprocessor_config.json (downloaded, or cached), or None."""
    try:
        found = cached_file(
            checkpoint,
            PROCESSOR_FILE,
            _raise_exceptions_for_missing_entries=False,
            _raise_exceptions_for_connection_errors=False,
        )
    except OSError:
        return None
    return Path(found) if found else None


def _normalisation(path: Path | None) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The checkpoint's image_mean/image_std (its preprocessor_config.json at `path`), else
    ImageNet's."""
    if path is not None and path.is_file():
        processor: dict[str, Any] = json.loads(path.read_text())
        mean, std = processor.get("image_mean"), processor.get("image_std")
        if isinstance(mean, list) and isinstance(std, list) and len(mean) == len(std) == 3:
            return tuple(float(v) for v in mean), tuple(float(v) for v in std)
    return IMAGENET_MEAN, IMAGENET_STD


def _unreachable(checkpoint: str, hub_error: Exception | None) -> UserInputError:
    first_line = str(hub_error).strip().splitlines()[0][:200] if hub_error else ""
    why = f" ({type(hub_error).__name__}: {first_line})" if hub_error else ""
    return UserInputError(
        f"model.backbone {checkpoint!r}: no pretrained weights reachable. Either put the "
        f"checkpoint's save_pretrained folder (config.json, model.safetensors) under the bucket "
        f"at {WEIGHTS_PREFIX}{checkpoint}/, or let the training instance reach the Hugging Face "
        f"Hub{why}; or set `pretrained: false` in dropflow.yaml to train from scratch"
    )


def build_image_network(
    store: ObjectStore,
    *,
    backbone: str,
    pretrained: bool,
    image_size: int,
    n_classes: int,
) -> ImageNetwork:
    """A fresh network for `n_classes` (see the module docstring for where a backbone's config
    and weights come from). Draws its new weights from torch's global generator.

    Raises UserInputError naming both sources when weights or a config are needed and
    neither the bucket nor the Hub has them.
    """
    built_in = BUILT_IN.get(backbone)
    if built_in is not None and not pretrained:
        config = built_in[0](image_size)
        config.num_labels = n_classes
        return ImageNetwork(
            AutoModelForImageClassification.from_config(config), *_normalisation(None)
        )
    checkpoint = backbone if built_in is None else built_in[1]
    if checkpoint is None:
        raise UserInputError(
            f"model.backbone {backbone!r} has no pretrained checkpoint; set `pretrained: false`, "
            f"or name a Hugging Face checkpoint such as microsoft/resnet-18"
        )
    with tempfile.TemporaryDirectory(prefix="dropflow-weights-") as tmp:
        folder = Path(tmp)
        source: str = str(folder) if _checkpoint_files(store, checkpoint, folder) else checkpoint
        local = source != checkpoint
        try:
            if pretrained:
                network = AutoModelForImageClassification.from_pretrained(
                    source, num_labels=n_classes, ignore_mismatched_sizes=True
                )
            else:
                config = AutoConfig.from_pretrained(source, num_labels=n_classes)
                network = AutoModelForImageClassification.from_config(config)
        except (OSError, ValueError) as exc:
            if local:
                raise UserInputError(
                    f"model.backbone {checkpoint!r}: {WEIGHTS_PREFIX}{checkpoint}/ in the bucket "
                    f"is not a loadable save_pretrained folder: {str(exc)[:300]}"
                ) from None
            raise _unreachable(checkpoint, exc) from None
        processor = folder / PROCESSOR_FILE if local else _hub_processor(checkpoint)
        return ImageNetwork(network, *_normalisation(processor))


__all__ = [
    "BUILT_IN",
    "DEFAULT_BACKBONE",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "WEIGHTS_PREFIX",
    "ImageNetwork",
    "build_image_network",
]
