"""The quality benchmark's datasets: tables that ship inside Python packages, and generated ones.

Nothing is downloaded. Each dataset is a pandas DataFrame as a data owner would drop it: one
column per feature (numbers as floats with NaN where missing, categories as text with None
where missing) and the target last, holding class labels as text for classification or numbers
for regression. `bench/quality.py` writes it as CSV for dropflow and hands the same frame to the
boosting baselines.

- scikit-learn's bundled sets (`sklearn.datasets.load_*`): iris, wine, breast cancer, digits,
  diabetes (raw units, not the scaled copy).
- palmerpenguins' CSV (the Palmer Station penguins, Gorman, Williams and Fraser 2014): species
  from measurements, island and sex; some cells missing.
- statsmodels' `fair` (Fair 1978, affairs survey, 6,366 rows): whether a respondent had an
  affair, with both occupations as named categories; statsmodels' `randhie` (the RAND Health
  Insurance Experiment, 20,190 rows): outpatient visits, a noisy count regression.
- Generated (`synthetic`): a smooth and a thresholded signal over numbers, three categorical
  columns of 4, 25 and 200 levels, four pure-noise columns, 5 % of the cells in five columns
  missing at random; classification (labels drawn from the signal's probability, so even the
  true model errs: it would score about 0.8 accuracy) and regression (Gaussian noise: R^2
  about 0.9 for the true model), at 10,000 and 100,000 rows.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

Task = Literal["classification", "regression"]

# The seed of the generated sets' "world" (level effects), fixed so that the 10k and 100k sets
# sample the same relationship; each set draws its rows with a seed of its own.
WORLD_SEED = 13
MISSING_SHARE = 0.05
CATEGORY_LEVELS = {"color": 4, "region": 25, "product": 200}


@dataclass(frozen=True)
class Dataset:
    """One benchmark table: `frame` holds the features and, last, the `target` column."""

    name: str
    task: Task
    target: str
    frame: pd.DataFrame
    source: str

    @property
    def features(self) -> list[str]:
        return [c for c in self.frame.columns if c != self.target]

    @property
    def categorical(self) -> list[str]:
        """The feature columns holding text (categories), in column order."""
        return [c for c in self.features if not pd.api.types.is_numeric_dtype(self.frame[c])]


def _labelled(frame: pd.DataFrame, names: list[str] | None = None) -> pd.DataFrame:
    """scikit-learn's frame with its integer `target` turned into text labels, kept last."""
    target = frame.pop("target")
    frame["target"] = [str(names[i]) if names is not None else str(i) for i in target]
    return frame


def iris() -> Dataset:
    from sklearn.datasets import load_iris

    bunch = load_iris(as_frame=True)
    frame = _labelled(bunch.frame, list(bunch.target_names))
    return Dataset("iris", "classification", "target", frame, "scikit-learn load_iris")


def wine() -> Dataset:
    from sklearn.datasets import load_wine

    bunch = load_wine(as_frame=True)
    frame = _labelled(bunch.frame, list(bunch.target_names))
    return Dataset("wine", "classification", "target", frame, "scikit-learn load_wine")


def breast_cancer() -> Dataset:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer(as_frame=True)
    frame = _labelled(bunch.frame, list(bunch.target_names))
    return Dataset(
        "breast-cancer", "classification", "target", frame, "scikit-learn load_breast_cancer"
    )


def digits() -> Dataset:
    from sklearn.datasets import load_digits

    frame = _labelled(load_digits(as_frame=True).frame)
    return Dataset("digits", "classification", "target", frame, "scikit-learn load_digits")


def diabetes() -> Dataset:
    from sklearn.datasets import load_diabetes

    frame = load_diabetes(as_frame=True, scaled=False).frame
    return Dataset("diabetes", "regression", "target", frame, "scikit-learn load_diabetes")


def penguins() -> Dataset:
    from palmerpenguins import load_penguins

    frame = load_penguins()
    frame = frame[[c for c in frame.columns if c != "species"] + ["species"]]
    return Dataset("penguins", "classification", "species", frame, "palmerpenguins")


# statsmodels' codebook for the `fair` survey's occupation columns (1-6).
_OCCUPATIONS = {
    1: "student",
    2: "farming or unskilled",
    3: "white-collar",
    4: "teacher, nurse or technician",
    5: "managerial",
    6: "professional",
}


def affairs() -> Dataset:
    from statsmodels.datasets import fair

    frame = fair.load_pandas().data.copy()
    for column in ("occupation", "occupation_husb"):
        frame[column] = [_OCCUPATIONS[int(code)] for code in frame[column]]
    frame["had_affair"] = np.where(frame.pop("affairs") > 0, "yes", "no")
    return Dataset("affairs", "classification", "had_affair", frame, "statsmodels fair")


def rand_hie() -> Dataset:
    from statsmodels.datasets import randhie

    frame = randhie.load_pandas().data.copy()
    frame["mdvis"] = frame.pop("mdvis").astype(float)
    return Dataset("rand-hie", "regression", "mdvis", frame, "statsmodels randhie")


def synthetic(task: Task, rows: int, seed: int) -> pd.DataFrame:
    """A generated table (see the module docstring); the same relationship for every `seed`."""
    world = np.random.default_rng(WORLD_SEED)
    effects = {name: world.normal(size=levels) for name, levels in CATEGORY_LEVELS.items()}
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(rows, 6))
    income = rng.lognormal(mean=0.0, sigma=0.8, size=rows)
    share = rng.uniform(size=rows)
    codes = {name: rng.integers(0, levels, size=rows) for name, levels in CATEGORY_LEVELS.items()}
    signal = (
        1.0 * x[:, 0]
        + 0.8 * np.sin(2.0 * x[:, 1])
        + 0.6 * x[:, 2] * x[:, 3]
        + 0.7 * (x[:, 4] > 0.5)
        + 0.3 * x[:, 5] ** 2
        + 0.5 * np.log(income)
        - 0.6 * (share > 0.7)
        + 0.8 * effects["color"][codes["color"]]
        + 0.5 * effects["region"][codes["region"]]
        + 0.4 * effects["product"][codes["product"]]
    )
    frame = pd.DataFrame({f"x{i}": x[:, i] for i in range(6)})
    frame["income"] = income
    frame["share"] = share
    for name, levels in CATEGORY_LEVELS.items():
        width = len(str(levels - 1))
        frame[name] = [f"{name[0]}{code:0{width}d}" for code in codes[name]]
    for i in range(4):
        frame[f"noise{i}"] = rng.normal(size=rows)
    for column in ("x0", "x2", "income", "color", "region"):
        frame[column] = frame[column].mask(rng.uniform(size=rows) < MISSING_SHARE)
    centred = signal - signal.mean()
    if task == "classification":
        chance = 1.0 / (1.0 + np.exp(-2.5 * centred / centred.std()))
        frame["target"] = np.where(rng.uniform(size=rows) < chance, "yes", "no")
    else:
        frame["target"] = centred + rng.normal(scale=0.6, size=rows)
    return frame


def _generated(task: Task, rows: int, seed: int) -> Callable[[], Dataset]:
    kind = "clf" if task == "classification" else "reg"
    name = f"synth-{kind}-{rows // 1000}k"

    def load() -> Dataset:
        frame = synthetic(task, rows, seed)
        return Dataset(name, task, "target", frame, f"generated (seed {seed})")

    load.__name__ = name
    return load


# Every dataset, in the order the table lists them; each loads only when asked for.
SUITE: dict[str, Callable[[], Dataset]] = {
    "iris": iris,
    "wine": wine,
    "breast-cancer": breast_cancer,
    "digits": digits,
    "diabetes": diabetes,
    "penguins": penguins,
    "affairs": affairs,
    "rand-hie": rand_hie,
    "synth-clf-10k": _generated("classification", 10_000, 1),
    "synth-reg-10k": _generated("regression", 10_000, 2),
    "synth-clf-100k": _generated("classification", 100_000, 3),
    "synth-reg-100k": _generated("regression", 100_000, 4),
}
# `--quick`: the three small sets the issue holds to 0.95 accuracy, in a few minutes.
QUICK = ("iris", "wine", "breast-cancer")


def load(name: str) -> Dataset:
    """The dataset called `name`; KeyError naming the known ones for any other name."""
    try:
        loader = SUITE[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(SUITE)}") from None
    return loader()
