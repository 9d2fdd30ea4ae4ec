"""The container tier's server (serving/): `python -m serving` with its workers, a real
process on 127.0.0.1, and its ASGI app (serving.asgi) on uvicorn in this process."""

from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http import HTTPStatus
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import requests
import uvicorn

from dropflow.adapters.local.directory_store import DirectoryStore
from dropflow.adapters.local.sqlite_registry import SqliteRegistry
from dropflow.promotion.gate import promote
from dropflow.serving.api import MAX_GATEWAY_BODY_BYTES, MAX_LAMBDA_BODY_BYTES
from dropflow.vocabulary.card import Feature, artifact_key
from dropflow.vocabulary.routing import RoutePolicy
from serving.asgi import MAX_HEADER_BYTES, build_app
from serving.readiness import Preloader, Readiness
from serving.server import ServerOptions, uvicorn_settings
from tests.fakes_serving import expected_output, publish, version_id
from tests.net import free_port, wait_ready, wait_until

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

ROOT = Path(__file__).resolve().parents[2]
ROWS = [[0.1, 0.2, 0.3, 0.4], [1.0, -1.0, 0.5, 2.0]]
CLASSES = ["no", "yes"]
PETS = [
    Feature(name="color", dtype="category", categories=["blue", "green", "red"]),
    Feature(name="size", nullable=True),
]
TIMEOUT = 30  # seconds for any one answer: generous, never waited for unless it is late
START_SECONDS = 120  # for a server process to import, load its models and answer ready


# ---------------------------------------------------------------------- a real server process
@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """A store and registry with one version promoted to the container tier."""
    root = tmp_path_factory.mktemp("container")
    store, registry = DirectoryStore(root / "bucket"), SqliteRegistry(root / "registry.db")
    version = version_id(1)
    publish(store, registry, "large", version, classes=CLASSES)
    result = promote(
        "large", version, store, registry, policy=RoutePolicy(max_model_mb=0.0001)
    )  # the lowered threshold: this graph is large
    assert result.route == "container"
    for model, policy in (("large-pets", "encode"), ("strict-pets", "reject")):
        serving = {"serving": {"route": "container", "unknown_categories": policy}}
        publish(store, registry, model, version, features=PETS, classes=CLASSES, card_extra=serving)
        assert promote(model, version, store, registry).route == "container"
    env = {
        **os.environ,
        "DROPFLOW_STORE_URL": (root / "bucket").as_uri(),
        "DROPFLOW_REGISTRY_URL": f"sqlite://{root / 'registry.db'}",
        "POWERTOOLS_LOG_LEVEL": "WARNING",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "layers" / "dropflow"), str(ROOT)]),
    }
    return SimpleNamespace(root=root, store=store, version=version, env=env)


class ServerProcess:
    """`python -m serving` on a free port, its log in a file; stop() ends it, whatever."""

    def __init__(self, home: SimpleNamespace, log: Path, *flags: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log
        self._log = open(log, "wb")  # noqa: SIM115 - closed by stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "serving",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                *flags,
            ],
            cwd=ROOT,
            env=home.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self) -> None:
        if wait_ready(self.url, START_SECONDS, alive=lambda: self.proc.poll() is None) != 200:
            self.stop()
            pytest.fail("the server never became ready:\n" + self.log())

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, needle: str, seconds: float = START_SECONDS) -> None:
        wait_until(
            lambda: needle in self.log() or self.proc.poll() is not None,
            seconds,
            what=lambda: f"{needle!r} in the server's log:\n" + self.log(),
        )
        if needle not in self.log():
            pytest.fail(f"the server exited without {needle!r} in its log:\n" + self.log())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(TIMEOUT)
        self._log.close()


@pytest.fixture(scope="module")
def server(home, tmp_path_factory) -> Iterator[ServerProcess]:
    """The server as the image runs it (two workers here), ready."""
    process = ServerProcess(home, tmp_path_factory.mktemp("log") / "server.log", "--workers", "2")
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


def post(url: str, body: Any = None, **kwargs: Any) -> requests.Response:
    return requests.post(url, json=body, timeout=TIMEOUT, **kwargs)


def test_a_prediction_is_served_by_the_container(server, home):
    answer = post(f"{server.url}/models/large/predict", {"instances": ROWS})

    assert answer.status_code == HTTPStatus.OK, answer.text
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.json()["served_by"] == "container"
    assert answer.json()["version"] == home.version
    expected = expected_output(home.store, "large", home.version, np.array(ROWS))
    assert answer.json()["predictions"] == [CLASSES[i] for i in expected.argmax(axis=1)]


@pytest.mark.parametrize(("model", "status"), [("large-pets", 200), ("strict-pets", 422)])
def test_an_unseen_category_is_a_200_with_its_warning_or_a_422_under_reject(server, model, status):
    rows = [{"color": "red", "size": 1.0}, {"color": "purple", "size": 2.0}]

    answer = post(f"{server.url}/models/{model}/predict", {"instances": rows})

    assert answer.status_code == status, answer.text
    if status == HTTPStatus.OK:
        assert answer.json()["served_by"] == "container"
        assert answer.json()["warnings"][0] is None
        ((warning,),) = answer.json()["warnings"][1:]
        assert (warning["feature"], warning["value"], warning["kind"]) == (
            "color",
            "purple",
            "unknown_category",
        )
    else:
        assert (
            "row 1, feature 'color': unknown category 'purple'"
            in (answer.json()["error"]["message"])
        )


def test_an_unseen_category_sent_as_bytes_over_the_protocol_is_warned_about_in_parameters(
    server,
):
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    client = httpclient.InferenceServerClient(
        url=f"127.0.0.1:{server.port}", connection_timeout=TIMEOUT, network_timeout=TIMEOUT
    )
    try:
        color = httpclient.InferInput("color", [2], "BYTES")
        color.set_data_from_numpy(np.array(["red", "purple"], dtype=object), binary_data=False)
        size = httpclient.InferInput("size", [2], "FP32")
        size.set_data_from_numpy(np.array([1.0, 2.0], dtype=np.float32), binary_data=False)
        wanted = httpclient.InferRequestedOutput("probabilities", binary_data=False)

        result = client.infer("large-pets", [color, size], outputs=[wanted])

        assert result.as_numpy("probabilities").shape == (2, 2)
        warnings = json.loads(result.get_response()["parameters"]["warnings"])
        assert warnings[0] is None
        assert [(w["feature"], w["value"]) for w in warnings[1]] == [("color", "purple")]
        with pytest.raises(InferenceServerException, match="unknown category 'purple'"):
            client.infer("strict-pets", [color, size], outputs=[wanted])
    finally:
        client.close()


def test_health_names_the_tier_and_the_provider_each_loaded_model_runs_on(server, home):
    answer = requests.get(f"{server.url}/health", timeout=TIMEOUT)

    assert answer.status_code == HTTPStatus.OK, answer.text
    health = answer.json()
    assert health["served_by"] == "container"
    # Here onnxruntime's CPU wheel; CUDA first where the image has onnxruntime-gpu.
    assert health["providers"][-1] == "CPUExecutionProvider"
    assert ("CUDAExecutionProvider" in health["providers"]) == (
        "CUDAExecutionProvider" in ort.get_available_providers()
    )
    # Ready means preloaded: every container champion is held, on the provider asked first.
    loaded = {(m["model"], m["version"]): m["provider"] for m in health["loaded"]}
    assert set(loaded) == {(m, home.version) for m in ("large", "large-pets", "strict-pets")}
    assert set(loaded.values()) == {health["providers"][0]}
    asked = ", then ".join(health["providers"])
    assert f"onnxruntime sessions ask for {asked}" in server.log()


def test_every_worker_answers_the_same(server, home):
    # Fresh connections spread over the workers; whichever answers, the answer is the same.
    url = f"{server.url}/models/large/predict"
    bodies = {post(url, {"instances": ROWS}).text for _ in range(8)}

    assert len(bodies) == 1


def test_a_chunked_body_is_read_whole(server):
    data = json.dumps({"instances": ROWS}).encode()
    chunks = (data[i : i + 7] for i in range(0, len(data), 7))  # no length: chunked

    answer = requests.post(
        f"{server.url}/models/large/predict",
        data=chunks,
        headers={"Content-Type": "application/json"},
        timeout=TIMEOUT,
    )

    assert answer.status_code == HTTPStatus.OK, answer.text
    assert len(answer.json()["predictions"]) == 2


@pytest.mark.parametrize(
    "path", ["/health", "/models/large", "/v2/health/live", "/v2/health/ready"]
)
def test_head_answers_as_get_with_no_body(server, path):
    got = requests.get(f"{server.url}{path}", timeout=TIMEOUT)
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT)
    try:
        connection.request("HEAD", path)
        head = connection.getresponse()
        body = head.read()
    finally:
        connection.close()

    assert head.status == got.status_code == HTTPStatus.OK
    assert body == b""
    assert head.getheader("Content-Type") == "application/json"
    assert head.getheader("Content-Length") == str(len(got.content))


def test_malformed_json_is_a_json_400(server):
    answer = post(
        f"{server.url}/models/large/predict",
        data='{"instances": [[1, 2',
        headers={"Content-Type": "application/json"},
    )

    assert answer.status_code == HTTPStatus.BAD_REQUEST
    assert answer.json()["error"]["code"] == HTTPStatus.BAD_REQUEST
    assert "request body is not valid JSON" in answer.json()["error"]["message"]


def test_json_nested_1000_deep_is_a_400_logged_as_a_warning_without_a_traceback(server):
    answer = post(
        f"{server.url}/models/large/predict",
        data='{"instances": ' + "[" * 1000 + "]" * 1000 + "}",
        headers={"Content-Type": "application/json"},
    )

    assert answer.status_code == HTTPStatus.BAD_REQUEST
    assert "more than 32 levels deep" in answer.json()["error"]["message"]
    server.wait_for_log("more than 32 levels deep", TIMEOUT)
    lines = [json.loads(line) for line in server.log().splitlines() if "levels deep" in line]
    assert [line["level"] for line in lines] == ["WARNING"]
    assert "Traceback" not in server.log()


def test_a_wrong_content_type_is_a_json_415(server):
    answer = post(
        f"{server.url}/models/large/predict", data="a,b\n1,2", headers={"Content-Type": "text/csv"}
    )

    assert answer.status_code == HTTPStatus.UNSUPPORTED_MEDIA_TYPE
    assert "text/csv" in answer.json()["error"]["message"]


def test_a_body_over_the_apis_limit_is_a_json_413(server):
    answer = post(
        f"{server.url}/models/large/predict",
        data=b"x" * (MAX_GATEWAY_BODY_BYTES + 1),
        headers={"Content-Type": "application/json"},
    )

    assert answer.status_code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    assert answer.json()["error"]["message"] == (
        f"request body is {MAX_GATEWAY_BODY_BYTES + 1} bytes; "
        f"the limit is {MAX_GATEWAY_BODY_BYTES} bytes"
    )


def test_a_body_over_the_functions_limit_is_refused_as_the_function_refuses_it(server):
    answer = post(
        f"{server.url}/models/large/predict",
        data=b" " * (MAX_LAMBDA_BODY_BYTES + 1),
        headers={"Content-Type": "application/json"},
    )

    assert answer.status_code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    assert f"the limit is {MAX_LAMBDA_BODY_BYTES} bytes" in answer.json()["error"]["message"]


def test_an_unknown_route_is_a_json_404_and_a_wrong_method_a_json_405(server):
    unknown = requests.get(f"{server.url}/v1/models", timeout=TIMEOUT)
    wrong = requests.get(f"{server.url}/models/large/predict", timeout=TIMEOUT)
    made_up = requests.request("BREW", f"{server.url}/health", timeout=TIMEOUT)

    assert unknown.status_code == HTTPStatus.NOT_FOUND
    assert "no route GET /v1/models" in unknown.json()["error"]["message"]
    assert wrong.status_code == HTTPStatus.METHOD_NOT_ALLOWED
    assert wrong.headers["Allow"] == "POST"
    assert made_up.status_code == HTTPStatus.METHOD_NOT_ALLOWED
    assert "BREW is not an API Gateway method" in made_up.json()["error"]["message"]


def test_headers_over_the_apis_limit_are_a_json_431_and_the_server_serves_on(server):
    refused = requests.get(
        f"{server.url}/health", headers={"X-Big": "x" * MAX_HEADER_BYTES}, timeout=TIMEOUT
    )
    after = requests.get(f"{server.url}/health", timeout=TIMEOUT)

    assert refused.status_code == HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE
    assert f"the limit is {MAX_HEADER_BYTES} bytes" in refused.json()["error"]["message"]
    assert after.status_code == HTTPStatus.OK


def test_tritonclient_over_the_container_server(server, home):
    import tritonclient.http as httpclient  # a dev dependency: never skipped
    from tritonclient.utils import InferenceServerException

    x = np.random.default_rng(7).normal(size=(8, 4)).astype(np.float32)
    session = ort.InferenceSession(
        home.store.get(artifact_key("large", home.version, "model.onnx")),
        providers=["CPUExecutionProvider"],
    )
    (expected,) = session.run(["probabilities"], {"input": x})
    client = httpclient.InferenceServerClient(
        url=f"127.0.0.1:{server.port}", connection_timeout=TIMEOUT, network_timeout=TIMEOUT
    )
    try:
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("large")
        assert client.is_model_ready("large", home.version)
        meta = client.get_model_metadata("large")
        assert meta["inputs"][0] == {"name": "input", "datatype": "FP32", "shape": [-1, 4]}

        tensor = httpclient.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=False)
        wanted = httpclient.InferRequestedOutput("probabilities", binary_data=False)
        result = client.infer("large", [tensor], outputs=[wanted], request_id="t-1")

        np.testing.assert_array_equal(result.as_numpy("probabilities"), expected)
        assert result.get_response()["id"] == "t-1"
        assert result.get_response()["model_version"] == home.version

        bad = httpclient.InferInput("input", [1, 3], "FP32")
        bad.set_data_from_numpy(x[:1, :3], binary_data=False)
        with pytest.raises(InferenceServerException, match=r"\[-1, 4\]"):
            client.infer("large", [bad], outputs=[wanted])
    finally:
        client.close()


# ---------------------------------------------------------------------- scale-in
def _read_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def test_sigterm_lets_the_request_under_way_finish_and_exits_0(home, tmp_path):
    server = ServerProcess(home, tmp_path / "server.log", "--workers", "2")
    sock = None
    try:
        server.wait_ready()
        body = json.dumps({"instances": ROWS}).encode()
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT)
        # Given a request under way: its head sent, the server waiting for its body (it says
        # so: 100 Continue, once the app asks for the body)
        sock.sendall(
            b"POST /models/large/predict HTTP/1.1\r\nHost: container\r\n"
            b"Content-Type: application/json\r\nExpect: 100-continue\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
        )
        assert _read_head(sock).startswith(b"HTTP/1.1 100 ")

        # When the server is told to stop, and has begun to (it waits on our connection)
        server.proc.send_signal(signal.SIGTERM)
        server.wait_for_log("Waiting for connections to close")
        sock.sendall(body)

        # Then the request is answered in full, and the server exits 0
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk  # the server closes the connection after this last answer
        head, _, payload = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), answer
        assert json.loads(payload)["served_by"] == "container"
        assert server.proc.wait(TIMEOUT) == 0, server.log()
    finally:
        if sock is not None:
            sock.close()
        server.stop()


def test_a_wrong_variable_stops_the_server_naming_it(home, tmp_path):
    env = {**home.env, "DROPFLOW_STORE_URL": "ftp://nowhere"}

    done = subprocess.run(
        [sys.executable, "-m", "serving", "--port", str(free_port())],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=START_SECONDS,
    )

    assert done.returncode == 2
    assert "DROPFLOW_STORE_URL" in done.stderr


# ---------------------------------------------------------------------- the ASGI app in-process
class Recorder:
    """A handler that remembers the events it was called with and answers what it is told."""

    def __init__(self, answer: dict[str, Any] | None = None) -> None:
        self.events: list[dict[str, Any]] = []
        self.answer = answer or {"statusCode": 200, "headers": {}, "body": "{}"}

    def __call__(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        self.events.append(event)
        return self.answer


@pytest.fixture
def serve() -> Iterator[Callable[..., str]]:
    """Serves build_app(handler, preloader) on uvicorn, with the server's own settings, in a
    thread of this process; returns its URL. Stopped after the test."""
    started: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(handler: Callable[..., Any], preloader: Preloader | None = None) -> str:
        preloader = preloader or Preloader(lambda: [], Readiness())
        port = free_port()
        options = ServerOptions(host="127.0.0.1", port=port, workers=1)
        settings = {**uvicorn_settings(options), "log_config": None}  # leave logging be
        config = uvicorn.Config(build_app(handler, preloader), **settings)
        server = uvicorn.Server(config)
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        started.append((server, thread))
        wait_until(
            lambda: server.started or not thread.is_alive(), START_SECONDS, what="uvicorn to start"
        )
        assert server.started, "uvicorn did not start"
        return f"http://127.0.0.1:{port}"

    yield start
    for server, thread in started:
        server.should_exit = True
        thread.join(TIMEOUT)


def test_the_server_is_not_ready_until_its_models_are_loaded(serve):
    loading, release = threading.Event(), threading.Event()

    def preload() -> list[tuple[str, str]]:
        loading.set()
        release.wait(TIMEOUT)
        return [("large", version_id(1))]

    readiness = Readiness()
    recorder = Recorder({"statusCode": 200, "body": json.dumps({"ready": True})})
    url = serve(recorder, Preloader(preload, readiness))
    try:
        assert loading.wait(TIMEOUT)
        during = requests.get(f"{url}/v2/health/ready", timeout=TIMEOUT)
        live = requests.get(f"{url}/v2/health/live", timeout=TIMEOUT)
    finally:
        release.set()
    after = wait_ready(url, TIMEOUT)

    assert during.status_code == HTTPStatus.SERVICE_UNAVAILABLE
    assert during.json() == {"ready": False}
    assert int(during.headers["Retry-After"]) > 0
    assert live.status_code == HTTPStatus.OK
    assert after == HTTPStatus.OK
    assert readiness.loaded


def test_a_request_becomes_the_proxy_event_the_function_gets(serve):
    recorder = Recorder()
    url = serve(recorder)

    requests.post(
        f"{url}/models/iris/predict?explain=1&explain=2",
        json={"instances": [[1, 2]]},
        headers={"User-Agent": "pytest"},
        timeout=TIMEOUT,
    )

    (event,) = recorder.events
    assert event["httpMethod"] == "POST"
    assert event["path"] == "/models/iris/predict"
    assert event["resource"] == "/models/{name}/predict"
    assert event["pathParameters"] == {"name": "iris"}
    assert event["queryStringParameters"] == {"explain": "2"}
    assert event["multiValueQueryStringParameters"] == {"explain": ["1", "2"]}
    assert json.loads(event["body"]) == {"instances": [[1, 2]]}
    assert event["isBase64Encoded"] is False
    assert event["headers"]["content-type"] == "application/json"
    assert event["requestContext"]["identity"]["sourceIp"] == "127.0.0.1"
    assert event["requestContext"]["identity"]["userAgent"] == "pytest"
    assert event["requestContext"]["requestId"]


def test_a_binary_body_goes_base64_and_an_escaped_path_is_decoded_once(serve):
    recorder = Recorder()
    url = serve(recorder)

    requests.post(f"{url}/models/a%2541/predict", data=bytes(range(256)), timeout=TIMEOUT)

    (event,) = recorder.events
    assert event["path"] == "/models/a%41/predict"
    assert event["isBase64Encoded"] is True
    assert base64.b64decode(event["body"]) == bytes(range(256))


def test_the_answers_headers_and_base64_body_are_sent(serve):
    payload = b"\x89PNG\r\n\x1a\n\x00\x01"
    url = serve(
        Recorder(
            {
                "statusCode": 201,
                "headers": {"Content-Type": "image/png", "X-Single": "1"},
                "multiValueHeaders": {"Set-Cookie": ["a=1", "b=2"]},
                "body": base64.b64encode(payload).decode(),
                "isBase64Encoded": True,
            }
        )
    )

    answer = requests.get(f"{url}/curve.png", timeout=TIMEOUT)

    assert answer.status_code == HTTPStatus.CREATED
    assert answer.content == payload
    assert answer.headers["Content-Length"] == str(len(payload))
    assert answer.headers["X-Single"] == "1"
    assert answer.raw.headers.getlist("Set-Cookie") == ["a=1", "b=2"]


def test_head_is_sent_to_the_handler_as_get(serve):
    recorder = Recorder()
    url = serve(recorder)

    requests.head(f"{url}/health", timeout=TIMEOUT)

    assert [e["httpMethod"] for e in recorder.events] == ["GET"]


def test_a_body_over_the_limit_never_reaches_the_handler(serve):
    recorder = Recorder()
    url = serve(recorder)

    answer = post(f"{url}/models/iris/predict", data=b"x" * (MAX_GATEWAY_BODY_BYTES + 1))

    assert answer.status_code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    assert recorder.events == []


def test_a_crashing_handler_is_a_json_502(serve, capsys):
    def crash(event: dict[str, Any], context: Any) -> dict[str, Any]:
        raise RuntimeError("boom")

    url = serve(crash)

    answer = requests.get(f"{url}/health", timeout=TIMEOUT)

    assert answer.status_code == HTTPStatus.BAD_GATEWAY
    assert answer.json() == {"message": "Internal server error"}
    assert "RuntimeError: boom" in capsys.readouterr().err


# ---------------------------------------------------------------------- readiness across workers
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(TIMEOUT)
    return proc.pid


def test_a_worker_is_ready_only_once_every_worker_has_loaded(tmp_path):
    readiness = Readiness(tmp_path, workers=2)
    (tmp_path / str(_dead_pid())).touch()  # a worker that died before it loaded

    readiness.mark_loaded()
    alone = readiness.is_ready()
    (tmp_path / str(os.getppid())).touch()  # the other worker (a live process) loaded
    together = readiness.is_ready()

    assert not alone
    assert together
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [str(os.getpid()), str(os.getppid())]
    )


def test_a_stopping_worker_takes_its_mark_away(tmp_path):
    readiness = Readiness(tmp_path, workers=2)
    preloader = Preloader(lambda: [], readiness, refresh_seconds=TIMEOUT)

    preloader.start()
    deadline = time.monotonic() + TIMEOUT
    while not readiness.loaded and time.monotonic() < deadline:
        time.sleep(0.01)
    marked = [p.name for p in tmp_path.iterdir()]
    preloader.stop()

    assert marked == [str(os.getpid())]
    assert list(tmp_path.iterdir()) == []


def test_a_failed_preload_is_tried_again(tmp_path):
    calls: list[int] = []

    def preload() -> list[tuple[str, str]]:
        calls.append(1)
        if len(calls) == 1:
            raise ConnectionError("registry not there yet")
        return []

    readiness = Readiness()
    preloader = Preloader(preload, readiness, retry_seconds=0.01, refresh_seconds=TIMEOUT)
    preloader.start()
    deadline = time.monotonic() + TIMEOUT
    while not readiness.loaded and time.monotonic() < deadline:
        time.sleep(0.01)
    preloader.stop()

    assert readiness.loaded
    assert len(calls) == 2


# --------------------------------------------------------------------------- CUDA libraries
def test_without_a_cuda_provider_no_cuda_library_is_loaded():
    from serving.server import load_cuda_libraries

    # This machine's onnxruntime is the CPU build: nothing to load, nothing said.
    assert "CUDAExecutionProvider" not in ort.get_available_providers()
    assert load_cuda_libraries() is False


def test_cuda_libraries_that_do_not_load_are_said_and_the_server_goes_on(monkeypatch, capsys):
    from serving.server import load_cuda_libraries

    # As onnxruntime-gpu on an image without NVIDIA's libraries (no GPU here to run the real
    # provider): the load fails, and sessions are left to fall back to the CPU with a warning.
    monkeypatch.setattr(
        ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )

    def missing(**_: Any) -> None:
        raise OSError("libcudart.so.13: cannot open shared object file")

    monkeypatch.setattr(ort, "preload_dlls", missing)

    assert load_cuda_libraries() is True
    said = capsys.readouterr()
    assert "CUDA libraries did not load (libcudart.so.13" in said.out + said.err
