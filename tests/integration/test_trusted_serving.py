"""A model file replaced after promotion approved it is never served, at either tier.

The predict function (functions/predict/app.py with API Gateway events) and the container
tier's server (`python -m serving`, a real process) load a version only when its files hash to
the digests on its record: otherwise a 503 naming the file, an ERROR log and the
ModelFileMismatch metric (EMF on stdout). A version the predict function forwards to the tier
gets the tier's reason, not a guess."""

from __future__ import annotations

import copy
import json
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path
from types import SimpleNamespace

import pytest
import requests

from dropflow import wiring
from dropflow.adapters.local.process_tier import ProcessTier
from dropflow.promotion.gate import promote
from dropflow.vocabulary.card import artifact_key
from dropflow.vocabulary.routing import RoutePolicy
from dropflow_dev.lambda_context import LambdaContext
from tests.fakes_serving import ProxyAnswer, load_handler, publish, version_id
from tests.net import free_port, wait_ready, wait_until
from tests.unit.fakes import MemoryStore

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = json.loads((ROOT / "events" / "apigw-predict.json").read_text())
ROWS = [[0.1, 0.2, 0.3, 0.4], [1.0, -1.0, 0.5, 2.0]]
CLASSES = ["no", "yes"]
V1 = version_id(1)
METRIC = "ModelFileMismatch"
START_SECONDS = 120  # for a server process to import and load its models on a loaded machine


def replace_model(store, model: str) -> None:
    """Put another sound graph of the same shape in place of the version's model.onnx."""
    elsewhere = MemoryStore()
    publish(elsewhere, None, model, V1, classes=CLASSES, seed=7)
    store.put(
        artifact_key(model, V1, "model.onnx"), elsewhere.get(artifact_key(model, V1, "model.onnx"))
    )


def call(app, body) -> ProxyAnswer:
    event = copy.deepcopy(SAMPLE)
    event["path"] = "/models/" + body.pop("model") + "/predict"
    event["body"] = json.dumps(body)
    return ProxyAnswer(app.lambda_handler(event, LambdaContext(function_name="PredictFunction")))


def emitted(lines: list[str]) -> tuple[list[dict], list[dict]]:
    """(ERROR log lines, ModelFileMismatch EMF lines) among JSON lines of output."""
    parsed = []
    for line in lines:
        start = line.find("{")
        if start >= 0:
            try:
                parsed.append(json.loads(line[start:]))
            except ValueError:
                continue
    errors = [p for p in parsed if p.get("level") == "ERROR"]
    metrics = [p for p in parsed if "_aws" in p and METRIC in p]
    return errors, metrics


# ---------------------------------------------------------------------- the predict function
def test_the_predict_function_answers_503_naming_the_file_logs_and_counts(
    adapters, monkeypatch, capsys, caplog
):
    store, registry = adapters
    card = publish(store, registry, "small", V1, classes=CLASSES)
    assert promote("small", V1, store, registry).decision == "approved"
    replace_model(store, "small")
    monkeypatch.setenv("POWERTOOLS_METRICS_DISABLED", "false")
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "INFO")
    app = load_handler(ROOT / "functions" / "predict" / "app.py")

    with caplog.at_level(logging.ERROR):
        answer = call(app, {"model": "small", "instances": ROWS})

    assert answer.status == HTTPStatus.SERVICE_UNAVAILABLE
    assert answer.headers["Retry-After"] == "60"
    message = answer.json["error"]["message"]
    assert f"model.onnx differs from what job {card.job_id} published" in message
    # The logger writes to the stream it was created with: read its records, not stdout.
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert [(e.getMessage(), e.file) for e in errors] == [
        ("refused a model file that is not what its job published", "model.onnx")
    ]
    _, metrics = emitted(capsys.readouterr().out.splitlines())
    assert [(m["model"], m["version"], m[METRIC]) for m in metrics] == [("small", V1, [1.0])]


# ---------------------------------------------------------------------- the container tier
@pytest.fixture
def large(adapters, tmp_path) -> SimpleNamespace:
    """A version approved and routed to the container tier, whose model.onnx was then
    replaced."""
    store, registry = adapters
    card = publish(store, registry, "large", V1, classes=CLASSES)
    result = promote(
        "large",
        V1,
        store,
        registry,
        policy=RoutePolicy(max_model_mb=0.0001),  # the lowered threshold: this graph is large
        tier=ProcessTier(tmp_path / "serving"),
    )
    assert (result.decision, result.route) == ("approved", "container")
    replace_model(store, "large")
    return SimpleNamespace(job_id=card.job_id)


@pytest.fixture
def server(large, tmp_path) -> Iterator[SimpleNamespace]:
    """`python -m serving` as the image runs it, metrics on (as on EC2), its output in a file."""
    port = free_port()
    log_path = tmp_path / "server.log"
    log = open(log_path, "wb")  # noqa: SIM115 - closed below
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT / "layers" / "dropflow"),
        "POWERTOOLS_LOG_LEVEL": "INFO",
    }
    env.pop("POWERTOOLS_METRICS_DISABLED")  # the server's own default: metrics on
    proc = subprocess.Popen(
        [sys.executable, "-m", "serving", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        # Ready: a version it refuses does not keep the others from being served.
        if wait_ready(url, START_SECONDS, alive=lambda: proc.poll() is None) != HTTPStatus.OK:
            pytest.fail("the server never became ready:\n" + log_path.read_text())
        yield SimpleNamespace(url=url, log=lambda: log_path.read_text(errors="replace"))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)
        log.close()


def test_the_container_tier_refuses_the_replaced_file_with_503_a_log_and_a_metric(server, large):
    answer = requests.post(
        f"{server.url}/models/large/predict", json={"instances": ROWS}, timeout=30
    )

    assert answer.status_code == HTTPStatus.SERVICE_UNAVAILABLE
    message = answer.json()["error"]["message"]
    assert f"model.onnx differs from what job {large.job_id} published" in message
    # Its preload refused the file already, before any request: the log and the metric say so.
    errors, metrics = wait_until(
        lambda: (found := emitted(server.log().splitlines()))[0] and found[1] and found,
        30,
        what=lambda: "the refusal in the server's log:\n" + server.log(),
    )
    assert {e["file"] for e in errors} == {"model.onnx"}
    assert {(m["model"], m["version"]) for m in metrics} == {("large", V1)}


def test_the_predict_function_passes_on_the_tiers_reason(server, large, monkeypatch):
    monkeypatch.setenv("DROPFLOW_CONTAINER_URL", server.url)
    wiring.reset()  # a cold start reads the settings afresh
    app = load_handler(ROOT / "functions" / "predict" / "app.py")

    answer = call(app, {"model": "large", "instances": ROWS})

    assert answer.status == HTTPStatus.SERVICE_UNAVAILABLE
    assert {k.lower(): v for k, v in answer.headers.items()}["retry-after"] == "60"
    message = answer.json["error"]["message"]
    assert f"model.onnx differs from what job {large.job_id} published" in message
