"""dropflow.serving.api: the one JSON reader of request bodies and the refusals made before it.

What a fuzzer sends: nesting far deeper than any request of this API, integers of thousands of
digits, brackets and escapes inside strings, lone surrogates. Each is a value or an error
naming the problem, never a RecursionError (a 500 at the doors).
"""

from __future__ import annotations

import json
import sys
from http import HTTPStatus
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dropflow.serving.api import MAX_JSON_DEPTH, UnreadableBody, parse_json, precheck


def nested(depth: int, opener: str = "[", closer: str = "]") -> str:
    return opener * depth + closer * depth


def objects(depth: int) -> str:
    return '{"a": ' * depth + "1" + "}" * depth


def depth_of(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(depth_of, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(depth_of, value.values()), default=0)
    return 0


@pytest.mark.parametrize(
    "text", [nested(MAX_JSON_DEPTH), objects(MAX_JSON_DEPTH)], ids=["arrays", "objects"]
)
def test_nesting_up_to_the_limit_is_read(text):
    assert parse_json(text) == json.loads(text)


@pytest.mark.parametrize(
    "text",
    [
        nested(MAX_JSON_DEPTH + 1),
        objects(MAX_JSON_DEPTH + 1),
        '{"a": [' * 17 + "1" + "]}" * 17,  # 34 levels, arrays and objects in turn
        nested(1000),
        nested(100_000),  # past every interpreter's own limit
    ],
    ids=["arrays 33", "objects 33", "both 34", "arrays 1,000", "arrays 100,000"],
)
def test_nesting_past_the_limit_is_refused_naming_it(text):
    with pytest.raises(UnreadableBody, match=f"more than {MAX_JSON_DEPTH} levels deep"):
        parse_json(text)


def test_brackets_and_escapes_inside_strings_are_not_nesting():
    text = json.dumps(
        {
            "a": "[" * 100 + "{" * 100,
            "b": '\\"[[[[' * 50,  # escaped quotes, then brackets still inside the string
            "c\\": "\\\\" * 10 + "[" * 50,  # escaped backslashes just before the quote
            "d": [[1, "]]]]]]]]"]],
        }
    )

    assert parse_json(text) == json.loads(text)


def test_closing_brackets_inside_a_string_do_not_hide_a_deep_value():
    text = json.dumps({"a": "]}" * 100, "b": json.loads(nested(MAX_JSON_DEPTH + 5))})

    with pytest.raises(UnreadableBody):
        parse_json(text)


def test_an_integer_of_5000_digits_is_refused_naming_the_limit():
    limit = sys.get_int_max_str_digits()

    with pytest.raises(UnreadableBody, match=f"an integer of more than {limit} digits"):
        parse_json('{"instances": [[' + "9" * 5000 + "]]}")
    with pytest.raises(UnreadableBody, match="digits"):
        parse_json("-" + "1" * 5000)


def test_an_integer_within_the_interpreters_limit_is_read():
    assert parse_json("9" * 4000) == int("9" * 4000)


def test_text_that_is_not_json_stays_a_decode_error_with_its_position():
    with pytest.raises(json.JSONDecodeError) as raised:
        parse_json('{"instances": [[1, 2')

    assert raised.value.pos == 20


def test_nan_and_infinity_are_read_for_the_input_checks_to_refuse():
    assert [repr(v) for v in parse_json("[NaN, Infinity, -Infinity, 1e999]")] == [
        "nan",
        "inf",
        "-inf",
        "inf",
    ]


def test_an_escaped_lone_surrogate_is_read_as_a_string():
    # Python's json reads it; the input checks then refuse it as an unknown category or a
    # string where a number is due (tests/integration/test_fuzz_api.py).
    assert parse_json('["\\ud800"]') == ["\ud800"]


_JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=60,
)
# Values around the limit: a random value at the bottom of 29 to 35 arrays.
_DEEP_VALUES = st.builds(
    lambda inner, depth: json.loads("[" * depth + json.dumps(inner) + "]" * depth),
    _JSON_VALUES,
    st.integers(MAX_JSON_DEPTH - 3, MAX_JSON_DEPTH + 3),
)


@given(_JSON_VALUES | _DEEP_VALUES)
@settings(max_examples=300, deadline=None, derandomize=True, database=None)
def test_any_json_is_read_when_shallow_enough_and_refused_otherwise(value):
    text = json.dumps(value)

    if depth_of(value) <= MAX_JSON_DEPTH:
        assert parse_json(text) == value
    else:
        with pytest.raises(UnreadableBody):
            parse_json(text)


def _event(body: str | None, *, method: str = "POST") -> dict[str, Any]:
    return {"httpMethod": method, "headers": {"Content-Type": "application/json"}, "body": body}


def test_a_body_holding_a_raw_lone_surrogate_is_a_400_before_any_parsing():
    # A proxy event's JSON can carry one (an escape in the body string); no UTF-8 encoder
    # takes it, the client that forwards to the container tier included.
    refused = precheck(_event('{"instances": [["\ud800"]]}'))

    assert refused == (
        HTTPStatus.BAD_REQUEST,
        "request body is not UTF-8 text (a lone surrogate): send JSON",
    )


@pytest.mark.parametrize("body", ['{"instances": [["é", "漢字", "😀"]]}', '{"a": "\\ud800"}'])
def test_text_bodies_that_are_utf8_pass_the_precheck(body):
    assert precheck(_event(body)) is None
