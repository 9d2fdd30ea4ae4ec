"""The image and text serving benchmark (bench/media_serving.py) runs end to end on tiny
models: jobs train and publish them, promotion approves them, dropflow's handler and the bare
handlers answer alike, and the report has every figure for every model and request kind.
The figures themselves are not checked: they mean nothing on tiny models and a busy machine."""

from __future__ import annotations

import json
import os

import pytest

from bench import media_serving
from dropflow import wiring

pytestmark = pytest.mark.slow

WARM_KEYS = {
    *("dropflow_p50_ms", "dropflow_p99_ms", "bare_p50_ms", "bare_p99_ms"),
    *("dropflow_vs_bare", "dropflow_vs_bare_pooled"),
}
COLD_KEYS = {
    f"{side}_{what}"
    for side in ("dropflow", "bare")
    for what in ("ms", "import_ms", "first_call_ms")
}


@pytest.fixture(scope="module")
def report() -> dict:
    # The bench times the handler in this process, under the DROPFLOW_* variables of its own
    # temporary home: put the environment back whole, or later tests find that home.
    saved = dict(os.environ)
    try:
        return media_serving.main(
            ["--quick", "--requests", "4", "--rounds", "2", "--cold-runs", "1"]
        )
    finally:
        os.environ.clear()
        os.environ.update(saved)
        wiring.reset()


def test_every_model_and_request_kind_is_timed_against_its_bare_handler(report):
    assert set(report["models"]) == {
        "image-224 1 image, base64 JSON",
        "image-224 1 image, raw image/jpeg",
        "image-32 1 image, base64 JSON",
        "image-32 1 image, raw image/jpeg",
        "text 1 string, JSON",
        "image-224 cold",
        "text cold",
    }
    for key, measured in report["models"].items():
        assert set(measured) == (COLD_KEYS if key.endswith("cold") else WARM_KEYS), key
        assert all(value > 0 for value in measured.values()), key


def test_the_report_is_json_and_names_each_missed_target(report):
    assert json.loads(json.dumps(report)) == report
    assert all("x the bare handler" in line for line in report["missed"])


def answering(body: dict) -> object:
    return lambda event, context: {"statusCode": 200, "body": json.dumps(body)}


def test_handlers_that_answer_differently_are_not_timed():
    handlers = {
        "dropflow": answering({"predictions": ["cat"], "probabilities": [[0.6, 0.4]]}),
        "bare": answering({"predictions": ["cat"], "probabilities": [[0.7, 0.3]]}),
    }

    with pytest.raises(SystemExit, match="bare does not answer what dropflow answers"):
        media_serving.same_answers(handlers, {"body": "{}"}, None)
