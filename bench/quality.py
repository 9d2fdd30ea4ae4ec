"""Benchmark: dropflow's default model against gradient boosting, on packaged datasets (issue 13).

`make bench-quality` (or `python -m bench.quality [--quick]`). For each dataset of
bench/quality_datasets.py:

1. dropflow, as a data owner gets it: the table is written as CSV under `datasets/<name>/` of a
   fresh local bucket (the DirectoryStore, a SQLite registry), a job is recorded as the
   launcher records one, and the real training job runs it (training.job.run_job: read, split,
   train, export the ONNX graph, check parity, publish); promotion then approves the version.
2. The holdout: the job's own split (training.examples.holdout_mask, with the spec's
   holdout_fraction and seed) over the rows as written, checked row for row against the
   reference.npz the job published (its holdout inputs and targets), so the harness stops,
   saying so, the day the job splits otherwise. Dropping only the training rows would not do:
   the job always holds out part of what it reads (at least 5 %), so dropflow would train on
   fewer rows than the baselines.
3. Those rows go through the predict path as a client sends them (raw numbers, categories as
   their text, null where missing): dropflow.serving.service.PredictionService with the card,
   its input checks and the exported graph in onnxruntime; the answers are scored.
4. scikit-learn's HistGradientBoosting and LightGBM, with default settings (random_state=0 for
   repeatable runs; LightGBM's log silenced), are fitted on the other rows, exactly the job's
   training rows, text columns as pandas categories (both take them natively, an unseen
   category as missing), and scored on the same holdout rows.

Metrics are the card's own definitions (dropflow.vocabulary.scoring): accuracy and log loss
for classification, R^2 and RMSE for regression; accuracy and R^2 are the primary metric the
verdict compares. Training time: dropflow's training loop (the card's timings.train: one CPU
thread, as the job trains on a CPU) and its whole job (reading to publishing); the baselines'
fit (their default threads: every core).

Targets (issue 13), against the better of HistGradientBoosting and LightGBM on each dataset:
dropflow's primary metric at least 0.01 higher on average, on no dataset more than 0.01 below,
log loss at or below the better boosting's on most classification sets; iris, wine and breast
cancer accuracy at least 0.95. A dataset dropflow could not score (failed job, a refused
request, over the time budget) misses the targets. Exit status: 0 when every target is met,
1 when one is missed, 2 when the benchmark could not run (bad usage, or a holdout it could not
reproduce). The table and the verdict are printed and written
as markdown (--markdown) to paste into BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from bench.quality_datasets import QUICK, SUITE, Dataset, Task, load
from dropflow.ports import ObjectStore, Registry
from dropflow.promotion.gate import promote
from dropflow.records.jobs import Attempt, ExitCode, Job, JobState, JobStore
from dropflow.serving.service import MAX_ROWS, ModelCache, PredictionService
from dropflow.vocabulary import scoring
from dropflow.vocabulary.card import PROBABILITIES, Card, artifact_key, read_card
from dropflow.vocabulary.datasets import SPEC_FILE, data_version, dataset_prefix
from dropflow.vocabulary.names import new_job_id
from dropflow.vocabulary.spec import read_spec
from dropflow.vocabulary.target import TARGET_NAMES
from dropflow.wiring import open_registry, open_store
from training.examples import holdout_mask
from training.job import run_job

PRIMARY: dict[Task, str] = {"classification": "accuracy", "regression": "r2"}
SECONDARY: dict[Task, str] = {"classification": "log_loss", "regression": "rmse"}
# The targets.
MARGIN = 0.01
SMALL_SETS = ("iris", "wine", "breast-cancer")
SMALL_ACCURACY = 0.95
DEFAULT_BUDGET_SECONDS = 900.0
DEFAULT_MARKDOWN = Path("build/bench-quality.md")
BASELINES = ("hgb", "lightgbm")
_SHOWN = {"dropflow": "dropflow", "hgb": "HGB", "lightgbm": "LightGBM"}
_EPS = 1e-9  # float slack in the target comparisons
# How far the served holdout metric may be from the card's (torch's) before it is noted.
CARD_AGREEMENT = 1e-4


@dataclass(frozen=True)
class Scores:
    """One model's holdout scores and how long it took to fit."""

    primary: float  # accuracy or R^2
    secondary: float  # log loss or RMSE
    train_seconds: float


@dataclass
class Outcome:
    """One dataset's row of the table."""

    dataset: str
    task: Task
    train_rows: int = 0
    holdout_rows: int = 0
    features: int = 0
    categorical: int = 0
    scores: dict[str, Scores] = field(default_factory=dict)  # dropflow, hgb, lightgbm
    problem: str | None = None  # why dropflow has no scores
    notes: list[str] = field(default_factory=list)  # what a reader should know beside them
    job_seconds: float | None = None  # drop to published
    seconds: dict[str, float] = field(default_factory=dict)  # per part, for the timing line

    @property
    def best_baseline(self) -> Scores | None:
        """The baseline with the higher primary metric (HGB on a tie)."""
        present = [self.scores[name] for name in BASELINES if name in self.scores]
        return max(present, key=lambda s: s.primary) if present else None

    @property
    def delta(self) -> float | None:
        """dropflow's primary metric minus the better baseline's; None without both."""
        best, ours = self.best_baseline, self.scores.get("dropflow")
        return None if best is None or ours is None else ours.primary - best.primary

    @property
    def lowest_baseline_loss(self) -> float | None:
        """The lower of the baselines' log loss (or RMSE); None without either."""
        losses = [self.scores[name].secondary for name in BASELINES if name in self.scores]
        return min(losses) if losses else None


@dataclass(frozen=True)
class Check:
    """One target of the verdict."""

    target: str
    passed: bool
    detail: str


class HarnessError(RuntimeError):
    """The harness itself cannot go on (a dataset or split it does not understand)."""


# --------------------------------------------------------------------------- metrics
def score(task: Task, y_true: np.ndarray, outputs: np.ndarray) -> tuple[float, float]:
    """(primary, secondary) of `outputs` (probabilities [rows, classes] or predictions [rows])."""
    return (
        scoring.score(task, PRIMARY[task], y_true, outputs),
        scoring.score(task, SECONDARY[task], y_true, outputs),
    )


def targets_of(dataset: Dataset, card: Card) -> np.ndarray:
    """The target as the job encodes it: class ids in the card's class order, or values."""
    column = dataset.frame[dataset.target]
    if column.isna().any():
        raise HarnessError(f"{dataset.name}: the target has missing cells; the job drops them")
    if card.task == "regression":
        return column.to_numpy(dtype=np.float64)
    index = {str(label): i for i, label in enumerate(card.classes or [])}
    unknown = sorted({str(v) for v in column} - set(index))
    if unknown:
        raise HarnessError(f"{dataset.name}: labels {unknown} are not among the card's classes")
    return np.array([index[str(v)] for v in column], dtype=np.int64)


# --------------------------------------------------------------------------- dropflow
@dataclass(frozen=True)
class Published:
    card: Card
    job_seconds: float
    promote_seconds: float


def drop(store: ObjectStore, dataset: Dataset, spec: str | None = None) -> None:
    """Write `dataset` as the CSV a data owner drops (and `spec` as its dropflow.yaml). Where
    the label's column is not named like a target (penguins' species, RAND's visits) and
    `spec` names none, the dropflow.yaml says `target: <column>`, the one line a data owner
    adds for such a table (the job takes no column by guessing)."""
    prefix = dataset_prefix(dataset.name)
    named = spec is not None and "target" in (yaml.safe_load(spec) or {})
    if not named and dataset.target.lower() not in TARGET_NAMES:
        spec = f"target: {json.dumps(dataset.target)}\n" + (spec or "")
    if spec is not None:
        store.put(prefix + SPEC_FILE, spec.encode())
    store.put(prefix + "data.csv", dataset.frame.to_csv(index=False).encode())


def launched(jobs: JobStore, store: ObjectStore, model: str) -> str:
    """Record a job for the data under the model's prefix, its first attempt on an instance,
    as the launcher leaves it for the training process; its id."""
    job_id = new_job_id(model)
    jobs.create(
        Job(
            job_id=job_id,
            model=model,
            data_version=data_version(store.list(dataset_prefix(model))),
            state=JobState.LAUNCHING,
            attempts=[Attempt(number=1, instance_id="bench-local", lifecycle="on-demand")],
        )
    )
    return job_id


def train_dropflow(
    store: ObjectStore,
    registry: Registry,
    model: str,
    *,
    budget_seconds: float,
    clock: Callable[[], float] = time.monotonic,
) -> Published | str:
    """Run the real job on the dropped data, then promotion; the published card, or why not.

    Past `budget_seconds` the job is asked to stop as a spot notice asks it (it keeps its
    checkpoint and publishes nothing), and the answer says so.
    """
    jobs = JobStore(registry)
    job_id = launched(jobs, store, model)
    started = clock()
    deadline = started + budget_seconds
    code = run_job(job_id, 1, store, registry, stop=lambda: clock() > deadline)
    job_seconds = clock() - started
    job = jobs.get(job_id)
    if job.state != JobState.PUBLISHED or job.version is None:
        if code == ExitCode.INTERRUPTED and clock() > deadline:
            return f"over the {budget_seconds:.0f} s budget (stopped after {job_seconds:.0f} s)"
        return f"job {job.state.value} (exit {int(code)}): {job.reason or 'no reason recorded'}"
    promoted_at = clock()
    result = promote(model, job.version, store, registry)
    if result.decision != "approved":
        return f"promotion {result.decision}: {result.reason}"
    return Published(read_card(store, model, job.version), job_seconds, clock() - promoted_at)


def check_holdout(store: ObjectStore, card: Card, dataset: Dataset, held: np.ndarray) -> None:
    """Raise HarnessError unless the job's reference.npz holds exactly the rows `held` marks:
    the same targets and the same numbers in every numeric feature column, in order."""
    key = artifact_key(card.model, card.version, card.files.get("reference", "reference.npz"))
    with np.load(io.BytesIO(store.get(key))) as reference:
        inputs = reference["input"]
        target = reference["target"] if "target" in reference.files else None
    expected_target = targets_of(dataset, card)[held]
    problem = None
    if len(inputs) != int(held.sum()):
        problem = f"{len(inputs)} holdout rows, the harness's split has {int(held.sum())}"
    elif target is not None and not np.array_equal(target, expected_target):
        problem = "its holdout targets differ"
    else:
        names = [f.name for f in card.features]
        for j, feature in enumerate(card.features):
            if feature.dtype != "number":
                continue
            ours = dataset.frame[names[j]].to_numpy(dtype=np.float64)[held].astype(np.float32)
            if not np.array_equal(inputs[:, j], ours, equal_nan=True):
                problem = f"its holdout column {feature.name!r} differs"
                break
    if problem is not None:
        raise HarnessError(
            f"{dataset.name}: the job's holdout is not the harness's ({problem}): the job's "
            "split (training.examples) changed; make bench/quality.py reproduce it again"
        )


def client_rows(dataset: Dataset, card: Card, held: np.ndarray) -> list[list[object]]:
    """The holdout rows as a client sends them: values in the card's feature order, plain
    numbers and text, None where a cell is missing."""
    names = [f.name for f in card.features]
    frame = dataset.frame.loc[held, names].astype(object)
    return frame.where(frame.notna(), None).to_numpy().tolist()


def serve(service: PredictionService, card: Card, rows: list[list[object]]) -> np.ndarray:
    """The served answers for `rows`, through the predict path in requests of at most
    MAX_ROWS rows: probabilities [rows, classes] in the card's class order, or predictions."""
    parts = []
    for start in range(0, len(rows), MAX_ROWS):
        answer = service.predict(card.model, rows[start : start + MAX_ROWS], card.version)
        if answer["version"] != card.version:
            raise HarnessError(f"served {answer['version']}, not {card.version}")
        key = PROBABILITIES if card.task == "classification" else "predictions"
        parts.append(np.asarray(answer[key], dtype=np.float64))
    return np.concatenate(parts)


# --------------------------------------------------------------------------- baselines
def boosting_inputs(dataset: Dataset, held: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(training, holdout) features for the baselines: numbers as they are, text columns as
    pandas categories of the values the training rows hold (others become missing)."""
    x = dataset.frame[dataset.features].copy()
    for column in dataset.categorical:
        known = sorted(x.loc[~held, column].dropna().unique())
        values = x[column].where(x[column].isin(known))
        x[column] = pd.Categorical(values, categories=known)
    return x.loc[~held], x.loc[held]


def fit_baseline(
    name: str,
    task: Task,
    x_train: pd.DataFrame,
    y_train: np.ndarray,
    x_holdout: pd.DataFrame,
    n_classes: int,
) -> tuple[np.ndarray, float]:
    """Fit baseline `name` (hgb or lightgbm) with default settings; (holdout outputs, seconds).

    Outputs are probabilities [rows, n_classes] (columns by class id) or predictions."""
    classify = task == "classification"
    if name == "hgb":
        from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor

        # from_dtype (the default since scikit-learn 1.6): pandas categories are categorical.
        model = (HistGradientBoostingClassifier if classify else HistGradientBoostingRegressor)(
            categorical_features="from_dtype", random_state=0
        )
    elif name == "lightgbm":
        import lightgbm

        model = (lightgbm.LGBMClassifier if classify else lightgbm.LGBMRegressor)(
            random_state=0, verbosity=-1
        )
    else:
        raise ValueError(f"unknown baseline {name!r}; known: {', '.join(BASELINES)}")
    started = time.perf_counter()
    model.fit(x_train, y_train)
    seconds = time.perf_counter() - started
    if not classify:
        return np.asarray(model.predict(x_holdout), dtype=np.float64), seconds
    probabilities = np.zeros((len(x_holdout), n_classes))
    probabilities[:, np.asarray(model.classes_, dtype=int)] = model.predict_proba(x_holdout)
    return probabilities, seconds


# --------------------------------------------------------------------------- one dataset
def benchmark(
    dataset: Dataset,
    store: ObjectStore,
    registry: Registry,
    service: PredictionService,
    *,
    spec: str | None = None,
    budget_seconds: float = DEFAULT_BUDGET_SECONDS,
) -> Outcome:
    """dropflow, HistGradientBoosting and LightGBM on `dataset`, on the job's holdout rows."""
    outcome = Outcome(dataset.name, dataset.task)
    outcome.features, outcome.categorical = len(dataset.features), len(dataset.categorical)
    drop(store, dataset, spec)
    published = train_dropflow(store, registry, dataset.name, budget_seconds=budget_seconds)
    if isinstance(published, str):
        outcome.problem = published
        return outcome
    card = published.card
    if card.task != dataset.task:
        raise HarnessError(f"{dataset.name}: the job read a {card.task} task, not {dataset.task}")
    outcome.job_seconds = published.job_seconds
    outcome.seconds.update(job=published.job_seconds, promote=published.promote_seconds)

    training = read_spec(store, dataset.name).training
    y = targets_of(dataset, card)
    n_classes = len(card.classes or [])
    held = holdout_mask(card.task, y, n_classes, training.holdout_fraction, training.seed)
    check_holdout(store, card, dataset, held)
    outcome.train_rows, outcome.holdout_rows = int((~held).sum()), int(held.sum())

    started = time.perf_counter()
    try:
        outputs = serve(service, card, client_rows(dataset, card, held))
    except Exception as exc:  # a 4xx the service raised: dropflow could not be scored
        outcome.problem = f"predict refused the holdout: {type(exc).__name__}: {exc}"[:300]
    else:
        primary, secondary = score(card.task, y[held], outputs)
        trained = float(card.timings.get("train", float("nan")))
        outcome.scores["dropflow"] = Scores(primary, secondary, trained)
        # The job scored the same rows with torch: the served graph must agree (parity).
        carded = card.metrics.holdout.get(PRIMARY[card.task])
        if carded is not None and abs(carded - primary) > CARD_AGREEMENT:
            outcome.notes.append(
                f"served {PRIMARY[card.task]} {primary:.4f}, the card says {carded:.4f}"
            )
    outcome.seconds["serve"] = time.perf_counter() - started

    x_train, x_holdout = boosting_inputs(dataset, held)
    for name in BASELINES:
        outputs, seconds = fit_baseline(name, card.task, x_train, y[~held], x_holdout, n_classes)
        primary, secondary = score(card.task, y[held], outputs)
        outcome.scores[name] = Scores(primary, secondary, seconds)
        outcome.seconds[name] = seconds
    return outcome


# --------------------------------------------------------------------------- verdict
def verdict(outcomes: Sequence[Outcome]) -> list[Check]:
    """The issue's targets over `outcomes` (see the module docstring); one Check each."""
    checks = []
    failed = [o.dataset for o in outcomes if o.delta is None]
    deltas = [o.delta for o in outcomes if o.delta is not None]
    no_score = f"; no dropflow score on {', '.join(failed)}" if failed else ""
    mean = float(np.mean(deltas)) if deltas else float("nan")
    checks.append(
        Check(
            f"primary metric on average at least {MARGIN} above the better boosting",
            not failed and bool(deltas) and mean >= MARGIN - _EPS,
            f"mean difference {mean:+.4f} over {len(deltas)} datasets{no_score}",
        )
    )
    worst = min(outcomes, key=lambda o: -np.inf if o.delta is None else o.delta, default=None)
    below = [o.dataset for o in outcomes if o.delta is not None and o.delta < -MARGIN - _EPS]
    detail = (
        f"worst {worst.dataset} {worst.delta:+.4f}"
        if worst is not None and worst.delta is not None
        else "no datasets"
    )
    if below:
        detail += f"; more than {MARGIN} below on {', '.join(below)}"
    checks.append(
        Check(
            f"no dataset more than {MARGIN} below the better boosting",
            not failed and not below and bool(outcomes),
            detail + no_score,
        )
    )
    classification = [o for o in outcomes if o.task == "classification"]
    if classification:
        at_or_below = [
            o.dataset
            for o in classification
            if "dropflow" in o.scores
            and o.lowest_baseline_loss is not None
            and o.scores["dropflow"].secondary <= o.lowest_baseline_loss + _EPS
        ]
        checks.append(
            Check(
                "log loss at or below the better boosting's on most classification sets",
                2 * len(at_or_below) > len(classification),
                f"{len(at_or_below)} of {len(classification)}"
                + (f" ({', '.join(at_or_below)})" if at_or_below else ""),
            )
        )
    small = [o for o in outcomes if o.dataset in SMALL_SETS]
    if small:
        shown = [
            f"{o.dataset} {o.scores['dropflow'].primary:.4f}"
            if "dropflow" in o.scores
            else f"{o.dataset} no score"
            for o in small
        ]
        checks.append(
            Check(
                f"{', '.join(o.dataset for o in small)} accuracy at least {SMALL_ACCURACY}",
                all(
                    "dropflow" in o.scores and o.scores["dropflow"].primary >= SMALL_ACCURACY - _EPS
                    for o in small
                ),
                ", ".join(shown),
            )
        )
    return checks


# --------------------------------------------------------------------------- report
def _value(outcome: Outcome, who: str, which: str) -> str:
    scores = outcome.scores.get(who)
    if scores is None:
        return "-"
    value = getattr(scores, which)
    if which == "secondary" and outcome.task == "regression" and math.isfinite(value) and value:
        # RMSE is in the target's units: four significant digits, whatever its scale.
        return f"{value:.{max(0, 3 - math.floor(math.log10(abs(value))))}f}"
    return f"{value:.4f}"


def table(outcomes: Sequence[Outcome]) -> str:
    """The results as a markdown table, one row per dataset."""
    header = (
        "| dataset | rows train / holdout | features (categorical) | metric | dropflow | HGB "
        "| LightGBM | dropflow vs best | metric | dropflow | HGB | LightGBM "
        "| train s: dropflow / HGB / LightGBM | dropflow job s |"
    )
    lines = [header, "|" + "---|" * 14]
    for o in outcomes:
        delta = f"**{o.delta:+.4f}**" if o.delta is not None else "-"
        seconds = " / ".join(
            f"{o.scores[who].train_seconds:.1f}" if who in o.scores else "-"
            for who in ("dropflow", *BASELINES)
        )
        job = f"{o.job_seconds:.0f}" if o.job_seconds is not None else "-"
        rows = f"{o.train_rows:,} / {o.holdout_rows:,}" if o.holdout_rows else "-"
        cells = [
            o.dataset,
            rows,
            f"{o.features} ({o.categorical})",
            PRIMARY[o.task].replace("r2", "R²"),
            *(_value(o, who, "primary") for who in ("dropflow", *BASELINES)),
            delta,
            SECONDARY[o.task].replace("_", " ").replace("rmse", "RMSE"),
            *(_value(o, who, "secondary") for who in ("dropflow", *BASELINES)),
            seconds,
            job,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    problems = [f"- {o.dataset}: dropflow has no score: {o.problem}" for o in outcomes if o.problem]
    problems += [f"- {o.dataset}: {note}" for o in outcomes for note in o.notes]
    return "\n".join(lines + (["", *problems] if problems else []))


def verdict_text(checks: Sequence[Check]) -> str:
    lines = [f"- **{'PASS' if c.passed else 'FAIL'}** {c.target}: {c.detail}" for c in checks]
    overall = "all targets met" if all(c.passed for c in checks) else "targets missed"
    return "\n".join([*lines, f"\nVerdict: **{overall}**."])


def timing_text(outcomes: Sequence[Outcome], datasets_seconds: float, total: float) -> str:
    parts = {
        "building the datasets": datasets_seconds,
        "dropflow jobs (drop to published)": sum(o.seconds.get("job", 0.0) for o in outcomes),
        "of which training stages": sum(
            o.scores["dropflow"].train_seconds for o in outcomes if "dropflow" in o.scores
        ),
        "promotion": sum(o.seconds.get("promote", 0.0) for o in outcomes),
        "serving the holdout": sum(o.seconds.get("serve", 0.0) for o in outcomes),
        "HistGradientBoosting fits": sum(o.seconds.get("hgb", 0.0) for o in outcomes),
        "LightGBM fits": sum(o.seconds.get("lightgbm", 0.0) for o in outcomes),
    }
    shown = ", ".join(f"{name} {seconds:.0f} s" for name, seconds in parts.items())
    return f"Time: {shown}; whole run {total:.0f} s."


def _commit() -> str:
    try:
        found = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return found.stdout.strip()


def machine() -> str:
    """The machine and software the numbers come from, in one line."""
    import lightgbm
    import sklearn
    import torch

    return (
        f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"scikit-learn {sklearn.__version__}, LightGBM {lightgbm.__version__}, "
        f"commit {_commit()}"
    )


# --------------------------------------------------------------------------- command line
def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.quality", description=__doc__.splitlines()[0]
    )
    choice = parser.add_mutually_exclusive_group()
    choice.add_argument(
        "--quick", action="store_true", help=f"only {', '.join(QUICK)} (a few minutes)"
    )
    choice.add_argument(
        "--datasets",
        type=lambda text: [name.strip() for name in text.split(",") if name.strip()],
        help=f"comma-separated names among: {', '.join(SUITE)} (default: all)",
    )
    parser.add_argument(
        "--spec",
        type=Path,
        help="a dropflow.yaml dropped beside every dataset (default: none, the defaults)",
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=DEFAULT_BUDGET_SECONDS,
        help="seconds one dropflow job may take before it is stopped and the dataset counts "
        f"as missed (default {DEFAULT_BUDGET_SECONDS:.0f})",
    )
    parser.add_argument(
        "--markdown",
        type=Path,
        default=DEFAULT_MARKDOWN,
        help=f"where to write the markdown report (default {DEFAULT_MARKDOWN})",
    )
    parser.add_argument(
        "--home", type=Path, help="keep the bucket and registry here (default: a temporary one)"
    )
    parser.add_argument("--verbose", action="store_true", help="show the jobs' INFO logs")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; 0 when every target is met, 1 when one is missed, 2 when it could
    not run (argparse's usage errors, a HarnessError)."""
    parser = _parser()
    args = parser.parse_args(argv)
    names = list(QUICK) if args.quick else (args.datasets or list(SUITE))
    unknown = [name for name in names if name not in SUITE]
    if unknown:
        parser.error(f"unknown dataset(s) {', '.join(unknown)}; known: {', '.join(SUITE)}")
    spec = None
    if args.spec is not None:
        try:
            spec = args.spec.read_text()
        except OSError as exc:
            parser.error(f"--spec {args.spec}: {exc.strerror}")
    # The job turns its own loggers up to INFO for its log.txt: the console's handler
    # itself holds back what --verbose does not ask for.
    console = logging.StreamHandler()
    console.setLevel(logging.INFO if args.verbose else logging.WARNING)
    console.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(console)
    words = sys.argv[1:] if argv is None else argv
    command = " ".join(["python -m bench.quality", *words])
    try:
        if args.home is not None:
            return _run(names, args.home, spec, args, command)
        with tempfile.TemporaryDirectory(prefix="dropflow-bench-quality-") as tmp:
            return _run(names, Path(tmp), spec, args, command)
    except HarnessError as exc:
        print(f"bench-quality: {exc}", file=sys.stderr)
        return 2
    finally:
        logging.getLogger().removeHandler(console)


def _run(
    names: list[str], home: Path, spec: str | None, args: argparse.Namespace, command: str
) -> int:
    started = time.perf_counter()
    home.mkdir(parents=True, exist_ok=True)
    store = open_store(f"file://{home.resolve()}/bucket")
    registry = open_registry(f"sqlite://{home.resolve()}/registry.db")
    service = PredictionService(ModelCache(store, registry))
    outcomes, datasets_seconds = [], 0.0
    for name in names:
        loading = time.perf_counter()
        dataset = load(name)
        datasets_seconds += time.perf_counter() - loading
        print(f"{name}: {len(dataset.frame):,} rows, {dataset.task} ...", flush=True)
        outcome = benchmark(
            dataset, store, registry, service, spec=spec, budget_seconds=args.budget
        )
        summary = ", ".join(
            f"{_SHOWN[who]} {PRIMARY[outcome.task]} {s.primary:.4f}"
            for who, s in outcome.scores.items()
        )
        print(f"  {summary or outcome.problem} ({time.perf_counter() - loading:.0f} s)", flush=True)
        outcomes.append(outcome)
    checks = verdict(outcomes)
    total = time.perf_counter() - started
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    report = "\n\n".join(
        [
            f"Run of {when}, `{command}`: {machine()}.",
            table(outcomes),
            verdict_text(checks),
            timing_text(outcomes, datasets_seconds, total),
        ]
    )
    print("\n" + report)
    args.markdown.parent.mkdir(parents=True, exist_ok=True)
    args.markdown.write_text(report + "\n")
    print(f"\n(markdown written to {args.markdown})")
    return 0 if all(check.passed for check in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
