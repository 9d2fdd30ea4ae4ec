"""The API fuzzed from its own OpenAPI description (schemathesis) over real HTTP.

The predict function runs behind the local gateway on 127.0.0.1 with a promoted classifier
that has a number and a category feature. Every operation in GET /openapi.json (the simple API
and the Open Inference Protocol under /v2) gets generated requests, valid and invalid; no
answer may be a 5xx, use a status the description does not list, or break its schema.
Hypothesis is derandomized, so a run is reproducible in CI.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from http.client import HTTPConnection
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from dropflow import wiring
from dropflow.promotion.gate import promote
from dropflow.records.catalog import Catalog
from dropflow.serving.service import InvalidInstances, check_finite
from dropflow.vocabulary.card import Feature
from dropflow_dev.local.gateway import Gateway
from tests.fakes_serving import load_handler, publish, version_id

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

ROOT = Path(__file__).resolve().parents[2]
MODEL, VERSION = "mixed", version_id(1)
FEATURES = [
    Feature(name="size"),
    Feature(name="weight", nullable=True),
    Feature(name="colour", dtype="category", categories=["red", "green", "blue"]),
]
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance]
FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(scope="module")
def predict_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    tmp = tmp_path_factory.mktemp("fuzz")
    with pytest.MonkeyPatch.context() as env:
        env.setenv("DROPFLOW_STORE_URL", (tmp / "bucket").as_uri())
        env.setenv("DROPFLOW_REGISTRY_URL", f"sqlite://{tmp / 'registry.db'}")
        env.setenv("POWERTOOLS_LOG_LEVEL", "CRITICAL")
        wiring.reset()
        store, registry = wiring.store(), wiring.registry()
        publish(store, registry, MODEL, VERSION, features=FEATURES, classes=["small", "large"])
        promote(MODEL, VERSION, store, registry)
        Catalog(registry).add_model("still-training")  # a model with no champion: 503s
        yield load_handler(ROOT / "functions" / "predict" / "app.py")
        wiring.reset()


@pytest.fixture(scope="module")
def base_url(predict_app: ModuleType) -> Iterator[str]:
    gateway = Gateway(predict_app.lambda_handler, host="127.0.0.1", port=0)
    gateway.start()
    try:
        yield gateway.url
    finally:
        gateway.stop()


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


def _description() -> dict:
    """GET /openapi.json's answer, read from a throwaway instance of the function."""
    import os
    import tempfile

    with tempfile.TemporaryDirectory() as tmp, pytest.MonkeyPatch.context() as env:
        env.setenv("DROPFLOW_STORE_URL", Path(tmp, "bucket").as_uri())
        env.setenv("DROPFLOW_REGISTRY_URL", f"sqlite://{os.path.join(tmp, 'registry.db')}")
        wiring.reset()
        app = load_handler(ROOT / "functions" / "predict" / "app.py")
        description = json.loads(app.openapi_schema())
        wiring.reset()
    return description


DESCRIPTION = _description()
# Requests aimed at the promoted model (its name and version pinned) reach the input checks
# and the graph; the free run also sends arbitrary names and versions.
PINNED = schemathesis.openapi.from_dict(DESCRIPTION)
PINNED.config.update(parameters={"name": MODEL, "version": VERSION})
FREE = schemathesis.openapi.from_dict(DESCRIPTION)


def _shaped_to_the_model(description: dict) -> dict:
    """The description with request bodies narrowed to the promoted model's input contract,
    so that generated requests get past the structural checks and reach the graph with
    arbitrary (extreme, null, unknown-category) values."""
    shaped = copy.deepcopy(description)
    value = {"anyOf": [{"type": "number"}, {"type": "null"}, {"enum": ["red", "green", "x"]}]}
    row = {
        "type": "object",
        "properties": {f.name: value for f in FEATURES},
        "required": [f.name for f in FEATURES],
        "additionalProperties": False,
    }
    shaped["components"]["schemas"]["PredictRequest"] = {
        "type": "object",
        "properties": {"instances": {"type": "array", "items": row, "minItems": 1, "maxItems": 4}},
        "required": ["instances"],
        "additionalProperties": False,
    }
    tensor = {
        "type": "object",
        "properties": {
            "name": {"const": "input"},
            "datatype": {"const": "FP32"},
            "shape": {"const": [1, len(FEATURES)]},
            "data": {
                "type": "array",
                "items": {"anyOf": [{"type": "number"}, {"type": "null"}]},
                "minItems": len(FEATURES),
                "maxItems": len(FEATURES),
            },
        },
        "required": ["name", "datatype", "shape", "data"],
        "additionalProperties": False,
    }
    infer = {
        "type": "object",
        "properties": {"inputs": {"type": "array", "items": tensor, "minItems": 1, "maxItems": 1}},
        "required": ["inputs"],
        "additionalProperties": False,
    }
    for path, item in shaped["paths"].items():
        if path.endswith("/infer"):
            item["post"]["requestBody"]["content"]["application/json"]["schema"] = infer
    return shaped


SHAPED = schemathesis.openapi.from_dict(_shaped_to_the_model(DESCRIPTION)).include(method="POST")
SHAPED.config.update(parameters={"name": MODEL, "version": VERSION})


def test_the_served_description_is_the_one_fuzzed(base_url, http):
    answer = http.get(f"{base_url}/openapi.json", timeout=10)
    assert answer.status_code == 200
    served = answer.json()
    assert served["paths"].keys() == DESCRIPTION["paths"].keys()
    assert "/models/{name}/predict" in served["paths"]
    assert "/v2/models/{name}/versions/{version}/infer" in served["paths"]


@PINNED.parametrize()
@FUZZ
def test_pinned_model(case, base_url, http):
    case.call_and_validate(base_url=base_url, session=http, checks=CHECKS, timeout=10)


@FREE.parametrize()
@settings(FUZZ, max_examples=25)
def test_any_name(case, base_url, http):
    case.call_and_validate(base_url=base_url, session=http, checks=CHECKS, timeout=10)


@SHAPED.parametrize()
@FUZZ
def test_model_shaped_bodies(case, base_url, http):
    case.call_and_validate(base_url=base_url, session=http, checks=CHECKS, timeout=10)


# ---------------------------------------------------------------------- what the fuzzer found
def test_an_unknown_http_method_is_a_json_405_not_the_servers_501(base_url):
    # Found: TRACE got http.server's HTML 501 page from the local gateway.
    host, port = base_url.removeprefix("http://").split(":")
    connection = HTTPConnection(host, int(port), timeout=10)
    connection.request("TRACE", f"/models/{MODEL}")
    answer = connection.getresponse()
    body = json.loads(answer.read())
    connection.close()
    assert answer.status == 405
    assert "GET" in answer.getheader("Allow")
    assert body["error"]["code"] == 405 and "TRACE" in body["error"]["message"]


def test_a_non_finite_infer_output_is_a_422_not_nulls_in_a_200(base_url, http):
    # Found: a null in a nullable column reached a graph without imputation, and the NaN
    # outputs went out as nulls in a 200 (the schema says numbers).
    tensor = {"name": "input", "datatype": "FP32", "shape": [1, 3], "data": [0.0, None, 0.0]}
    url = f"{base_url}/v2/models/{MODEL}/infer"
    answer = http.post(url, json={"inputs": [tensor]}, timeout=10)
    assert answer.status_code == 422
    assert "not a finite number for row 0" in answer.json()["error"]


def test_a_non_finite_prediction_is_a_422_naming_the_row(base_url, http):
    # The same NaN through POST /models/{name}/predict: refused, the row named.
    rows = [
        {"size": 1.0, "weight": 1.0, "colour": "red"},
        {"size": 1.0, "weight": None, "colour": "blue"},
    ]
    url = f"{base_url}/models/{MODEL}/predict"
    answer = http.post(url, json={"instances": rows}, timeout=10)
    assert answer.status_code == 422, answer.text
    assert "not a finite number for row 1" in answer.json()["error"]["message"]
    fine = http.post(url, json={"instances": rows[:1]}, timeout=10)
    assert fine.status_code == 200 and fine.json()["predictions"][0] in ("small", "large")


def test_an_overflowed_output_names_its_rows():
    # Extreme float32 inputs can overflow a graph to infinity (then softmax gives NaN).
    check_finite(np.array([[0.5, 0.5]], dtype=np.float32))
    with pytest.raises(InvalidInstances, match=r"for row 1, 2:"):
        check_finite(np.array([[0.5, 0.5], [np.inf, 0.0], [np.nan, np.nan]], dtype=np.float32))
    with pytest.raises(InvalidInstances, match=r"for row 0:"):
        check_finite(np.array([np.inf, 1.0], dtype=np.float32))
