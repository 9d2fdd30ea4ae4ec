"""The local gateway over real HTTP on 127.0.0.1: requests become API Gateway REST proxy
events, proxy answers become HTTP answers, and the predict function answers through it."""

from __future__ import annotations

import base64
import http.client
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
import requests

from dropflow import wiring
from dropflow.promotion.gate import promote
from dropflow.records.catalog import Catalog
from dropflow.records.jobs import Job, JobState, JobStore
from dropflow.serving.api import MAX_GATEWAY_BODY_BYTES
from dropflow.vocabulary.card import Feature
from dropflow.vocabulary.names import new_job_id
from dropflow_dev.lambda_context import LambdaContext
from dropflow_dev.local.gateway import Gateway
from tests.fakes_serving import load_handler, publish, version_id

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = json.loads((ROOT / "events" / "apigw-predict.json").read_text())
TIMEOUT = 10  # seconds; every request in these tests answers in milliseconds


class Recorder:
    """A handler that remembers what it was called with and answers what it is told."""

    def __init__(self, answer: dict[str, Any] | None = None) -> None:
        self.events: list[dict[str, Any]] = []
        self.contexts: list[Any] = []
        self.answer = answer or {"statusCode": 200, "headers": {}, "body": "{}"}

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        self.events.append(event)
        self.contexts.append(context)
        return self.answer


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[..., Any]], Gateway]]:
    started: list[Gateway] = []

    def start(handler: Callable[..., Any]) -> Gateway:
        gateway = Gateway(handler, host="127.0.0.1", port=0)
        gateway.start()
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


# ---------------------------------------------------------------------- the predict function
@pytest.fixture
def predict_app(tmp_path, monkeypatch):
    monkeypatch.setenv("DROPFLOW_STORE_URL", (tmp_path / "bucket").as_uri())
    monkeypatch.setenv("DROPFLOW_REGISTRY_URL", f"sqlite://{tmp_path / 'registry.db'}")
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "WARNING")
    wiring.reset()
    store, registry = wiring.store(), wiring.registry()
    publish(
        store,
        registry,
        "breast-cancer",
        version_id(1),
        n_features=30,
        classes=["malignant", "benign"],
    )
    promote("breast-cancer", version_id(1), store, registry)
    Catalog(registry).add_model("still-training")
    yield load_handler(ROOT / "functions" / "predict" / "app.py")
    wiring.reset()


def test_a_prediction_over_http_matches_the_direct_answer(serve, predict_app):
    gateway = serve(predict_app.lambda_handler)
    direct = json.loads(predict_app.lambda_handler(SAMPLE, LambdaContext())["body"])

    answer = requests.post(
        f"{gateway.url}/models/breast-cancer/predict",
        data=SAMPLE["body"],
        headers={"Content-Type": "application/json"},
        timeout=TIMEOUT,
    )

    assert answer.status_code == HTTPStatus.OK
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.json() == direct


PETS = [
    Feature(name="color", dtype="category", categories=["blue", "green", "red"]),
    Feature(name="size", nullable=True),
]


@pytest.mark.parametrize(("policy", "status"), [("encode", 200), ("reject", 422)])
def test_an_unseen_category_over_http_is_a_200_with_its_warning_or_a_422_under_reject(
    serve, predict_app, policy, status
):
    store, registry = wiring.store(), wiring.registry()
    serving = {"serving": {"route": "auto", "unknown_categories": policy}}
    publish(store, registry, "pets", version_id(1), features=PETS, card_extra=serving)
    promote("pets", version_id(1), store, registry)
    gateway = serve(predict_app.lambda_handler)

    answer = requests.post(
        f"{gateway.url}/models/pets/predict",
        data=json.dumps({"instances": [{"color": "purple", "size": 1.5}]}),
        headers={"Content-Type": "application/json"},
        timeout=TIMEOUT,
    )

    assert answer.status_code == status, answer.text
    if policy == "encode":
        ((warning,),) = answer.json()["warnings"]
        assert (warning["feature"], warning["value"]) == ("color", "purple")
        assert len(answer.json()["predictions"]) == 1
    else:
        assert (
            "row 0, feature 'color': unknown category 'purple'"
            in (answer.json()["error"]["message"])
        )


def test_a_model_whose_job_failed_answers_why_over_http(serve, predict_app):
    jobs = JobStore(wiring.registry())
    failed = jobs.create(Job(job_id=new_job_id("iris"), model="iris", data_version="d1"))
    jobs.transition(failed.job_id, JobState.FAILED, reason="datasets/iris/a.csv line 3: cut short")
    gateway = serve(predict_app.lambda_handler)

    answer = requests.post(
        f"{gateway.url}/models/iris/predict", json={"instances": [[1]]}, timeout=TIMEOUT
    )
    ready = requests.get(f"{gateway.url}/v2/models/iris/ready", timeout=TIMEOUT)

    assert answer.status_code == ready.status_code == HTTPStatus.NOT_FOUND
    assert "Retry-After" not in answer.headers
    says = f"its last training job {failed.job_id} failed: datasets/iris/a.csv line 3: cut short"
    assert says in answer.json()["error"]["message"]
    assert says in ready.json()["error"]


def test_client_errors_keep_their_status_and_headers_over_http(serve, predict_app):
    gateway = serve(predict_app.lambda_handler)

    not_ready = requests.post(
        f"{gateway.url}/models/still-training/predict", json={"instances": [[1]]}, timeout=TIMEOUT
    )
    wrong_method = requests.get(f"{gateway.url}/models/breast-cancer/predict", timeout=TIMEOUT)
    wrong_type = requests.post(
        f"{gateway.url}/models/breast-cancer/predict",
        data="1,2,3",
        headers={"Content-Type": "text/csv"},
        timeout=TIMEOUT,
    )

    assert not_ready.status_code == HTTPStatus.SERVICE_UNAVAILABLE
    assert int(not_ready.headers["Retry-After"]) > 0
    assert wrong_method.status_code == HTTPStatus.METHOD_NOT_ALLOWED
    assert wrong_method.headers["Allow"] == "POST"
    assert wrong_type.status_code == HTTPStatus.UNSUPPORTED_MEDIA_TYPE
    assert "text/csv" in wrong_type.json()["error"]["message"]


# ---------------------------------------------------------------------- the event
def test_a_request_becomes_a_rest_proxy_event(serve):
    recorder = Recorder()
    gateway = serve(recorder)

    requests.post(
        f"{gateway.url}/models/iris/predict?explain=1",
        json={"instances": [[1, 2]]},
        headers={"User-Agent": "pytest"},
        timeout=TIMEOUT,
    )

    (event,) = recorder.events
    assert event["httpMethod"] == "POST"
    assert event["path"] == "/models/iris/predict"
    assert event["resource"] == "/models/{name}/predict"
    assert event["pathParameters"] == {"name": "iris"}
    assert event["queryStringParameters"] == {"explain": "1"}
    assert json.loads(event["body"]) == {"instances": [[1, 2]]}
    assert event["isBase64Encoded"] is False
    assert event["headers"]["Content-Type"] == "application/json"
    assert event["multiValueHeaders"]["User-Agent"] == ["pytest"]
    context = event["requestContext"]
    assert context["requestId"]
    assert context["stage"] == "local"
    assert context["resourcePath"] == "/models/{name}/predict"
    assert context["httpMethod"] == "POST"
    assert context["identity"]["sourceIp"] == "127.0.0.1"
    assert context["identity"]["userAgent"] == "pytest"


def test_each_request_gets_its_own_lambda_context(serve):
    recorder = Recorder()
    gateway = serve(recorder)

    for _ in range(2):
        requests.get(f"{gateway.url}/health", timeout=TIMEOUT)

    first, second = recorder.contexts
    assert first.aws_request_id != second.aws_request_id
    assert first.function_name == "PredictFunction"
    assert first.invoked_function_arn.endswith(":function:PredictFunction")
    assert first.memory_limit_in_mb > 0
    assert 0 < first.get_remaining_time_in_millis() <= 29_000


def test_a_request_without_body_has_a_null_body(serve):
    recorder = Recorder()
    gateway = serve(recorder)

    requests.get(f"{gateway.url}/models", timeout=TIMEOUT)

    (event,) = recorder.events
    assert event["body"] is None
    assert event["resource"] == "/models"
    assert event["pathParameters"] is None
    assert event["queryStringParameters"] is None


def test_a_greedy_resource_takes_the_rest_of_the_path(serve):
    recorder = Recorder()
    gateway = serve(recorder)

    requests.get(f"{gateway.url}/v2/models/iris/ready", timeout=TIMEOUT)

    (event,) = recorder.events
    assert event["resource"] == "/v2/{proxy+}"
    assert event["pathParameters"] == {"proxy": "models/iris/ready"}


def test_a_path_outside_the_api_goes_to_a_catch_all_proxy_resource(serve):
    recorder = Recorder()
    gateway = serve(recorder)

    requests.get(f"{gateway.url}/metrics/today", timeout=TIMEOUT)

    (event,) = recorder.events
    assert event["resource"] == "/{proxy+}"
    assert event["pathParameters"] == {"proxy": "metrics/today"}


def test_repeated_headers_and_query_values_are_all_kept(serve):
    recorder = Recorder()
    gateway = serve(recorder)
    connection = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=TIMEOUT)
    connection.putrequest("GET", "/models?tag=a&tag=b&empty=")
    connection.putheader("X-Tag", "one")
    connection.putheader("X-Tag", "two")
    connection.endheaders()
    connection.getresponse().read()
    connection.close()

    (event,) = recorder.events
    assert event["multiValueHeaders"]["X-Tag"] == ["one", "two"]
    assert event["headers"]["X-Tag"] == "two"
    assert event["multiValueQueryStringParameters"] == {"tag": ["a", "b"], "empty": [""]}
    assert event["queryStringParameters"] == {"tag": "b", "empty": ""}


def test_a_binary_body_is_sent_base64_encoded(serve):
    recorder = Recorder()
    gateway = serve(recorder)
    payload = bytes(range(256))

    requests.post(f"{gateway.url}/upload", data=payload, timeout=TIMEOUT)

    (event,) = recorder.events
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == payload


# ---------------------------------------------------------------------- the answer
def test_multi_value_headers_of_the_answer_are_all_sent(serve):
    gateway = serve(
        Recorder(
            {
                "statusCode": 201,
                "headers": {"X-Single": "1"},
                "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"]},
                "body": "created",
            }
        )
    )

    answer = requests.get(f"{gateway.url}/health", timeout=TIMEOUT)

    assert answer.status_code == HTTPStatus.CREATED
    assert answer.headers["X-Single"] == "1"
    assert answer.raw.headers.getlist("Set-Cookie") == ["a=1", "b=2"]
    assert answer.text == "created"


def test_a_base64_answer_is_sent_as_bytes(serve):
    payload = b"\x89PNG\r\n\x1a\n\x00\x01"
    gateway = serve(
        Recorder(
            {
                "statusCode": 200,
                "headers": {"Content-Type": "image/png"},
                "body": base64.b64encode(payload).decode(),
                "isBase64Encoded": True,
            }
        )
    )

    answer = requests.get(f"{gateway.url}/curve.png", timeout=TIMEOUT)

    assert answer.content == payload
    assert answer.headers["Content-Length"] == str(len(payload))


def test_a_body_over_10_mb_is_a_413_without_calling_the_handler(serve):
    recorder = Recorder()
    gateway = serve(recorder)

    answer = requests.post(
        f"{gateway.url}/models/iris/predict",
        data=b"x" * (MAX_GATEWAY_BODY_BYTES + 1),
        headers={"Content-Type": "application/json"},
        timeout=TIMEOUT,
    )

    assert answer.status_code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    assert "the limit is 10485760 bytes" in answer.json()["error"]["message"]
    assert recorder.events == []


def test_a_crashing_handler_is_a_502_like_api_gateway(serve, capsys):
    def crash(event, context):
        raise RuntimeError("boom")

    gateway = serve(crash)

    answer = requests.get(f"{gateway.url}/health", timeout=TIMEOUT)

    assert answer.status_code == HTTPStatus.BAD_GATEWAY
    assert answer.json() == {"message": "Internal server error"}
    assert "RuntimeError: boom" in capsys.readouterr().err


def test_a_handler_answer_that_is_not_a_proxy_response_is_a_502(serve, capsys):
    gateway = serve(lambda event, context: {"hello": "world"})

    answer = requests.get(f"{gateway.url}/health", timeout=TIMEOUT)

    assert answer.status_code == HTTPStatus.BAD_GATEWAY
    assert "not an API Gateway proxy response" in capsys.readouterr().err


# ---------------------------------------------------------------------- lifecycle
def test_stop_releases_the_port_promptly(serve):
    gateway = serve(Recorder())
    client = requests.Session()
    client.get(f"{gateway.url}/health", timeout=TIMEOUT)  # leaves a keep-alive connection open

    started = time.monotonic()
    gateway.stop()

    assert time.monotonic() - started < 2
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", gateway.port), 1):
        pass
    client.close()


def test_a_busy_port_is_reported_by_number(serve):
    busy = serve(Recorder())

    with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{busy.port}"):
        Gateway(Recorder(), port=busy.port).start()


def test_the_handler_sees_one_event_at_a_time_like_a_lambda_environment(serve):
    inside = 0
    most = 0
    lock = threading.Lock()

    def handler(event, context):
        nonlocal inside, most
        with lock:
            inside += 1
            most = max(most, inside)
        time.sleep(0.005)
        with lock:
            inside -= 1
        return {"statusCode": 200, "body": event["path"]}

    gateway = serve(handler)

    def call(i: int) -> str:
        return requests.get(f"{gateway.url}/models/m{i}", timeout=10).text

    threads = [threading.Thread(target=call, args=(i,)) for i in range(40)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert most == 1


def test_many_clients_connecting_at_once_are_all_answered(serve):
    gateway = serve(lambda event, context: {"statusCode": 200, "body": "ok"})
    barrier = threading.Barrier(60, timeout=60)  # a bound for a loaded machine, not a wait
    answers: list[int] = []

    def call() -> None:
        barrier.wait()
        answers.append(requests.get(f"{gateway.url}/health", timeout=10).status_code)

    threads = [threading.Thread(target=call) for _ in range(60)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)

    assert answers == [HTTPStatus.OK] * 60
