"""`dropflow sample <name>`: a small real dataset as CSV, to try a data drop with no download.

The tables are the ones scikit-learn ships inside its wheel (so they work offline), with
column names a spec can use as they are (`sepal length (cm)` becomes `sepal_length`) and the
classes as their names (`setosa`, not `0`). The label column is `target` unless asked
otherwise, the name training picks without a spec.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass
from typing import TextIO

from dropflow.errors import DropflowError

DEFAULT_TARGET = "target"


@dataclass(frozen=True)
class Sample:
    loader: str  # the function of sklearn.datasets
    about: str  # one line for `dropflow sample --help`


SAMPLES = {
    "iris": Sample("load_iris", "150 iris flowers, 4 measurements, 3 species (classification)"),
    "wine": Sample("load_wine", "178 wines, 13 analyses, 3 cultivars (classification)"),
    "breast-cancer": Sample(
        "load_breast_cancer",
        "569 tumours, 30 measurements, malignant or benign (classification)",
    ),
    "diabetes": Sample(
        "load_diabetes", "442 patients, 10 measurements, disease progression (regression)"
    ),
}


class UnknownSample(DropflowError, LookupError):
    """A sample name that is not in SAMPLES (the message lists those that are)."""


def column_name(feature: str) -> str:
    """A feature's name as a CSV header a spec can quote: lower case, units in parentheses
    dropped, every run of other characters one underscore ('sepal length (cm)' ->
    'sepal_length', 'od280/od315_of_diluted_wines' -> 'od280_od315_of_diluted_wines')."""
    without_units = re.sub(r"\([^)]*\)", "", str(feature))
    return re.sub(r"[^a-z0-9]+", "_", without_units.lower()).strip("_")


def write_sample(name: str, out: TextIO, target: str = DEFAULT_TARGET) -> int:
    """Write the sample `name` to `out` as CSV: a header, then one row per example, the label
    last in column `target`. Returns the number of rows written. Raises UnknownSample for a
    name not in SAMPLES, DropflowError when scikit-learn is not installed or `target` is also
    a feature's name."""
    sample = SAMPLES.get(name)
    if sample is None:
        raise UnknownSample(f"no sample named {name!r}; the samples are: {', '.join(SAMPLES)}")
    try:
        from sklearn import datasets
    except ImportError:
        raise DropflowError(
            "dropflow sample reads the datasets shipped with scikit-learn, which is not "
            "installed: `make venv` installs it (or pip install scikit-learn)"
        ) from None
    bunch = getattr(datasets, sample.loader)()
    features = [column_name(f) for f in bunch.feature_names]
    if target in features:
        raise DropflowError(
            f"--target {target!r} is also a feature of {name} ({', '.join(features)}): "
            "choose another name for the label column"
        )
    classes = getattr(bunch, "target_names", None)
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*features, target])
    for values, label in zip(bunch.data, bunch.target, strict=True):
        answer = str(classes[label]) if classes is not None else repr(float(label))
        writer.writerow([*(repr(float(v)) for v in values), answer])
    return len(bunch.target)
