"""The model card: `models/<model>/<version>/card.json`, written last by the training job.

It is the contract between training (writer), promotion and serving (readers). The ONNX graph
it describes always has one input named `input`. For a table (a card without `input`, as every
card before images and text) it is float32 of shape [batch, n_features], one column per entry
of `features`, in that order; for an image or a text model the card's `input` (InputSpec, below)
says what it is. Its outputs, whatever the input:
- classification: one output `probabilities`, float32 [batch, n_classes] (softmax inside);
  the predicted label is `classes[argmax]`, in the target column's original values;
- regression: one output `prediction`, float32 [batch], in the target's original units.

What a column of `input` carries depends on its Feature:
- `number`: the raw value; NaN means missing, and the graph fills it with the training median
  (only graphs whose feature says `nullable`; older ones have no such step);
- `category`: the value's code, its index in `categories`, as a float (0.0, 1.0, ...). The graph
  one-hot encodes it. Serving turns the raw values clients send into these codes.
- either: NaN, a missing value (null from a client) or a value the training rows never had (an
  unseen category); every graph answers it with finite numbers (a number is imputed, a
  category gets no category's encoding).
All other preprocessing (imputation, standardisation, one-hot) is inside the graph, so a client
that sends raw values through the predict API needs nothing but the card's feature names.

Image and text models (`input` set; `features` is then one Feature named as `input.field`,
of dtype "image" or "text", and for text maybe tabular features after it):
- image: `input` is uint8 [batch, height, width, 3], RGB, channels last; the normalisation is
  inside the graph. Serving (and training, for the same pixels) turns an encoded image into it
  with dropflow.vocabulary.pixels: decoded with Pillow (JPEG, PNG or WebP), turned upright by
  its EXIF orientation, converted to RGB (alpha dropped), resized directly to width x height
  (bilinear with Pillow's antialiasing, no crop: the aspect ratio is not kept).
- text: `input` is int64 [batch, max_length], token ids from the version's tokenizer file
  (Hugging Face `tokenizers` JSON, named in `files` as "tokenizer" and digest-recorded like
  model.onnx), with the special tokens its post-processor adds (e.g. [CLS] ... [SEP]),
  truncated to max_length and padded on the right with pad_id up to max_length, whatever
  truncation and padding the file itself states; the attention mask is computed inside the
  graph as ids != pad_id.
- text with tabular columns alongside (`features` is the text feature first, then one or more
  number or category features, as a table's): `input` is float32 [batch, max_length + T], the
  token ids as above in the first max_length columns (exact as float32: the vocabulary is
  below 2**24), then one column per tabular feature in card order, each exactly as a table's
  column (the raw number, NaN when missing; a category's code). One input, so the graph, the
  parity evidence and promotion stay as for every other model; the graph casts the ids back.

What serving does with a value the training rows never had is the card's too: the training job
copies the spec's `serving` section onto it (an extra key), and `Card.unknown_categories` reads
it, so that the predict function never reads the dataset's spec at request time.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    ValidationError,
    model_serializer,
    model_validator,
)

from dropflow.errors import DropflowError
from dropflow.ports import ObjectStore

Task = Literal["classification", "regression"]

INPUT_NAME = "input"
PROBABILITIES = "probabilities"
PREDICTION = "prediction"
# The category a missing value of a categorical feature becomes (when training saw any).
MISSING_CATEGORY = "<missing>"

# What serving does with a category value the training rows never had (the spec's
# `serving.unknown_categories`): ENCODE sends it to the graph as unknown (NaN) and answers with
# a warning naming it; REJECT refuses the request (422) naming the value and the categories.
UnknownCategories = Literal["encode", "reject"]
ENCODE: UnknownCategories = "encode"
REJECT: UnknownCategories = "reject"

# Higher is better unless listed here.
LOWER_IS_BETTER = frozenset({"rmse", "mae", "log_loss"})


def version_prefix(model: str, version: str) -> str:
    """The key prefix under which all of a version's files live."""
    return f"models/{model}/{version}/"


def artifact_key(model: str, version: str, name: str) -> str:
    return version_prefix(model, version) + name


# The card's own file name in the version's folder (the other files are named in `files`).
CARD_FILE = "card.json"


def card_key(model: str, version: str) -> str:
    return artifact_key(model, version, CARD_FILE)


class Feature(BaseModel):
    """One column of the graph's input: its name, its kind and what a client may send for it.

    "image" and "text" are the one feature of an image or a text model (see InputSpec)."""

    model_config = ConfigDict(extra="forbid")
    name: str
    # image and text: the one feature of a model whose card has an `input` (InputSpec), named
    # as its `field`: what a client sends is an encoded image or a string, not a number.
    dtype: Literal["number", "category", "image", "text"] = "number"
    # category only: the values seen in training, in code order (the graph reads a value's index).
    # Booleans, or text (ints only where the data typed them so); MISSING_CATEGORY comes last
    # when training saw missing values in the column.
    categories: list[bool | int | str] | None = None
    # Whether null is accepted: a number is then filled with the training median inside the
    # graph, a category becomes MISSING_CATEGORY. False on cards from before imputation existed.
    nullable: bool = False

    @model_validator(mode="after")
    def _categories_match_dtype(self) -> Feature:
        if self.dtype == "category":
            if not self.categories:
                raise ValueError(f"feature {self.name!r}: a category feature lists its categories")
            if len({_category_key(c) for c in self.categories}) != len(self.categories):
                raise ValueError(f"feature {self.name!r}: categories must be unique")
            if self.nullable != (MISSING_CATEGORY in self.categories):
                raise ValueError(
                    f"feature {self.name!r}: nullable must say whether {MISSING_CATEGORY!r} "
                    "is one of the categories"
                )
        elif self.categories is not None:
            raise ValueError(f"feature {self.name!r}: only category features have categories")
        return self


# What the graph's input of each kind holds (numpy dtype names): a table's float32 columns,
# an image's uint8 pixels, a text's int64 token ids.
TABLE_DTYPE = "float32"
_KIND_DTYPES = {"image": "uint8", "text": "int64"}


def _category_key(value: bool | int | str) -> tuple[str, object]:
    # True == 1 in Python: tag the type so a set tells a boolean from an integer.
    return (type(value).__name__, value)


InputKind = Literal["image", "text"]
# The card's `files` key of a text model's tokenizer.
TOKENIZER_FILE_KEY = "tokenizer"
# What the image fields of InputSpec may hold: the only pixel format the graphs take.
IMAGE_CHANNELS, IMAGE_DTYPE, IMAGE_LAYOUT = 3, "uint8", "NHWC"
_IMAGE_KEYS = ("height", "width", "channels", "dtype", "layout")
_TEXT_KEYS = ("max_length", "tokenizer", "pad_id")


def _a(kind: str) -> str:
    return f"an {kind}" if kind == "image" else f"a {kind}"


class InputSpec(BaseModel):
    """The graph's `input` of an image or a text model (absent from a table's card).

    image: {"kind": "image", "height": H, "width": W, "channels": 3, "dtype": "uint8",
    "layout": "NHWC", "field": "image"}: uint8 [batch, H, W, 3]; `field` is the instance key
    clients send an image under. text: {"kind": "text", "max_length": L, "tokenizer":
    "tokenizer.json", "field": "<column>", "pad_id": P}: int64 [batch, L] token ids. The
    module docstring says how either is made from what clients send.
    """

    model_config = ConfigDict(extra="forbid")
    kind: InputKind
    field: str = Field(min_length=1)
    # image
    height: int | None = Field(default=None, ge=1)
    width: int | None = Field(default=None, ge=1)
    channels: Literal[3] | None = None
    dtype: Literal["uint8"] | None = None
    layout: Literal["NHWC"] | None = None
    # text
    max_length: int | None = Field(default=None, ge=1)
    tokenizer: str | None = Field(default=None, min_length=1)
    pad_id: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _keys_of_its_kind(self) -> InputSpec:
        own, other = (
            (_IMAGE_KEYS, _TEXT_KEYS) if self.kind == "image" else (_TEXT_KEYS, _IMAGE_KEYS)
        )
        stray = [key for key in other if getattr(self, key) is not None]
        if self.kind == "image":
            # The one pixel format the graphs take: stated on every card, filled in if left out.
            self.channels = self.channels or IMAGE_CHANNELS
            self.dtype = self.dtype or IMAGE_DTYPE
            self.layout = self.layout or IMAGE_LAYOUT
        if stray:
            raise ValueError(f"{_a(self.kind)} input has no {', '.join(stray)}")
        absent = [key for key in own if getattr(self, key) is None]
        if absent:
            raise ValueError(f"{_a(self.kind)} input states {', '.join(absent)}")
        return self

    @model_serializer(mode="wrap")
    def _without_nulls(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # The other kind's keys are absent from the contract, not null.
        return {key: value for key, value in handler(self).items() if value is not None}

    @property
    def row_shape(self) -> tuple[int, ...]:
        """The shape of one row of the graph's input: (height, width, 3) or (max_length,)."""
        if self.kind == "image":
            return (int(self.height or 0), int(self.width or 0), int(self.channels or 3))
        return (int(self.max_length or 0),)

    @property
    def input_dtype(self) -> str:
        """The numpy dtype name of the graph's input: uint8 (image) or int64 (text)."""
        return _KIND_DTYPES[self.kind]


class Parity(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_abs_diff: float
    tolerance: float
    argmax_equal: bool | None = None  # classification only
    rows: int
    passed: bool


class Metrics(BaseModel):
    model_config = ConfigDict(extra="forbid")
    primary: str  # name of the metric the promotion gate compares
    holdout: dict[str, float]  # e.g. {"accuracy": 0.97, "macro_f1": 0.96, "log_loss": 0.08}
    baseline: dict[str, float] = Field(default_factory=dict)  # naive baseline on the holdout
    holdout_rows: int
    train_rows: int

    @property
    def primary_value(self) -> float:
        return self.holdout[self.primary]

    @property
    def higher_is_better(self) -> bool:
        return self.primary not in LOWER_IS_BETTER


class Card(BaseModel):
    model_config = ConfigDict(extra="allow")  # later issues add keys; readers ignore unknown ones

    schema_version: int = 1
    model: str
    version: str
    job_id: str
    task: Task
    target: str
    features: list[Feature]
    classes: list[Any] | None = None  # classification: original label values, index = class id
    metrics: Metrics
    parity: Parity
    data_version: str
    spec_hash: str
    created_at: str  # ISO 8601 UTC
    timings: dict[str, float] = Field(default_factory=dict)  # seconds: load, train, export, ...
    files: dict[str, str] = Field(
        default_factory=lambda: {"model": "model.onnx", "reference": "reference.npz"}
    )
    model_bytes: int = 0
    attempts: list[dict[str, Any]] = Field(default_factory=list)
    # The job's cost ledger up to publish (dropflow.records.ledger.Ledger.to_dict): cost_usd,
    # on_demand_equivalent_usd, savings_usd, savings_percent, seconds_lost and per-attempt
    # lines; null amounts are unknown. None on cards from before the ledger.
    cost: dict[str, Any] | None = None
    # An image or a text model's input (see InputSpec); None for a table.
    input: InputSpec | None = None

    @model_validator(mode="after")
    def _one_feature_for_an_image_or_a_text(self) -> Card:
        spec = self.input
        if spec is None:
            odd = [f.name for f in self.features if f.dtype in ("image", "text")]
            if odd:
                raise ValueError(f"feature {odd[0]!r}: an image or text feature needs an input")
            return self
        first = [(f.name, f.dtype) for f in self.features[:1]]
        if first != [(spec.field, spec.kind)] or (spec.kind == "image" and self.tabular_features):
            raise ValueError(
                f"{_a(spec.kind)} model has one feature, {spec.field!r} of dtype {spec.kind!r}"
                + (" (then a text model's tabular features, if any)" if spec.kind == "text" else "")
            )
        odd = [f.name for f in self.tabular_features if f.dtype in ("image", "text")]
        if odd:
            raise ValueError(
                f"feature {odd[0]!r}: a text model's other features are numbers or categories"
            )
        if spec.kind == "text" and self.files.get(TOKENIZER_FILE_KEY) != spec.tokenizer:
            raise ValueError(f"files.{TOKENIZER_FILE_KEY} must name the input's tokenizer")
        return self

    @property
    def tabular_features(self) -> list[Feature]:
        """The features read as a table's columns: all of a table's; a text model's after its
        text (none for an image model, or a text model without tabular columns)."""
        return self.features if self.input is None else self.features[1:]

    @property
    def input_row_shape(self) -> tuple[int, ...]:
        """The shape of one row of the graph's input: (n_features,) for a table,
        (max_length + tabular features,) for a text model with tabular columns."""
        if self.input is None:
            return (len(self.features),)
        if self.tabular_features:
            return (self.input.row_shape[0] + len(self.tabular_features),)
        return self.input.row_shape

    @property
    def input_dtype(self) -> str:
        """The numpy dtype name of the graph's input: float32 for a table and for a text
        model with tabular columns."""
        if self.input is None or self.tabular_features:
            return TABLE_DTYPE
        return self.input.input_dtype

    @property
    def feature_names(self) -> list[str]:
        return [f.name for f in self.features]

    @property
    def unknown_categories(self) -> UnknownCategories:
        """What serving does with a category value the training rows never had: the spec's
        `serving.unknown_categories` as the job copied it, ENCODE on a card without it."""
        serving = (self.model_extra or {}).get("serving")
        policy = serving.get("unknown_categories") if isinstance(serving, dict) else None
        return REJECT if policy == REJECT else ENCODE


class InvalidCard(DropflowError, ValueError):
    """A card.json that is not a valid model card; `problem` is the first field at fault."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key} is not a valid model card: {problem}")
        self.key = key
        self.problem = problem


def read_card(store: ObjectStore, model: str, version: str) -> Card:
    """The card of `version` of `model`, read from `store` and parsed.

    Raises ObjectNotFound (naming the key) when there is no card.json, and InvalidCard
    (naming the key and the first field at fault) when it is not a valid model card.
    """
    key = card_key(model, version)
    return parse_card(key, store.get(key))


def parse_card(key: str, raw: bytes) -> Card:
    """The card in `raw`, the bytes of the card.json at `key`; InvalidCard (naming the key and
    the first field at fault) when they are not a valid model card. For readers that check
    the bytes' digest before trusting them."""
    try:
        return Card.model_validate_json(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "card"
        raise InvalidCard(key, f"{where}: {first['msg']}") from None
