"""The target rule and the header the launcher reads (dropflow.vocabulary.target)."""

from __future__ import annotations

import pytest

from dropflow.errors import UserInputError
from dropflow.vocabulary.target import HEADER_BYTES, choose_target, csv_header
from tests.unit.fakes import MemoryStore


def header_of(data: bytes) -> list[str] | None:
    store = MemoryStore()
    info = store.put("datasets/m/d.csv", data)
    return csv_header(store, info)


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


def test_the_header_is_the_first_line_trimmed_as_the_reader_trims_it():
    assert header_of(b'\xef\xbb\xbfa, Label ,"b,c"\r\n1,2,3\r\n') == ["a", "Label", "b,c"]


def test_a_one_line_file_without_a_line_end_is_its_header():
    assert header_of(b"a,target") == ["a", "target"]


def test_what_cannot_be_told_from_the_first_bytes_is_left_to_the_job():
    assert header_of(b"") is None
    assert header_of(b"a,caf\xe9\n1,2\n") is None  # not UTF-8: the reader names the file
    assert header_of(b"x" * (HEADER_BYTES + 10) + b"\n") is None  # no line end in reach
    assert header_of(b'a,"two\nlines"\n1,2\n') is None  # a quoted line break
