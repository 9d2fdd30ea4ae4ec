"""dropflow.vocabulary.card.read_card: the one way every room reads a model card."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from dropflow.ports import ObjectNotFound
from dropflow.vocabulary.card import (
    Feature,
    InputSpec,
    InvalidCard,
    card_key,
    parse_card,
    read_card,
)
from tests.fakes_serving import publish, version_id
from tests.unit.fakes import MemoryStore

V1 = version_id(1)


def test_a_published_card_is_read_back():
    store = MemoryStore()
    publish(store, None, "iris", V1)

    card = read_card(store, "iris", V1)

    assert (card.model, card.version) == ("iris", V1)


def test_a_missing_card_raises_object_not_found_naming_the_key():
    with pytest.raises(ObjectNotFound, match=card_key("iris", V1)):
        read_card(MemoryStore(), "iris", V1)


def test_an_invalid_card_names_the_key_and_the_field():
    store = MemoryStore()
    store.put(card_key("iris", V1), b'{"model": "iris"}')

    with pytest.raises(InvalidCard) as raised:
        read_card(store, "iris", V1)

    assert str(raised.value).startswith(f"{card_key('iris', V1)} is not a valid model card: ")
    assert raised.value.problem == "version: Field required"


@pytest.mark.parametrize(
    ("extra", "policy"),
    [
        ({}, "encode"),  # a card from before the setting: the default
        ({"serving": {"route": "auto", "memory_mb": None}}, "encode"),
        ({"serving": {"route": "auto", "unknown_categories": "encode"}}, "encode"),
        ({"serving": {"route": "auto", "unknown_categories": "reject"}}, "reject"),
    ],
)
def test_the_card_says_what_serving_does_with_an_unknown_category(extra, policy):
    store = MemoryStore()
    publish(store, None, "iris", V1, card_extra=extra)

    assert read_card(store, "iris", V1).unknown_categories == policy


IMAGE_INPUT = {
    "kind": "image",
    "height": 32,
    "width": 24,
    "channels": 3,
    "dtype": "uint8",
    "layout": "NHWC",
    "field": "image",
}
TEXT_INPUT = {
    "kind": "text",
    "max_length": 16,
    "tokenizer": "tokenizer.json",
    "field": "review",
    "pad_id": 0,
}
TEXT_FILES = {"model": "model.onnx", "reference": "reference.npz", "tokenizer": "tokenizer.json"}


def _card_json(**changes) -> bytes:
    store = MemoryStore()
    card = publish(store, None, "m", V1).model_dump(mode="json", exclude_none=True)
    card.update(changes)
    return json.dumps(card).encode()


@pytest.mark.parametrize(
    ("spec", "feature", "files"),
    [(IMAGE_INPUT, "image", None), (TEXT_INPUT, "review", TEXT_FILES)],
)
def test_an_image_or_text_card_reads_its_input_and_its_one_feature(spec, feature, files):
    extra = {"files": files} if files else {}
    raw = _card_json(input=spec, features=[{"name": feature, "dtype": spec["kind"]}], **extra)

    card = parse_card("k", raw)

    assert card.input is not None and card.input.model_dump(exclude_none=True) == spec
    assert card.features[0].dtype == spec["kind"]


def test_a_tabular_card_has_no_input():
    assert parse_card("k", _card_json()).input is None


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        (
            {
                "input": {**IMAGE_INPUT, "pad_id": 0},
                "features": [{"name": "image", "dtype": "image"}],
            },
            "input: Value error, an image input has no pad_id",
        ),
        (
            {
                "input": {**TEXT_INPUT, "pad_id": None},
                "features": [{"name": "review", "dtype": "text"}],
                "files": TEXT_FILES,
            },
            "input: Value error, a text input states pad_id",
        ),
        (
            {
                "input": {**IMAGE_INPUT, "layout": "NCHW"},
                "features": [{"name": "image", "dtype": "image"}],
            },
            "input.layout: Input should be 'NHWC'",
        ),
        (
            {"input": IMAGE_INPUT, "features": [{"name": "photo", "dtype": "image"}]},
            "card: Value error, an image model has one feature, 'image' of dtype 'image'",
        ),
        (
            {"input": TEXT_INPUT, "features": [{"name": "review", "dtype": "text"}]},
            "card: Value error, files.tokenizer must name the input's tokenizer",
        ),
        (
            {"features": [{"name": "image", "dtype": "image"}]},
            "card: Value error, feature 'image': an image or text feature needs an input",
        ),
    ],
)
def test_an_input_that_breaks_the_contract_is_an_invalid_card_naming_it(changes, problem):
    with pytest.raises(InvalidCard) as raised:
        parse_card("k", _card_json(**changes))

    assert raised.value.problem == problem


def test_an_image_input_without_its_pixel_format_gets_the_one_the_graphs_take():
    spec = {"kind": "image", "height": 32, "width": 24, "field": "image"}
    raw = _card_json(input=spec, features=[{"name": "image", "dtype": "image"}])

    card = parse_card("k", raw)

    assert card.input is not None
    assert card.input.model_dump(exclude_none=True) == IMAGE_INPUT


# --------------------------------------------------------------------------- input (issue 14)
TEXT_INPUT_L128 = {
    "kind": "text",
    "max_length": 128,
    "tokenizer": "tokenizer.json",
    "field": "review",
    "pad_id": 0,
}
IMAGE_INPUT_64 = {
    "kind": "image",
    "height": 64,
    "width": 48,
    "channels": 3,
    "dtype": "uint8",
    "layout": "NHWC",
    "field": "image",
}


@pytest.mark.parametrize(
    ("document", "shape", "dtype"),
    [(TEXT_INPUT_L128, (128,), "int64"), (IMAGE_INPUT_64, (64, 48, 3), "uint8")],
)
def test_an_input_section_round_trips_with_only_its_own_keys(document, shape, dtype):
    spec = InputSpec.model_validate(document)

    assert json.loads(spec.model_dump_json()) == document
    assert (spec.row_shape, spec.input_dtype) == (shape, dtype)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({**TEXT_INPUT_L128, "pad_id": None}, "a text input states pad_id"),
        ({**TEXT_INPUT_L128, "height": 32}, "a text input has no height"),
        ({**IMAGE_INPUT_64, "height": None}, "an image input states height"),
        ({**IMAGE_INPUT_64, "channels": 1}, "channels"),
    ],
)
def test_an_input_section_missing_or_mixing_keys_is_refused(document, message):
    with pytest.raises(ValidationError) as caught:
        InputSpec.model_validate(document)

    assert message in str(caught.value)


@pytest.mark.parametrize("dtype", ["text", "image"])
def test_text_and_image_features_carry_no_categories(dtype):
    assert Feature(name="x", dtype=dtype).categories is None
    with pytest.raises(ValidationError, match="only category features have categories"):
        Feature(name="x", dtype=dtype, categories=["a"])


# --------------------------------------------------------------------------- text and a table
TEXT_AND_COLUMNS = [
    {"name": "review", "dtype": "text"},
    {"name": "stars", "dtype": "number", "nullable": True},
    {"name": "channel", "dtype": "category", "categories": ["chat", "email"]},
]


def test_a_text_card_with_tabular_columns_takes_ids_then_columns_as_float32():
    raw = _card_json(input=TEXT_INPUT, features=TEXT_AND_COLUMNS, files=TEXT_FILES)

    card = parse_card("k", raw)

    assert [f.name for f in card.tabular_features] == ["stars", "channel"]
    assert card.input_row_shape == (16 + 2,) and card.input_dtype == "float32"


def test_a_text_card_without_tabular_columns_keeps_its_int64_ids():
    raw = _card_json(input=TEXT_INPUT, features=TEXT_AND_COLUMNS[:1], files=TEXT_FILES)

    card = parse_card("k", raw)

    assert card.tabular_features == []
    assert card.input_row_shape == (16,) and card.input_dtype == "int64"


@pytest.mark.parametrize(
    ("input_", "features", "problem"),
    [
        (
            TEXT_INPUT,
            [TEXT_AND_COLUMNS[1], TEXT_AND_COLUMNS[0]],
            "card: Value error, a text model has one feature, 'review' of dtype 'text' (then "
            "a text model's tabular features, if any)",
        ),
        (
            TEXT_INPUT,
            [*TEXT_AND_COLUMNS, {"name": "note", "dtype": "text"}],
            "card: Value error, feature 'note': a text model's other features are numbers or "
            "categories",
        ),
        (
            IMAGE_INPUT,
            [{"name": "image", "dtype": "image"}, TEXT_AND_COLUMNS[1]],
            "card: Value error, an image model has one feature, 'image' of dtype 'image'",
        ),
    ],
)
def test_features_beside_an_input_that_break_the_contract_are_named(input_, features, problem):
    with pytest.raises(InvalidCard) as raised:
        parse_card("k", _card_json(input=input_, features=features, files=TEXT_FILES))

    assert raised.value.problem == problem
