"""The compatibility rule: what a candidate may change without breaking the champion's clients."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dropflow.promotion.compatibility import (
    allows_schema_change,
    champion_inputs,
    compare,
    encoding_mismatch,
)
from dropflow.vocabulary.card import MISSING_CATEGORY, Card, Feature
from tests.fakes_serving import make_card, version_id

IRIS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
SPECIES = ["setosa", "versicolor", "virginica"]


def number(name: str, nullable: bool = True) -> Feature:
    return Feature(name=name, dtype="number", nullable=nullable)


def category(name: str, *values: bool | int | str) -> Feature:
    return Feature(
        name=name, dtype="category", categories=list(values), nullable=MISSING_CATEGORY in values
    )


def card(
    features: list[Feature] | list[str] | None = None,
    classes: list | None = None,
    *,
    task: str = "classification",
    allow: bool | None = None,
    n: int = 2,
    unknown_categories: str | None = None,
) -> Card:
    extra: dict = {} if allow is None else {"promotion": {"allow_schema_change": allow}}
    if unknown_categories is not None:
        extra["serving"] = {"route": "auto", "unknown_categories": unknown_categories}
    return make_card(
        "iris",
        version_id(n),
        task=task,
        features=features if features is not None else [number(f) for f in IRIS],
        classes=classes if classes is not None else SPECIES,
        primary="accuracy" if task == "classification" else "rmse",
        extra=extra,
    )


CHAMPION = card(n=1)


def changes(candidate: Card, champion: Card = CHAMPION) -> list[str]:
    return compare(candidate, champion).changes


# ---------------------------------------------------------------------- what breaks clients
def test_the_same_schema_breaks_nothing():
    assert changes(card()) == []


def test_a_renamed_feature_is_one_gone_and_one_new():
    renamed = [number(f) for f in IRIS[:3]] + [number("petal_w")]

    assert changes(card(renamed)) == ["feature 'petal_width' is gone", "feature 'petal_w' is new"]


def test_an_added_feature_is_new():
    assert changes(card([*[number(f) for f in IRIS], number("colour_index")])) == [
        "feature 'colour_index' is new"
    ]


def test_a_removed_feature_is_gone():
    assert changes(card([number(f) for f in IRIS[1:]])) == ["feature 'sepal_length' is gone"]


def test_reordered_features_name_both_orders():
    reordered = [number(f) for f in [IRIS[1], IRIS[0], *IRIS[2:]]]

    assert changes(card(reordered)) == [
        "the features would be reordered from [sepal_length, sepal_width, petal_length, "
        "petal_width] to [sepal_width, sepal_length, petal_length, petal_width] (rows sent as "
        "lists would give values to the wrong features)"
    ]


def test_a_feature_that_changes_kind_is_named():
    retyped = [*[number(f) for f in IRIS[:3]], category("petal_width", "narrow", "wide")]

    assert changes(card(retyped)) == [
        "feature 'petal_width' would be a category instead of a number"
    ]


def test_a_number_that_no_longer_accepts_null_is_named():
    strict = [*[number(f) for f in IRIS[:3]], number("petal_width", nullable=False)]

    assert changes(card(strict)) == [
        "feature 'petal_width' would refuse null, which the champion accepts"
    ]


def test_a_number_that_now_accepts_null_is_compatible():
    old = card([number(f, nullable=False) for f in IRIS], n=1)

    assert changes(card(), old) == []


def test_a_category_the_champion_accepted_and_the_candidate_does_not_know_is_named():
    old = card([category("colour", "blue", "green", "red")], n=1)

    assert changes(card([category("colour", "green", "red")]), old) == [
        "feature 'colour' would no longer know 1 category the champion accepts (they would be "
        "predicted as unknown, with a warning): 'blue'"
    ]
    assert changes(card([category("colour", "green", "red")], unknown_categories="reject"), old)[
        0
    ] == ("feature 'colour' would refuse 1 category the champion accepts: 'blue'")


def test_a_category_that_no_longer_accepts_null_is_named_as_null():
    old = card([category("colour", "green", "red", MISSING_CATEGORY)], n=1)

    assert changes(card([category("colour", "green", "red")]), old) == [
        "feature 'colour' would no longer know null, which the champion accepts (it would be "
        "predicted as unknown, with a warning)"
    ]
    strict = card([category("colour", "green", "red")], unknown_categories="reject")
    assert changes(strict, card(old.features, n=1, unknown_categories="reject")) == [
        "feature 'colour' would refuse null, which the champion accepts"
    ]


def test_a_candidate_that_rejects_unseen_categories_where_the_champion_encodes_them_is_named():
    colour = [category("colour", "green", "red")]
    old = card(colour, n=1)

    assert changes(card(colour, unknown_categories="reject"), old) == [
        "a category value the training rows never had would be refused (422) under the spec's "
        "serving.unknown_categories: reject, where the champion answers it with a warning"
    ]
    assert changes(card(colour, unknown_categories="encode"), old) == []
    # Refusing fewer requests breaks no client; without categories there is nothing to refuse.
    assert changes(card(colour), card(colour, n=1, unknown_categories="reject")) == []
    assert changes(card(unknown_categories="reject")) == []


def test_many_lost_categories_are_counted_beyond_the_first_ten():
    old = card(
        [category("code", *[f"c{i:02d}" for i in range(25)])], n=1, unknown_categories="reject"
    )

    (change,) = changes(card([category("code", "c00")], unknown_categories="reject"), old)

    assert change.startswith("feature 'code' would refuse 24 categories the champion accepts: ")
    assert change.endswith("'c10' and 14 more")


def test_learnt_categories_and_null_are_compatible():
    old = card([category("colour", "green", "red")], n=1)
    new = card([category("colour", "blue", "green", "red", MISSING_CATEGORY)])

    assert changes(new, old) == []


def test_integer_categories_from_parquet_match_the_same_text_from_csv():
    old = card([category("grade", 1, 2, 3)], n=1)

    assert changes(card([category("grade", "1", "2", "3")]), old) == []


def test_an_added_class_names_both_class_lists():
    assert changes(card(classes=["setosa", "ver", "versicolor", "virginica"])) == [
        "classes would change from [setosa, versicolor, virginica] to "
        "[setosa, ver, versicolor, virginica]"
    ]


def test_a_removed_class_is_a_change():
    assert changes(card(classes=["setosa", "versicolor"])) == [
        "classes would change from [setosa, versicolor, virginica] to [setosa, versicolor]"
    ]


def test_classes_of_another_type_are_quoted_so_the_difference_shows():
    old = card(classes=[0, 1], n=1)

    assert changes(card(classes=["0", "1"]), old) == [
        "classes would change from [0, 1] to ['0', '1']"
    ]
    assert changes(card(classes=[False, True]), old) == [
        "classes would change from [0, 1] to [False, True]"
    ]


def test_whole_float_classes_are_the_same_numbers_to_a_client():
    assert changes(card(classes=[0.0, 1.0]), card(classes=[0, 1], n=1)) == []


def test_long_class_lists_name_what_was_added_and_removed():
    old = card(classes=[f"k{i:03d}" for i in range(30)], n=1)
    new = card(classes=[f"k{i:03d}" for i in range(1, 31)])

    assert changes(new, old) == ["classes would change from 30 to 30: new 'k030'; gone 'k000'"]


def test_another_task_is_a_change_and_classes_are_not_compared():
    regression = card(task="regression")

    assert changes(regression) == [
        "the task would change from classification to regression, and with it what every "
        "answer holds"
    ]


def test_every_difference_is_named_at_once():
    new = card(
        [number(f) for f in IRIS[:3]] + [number("petal_w")],
        classes=["setosa", "ver", "versicolor", "virginica"],
    )

    assert changes(new) == [
        "feature 'petal_width' is gone",
        "feature 'petal_w' is new",
        "classes would change from [setosa, versicolor, virginica] to "
        "[setosa, ver, versicolor, virginica]",
    ]


def test_a_long_reordering_names_where_it_starts():
    names = [f"c{i:02d}" for i in range(30)]
    swapped = [*names[:7], names[8], names[7], *names[9:]]

    assert changes(card(swapped), card(names, n=1)) == [
        "the features would be reordered (first at position 8: 'c07' before, 'c08' now) (rows "
        "sent as lists would give values to the wrong features)"
    ]


def test_beyond_twenty_differences_the_rest_are_counted():
    old = card([f"a{i}" for i in range(30)], n=1)

    found = changes(card([f"b{i}" for i in range(30)]), old)

    assert len(found) == 20
    assert found[:2] == ["feature 'a0' is gone", "feature 'a1' is gone"]
    assert found[-1] == "and 41 more changes"


# ---------------------------------------------------------------------- consent
@pytest.mark.parametrize(("allow", "expected"), [(None, False), (False, False), (True, True)])
def test_only_an_explicit_true_in_the_spec_allows_a_schema_change(allow, expected):
    assert allows_schema_change(card(allow=allow)) is expected
    assert compare(card(classes=["a", "b"], allow=allow), CHAMPION).allowed is expected


def test_a_malformed_promotion_section_on_a_card_allows_nothing():
    odd = make_card(
        "iris", version_id(2), features=IRIS, classes=SPECIES, extra={"promotion": "yes"}
    )

    assert allows_schema_change(odd) is False


def test_the_refusal_names_every_change_and_what_to_do():
    new = card([number(f) for f in IRIS[:3]] + [number("petal_w")])
    fit = compare(new, CHAMPION)

    reason = fit.refusal(new, CHAMPION)

    assert reason.startswith(
        f"would break the clients of the champion {CHAMPION.version}: feature 'petal_width' is "
        "gone; feature 'petal_w' is new. "
    )
    assert "fix it under datasets/iris/" in reason
    assert "add `promotion: {allow_schema_change: true}` to datasets/iris/dropflow.yaml" in reason


# ---------------------------------------------------------------------- fair scoring inputs
def test_different_features_or_classes_cannot_be_given_to_the_champion():
    assert "feature names or order" in encoding_mismatch(card(IRIS[::-1]), CHAMPION)
    assert "classes" in encoding_mismatch(card(classes=["a", "b", "c"]), CHAMPION)
    assert "regression" in encoding_mismatch(card(task="regression"), CHAMPION)
    assert encoding_mismatch(card(), CHAMPION) is None


def test_category_codes_are_translated_and_rows_the_champion_refuses_left_out():
    old = card([number("size", nullable=False), category("colour", "green", "red")], n=1)
    new = card([number("size"), category("colour", "blue", "green", "red", MISSING_CATEGORY)])
    # size, colour code in the candidate: blue 0, green 1, red 2, <missing> 3
    x = np.array([[1.0, 1.0], [2.0, 2.0], [3.0, 0.0], [math.nan, 2.0], [5.0, 3.0]], np.float32)

    assert encoding_mismatch(new, old) is None
    inputs = champion_inputs(new, old, x)

    assert inputs.accepted.tolist() == [True, True, False, False, False]
    assert inputs.x[inputs.accepted].tolist() == [[1.0, 0.0], [2.0, 1.0]]


# --------------------------------------------------------------------------- text and a table
TEXT = Feature(name="review", dtype="text")
TEXT_FILES = {"model": "model.onnx", "reference": "reference.npz", "tokenizer": "tokenizer.json"}


def text_card(columns: list[Feature], n: int = 2) -> Card:
    return make_card(
        "reviews",
        version_id(n),
        features=[TEXT, *columns],
        classes=["neg", "pos"],
        extra={
            "input": {
                "kind": "text",
                "max_length": 16,
                "tokenizer": "tokenizer.json",
                "field": "review",
                "pad_id": 0,
            },
            "files": TEXT_FILES,
        },
    )


def test_a_text_models_tabular_columns_change_its_schema_as_a_tables_do():
    old = text_card([number("stars"), category("channel", "chat", "email")], n=1)

    assert changes(text_card([category("channel", "chat")]), old) == [
        "feature 'stars' is gone",
        "feature 'channel' would no longer know 1 category the champion accepts (they would be "
        "predicted as unknown, with a warning): 'email'",
    ]
    assert changes(text_card([number("stars")]), text_card([], n=1)) == ["feature 'stars' is new"]


def test_the_same_text_and_columns_break_nothing():
    columns = [number("stars"), category("channel", "chat", "email")]

    assert changes(text_card(columns), text_card(columns, n=1)) == []
