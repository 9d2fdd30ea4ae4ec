"""Image datasets: labels from folders or a manifest, the errors a data owner can act on, the
resize every stage shares, and the training augmentation."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dropflow.errors import UserInputError
from dropflow.vocabulary.pixels import image_pixels
from dropflow.vocabulary.spec import load_spec
from tests.unit.fakes import MemoryStore
from training.families.image import Augment
from training.images import ImageRows, check_images, decode, list_images
from training.reading import ReadMeter

PREFIX = "datasets/pets/"


def png(colour: tuple[int, int, int] = (200, 10, 10), size: tuple[int, int] = (12, 12)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="PNG")
    return out.getvalue()


def store_with(*keys: str) -> MemoryStore:
    store = MemoryStore()
    for key in keys:
        store.put(PREFIX + key, png())
    return store


def test_folders_are_labels_and_keys_come_in_order():
    store = store_with("dog/b.png", "cat/z.jpg", "cat/a.PNG", "dog/sub/c.webp")
    store.put(PREFIX + "dropflow.yaml", b"family: image\n")

    listing = list_images(store, "pets", None)

    assert listing.keys == [
        PREFIX + k for k in ("cat/a.PNG", "cat/z.jpg", "dog/b.png", "dog/sub/c.webp")
    ]
    assert listing.labels == ["cat", "cat", "dog", "dog"]


def test_an_image_outside_a_label_folder_is_named():
    store = store_with("cat/a.png", "dog/b.png", "stray.png")

    with pytest.raises(UserInputError, match=r"^datasets/pets/stray.png: an image directly under"):
        list_images(store, "pets", None)


def test_a_label_folder_without_images_is_named():
    store = store_with("cat/a.png", "dog/b.png")
    store.put(PREFIX + "bird/notes.txt", b"no pictures yet")

    with pytest.raises(UserInputError, match=r"^datasets/pets/bird/: no image \(.jpg"):
        list_images(store, "pets", None)


def test_a_single_label_is_not_a_classifier():
    store = store_with("cat/a.png", "cat/b.png")

    with pytest.raises(UserInputError, match=r"^only one label \('cat'\) under datasets/pets/"):
        list_images(store, "pets", None)


def test_a_manifest_lists_images_and_their_labels():
    store = store_with("img/1.png", "img/2.png", "img/3.png")
    store.put(PREFIX + "labels.csv", b"path,kind\nimg/2.png,dog\n./img/1.png,cat\nimg/3.png,dog\n")
    spec = load_spec("family: image\ndata: {manifest: labels.csv, image: path, label: kind}")

    listing = list_images(store, "pets", spec.data)

    assert listing.keys == [PREFIX + "img/1.png", PREFIX + "img/2.png", PREFIX + "img/3.png"]
    assert listing.labels == ["cat", "dog", "dog"]
    assert listing.sources == [PREFIX + "labels.csv"]


@pytest.mark.parametrize(
    ("csv", "message"),
    [
        (b"file,kind\n", r"^datasets/pets/labels.csv: no column 'path' \(columns: file, kind\)"),
        (
            b"path,kind\nimg/9.png,cat\n",
            r"^datasets/pets/labels.csv line 2: no image datasets/pets/img/9.png",
        ),
        (
            b"path,kind\nimg/1.png,cat\nimg/1.png,\n",
            r"^datasets/pets/labels.csv line 3: empty kind",
        ),
        (
            b"path,kind\nlabels.csv,cat\n",
            r"^datasets/pets/labels.csv line 2: 'labels.csv' is not an image",
        ),
    ],
)
def test_a_manifest_row_that_names_no_image_is_named_by_its_line(csv, message):
    store = store_with("img/1.png")
    store.put(PREFIX + "labels.csv", csv)
    spec = load_spec("family: image\ndata: {manifest: labels.csv, image: path, label: kind}")

    with pytest.raises(UserInputError, match=message):
        list_images(store, "pets", spec.data)


def test_training_reads_pixels_by_the_rule_serving_applies():
    # 64 x 32: black left half, white right half. Resized directly to 16 x 16 (no crop), the
    # left columns stay black and the right ones white, as serving makes them.
    pixels = np.zeros((32, 64, 3), dtype=np.uint8)
    pixels[:, 32:] = 255
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")

    decoded = decode(out.getvalue(), 16, "k.png")

    assert decoded.shape == (16, 16, 3) and decoded.dtype == np.uint8
    assert decoded[:, :7].max() == 0 and decoded[:, 9:].min() == 255
    assert np.array_equal(decoded, image_pixels(out.getvalue(), 16, 16))


def test_grey_and_transparent_images_become_rgb():
    out = io.BytesIO()
    Image.new("LA", (20, 10), (128, 255)).save(out, format="PNG")

    assert decode(out.getvalue(), 8, "k.png").shape == (8, 8, 3)


def test_every_bad_image_is_found_with_its_problem():
    store = store_with("cat/a.png", "dog/b.png")
    store.put(PREFIX + "dog/c.png", b"\x89PNG\r\n\x1a\n truncated")
    keys = [PREFIX + k for k in ("cat/a.png", "dog/b.png", "dog/c.png")]

    meter = ReadMeter()
    problems = check_images(store, keys, workers=0, meter=meter).problems

    assert list(problems) == [2]
    assert (meter.rows, meter.progress().fraction) == (3, 1.0)
    assert problems[2].startswith("datasets/pets/dog/c.png: the image cannot be decoded")


def test_a_truncated_image_whose_header_is_whole_is_found():
    # The header declares 64 x 64 (image_size reads it) but the pixel data is cut short:
    # only decoding every pixel finds it.
    whole = png(size=(64, 64))
    store = store_with("cat/a.png", "dog/b.png")
    store.put(PREFIX + "dog/c.png", whole[: len(whole) // 2])
    keys = [PREFIX + k for k in ("cat/a.png", "dog/b.png", "dog/c.png")]

    checked = check_images(store, keys, workers=0)

    assert list(checked.problems) == [2]
    assert checked.sides == [12, 12, 0]


def test_the_check_measures_each_image_s_longer_side():
    store = MemoryStore()
    keys = [PREFIX + "cat/wide.png", PREFIX + "dog/tall.png"]
    store.put(keys[0], png(size=(40, 10)))
    store.put(keys[1], png(size=(9, 70)))

    assert check_images(store, keys, workers=0).sides == [40, 70]


def test_augmentation_keeps_the_shape_changes_pixels_and_repeats_under_a_seed():
    torch.manual_seed(0)
    batch = torch.randint(0, 256, (4, 16, 16, 3), dtype=torch.uint8)
    augment = Augment(16)

    torch.manual_seed(1)
    first = augment(batch)
    torch.manual_seed(1)
    again = augment(batch)

    assert first.shape == batch.shape and first.dtype == torch.uint8
    assert torch.equal(first, again)
    assert not torch.equal(first, batch)


def test_the_readme_image_spec_is_a_valid_image_spec():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme[readme.index("**Images.**") :]
    block = section[section.index("```yaml") + len("```yaml") : section.index("```\n", 10)]

    spec = load_spec(block)

    assert spec.family == "image" and spec.data is not None
    assert (spec.model.backbone, spec.model.image_size) == ("resnet-18", 224)


def test_rows_taken_by_index_or_mask_are_read_lazily_and_decoded_on_request():
    store = store_with("cat/a.png", "dog/b.png", "dog/c.png")
    rows = ImageRows(store, [PREFIX + k for k in ("cat/a.png", "dog/b.png", "dog/c.png")], 4)

    by_index = rows[np.array([2, 0])]
    by_mask = rows[np.array([False, True, True])]

    assert isinstance(by_index, ImageRows) and by_index.keys == [
        PREFIX + "dog/c.png",
        PREFIX + "cat/a.png",
    ]
    assert by_mask.keys == [PREFIX + "dog/b.png", PREFIX + "dog/c.png"]
    pixels = np.asarray(by_mask)
    assert pixels.shape == (2, 4, 4, 3) and pixels.dtype == np.uint8
    assert (pixels == np.array([200, 10, 10], dtype=np.uint8)).all()
