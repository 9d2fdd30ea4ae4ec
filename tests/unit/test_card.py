"""dropflow.vocabulary.card.read_card: the one way every room reads a model card."""

from __future__ import annotations

import pytest

from dropflow.ports import ObjectNotFound
from dropflow.vocabulary.card import InvalidCard, card_key, read_card
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
