"""dropflow.vocabulary.card.read_card: the one way every room reads a model card."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from dropflow.ports import ObjectNotFound
from dropflow.vocabulary.card import Feature, InputSpec, InvalidCard, card_key, read_card
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


# --------------------------------------------------------------------------- input (issue 14)
TEXT_INPUT = {
    "kind": "text",
    "max_length": 128,
    "tokenizer": "tokenizer.json",
    "field": "review",
    "pad_id": 0,
}
IMAGE_INPUT = {
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
    [(TEXT_INPUT, (128,), "int64"), (IMAGE_INPUT, (64, 48, 3), "uint8")],
)
def test_an_input_section_round_trips_with_only_its_own_keys(document, shape, dtype):
    spec = InputSpec.model_validate(document)

    assert json.loads(spec.model_dump_json()) == document
    assert (spec.row_shape, spec.input_dtype) == (shape, dtype)


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({**TEXT_INPUT, "pad_id": None}, "a text input needs pad_id"),
        ({**TEXT_INPUT, "height": 32}, "height do not apply to a text input"),
        ({**IMAGE_INPUT, "layout": None}, "an image input needs layout"),
        ({**IMAGE_INPUT, "channels": 1}, "channels"),
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
