"""Image and text models routed to the container tier: the predict function forwards them to
the container's server (`python -m serving`, a real process on 127.0.0.1), which decodes,
tokenizes and answers with the same service code ("served_by": "container")."""

from __future__ import annotations

import base64
import copy
import io
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

import numpy as np
import pytest
import requests
from PIL import Image

from dropflow import wiring
from dropflow_dev.lambda_context import LambdaContext
from tests.fakes_serving import (
    IMAGE_HEIGHT,
    IMAGE_WIDTH,
    MediaModel,
    ProxyAnswer,
    load_handler,
    publish_media,
    version_id,
)
from tests.net import free_port, wait_ready

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = json.loads((ROOT / "events" / "apigw-predict.json").read_text())
V1 = version_id(1)


@pytest.fixture
def published(adapters) -> dict[str, MediaModel]:
    store, registry = adapters
    return {
        "photos": publish_media(store, registry, "photos", V1, kind="image", route="container"),
        "reviews": publish_media(store, registry, "reviews", V1, kind="text", route="container"),
    }


@pytest.fixture
def server(published, tmp_path) -> Iterator[SimpleNamespace]:
    """The container tier's server on the same store and registry, ready (models loaded)."""
    port = free_port()
    log = open(tmp_path / "server.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [sys.executable, "-m", "serving", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT,
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(ROOT / "layers" / "dropflow"), str(ROOT)]),
        },
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        if wait_ready(url, 120, alive=lambda: proc.poll() is None) != HTTPStatus.OK:
            pytest.fail(
                "the container server never became ready:\n" + (tmp_path / "server.log").read_text()
            )
        yield SimpleNamespace(proc=proc, url=url, log=tmp_path / "server.log")
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
def app(server, monkeypatch) -> ModuleType:
    monkeypatch.setenv("DROPFLOW_CONTAINER_URL", server.url)
    wiring.reset()  # a cold start reads the settings afresh
    return load_handler(ROOT / "functions" / "predict" / "app.py")


def encoded(fmt: str = "PNG", seed: int = 0) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(14, 20, 3)).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, format=fmt)
    return buffer.getvalue()


def pixels_of(data: bytes) -> np.ndarray:
    rgb = Image.open(io.BytesIO(data)).convert("RGB")
    resized = rgb.resize((IMAGE_WIDTH, IMAGE_HEIGHT), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)[None]


def call(
    app: ModuleType, path: str, body: Any = None, *, raw: bytes | None = None, media: str = ""
) -> ProxyAnswer:
    event = copy.deepcopy(SAMPLE)
    event["path"] = path
    if raw is not None:
        event["body"], event["isBase64Encoded"] = base64.b64encode(raw).decode(), True
        event["headers"]["Content-Type"] = media
        event["multiValueHeaders"]["Content-Type"] = [media]
    else:
        event["body"] = json.dumps(body)
    return ProxyAnswer(app.lambda_handler(event, LambdaContext(function_name="PredictFunction")))


def test_a_raw_image_to_the_function_is_answered_by_the_container(app, published):
    data = encoded("WEBP", seed=4)

    answer = call(app, "/models/photos/predict", raw=data, media="image/webp")

    assert answer.status == HTTPStatus.OK, answer.json
    assert answer.json["served_by"] == "container"
    expected = published["photos"].expected(pixels_of(data))
    np.testing.assert_allclose(answer.json["probabilities"], expected, atol=1e-5)


def test_the_container_server_takes_raw_and_base64_images_itself(server, published):
    data = encoded("JPEG", seed=5)
    url = f"{server.url}/models/photos/predict"

    raw = requests.post(url, data=data, headers={"Content-Type": "image/jpeg"}, timeout=30)
    as_json = requests.post(
        url, json={"instances": [{"image": base64.b64encode(data).decode()}]}, timeout=30
    )

    assert raw.status_code == HTTPStatus.OK, raw.text
    assert raw.json() == as_json.json()
    assert raw.json()["served_by"] == "container"


def test_texts_are_tokenized_by_the_container(app, published):
    answer = call(app, "/models/reviews/predict", {"instances": ["great product", "awful"]})

    assert answer.status == HTTPStatus.OK, answer.json
    assert answer.json["served_by"] == "container"
    assert len(answer.json["probabilities"]) == 2


def test_the_containers_422_for_a_bad_image_or_text_passes_through_unchanged(app, published):
    image = call(app, "/models/photos/predict", raw=b"not an image", media="image/png")
    text = call(app, "/models/reviews/predict", {"instances": [{"review": "  "}]})

    assert image.status == HTTPStatus.UNPROCESSABLE_ENTITY
    assert "row 0, 'image': not a JPEG, PNG or WebP image" in image.json["error"]["message"]
    assert text.status == HTTPStatus.UNPROCESSABLE_ENTITY
    assert text.json["error"]["message"] == "invalid instances: row 0, 'review': the text is empty"


def test_an_image_as_bytes_over_the_protocol_is_forwarded(app, published):
    data = encoded(seed=6)
    event = copy.deepcopy(SAMPLE)
    event.update(path="/v2/models/photos/infer", resource="/v2/{proxy+}")
    event["pathParameters"] = {"proxy": "models/photos/infer"}
    tensor = {"name": "image", "datatype": "BYTES", "shape": [1]}
    event["body"] = json.dumps({"inputs": [{**tensor, "data": [base64.b64encode(data).decode()]}]})

    answer = ProxyAnswer(app.lambda_handler(event, LambdaContext()))

    assert answer.status == HTTPStatus.OK, answer.json
    expected = published["photos"].expected(pixels_of(data))
    np.testing.assert_allclose(answer.json["outputs"][0]["data"], expected.reshape(-1), atol=1e-5)
