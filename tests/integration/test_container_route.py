"""A large model through the predict function: forwarded to the container tier's server
(`python -m serving`, a real process on 127.0.0.1), answered with "served_by": "container";
with the server gone, a 503 with Retry-After, never a 500. The server's own behaviour is
tests/integration/test_container_server.py's."""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
from http import HTTPStatus
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from dropflow import wiring
from dropflow.adapters.local.process_tier import ProcessTier, scale_out_requested_at
from dropflow.promotion.gate import promote
from dropflow.vocabulary.card import Feature
from dropflow.vocabulary.routing import RoutePolicy
from dropflow_dev.lambda_context import LambdaContext
from tests.fakes_serving import ProxyAnswer, expected_output, load_handler, publish, version_id
from tests.net import free_port, wait_ready

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = json.loads((ROOT / "events" / "apigw-predict.json").read_text())
ROWS = [[0.1, 0.2, 0.3, 0.4], [1.0, -1.0, 0.5, 2.0]]
CLASSES = ["no", "yes"]
PETS = [
    Feature(name="color", dtype="category", categories=["blue", "green", "red"]),
    Feature(name="size", nullable=True),
]


@pytest.fixture
def large(adapters, tmp_path) -> str:
    store, registry = adapters
    version = version_id(1)
    publish(store, registry, "large", version, classes=CLASSES)
    result = promote(
        "large",
        version,
        store,
        registry,
        policy=RoutePolicy(max_model_mb=0.0001),  # the lowered threshold: this graph is large
        tier=ProcessTier(tmp_path / "serving"),
    )
    assert (result.decision, result.route) == ("approved", "container")
    serving = {"serving": {"route": "container", "unknown_categories": "encode"}}
    publish(store, registry, "pets", version, features=PETS, classes=CLASSES, card_extra=serving)
    assert promote("pets", version, store, registry).route == "container"
    return version


@pytest.fixture
def server(large, tmp_path):
    """The container tier's server against the same store and registry, ready (its models
    loaded)."""
    port = free_port()
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "serving", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT / "layers" / "dropflow")},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        if wait_ready(url, 120, alive=lambda: proc.poll() is None) != HTTPStatus.OK:
            pytest.fail(
                "the container server never became ready:\n" + (tmp_path / "server.log").read_text()
            )
        yield SimpleNamespace(proc=proc, url=url)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)
        log.close()


@pytest.fixture
def app(server, monkeypatch):
    monkeypatch.setenv("DROPFLOW_CONTAINER_URL", server.url)
    monkeypatch.setenv("DROPFLOW_CONTAINER_RETRY_AFTER_SECONDS", "30")
    wiring.reset()  # a cold start reads the settings afresh
    return load_handler(ROOT / "functions" / "predict" / "app.py")


def call(app, method: str, path: str, body=None) -> ProxyAnswer:
    event = copy.deepcopy(SAMPLE)
    event["httpMethod"] = event["requestContext"]["httpMethod"] = method
    event["path"] = path
    event["body"] = None if body is None else json.dumps(body)
    return ProxyAnswer(app.lambda_handler(event, LambdaContext(function_name="PredictFunction")))


def test_the_promotion_asked_the_tier_to_scale_out(large, tmp_path):
    assert scale_out_requested_at(tmp_path / "serving") is not None


def test_a_large_model_is_served_by_the_container(app, adapters, large):
    store, _ = adapters

    answer = call(app, "POST", "/models/large/predict", {"instances": ROWS})

    assert answer.status == HTTPStatus.OK, answer.json
    assert answer.json["served_by"] == "container"
    assert answer.json["version"] == large
    expected = expected_output(store, "large", large, np.array(ROWS))
    assert answer.json["predictions"] == [CLASSES[i] for i in expected.argmax(axis=1)]


def test_the_containers_warnings_pass_through_the_function(app):
    rows = [["purple", 1.0], ["red", 2.0]]
    columns = [
        {"name": "color", "shape": [2], "datatype": "BYTES", "data": ["purple", "red"]},
        {"name": "size", "shape": [2], "datatype": "FP64", "data": [1.0, 2.0]},
    ]

    predicted = call(app, "POST", "/models/pets/predict", {"instances": rows})
    inferred = call(app, "POST", "/v2/models/pets/infer", {"inputs": columns})

    assert predicted.status == HTTPStatus.OK, predicted.json
    assert predicted.json["served_by"] == "container"
    assert [w["value"] for w in predicted.json["warnings"][0]] == ["purple"]
    assert predicted.json["warnings"][1] is None
    assert inferred.status == HTTPStatus.OK, inferred.json
    assert json.loads(inferred.json["parameters"]["warnings"]) == predicted.json["warnings"]


def test_the_containers_client_errors_pass_through_unchanged(app):
    answer = call(app, "POST", "/models/large/predict", {"instances": [[1.0, 2.0]]})

    assert answer.status == HTTPStatus.UNPROCESSABLE_ENTITY
    assert "row 0: has 2 values, the model expects 4 features" in answer.json["error"]["message"]


def test_an_inference_request_is_served_by_the_container(app, large):
    request = {"inputs": [{"name": "input", "shape": [2, 4], "datatype": "FP32", "data": ROWS}]}

    answer = call(app, "POST", "/v2/models/large/infer", request)

    assert answer.status == HTTPStatus.OK, answer.json
    assert answer.json["model_version"] == large
    assert answer.json["outputs"][0]["shape"] == [2, 2]


def test_the_model_is_ready_once_the_container_loaded_it(app):
    assert call(app, "GET", "/v2/models/large/ready").status == HTTPStatus.OK


def test_the_model_description_shows_the_container_route(app):
    answer = call(app, "GET", "/models/large")

    assert answer.status == HTTPStatus.OK
    assert answer.json["route"] == "container"


def test_with_the_container_stopped_a_prediction_is_503_with_retry_after(app, server):
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(30) == 0

    answer = call(app, "POST", "/models/large/predict", {"instances": ROWS})

    assert answer.status == HTTPStatus.SERVICE_UNAVAILABLE
    assert answer.headers["Retry-After"] == "30"
    assert "container tier" in answer.json["error"]["message"]
    ready = call(app, "GET", "/v2/models/large/ready")
    assert ready.status == HTTPStatus.SERVICE_UNAVAILABLE
