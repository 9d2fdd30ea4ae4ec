"""The dataset layout in the store: `datasets/<model>/` holds a model's data and spec.

Every .csv and .parquet object under the prefix is data, and so is every image (IMAGE_SUFFIXES:
an image model's examples, `<label>/<file>` or listed by a CSV manifest); `dropflow.yaml` is
the optional spec.
The data version, a hash of every key and ETag under the prefix, identifies exactly what a
job trained on: the launcher claims it once, and a resumed attempt checks it is unchanged.
How a missing cell is spelled (MISSING_TEXT) is here too: training reads those cells as
missing, and the prediction API accepts the same spellings as null, so that a row copied from
the data file is read the same way in both.
Kept free of heavy imports: the training job reads it too.
"""

from __future__ import annotations

import hashlib

from dropflow.ports import ObjectInfo, ObjectStore
from dropflow.vocabulary.names import check_model_name

DATA_SUFFIXES = (".csv", ".parquet")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
SPEC_FILE = "dropflow.yaml"
# A text cell that means "missing", compared after trimming spaces and in lower case: empty,
# NA, N/A, NaN, null, None in any case.
MISSING_TEXT = frozenset({"", "na", "n/a", "nan", "null", "none"})


def is_missing_text(text: str) -> bool:
    """Whether the text `text` spells a missing value (see MISSING_TEXT)."""
    return text.strip().lower() in MISSING_TEXT


def dataset_prefix(model: str) -> str:
    return f"datasets/{check_model_name(model)}/"


def model_of_dataset_key(key: str) -> str | None:
    """The model a `datasets/<model>/...` key belongs to, or None for any other key."""
    parts = key.split("/")
    if len(parts) < 3 or parts[0] != "datasets" or not parts[-1]:
        return None
    return parts[1]


def data_files(objects: list[ObjectInfo]) -> list[ObjectInfo]:
    return [o for o in objects if o.key.lower().endswith(DATA_SUFFIXES)]


def image_files(objects: list[ObjectInfo]) -> list[ObjectInfo]:
    return [o for o in objects if o.key.lower().endswith(IMAGE_SUFFIXES)]


def trainable(objects: list[ObjectInfo]) -> bool:
    """Whether the objects under a dataset prefix hold anything a job can train on: a table
    or an image."""
    return any(o.key.lower().endswith(DATA_SUFFIXES + IMAGE_SUFFIXES) for o in objects)


def no_data_reason(prefix: str) -> str:
    """What a prefix without a table or an image lacks, for the launcher's no-data outcome."""
    images = ", ".join(IMAGE_SUFFIXES)
    return f"no .csv or .parquet file under {prefix} (nor an image: {images})"


def data_version(objects: list[ObjectInfo]) -> str:
    """A short stable hash of every key and ETag under the dataset prefix (spec included)."""
    digest = hashlib.sha256()
    for obj in sorted(objects, key=lambda o: o.key):
        digest.update(f"{obj.key}\0{obj.etag}\n".encode())
    return digest.hexdigest()[:16]


def models_with_data(store: ObjectStore) -> list[str]:
    """Every valid model name that has at least one object under `datasets/`, sorted."""
    models = set()
    for obj in store.list("datasets/"):
        model = model_of_dataset_key(obj.key)
        if model is not None:
            try:
                models.add(check_model_name(model))
            except ValueError:
                continue
    return sorted(models)
