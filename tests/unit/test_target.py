"""The target rule (dropflow.vocabulary.target)."""

from __future__ import annotations

import pytest

from dropflow.errors import UserInputError
from dropflow.vocabulary.target import choose_target


@pytest.mark.parametrize("name", ["target", "Label", "CLASS", "y"])
def test_a_target_like_name_in_any_case_is_the_target(name):
    assert choose_target(["a", name, "b"], None, model="m") == name


def test_the_spec_s_target_wins_over_a_target_like_name():
    assert choose_target(["species", "label"], "species", model="m") == "species"


def test_the_last_column_is_never_taken_by_default():
    with pytest.raises(UserInputError) as raised:
        choose_target(["species", "year"], None, model="penguins")
    message = str(raised.value)
    assert "available columns: species, year" in message
    assert "`target: species`" in message and "datasets/penguins/dropflow.yaml" in message


def test_a_long_header_is_listed_with_a_count_of_the_rest():
    with pytest.raises(UserInputError, match=r"c39 \(and 10 more\)"):
        choose_target([f"c{i}" for i in range(50)], None, model="m")
