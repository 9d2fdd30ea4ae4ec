"""How an encoded image becomes the pixels an image model's graph takes (dropflow.vocabulary.card,
InputSpec kind "image"): one rule, for the predict function and the container tier, and for
the training job, so that a model sees at serving time the pixels it was trained on.

`image_pixels(data, height, width)` is uint8 [height, width, 3]: the bytes decoded with Pillow
as JPEG, PNG or WebP (the first frame of an animation), turned upright by their EXIF
orientation, converted to RGB (an alpha channel is dropped, a palette or grey image expanded),
then resized directly to width x height with Pillow's bilinear filter (which antialiases when
it shrinks), without a crop: the aspect ratio is not kept. Anything else is `BadImage`, whose
message says what is wrong, worded for whoever sent the image:
- not an image of these formats, or damaged (truncated, corrupt data);
- empty, or an image with no pixels;
- more than MAX_IMAGE_PIXELS pixels: a decompression bomb (a few kilobytes of PNG can declare
  billions of pixels), refused from its header, before anything is decoded.

Pillow is imported on first use: the predict function of a table model never loads it.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from typing import TYPE_CHECKING

from dropflow.errors import DropflowError

if TYPE_CHECKING:
    import numpy as np
    from PIL import Image

# The formats an image model takes, as Pillow names them, and as clients label them.
FORMATS = ("JPEG", "PNG", "WEBP")
MEDIA_TYPES = {"image/jpeg": "JPEG", "image/png": "PNG", "image/webp": "WEBP"}
# The most pixels one image may have (width x height, as its header declares): a 48 MP phone
# photo passes; decoded as RGB it holds 150 MB, within the predict function's memory.
MAX_IMAGE_PIXELS = 50_000_000


class BadImage(DropflowError, ValueError):
    """Bytes that are not an image an image model takes (the message says why)."""


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) of the encoded image `data` as its header declares it, without
    decoding its pixels; BadImage when it is not an image image_pixels would decode (not
    one of FORMATS, no pixels, over MAX_IMAGE_PIXELS)."""
    with _opened(data) as image:
        return image.width, image.height


def image_pixels(data: bytes, height: int, width: int) -> np.ndarray:
    """The uint8 [height, width, 3] RGB pixels of the encoded image `data` (see the module
    docstring for how), or BadImage naming the problem."""
    import numpy as np
    from PIL import Image, ImageOps

    with _opened(data) as image:
        try:
            image.seek(0)
            rgb = ImageOps.exif_transpose(image).convert("RGB")
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            # Pillow's words for truncated or corrupt pixel data.
            raise BadImage(f"the image cannot be decoded ({_brief(exc)})") from None
    if rgb.size != (width, height):
        rgb = rgb.resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8).reshape(height, width, 3)


@contextlib.contextmanager
def _opened(data: bytes) -> Iterator[Image.Image]:
    """The image in `data`, its header read and its size checked, pixels not yet decoded."""
    from PIL import Image, UnidentifiedImageError

    if not data:
        raise BadImage("the image is empty (0 bytes)")
    try:
        # Pillow warns of an image over its own bound (89 MP) and refuses one over twice that;
        # MAX_IMAGE_PIXELS refuses both first, from the header.
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        raise BadImage(
            "not a JPEG, PNG or WebP image (its bytes are no image of these formats)"
        ) from None
    except Image.DecompressionBombError as exc:
        raise BadImage(f"a decompression bomb: {_brief(exc)}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise BadImage(f"the image cannot be decoded ({_brief(exc)})") from None
    with image:
        pixels = image.width * image.height
        if pixels == 0:
            raise BadImage(f"the image has no pixels ({image.width}x{image.height})")
        if pixels > MAX_IMAGE_PIXELS:
            raise BadImage(_too_large(image.width, image.height))
        yield image


def _too_large(width: int, height: int) -> str:
    return (
        f"the image is {width}x{height}, {width * height:,} pixels; the limit is "
        f"{MAX_IMAGE_PIXELS:,} (send it smaller: the model sees it resized anyway)"
    )


def _brief(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."
