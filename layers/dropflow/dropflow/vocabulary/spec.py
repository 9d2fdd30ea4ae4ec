"""The model spec: `datasets/<model>/dropflow.yaml`, the data owner's knobs for one model.

Every key is optional and unknown keys are rejected, so a typo (`epoch: 10`) fails the job with
a message naming the key instead of being silently ignored. Example:

    family: tabular             # the kind of data (training.families); default tabular
    task: classification        # or regression; inferred from the target when absent
    target: diagnosis           # default: the column named target, label, class or y (any case)
    features: [radius, texture] # default: every other column
    model: {family: tabm, ensemble_size: 16}   # or {family: mlp, hidden_layers: [64, 32]}
    # family: text: {checkpoint: distilbert-base-uncased, pretrained: true, max_length: 128}
    #   or {pretrained: false, size: tiny | small | base} (an encoder and tokenizer from scratch);
    #   features: [review, stars, channel] names the text column and tabular ones beside it
    # family: image: {backbone: resnet-18, pretrained: true, image_size: 224}; and optionally
    #   data: {manifest: labels.csv, image: path, label: label, skip_bad: true}
    training: {batch_size: 256, learning_rate: 2e-3, seed: 0, early_stopping: true,
               checkpoint_interval_seconds: 60}   # epochs: scaled to the data unless set
    promotion: {metric: macro_f1, tolerance: 0.01, allow_schema_change: false}
    compute: {on_demand: fallback, budget_usd: 5.0, deadline: 6h, max_runtime: 4h}
    serving: {route: auto, unknown_categories: encode}   # or reject: a 422 for unseen values

The `compute` section is bounded by the stack owner's limits (dropflow.vocabulary.limits).
Nothing here imports torch: the promote and launch functions read the spec too.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import date, datetime
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from dropflow.errors import UserInputError
from dropflow.ports import ObjectNotFound, ObjectStore
from dropflow.vocabulary.card import ENCODE, Task, UnknownCategories
from dropflow.vocabulary.clock import iso_utc
from dropflow.vocabulary.datasets import SPEC_FILE, dataset_prefix

# The holdout metrics the training job reports, per task; the first one is the default primary.
METRICS_BY_TASK: dict[str, tuple[str, ...]] = {
    "classification": ("accuracy", "macro_f1", "log_loss"),
    "regression": ("rmse", "mae", "r2"),
}
_ALL_METRICS = tuple(m for names in METRICS_BY_TASK.values() for m in names)

# The model family a spec names (`family:`): a kind of data with its own reading, network and
# export. Which families exist is the training bundle's to say (training.families), which
# refuses a name it has none for; the spec only checks that it is a name.
DEFAULT_FAMILY = "tabular"
FAMILY_NAME = r"^[a-z][a-z0-9_-]{0,39}$"
# An EC2 instance type's shape (family.size, e.g. g6.xlarge, u-24tb1.112xlarge): which types
# a job may use is the stack owner's allowlist to say (dropflow.vocabulary.limits).
INSTANCE_TYPE = r"^[a-z][a-z0-9-]*\.[a-z0-9-]+$"


def spec_key(model: str) -> str:
    """Where a model's spec lives in the bucket."""
    return f"{dataset_prefix(model)}{SPEC_FILE}"


class _Section(BaseModel):
    # Strict: YAML `epochs: "10"` or `dropout: true` is a mistake worth reporting, not coercing.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# The networks a tabular spec may choose (`model.family`; training.families.tabular builds
# them): `tabm`, the default, an ensemble of k MLPs in one network with numeric embeddings
# (training.tabm_model); `mlp`, the plain MLP on standardised, one-hot inputs (training.model).
NETWORKS = ("tabm", "mlp")
DEFAULT_NETWORK = "tabm"
# The text family (training.families.text): `model.family: text` and the top-level `family:
# text` say the same, and either implies the other. The encoder is a pretrained Hugging Face
# checkpoint (`checkpoint`, `pretrained: true`), or a BERT-style encoder of one of these sizes
# with random weights and a tokenizer trained on the training texts (`pretrained: false`).
TEXT_FAMILY = "text"
TEXT_SIZES = ("tiny", "small", "base")
DEFAULT_TEXT_SIZE = "small"
DEFAULT_MAX_LENGTH = 128
# A Hugging Face model id: a name, or owner/name (letters, digits, . _ -; no `..`, checked
# apart: the pattern engine has no look-ahead).
CHECKPOINT_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$"
_TEXT_KEYS = ("checkpoint", "pretrained", "max_length", "size")
_TABULAR_KEYS = ("hidden_layers", "ensemble_size")
# The image family (training.families.image): `model.family: image` and `family: image` say the
# same, as for text. The backbone is a built-in architecture (training.image_network) or a
# Hugging Face checkpoint name such as microsoft/resnet-18 (also a folder under weights/).
IMAGE_FAMILY = "image"
_IMAGE_KEYS = ("backbone", "image_size")  # and pretrained, which text has too
_TEXT_ONLY_KEYS = ("checkpoint", "max_length", "size")
# The families whose network `model.family` names itself: either place says it.
MODEL_FAMILIES = (TEXT_FAMILY, IMAGE_FAMILY)


class ModelSection(_Section):
    """The network. Left out, a key takes the chosen network's own default:
    tabm: hidden_layers [128, 128], dropout 0.1, ensemble_size 16;
    mlp: hidden_layers [64, 32], dropout 0.0 (and no ensemble)."""

    family: Literal["tabm", "mlp", "text", "image"] = DEFAULT_NETWORK
    # Widths of the hidden layers; [] trains a linear (logistic) model (mlp only: tabm's
    # layers all have one width, the first of the list).
    hidden_layers: list[Annotated[int, Field(ge=1, le=4096)]] | None = Field(
        default=None, max_length=8
    )
    dropout: float | None = Field(default=None, ge=0.0, le=0.9)
    # tabm: how many submodels share the network's weights; their predictions are averaged.
    ensemble_size: int | None = Field(default=None, ge=1, le=64)
    # text only (see TEXT_FAMILY): the Hugging Face checkpoint, whether to load its weights
    # (default: true when a checkpoint is named), the token ids kept per text, and the size of
    # an encoder built from scratch.
    checkpoint: str | None = Field(default=None, pattern=CHECKPOINT_NAME)
    pretrained: bool | None = None
    max_length: int | None = Field(default=None, ge=8, le=512)
    size: Literal["tiny", "small", "base"] | None = None
    # image only (see IMAGE_FAMILY): the backbone, and the square side images are resized to
    # (left out: 224 when pretrained, else the images' own size: training.families.image);
    # `pretrained` (left out: true) says whether it starts from its weights.
    backbone: str | None = Field(default=None, pattern=CHECKPOINT_NAME)
    image_size: int | None = Field(default=None, ge=16, le=1024)

    @field_validator("checkpoint", "backbone")
    @classmethod
    def _no_parent_folder(cls, checkpoint: str | None) -> str | None:
        # The name is a folder under weights/ in the bucket too.
        if checkpoint is not None and ".." in checkpoint:
            raise ValueError(f"{checkpoint!r}: `..` is not allowed in a model id")
        return checkpoint

    @property
    def loads_checkpoint(self) -> bool:
        """text: whether the encoder and tokenizer come from `checkpoint` (pretrained)."""
        return self.pretrained if self.pretrained is not None else self.checkpoint is not None

    @model_validator(mode="after")
    def _fits_the_network(self) -> ModelSection:
        if self.family == TEXT_FAMILY:
            return self._fits_text()
        if self.family == IMAGE_FAMILY:
            return self._fits_image()
        image_keys = [key for key in _IMAGE_KEYS if getattr(self, key) is not None]
        if image_keys:
            raise ValueError(
                f"{', '.join(image_keys)}: only for family image; remove for {self.family}"
            )
        text_keys = [key for key in _TEXT_KEYS if getattr(self, key) is not None]
        if text_keys:
            raise ValueError(
                f"{', '.join(text_keys)}: only for family text; remove for {self.family}"
            )
        if self.family == "mlp" and self.ensemble_size is not None:
            raise ValueError("ensemble_size applies to family tabm; remove it for mlp")
        if self.family == "tabm" and self.hidden_layers is not None:
            if not self.hidden_layers:
                raise ValueError(
                    "hidden_layers: tabm needs at least one layer ([] is for family mlp)"
                )
            if len(set(self.hidden_layers)) > 1:
                raise ValueError(
                    f"hidden_layers: tabm's layers share one width, got {self.hidden_layers}; "
                    "write e.g. [128, 128], or add `family: mlp` for the MLP of earlier versions"
                )
        return self

    def _fits_image(self) -> ModelSection:
        stray = [key for key in _TABULAR_KEYS + _TEXT_ONLY_KEYS if getattr(self, key) is not None]
        if stray:
            raise ValueError(
                f"{', '.join(stray)}: not for family image (its keys: backbone, pretrained, "
                "image_size)"
            )
        return self

    def _fits_text(self) -> ModelSection:
        image_keys = [key for key in _IMAGE_KEYS if getattr(self, key) is not None]
        if image_keys:
            raise ValueError(f"{', '.join(image_keys)}: only for family image; remove for text")
        tabular = [key for key in _TABULAR_KEYS if getattr(self, key) is not None]
        if tabular:
            raise ValueError(
                f"{', '.join(tabular)}: only for the tabular networks; remove for family text "
                "(its keys: checkpoint, pretrained, max_length, size, dropout)"
            )
        if self.loads_checkpoint:
            if self.checkpoint is None:
                raise ValueError(
                    "pretrained: true needs `checkpoint: <Hugging Face model id>` (for example "
                    "distilbert-base-uncased), or say pretrained: false to train from scratch"
                )
            if self.size is not None:
                raise ValueError(
                    f"size: the checkpoint {self.checkpoint!r} fixes the encoder's size; remove "
                    "size, or say pretrained: false to build an encoder of that size"
                )
        elif self.checkpoint is not None:
            raise ValueError(
                f"checkpoint {self.checkpoint!r} is loaded only with pretrained: true; remove "
                "it to train an encoder from scratch (size: tiny, small or base)"
            )
        return self


class DataSection(_Section):
    """How a non-tabular dataset is laid out (images: training.images).

    Without `manifest`, every image under datasets/<model>/ is an example labelled by its
    folder (`<label>/<file>`). With it, the CSV file (under datasets/<model>/) lists the
    examples: its `image` column holds each image's key relative to datasets/<model>/, its
    `label` column the class.
    """

    manifest: str | None = Field(default=None, min_length=1, pattern=r"(?i)^[^/].*\.csv$")
    image: str = Field(default="image", min_length=1)
    label: str = Field(default="label", min_length=1)
    # A file that is not a readable image: false fails the job naming it; true leaves it out
    # and counts it on the card (training.skipped_files).
    skip_bad: bool = False

    @model_validator(mode="after")
    def _columns_need_a_manifest(self) -> DataSection:
        if self.manifest is None and {"image", "label"} & self.model_fields_set:
            raise ValueError(
                "image and label name a manifest's columns; add `manifest: <file>.csv`, or "
                "leave them out to label images by their folder"
            )
        if self.image == self.label:
            raise ValueError(f"image and label are both {self.image!r}; name two columns")
        return self


class TrainingSection(_Section):
    """The optimisation: AdamW on shuffled mini-batches, early stopping on a validation split
    carved from the training rows, evaluated on a seeded holdout (training.loop).

    `epochs` left out gives a budget that scales with the data (training.budget): enough
    optimizer steps for a small table, a bounded number of epochs for a large one. Set, it is
    the most epochs training runs (early stopping may end it sooner; `early_stopping: false`
    runs them all).
    """

    epochs: int | None = Field(default=None, gt=0, le=10_000)
    # Rows per optimizer step; a table with fewer than 4 batches' worth of training rows
    # trains in smaller ones, a power of two of at least 32 rows (training.budget).
    batch_size: int = Field(default=256, gt=0, le=65_536)
    learning_rate: float = Field(default=2e-3, gt=0.0, le=1.0)
    # constant, or cosine: from learning_rate down to a tenth of it over the whole training.
    lr_schedule: Literal["constant", "cosine"] = "constant"
    # AdamW's decoupled weight decay.
    weight_decay: float = Field(default=3e-4, ge=0.0, le=1.0)
    seed: int = Field(default=0, ge=0, le=2**32 - 1)
    holdout_fraction: float = Field(default=0.2, ge=0.05, le=0.5)
    # Rows of the training part (never the holdout) kept aside to stop training when they stop
    # improving, to restore the best weights, and to calibrate the probabilities on.
    validation_fraction: float = Field(default=0.2, ge=0.05, le=0.5)
    early_stopping: bool = True
    # Checkpoint at a step boundary once this many seconds passed since the last one, and at
    # epoch ends (training.loop explains when those are skipped); 0: at epoch ends only.
    checkpoint_interval_seconds: float = Field(default=60.0, ge=0.0, le=86_400.0)


class PromotionSection(_Section):
    """How a new version is compared with the champion.

    `allow_schema_change: true` lets a version that would break the champion's clients (a
    feature renamed, added, removed, reordered or retyped, a category or null no longer
    accepted, other classes, another task: dropflow.promotion.compatibility) be promoted
    when it passes the metric gate; without it such a version is rejected, naming each change.
    """

    metric: str | None = None  # default: accuracy (classification) or rmse (regression)
    tolerance: float = Field(default=0.0, ge=0.0)
    allow_schema_change: bool = False

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, metric: str | None) -> str | None:
        if metric is not None and metric not in _ALL_METRICS:
            raise ValueError(f"unknown metric {metric!r}; choose one of {', '.join(_ALL_METRICS)}")
        return metric


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([dhms])")
_UNIT_SECONDS = {"d": 86_400.0, "h": 3_600.0, "m": 60.0, "s": 1.0}
_MAX_DURATION_SECONDS = 30 * 86_400.0
_DEADLINE_HELP = (
    "give a duration from the job's creation such as 6h, 90m or 1h30m, "
    "or a UTC time such as 2026-11-24T06:00:00Z"
)


def _is_duration(text: str) -> bool:
    compact = text.strip().lower()
    return bool(_DURATION.findall(compact)) and not _DURATION.sub("", compact).strip()


def parse_duration(text: str) -> float:
    """Seconds in a duration such as `6h`, `90m`, `1h30m`, `45s` or `2d` (units d, h, m, s).

    Raises ValueError saying what is expected.
    """
    if not _is_duration(text):
        raise ValueError(f"{text!r} is not a duration; write it like 6h, 90m or 1h30m")
    parts = _DURATION.findall(text.strip().lower())
    seconds = sum(float(n) * _UNIT_SECONDS[unit] for n, unit in parts)
    if not 0 < seconds <= _MAX_DURATION_SECONDS:
        raise ValueError(f"{text!r}: a duration must be more than 0 and at most 30d")
    return seconds


def _utc_time(value: datetime) -> str:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"{value.isoformat()} has no time zone; add Z for UTC, e.g. 2026-11-24T06:00:00Z"
        )
    return iso_utc(value.timestamp())


def _deadline_text(value: Any) -> str:
    """The canonical text of a deadline: a duration as written, a time as UTC `...Z`."""
    if isinstance(value, datetime):  # YAML reads an unquoted timestamp as a datetime
        return _utc_time(value)
    if not isinstance(value, str):
        shown = value if isinstance(value, date) else repr(value)
        raise ValueError(f"{shown} is not a deadline; {_DEADLINE_HELP}")
    if not re.match(r"\s*\d{4}-\d\d-\d\d", value):
        if not _is_duration(value):
            raise ValueError(f"{value!r} is not a deadline; {_DEADLINE_HELP}")
        parse_duration(value)  # in range?
        return value.strip()
    try:
        when = datetime.fromisoformat(value.strip().replace("z", "Z"))
    except ValueError:
        raise ValueError(f"{value!r} is not a deadline; {_DEADLINE_HELP}") from None
    return _utc_time(when)


class ComputeSection(_Section):
    """Where the job runs, and what it may cost.

    Spot first. `on_demand` says when on-demand may be used: fallback (default) launches
    on-demand once spot failed for capacity, price or quota, or when the deadline can no
    longer be met on spot (see launcher.Launcher); never fails the job instead; always skips
    spot. `budget_usd` caps the job's spend over all its attempts: a job that reached it is
    not launched again, and a running attempt that reaches it is stopped (the job fails,
    saying so). `deadline` is a duration from the job's creation (6h, 90m) or a UTC time
    (2026-11-24T06:00:00Z): past it the job is not relaunched. `max_runtime` (a duration)
    caps the instance time of all the job's attempts together.

    The stack owner's limits bound the section (dropflow.vocabulary.limits): `instance_types`
    may only narrow the owner's allowlist, and `budget_usd` may not exceed the owner's
    maximum; a job without a budget gets the owner's default. Those checks need the stack's
    settings, so the launcher makes them, before it launches anything.
    """

    instance_types: list[str] | None = Field(default=None, min_length=1, max_length=50)
    on_demand: Literal["fallback", "never", "always"] = "fallback"
    # Failed attempts (crashes, lost instances) before the job fails; honoured spot
    # interruptions do not count. Default: the deployment's DROPFLOW_MAX_ATTEMPTS (3).
    max_attempts: int | None = Field(default=None, ge=1, le=20)
    budget_usd: float | None = Field(default=None, gt=0.0)
    deadline: str | None = None
    max_runtime: str | None = None

    @field_validator("instance_types")
    @classmethod
    def _type_names(cls, types: list[str] | None) -> list[str] | None:
        for name in types or ():
            if len(name) > 64 or not re.fullmatch(INSTANCE_TYPE, name):
                raise ValueError(f"{name!r} is not an EC2 instance type name such as g6.xlarge")
        if types is not None and len(set(types)) != len(types):
            twice = sorted({t for t in types if types.count(t) > 1})
            raise ValueError(f"{', '.join(twice)} listed twice")
        return types

    @field_validator("deadline", mode="before")
    @classmethod
    def _known_deadline(cls, value: Any) -> Any:
        return None if value is None else _deadline_text(value)

    @field_validator("max_runtime", mode="before")
    @classmethod
    def _known_runtime(cls, value: Any) -> Any:
        if value is None:
            return None
        if not isinstance(value, str):
            raise ValueError(f"{value!r} is not a duration; write it like 6h, 90m or 1h30m")
        parse_duration(value)
        return value.strip()

    def deadline_at(self, created_at: float) -> float | None:
        """The deadline as epoch seconds for a job created at `created_at`; None if none."""
        if self.deadline is None:
            return None
        try:
            return created_at + parse_duration(self.deadline)
        except ValueError:
            return datetime.fromisoformat(self.deadline).timestamp()

    @property
    def max_runtime_seconds(self) -> float | None:
        return None if self.max_runtime is None else parse_duration(self.max_runtime)


class ServingSection(_Section):
    """Where the model is served (dropflow.vocabulary.routing): `auto` decides by size at promotion;
    `lambda` or `container` force the tier. `memory_mb` replaces the memory estimate (twice
    the size of model.onnx) when the data owner knows better. `unknown_categories` says what
    the API does with a category value the training rows never had: `encode` (the default)
    predicts with it as unknown and names it in the answer's warnings, `reject` refuses the
    request with a 422 naming it. The training job copies this section onto the card."""

    route: Literal["auto", "lambda", "container"] = "auto"
    memory_mb: int | None = Field(default=None, ge=1, le=1_000_000)
    unknown_categories: UnknownCategories = ENCODE


class ScheduleSection(_Section):
    """Retraining by the stack's schedule (RetrainSchedule, a daily check by default): the
    model is retrained when its last published job is older than `every` and the data under
    its prefix changed since that job (files replaced, removed, or whose drop event was lost).
    A model without this section is retrained by drops only."""

    every: str = "1d"

    @field_validator("every", mode="before")
    @classmethod
    def _known_every(cls, value: Any) -> Any:
        if not isinstance(value, str):
            raise ValueError(f"{value!r} is not a duration; write it like 1d, 12h or 90m")
        parse_duration(value)
        return value.strip()

    @property
    def every_seconds(self) -> float:
        return parse_duration(self.every)


class Spec(_Section):
    """A validated `dropflow.yaml`; `Spec()` is what an absent or empty file means."""

    family: str = Field(default=DEFAULT_FAMILY, pattern=FAMILY_NAME)
    task: Task | None = None
    target: str | None = Field(default=None, min_length=1)
    features: list[str] | None = Field(default=None, min_length=1)
    model: ModelSection = Field(default_factory=ModelSection)
    training: TrainingSection = Field(default_factory=TrainingSection)
    promotion: PromotionSection = Field(default_factory=PromotionSection)
    compute: ComputeSection = Field(default_factory=ComputeSection)
    # None when absent (not the defaults), so specs without it keep their spec_hash.
    serving: ServingSection | None = None
    schedule: ScheduleSection | None = None
    # None when absent: a table needs none (its columns are the layout).
    data: DataSection | None = None

    @model_validator(mode="before")
    @classmethod
    def _text_family_either_way(cls, document: Any) -> Any:
        # `family: text` and `model: {family: text}` both say it; each implies the other
        # (and the same for image).
        if not isinstance(document, dict):
            return document
        model = document.get("model")
        said = model.get("family") if isinstance(model, dict) else None
        if said in MODEL_FAMILIES and "family" not in document:
            return {**document, "family": said}
        outer = document.get("family")
        if outer in MODEL_FAMILIES:
            if model is None:
                return {**document, "model": {"family": outer}}
            if isinstance(model, dict) and said is None:
                return {**document, "model": {**model, "family": outer}}
        return document

    @field_validator("features")
    @classmethod
    def _unique_features(cls, features: list[str] | None) -> list[str] | None:
        if features is not None:
            seen: set[str] = set()
            for name in features:
                if name in seen:
                    raise ValueError(f"column {name!r} is listed twice")
                seen.add(name)
        return features

    @model_validator(mode="after")
    def _consistent(self) -> Spec:
        for family in MODEL_FAMILIES:
            if (self.family == family) != (self.model.family == family):
                article = "an" if family == IMAGE_FAMILY else "a"
                raise ValueError(
                    f"family: {self.family} and model.family: {self.model.family} disagree; "
                    f"say family: {family} for {article} {family} model, or remove model.family"
                )
        if self.target is not None and self.features and self.target in self.features:
            raise ValueError(
                f"features: the target {self.target!r} cannot also be a feature; remove it"
            )
        if self.task is not None:
            problem = _metric_problem(self.task, self.promotion.metric)
            if problem:
                raise ValueError(f"promotion.metric: {problem}")
        return self

    def primary_metric(self, task: Task) -> str:
        """The metric promotion compares for a model of `task` (the spec's, else the default).

        Raises UserInputError when the spec names a metric that `task` does not report, which
        is only known once the task has been inferred from the data.
        """
        problem = _metric_problem(task, self.promotion.metric)
        if problem:
            raise UserInputError(f"{SPEC_FILE}: promotion.metric: {problem}")
        return self.promotion.metric or METRICS_BY_TASK[task][0]


def _metric_problem(task: Task, metric: str | None) -> str | None:
    allowed = METRICS_BY_TASK[task]
    if metric is None or metric in allowed:
        return None
    return f"{metric!r} is not a {task} metric; choose one of {', '.join(allowed)}"


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads `1e-3` as a string; data owners mean the number (as YAML 1.2 does)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*\.?[0-9_]*|\.[0-9_]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."),
)


def _path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _known_keys(loc: tuple[int | str, ...]) -> list[str]:
    """The keys allowed where an unknown key `loc` was found (for a 'did you mean' hint)."""
    model: type[BaseModel] = Spec
    for part in loc[:-1]:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _describe(exc: ValidationError, source: str) -> str:
    problems = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
            known = _known_keys(loc)
            if known:
                msg += f" (allowed here: {', '.join(known)})"
        problems.append(f"{source}: {_path(loc)}: {msg}" if loc else f"{source}: {msg}")
    return "; ".join(problems)


def read_spec(store: ObjectStore, model: str) -> Spec:
    """The model's validated spec from `store` (the defaults when there is no dropflow.yaml).

    Raises UserInputError naming the file and each key that is wrong.
    """
    key = spec_key(model)
    try:
        text = store.get(key)
    except ObjectNotFound:
        return Spec()
    return load_spec(text, source=key)


def load_spec(text: str | bytes | None, *, source: str = SPEC_FILE) -> Spec:
    """Parse and validate a spec. None or an empty document gives the defaults.

    Raises UserInputError naming `source` and the key path of each problem, e.g.
    "dropflow.yaml: training.epochs: Input should be greater than 0".
    """
    if text is None:
        return Spec()
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise UserInputError(f"{source}: not UTF-8 text ({exc.reason})") from None
    try:
        document = yaml.load(text, Loader=_Loader)  # _Loader is a SafeLoader
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise UserInputError(f"{source}: invalid YAML{where}: {problem}") from None
    if document is None:
        return Spec()
    if not isinstance(document, dict):
        raise UserInputError(
            f"{source}: expected a mapping of keys such as `target:` and `training:`, "
            f"got {type(document).__name__}"
        )
    try:
        return Spec.model_validate(document)
    except ValidationError as exc:
        raise UserInputError(_describe(exc, source)) from None


def spec_hash(spec: Spec) -> str:
    """A stable hex digest of the effective spec (defaults filled in), for lineage.

    An absent file, an empty one and one that spells out the defaults hash the same, because
    they train the same model.
    """
    effective = spec.model_dump(mode="json")
    if effective["family"] == DEFAULT_FAMILY:
        # Specs from before families hash as they did: the default family is no change.
        del effective["family"]
    for key in _TEXT_KEYS + _IMAGE_KEYS:
        if effective["model"][key] is None:
            del effective["model"][key]  # keys added later: older specs hash as they did
    if effective["data"] is None:
        del effective["data"]
    if not effective["promotion"]["allow_schema_change"]:
        # Nor is the default of a key added later (a job's checkpoints resume across it).
        del effective["promotion"]["allow_schema_change"]
    serving = effective.get("serving")
    if serving is not None and serving["unknown_categories"] == ENCODE:
        del serving["unknown_categories"]  # the same: a default added later
    canonical = json.dumps(effective, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


__all__ = [
    "DEFAULT_FAMILY",
    "DEFAULT_MAX_LENGTH",
    "DEFAULT_NETWORK",
    "DEFAULT_TEXT_SIZE",
    "IMAGE_FAMILY",
    "METRICS_BY_TASK",
    "MODEL_FAMILIES",
    "NETWORKS",
    "SPEC_FILE",
    "TEXT_FAMILY",
    "TEXT_SIZES",
    "ComputeSection",
    "DataSection",
    "ModelSection",
    "PromotionSection",
    "ScheduleSection",
    "ServingSection",
    "Spec",
    "TrainingSection",
    "load_spec",
    "parse_duration",
    "read_spec",
    "spec_hash",
    "spec_key",
]
