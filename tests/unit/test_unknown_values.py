"""Values the training rows never had (issue 13 point 2) and the spellings of a missing value
(issue 15): what the prediction service sends to the graph, the warnings it answers with, and
the strict 422 of `serving: {unknown_categories: reject}`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from dropflow.promotion.gate import promote
from dropflow.serving.service import (
    MISSING_VALUE,
    UNKNOWN_CATEGORY,
    UNKNOWN_VALUES_METRIC,
    InputSchema,
    InvalidInstances,
    ModelCache,
    PredictionService,
    check_finite,
    to_batch,
)
from dropflow.vocabulary.card import ENCODE, MISSING_CATEGORY, REJECT, Feature
from dropflow.vocabulary.datasets import MISSING_TEXT
from dropflow.vocabulary.spec import Spec
from tests.fakes_serving import expected_output, publish, version_id
from tests.unit.fakes import MemoryStore
from training.data import load_dataset

COLOR = Feature(name="color", dtype="category", categories=["blue", "green", "red"])
SIZE = Feature(name="size", nullable=True)
FLAG = Feature(
    name="flag", dtype="category", categories=[False, True, MISSING_CATEGORY], nullable=True
)
PETS = [COLOR, SIZE, FLAG]
CLASSES = ["cat", "dog"]
NAN = math.nan
# Every way a client may spell a missing value: what training reads as missing in a CSV cell
# (any case, spaces around), NaN, and null.
MISSING_SPELLINGS = ["NA", "na", "N/A", "n/a", "", "  ", "null", "NULL", " None ", "nan", "NaN"]
MISSING_VALUES = [None, NAN, *MISSING_SPELLINGS]


def release(store, registry, serving: dict | None = None) -> str:
    """Publish and promote the pets model; `serving` is the section its job copied."""
    version = version_id(1)
    extra = {"serving": serving} if serving is not None else None
    publish(store, registry, "pets", version, features=PETS, classes=CLASSES, card_extra=extra)
    assert promote("pets", version, store, registry).decision == "approved"
    return version


@pytest.fixture
def service(store, registry) -> PredictionService:
    return PredictionService(ModelCache(store, registry))


@pytest.fixture
def pets(store, registry) -> str:
    return release(store, registry)


@pytest.fixture
def strict_pets(store, registry) -> str:
    return release(store, registry, {"route": "auto", "unknown_categories": "reject"})


# ---------------------------------------------------------------------- encode (the default)
def test_an_unseen_category_is_answered_with_a_warning_naming_the_feature_and_the_value(
    service, store, pets
):
    rows = [["red", 1.0, True], ["purple", 1.0, True]]

    answer = service.predict("pets", rows)

    assert answer["warnings"] == [
        None,
        [
            {
                "feature": "color",
                "value": "purple",
                "kind": UNKNOWN_CATEGORY,
                "message": "unknown category 'purple': the training rows never had it; "
                "predicted with the value unknown",
            }
        ],
    ]
    # The graph read NaN for it: no category (the fake graph, like the real one, gives it 0).
    expected = expected_output(store, "pets", pets, np.array([[2, 1, 1], [NAN, 1, 1]]))
    np.testing.assert_allclose(answer["probabilities"], expected, atol=1e-6)
    assert answer["predictions"] == [CLASSES[i] for i in expected.argmax(axis=1)]


def test_an_answer_without_unseen_values_has_no_warnings(service, pets):
    answer = service.predict("pets", [["red", 1.0, True], ["blue", 0.5, None]])

    assert "warnings" not in answer


def test_object_rows_are_warned_about_as_list_rows_are(service, pets):
    as_list = service.predict("pets", [["teal", 1.0, "maybe"]])
    as_object = service.predict("pets", [{"flag": "maybe", "size": 1.0, "color": "teal"}])

    assert as_object == as_list
    assert [(w["feature"], w["value"]) for w in as_list["warnings"][0]] == [
        ("color", "teal"),
        ("flag", "maybe"),
    ]


def test_a_bad_value_elsewhere_still_refuses_the_request_and_names_only_it(service, pets):
    with pytest.raises(InvalidInstances) as caught:
        service.predict("pets", [["purple", 1.0, True], ["red", "big", True]])

    message = str(caught.value)
    assert "row 1, feature 'size': expected a number, got string 'big'" in message
    assert "purple" not in message


def test_lists_and_objects_stay_refused_for_a_category(service, pets):
    with pytest.raises(InvalidInstances, match="feature 'color': expected a category, got a list"):
        service.predict("pets", [[["red"], 1.0, True]])


@pytest.mark.parametrize(
    ("value", "warned"),
    [
        ("Red", "Red"),  # text compares exactly
        (7, 7),
        (True, True),  # a boolean is no text category
        (math.inf, "Infinity"),
        ("x" * 100, "x" * 37 + "..."),
        (10**60, "1" + "0" * 36 + "..."),
        ("\ud800", "\\ud800"),  # a lone surrogate: the answer must stay UTF-8
    ],
)
def test_the_warning_quotes_the_value_as_sent_and_in_short(value, warned):
    encoded = InputSchema([COLOR]).encode([[value]])

    assert np.isnan(encoded.batch[0, 0])
    ((warning,),) = encoded.warnings
    assert warning["value"] == warned
    json.dumps(warning).encode("utf-8")  # fits a JSON answer


def test_only_rows_with_unseen_values_carry_warnings():
    encoded = InputSchema([COLOR, FLAG]).encode(
        [["red", True], ["mauve", "perhaps"], ["blue", None]]
    )

    assert encoded.warnings is not None
    assert [None if w is None else len(w) for w in encoded.warnings] == [None, 2, None]
    assert encoded.batch[0].tolist() == [2.0, 1.0]
    assert np.isnan(encoded.batch[1]).all()
    assert encoded.batch[2].tolist() == [0.0, 2.0]


def test_the_answer_counts_the_metric_for_values_taken_as_unknown(
    service, pets, monkeypatch, capsys
):
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")

    service.predict("pets", [["red", 1.0, True]])
    service.predict("pets", [["purple", 1.0, True], ["mauve", 1.0, True]])

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if "{" in line]
    counted = [line for line in lines if UNKNOWN_VALUES_METRIC in line]
    assert len(counted) == 1  # once per answer with warnings, none for the clean one
    assert (counted[0]["model"], counted[0][UNKNOWN_VALUES_METRIC]) == ("pets", [1.0])


def test_a_graph_that_cannot_take_an_unknown_value_is_a_422_that_says_so():
    warnings = [None, [{"feature": "color", "value": "purple"}]]

    with pytest.raises(InvalidInstances) as caught:
        check_finite(np.array([[0.5, 0.5], [NAN, NAN]]), warnings)

    assert (
        "row 1: it holds values the training rows never had (feature 'color': 'purple'), which "
        "this version cannot take as unknown" in str(caught.value)
    )


def test_one_off_callers_encode_by_default_and_may_reject():
    assert np.isnan(to_batch([["purple"]], [COLOR])[0, 0])
    with pytest.raises(InvalidInstances, match="unknown category 'purple'; known categories"):
        to_batch([["purple"]], [COLOR], REJECT)


def test_the_model_description_says_what_unseen_categories_get(service, pets):
    assert service.describe_model("pets")["unknown_categories"] == ENCODE


# ---------------------------------------------------------------------- reject
def test_under_reject_an_unseen_category_is_a_422_naming_it_and_the_known_ones(
    service, strict_pets
):
    with pytest.raises(InvalidInstances) as caught:
        service.predict("pets", [["red", 1.0, True], ["purple", 1.0, True]])

    assert (
        "row 1, feature 'color': unknown category 'purple'; known categories: 'blue', 'green', "
        "'red'" in str(caught.value)
    )
    assert service.describe_model("pets")["unknown_categories"] == REJECT


def test_under_reject_known_values_and_missing_spellings_are_still_served(service, strict_pets):
    # (The fake graph has no median fill: the sizes are given.)
    answer = service.predict("pets", [["red", 0.5, "n/a"], ["blue", 1.0, None]])

    assert "warnings" not in answer
    assert len(answer["predictions"]) == 2


# ---------------------------------------------------------------------- missing spellings
@pytest.mark.parametrize("value", MISSING_VALUES)
def test_every_missing_spelling_is_missing_for_a_nullable_number(value):
    encoded = InputSchema([SIZE]).encode([[value], [1.5]])

    assert np.isnan(encoded.batch[0, 0]) and encoded.batch[1, 0] == 1.5
    assert encoded.warnings is None


@pytest.mark.parametrize("value", MISSING_VALUES)
def test_every_missing_spelling_is_the_missing_category_where_training_saw_one(value):
    encoded = InputSchema([FLAG]).encode([[value]])

    assert encoded.batch.tolist() == [[2.0]]
    assert encoded.warnings is None


@pytest.mark.parametrize("value", MISSING_VALUES)
def test_a_missing_value_where_training_had_none_is_unknown_with_a_warning(value):
    encoded = InputSchema([COLOR]).encode([[value]])

    assert np.isnan(encoded.batch[0, 0])
    ((warning,),) = encoded.warnings
    assert (warning["feature"], warning["kind"]) == ("color", MISSING_VALUE)
    assert "the feature had no missing values in training" in warning["message"]


@pytest.mark.parametrize("value", MISSING_VALUES)
def test_under_reject_a_missing_value_where_training_had_none_is_a_422(value):
    with pytest.raises(InvalidInstances) as caught:
        InputSchema([COLOR], REJECT).encode([[value]])

    message = str(caught.value)
    assert "row 0, feature 'color': " in message
    assert "is not accepted: the feature had no missing values in training" in message


@pytest.mark.parametrize("value", [None, NAN, "NA"])
def test_a_number_feature_from_before_imputation_still_refuses_a_missing_value(value):
    # A bare name is a number feature that is not nullable: its graph has no fill for NaN.
    with pytest.raises(InvalidInstances, match="row 0, feature 'a': "):
        InputSchema(["a"]).encode([[value]])


def test_a_real_category_spelled_like_a_missing_value_is_that_category():
    odd = Feature(name="code", dtype="category", categories=["NA", "EU"])

    assert InputSchema([odd]).encode([["NA"], ["EU"]]).batch.tolist() == [[0.0], [1.0]]


def test_the_spellings_the_api_takes_as_missing_are_the_ones_training_reads_as_missing():
    # Given a CSV whose numeric column holds each spelling (some in upper case)
    spellings = sorted(MISSING_TEXT) + [t.upper() for t in sorted(MISSING_TEXT) if t]
    lines = [f"{value},{i % 2}" for i, value in enumerate(spellings)]
    lines += [f"{i}.5,{i % 2}" for i in range(10)]
    store = MemoryStore()
    store.put("datasets/spell/data.csv", ("x,target\n" + "\n".join(lines) + "\n").encode())

    # When training reads it, and the API encodes the same cells
    read = load_dataset(store, "spell", Spec()).x[:, 0]
    served = InputSchema([SIZE]).batch([[value] for value in spellings])

    # Then both take every spelling as missing
    assert np.isnan(read[: len(spellings)]).all() and not np.isnan(read[len(spellings) :]).any()
    assert np.isnan(served).all()
