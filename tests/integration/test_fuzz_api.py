"""The API fuzzed from its own OpenAPI description (schemathesis) over real HTTP.

The predict function runs behind the local gateway on 127.0.0.1 with a promoted classifier
that has a number and a category feature. Every operation in GET /openapi.json (the simple API
and the Open Inference Protocol under /v2) gets generated requests, valid and invalid; no
answer may be a 5xx, use a status the description does not list, or break its schema.
Hypothesis is derandomized, so a run is reproducible in CI.

Then the bodies no schema generates (JSON nested 1,000 deep, integers of 5,000 digits, 1e999,
NaN, a million small values, lone surrogates) at every door that parses JSON: the predict
function called with proxy events, the local gateway over HTTP, and the container tier's ASGI
app on uvicorn; each is a 4xx naming the problem, and nothing is logged with a traceback.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
from collections.abc import Callable, Iterator
from http import HTTPStatus
from http.client import HTTPConnection
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import requests
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    response_schema_conformance,
    status_code_conformance,
)

from dropflow import wiring
from dropflow.promotion.gate import promote
from dropflow.records.catalog import Catalog
from dropflow.serving.api import MAX_JSON_DEPTH
from dropflow.serving.endpoint import PredictEndpoint
from dropflow.serving.service import InvalidInstances, check_finite
from dropflow.vocabulary.card import Feature
from dropflow.vocabulary.routing import CONTAINER
from dropflow_dev.lambda_context import LambdaContext
from dropflow_dev.local.gateway import Gateway
from serving.asgi import build_app
from serving.readiness import Preloader, Readiness
from serving.server import ServerOptions, uvicorn_settings
from tests.fakes_serving import load_handler, publish, version_id
from tests.net import free_port, wait_until

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


# ---------------------------------------------------------------------- odd JSON, at every door
PREDICT, INFER = f"/models/{MODEL}/predict", f"/v2/models/{MODEL}/infer"
TIMEOUT = 60  # seconds for one answer: a million values take a while on a busy machine
INT_LIMIT = 4300  # Python's sys.get_int_max_str_digits() default


def _rows(rows: str) -> str:
    return '{"instances": ' + rows + "}"


def _tensor(data: str) -> str:
    return (
        '{"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3], "data": ' + data + "}]}"
    )


DEEP = "[" * 1000 + "]" * 1000
HUGE_INT = "9" * 5000
A_MILLION_ZEROS = ",".join(["0"] * 1_000_000)
# (route, body, status, what the message says): refused as the body is read, with a WARNING.
UNREADABLE = {
    "predict, nested 1,000 deep": (PREDICT, _rows(DEEP), f"more than {MAX_JSON_DEPTH} levels"),
    "infer, nested 1,000 deep": (INFER, _tensor(DEEP), f"more than {MAX_JSON_DEPTH} levels"),
    "predict, an integer of 5,000 digits": (
        PREDICT,
        _rows(f'[[{HUGE_INT}, 1, "red"]]'),
        f"an integer of more than {INT_LIMIT} digits",
    ),
    "infer, an integer of 5,000 digits": (
        INFER,
        _tensor(f"[{HUGE_INT}, 1, 0]"),
        f"an integer of more than {INT_LIMIT} digits",
    ),
}
# (route, body, status, what the message says): read, then refused by the input checks.
REFUSED = {
    "predict, 1e999": (
        PREDICT,
        _rows('[[1e999, 1, "red"]]'),
        HTTPStatus.UNPROCESSABLE_ENTITY,
        "feature 'size': inf is not a finite float32 number",
    ),
    "infer, 1e999": (
        INFER,
        _tensor("[1e999, 1, 0]"),
        HTTPStatus.UNPROCESSABLE_ENTITY,
        "feature 'size': inf is not a finite float32 number",
    ),
    "predict, a NaN literal": (
        PREDICT,
        _rows('[[NaN, 1, "red"]]'),
        HTTPStatus.UNPROCESSABLE_ENTITY,
        "feature 'size': NaN is not allowed",
    ),
    "infer, an -Infinity literal": (
        INFER,
        _tensor("[1, -Infinity, 0]"),
        HTTPStatus.UNPROCESSABLE_ENTITY,
        "feature 'weight': -inf is not a finite float32 number",
    ),
    "predict, a million values in a row": (
        PREDICT,
        _rows(f"[[{A_MILLION_ZEROS}]]"),
        HTTPStatus.UNPROCESSABLE_ENTITY,
        "row 0: has 1000000 values, the model expects 3 features",
    ),
    "predict, a million empty rows": (
        PREDICT,
        _rows("[" + ",".join(["[]"] * 1_000_000) + "]"),
        HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
        "1000000 instances in one request; the limit is 10000",
    ),
    "infer, a million values for 3": (
        INFER,
        _tensor(f"[{A_MILLION_ZEROS}]"),
        HTTPStatus.BAD_REQUEST,
        "input data holds 1000000 values but shape [1, 3] needs 3",
    ),
    "predict, a lone surrogate as a feature name": (
        PREDICT,
        _rows('[{"\\udc00": 1}]'),
        HTTPStatus.UNPROCESSABLE_ENTITY,
        "unknown features '\\udc00'",
    ),
    "infer, a shape of 4,000 digits": (
        INFER,
        _tensor("[1, 1, 0]").replace("[1, 3]", f"[{'9' * 4000}, 3]"),
        HTTPStatus.BAD_REQUEST,
        "shape must hold non-negative int64 sizes (up to 2^63-1), got [9999999999",
    ),
    "infer, a shape of a million sizes": (
        INFER,
        _tensor("[1, 1, 0]").replace("[1, 3]", f"[{A_MILLION_ZEROS}]"),
        HTTPStatus.UNPROCESSABLE_ENTITY,
        "input shape [0, 0, 0, 0, 0, 0, ...] does not fit the model",
    ),
    "infer, a lone surrogate as a value": (
        INFER,
        _tensor('[1, "\\ud800", 0]'),
        HTTPStatus.UNPROCESSABLE_ENTITY,
        "feature 'weight': expected a number, got string '\\ud800'",
    ),
}

# (route, body, the warning's value): values the model never saw, answered 200 with a warning
# that quotes them in short, in valid UTF-8 JSON.
WARNED = {
    "predict, a lone surrogate as a category": (
        PREDICT,
        _rows('[[1, 1, "\\ud800"]]'),
        "\\ud800",
    ),
    "predict, a category of 4,000 digits": (
        PREDICT,
        _rows(f"[[1, 1, {'9' * 4000}]]"),
        "9" * 37 + "...",
    ),
    "predict, a category of a million characters": (
        PREDICT,
        _rows(f'[[1, 1, "{"x" * 1_000_000}"]]'),
        "x" * 37 + "...",
    ),
}


@pytest.fixture(scope="module")
def container_url(predict_app: ModuleType) -> Iterator[str]:
    """The container tier's ASGI app, on uvicorn with the server's own settings, in a thread
    of this process (so caplog hears its endpoint), serving the same store and registry."""
    endpoint = PredictEndpoint(wiring.prediction_service(served_by=CONTAINER))
    port = free_port()
    settings = {**uvicorn_settings(ServerOptions(host="127.0.0.1", port=port, workers=1))}
    settings["log_config"] = None  # leave logging to the test
    app = build_app(endpoint.handle, Preloader(lambda: [], Readiness()))
    server = uvicorn.Server(uvicorn.Config(app, **settings))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_until(lambda: server.started or not thread.is_alive(), TIMEOUT, what="uvicorn to start")
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(TIMEOUT)


Door = Callable[[str, str], tuple[int, Any]]


@pytest.fixture(params=["function", "local gateway", "container tier"])
def door(request, predict_app, http) -> Door:
    """post(path, raw JSON text) -> (status, decoded answer) through one door."""
    if request.param == "function":

        def post(path: str, body: str) -> tuple[int, Any]:
            event = json.loads((ROOT / "events" / "apigw-predict.json").read_text())
            event["path"], event["body"] = path, body
            answer = predict_app.lambda_handler(event, LambdaContext())
            return answer["statusCode"], json.loads(answer["body"])

        return post
    url = (
        request.getfixturevalue("base_url")
        if request.param == "local gateway"
        else request.getfixturevalue("container_url")
    )

    def post_http(path: str, body: str) -> tuple[int, Any]:
        answer = http.post(
            url + path,
            data=body.encode(),
            headers={"Content-Type": "application/json"},
            timeout=TIMEOUT,
        )
        return answer.status_code, answer.json()

    return post_http


@pytest.fixture
def logged(caplog) -> pytest.LogCaptureFixture:
    # The module runs the function with POWERTOOLS_LOG_LEVEL=CRITICAL; warnings are the point.
    caplog.set_level(logging.WARNING, logger="dropflow")
    return caplog


def _message(path: str, body: Any) -> str:
    # Under /v2 the protocol's error shape {"error": "..."}; elsewhere {"error": {code, message}}.
    error = body["error"]
    return error if path.startswith("/v2/") else error["message"]


def _no_traceback_and_no_error(caplog: pytest.LogCaptureFixture) -> None:
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert [r.getMessage() for r in caplog.records if r.exc_info] == []


@pytest.mark.parametrize("case", UNREADABLE, ids=list(UNREADABLE))
def test_a_body_past_what_the_api_reads_is_a_400_and_a_warning(door, logged, case):
    # Found: both answered 500 and logged a full traceback at ERROR (a RecursionError from
    # json, and the ValueError of int() refusing 5,000 digits).
    path, body, says = UNREADABLE[case]

    status, answer = door(path, body)

    assert status == HTTPStatus.BAD_REQUEST, answer
    assert says in _message(path, answer)
    warnings = [r for r in logged.records if r.levelno == logging.WARNING]
    assert [says in r.getMessage() for r in warnings] == [True]
    _no_traceback_and_no_error(logged)


@pytest.mark.parametrize("case", REFUSED, ids=list(REFUSED))
def test_odd_values_are_a_4xx_naming_them(door, logged, case):
    path, body, expected, says = REFUSED[case]

    status, answer = door(path, body)

    assert status == expected, answer
    assert says in _message(path, answer)
    assert len(_message(path, answer)) < 300  # a client's value is quoted, never whole
    _no_traceback_and_no_error(logged)


@pytest.mark.parametrize("case", WARNED, ids=list(WARNED))
def test_odd_unseen_categories_are_answered_with_a_warning_quoting_them_in_short(
    door, logged, case
):
    path, body, value = WARNED[case]

    status, answer = door(path, body)

    assert status == HTTPStatus.OK, answer
    ((warning,),) = answer["warnings"]
    assert (warning["feature"], warning["kind"], warning["value"]) == (
        "colour",
        "unknown_category",
        value,
    )
    assert len(json.dumps(answer)) < 500  # a client's value is quoted, never whole
    _no_traceback_and_no_error(logged)
