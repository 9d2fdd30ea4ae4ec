"""The side images are resized to when the spec leaves model.image_size out: the backbones'
training size for a pretrained network, the images' own size for one trained from scratch."""

from __future__ import annotations

import pytest

from dropflow.vocabulary.spec import load_spec
from training.families.image import chosen_image_size, default_image_size


@pytest.mark.parametrize(
    ("sides", "size"),
    [
        ([32] * 5, 32),  # 32 px digits stay 32 px
        ([8, 8, 8], 32),  # never under 32: five halvings leave a pixel
        ([33, 40, 50], 64),  # the median (40) rounded up to a multiple of 32
        ([100, 20, 20, 100, 100], 128),
        ([4000, 3000, 3000], 224),  # photos: at most 224
        ([0, 0, 48, 0, 48], 64),  # 0 (a bad image, not measured) is left out of the median
        ([], 224),  # nothing measured: the backbones' size
    ],
)
def test_from_scratch_the_images_median_longer_side_rounded_up_to_32_within_32_and_224(sides, size):
    assert default_image_size(sides) == size


def test_a_pretrained_backbone_gets_224_whatever_the_images():
    spec = load_spec("model: {family: image}")

    size, reason = chosen_image_size(spec, [32] * 10)

    assert size == 224
    assert "pretrained" in reason


def test_from_scratch_the_images_size_is_chosen_and_the_reason_names_the_median():
    spec = load_spec("model: {family: image, pretrained: false}")

    size, reason = chosen_image_size(spec, [40, 40, 90])

    assert size == 64
    assert reason.startswith("from scratch: the images' median longer side (40 px over 3 images)")


@pytest.mark.parametrize("pretrained", ["true", "false"])
def test_the_spec_s_image_size_wins(pretrained):
    spec = load_spec(f"model: {{family: image, pretrained: {pretrained}, image_size: 96}}")

    assert chosen_image_size(spec, [32] * 10) == (96, "model.image_size in the spec")
