"""dropflow.vocabulary.pixels: how an encoded image becomes an image model's uint8 pixels, the
one rule serving and training share."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from dropflow.vocabulary.pixels import MAX_IMAGE_PIXELS, BadImage, image_pixels, image_size


def encoded(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def test_an_image_of_the_cards_size_keeps_its_pixels_exactly():
    pixels = np.random.default_rng(0).integers(0, 256, size=(5, 7, 3), dtype=np.uint8)

    out = image_pixels(encoded(Image.fromarray(pixels, "RGB")), height=5, width=7)

    assert out.dtype == np.uint8 and out.shape == (5, 7, 3)
    np.testing.assert_array_equal(out, pixels)


def test_the_image_is_resized_directly_without_a_crop():
    # Left half red, right half blue, 40 wide and 10 high: squeezed to 4x4, each half stays a
    # half (a centre crop would have kept only the middle of the picture).
    pixels = np.zeros((10, 40, 3), dtype=np.uint8)
    pixels[:, :20, 0] = 255
    pixels[:, 20:, 2] = 255

    out = image_pixels(encoded(Image.fromarray(pixels, "RGB")), height=4, width=4)

    assert out.shape == (4, 4, 3)
    assert (out[:, :2, 0] > 200).all() and (out[:, :2, 2] < 50).all()
    assert (out[:, 2:, 2] > 200).all() and (out[:, 2:, 0] < 50).all()


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "CMYK"])
def test_every_mode_becomes_three_channels(mode):
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    image = Image.new("RGB", (6, 6), (10, 200, 30)).convert(mode)

    out = image_pixels(encoded(image, fmt), height=3, width=3)

    assert out.shape == (3, 3, 3)


def test_the_exif_orientation_turns_the_image_upright():
    pixels = np.zeros((4, 8, 3), dtype=np.uint8)
    pixels[:, :4] = 255  # left half white, as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise: the white half on top

    out = image_pixels(encoded(Image.fromarray(pixels, "RGB"), exif=exif), height=8, width=4)

    assert (out[:4] == 255).all() and (out[4:] == 0).all()


def test_the_size_is_read_from_the_header_alone():
    side = int(MAX_IMAGE_PIXELS**0.5) + 1
    data = encoded(Image.new("1", (side, side)))

    with pytest.raises(BadImage, match=rf"the image is {side}x{side}, .* pixels; the limit is"):
        image_size(data)
    assert image_size(encoded(Image.new("RGB", (9, 4)))) == (9, 4)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"", "the image is empty (0 bytes)"),
        (b"GIF89a" + b"\0" * 32, "not a JPEG, PNG or WebP image"),
        (b"%PDF-1.7 not an image", "not a JPEG, PNG or WebP image"),
        (encoded(Image.new("RGB", (30, 30), (1, 2, 3)), "JPEG")[:120], "cannot be decoded"),
    ],
)
def test_what_is_no_usable_image_is_a_bad_image_saying_why(data, needle):
    with pytest.raises(BadImage) as raised:
        image_pixels(data, height=4, width=4)

    assert needle in str(raised.value)
