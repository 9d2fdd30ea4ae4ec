"""Image and text models over HTTP through the local gateway (the predict function behind it,
as `dropflow local up` serves it), and through the Open Inference Protocol: the handler's
/v2 routes, and tritonclient's HTTP client sending an image as a BYTES tensor."""

from __future__ import annotations

import base64
import copy
import io
import json
from collections.abc import Iterator
from http import HTTPStatus
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
import requests
from PIL import Image

from dropflow.serving.media_input import MAX_REQUEST_PIXELS
from dropflow_dev.lambda_context import LambdaContext
from dropflow_dev.local.gateway import Gateway
from tests.fakes_serving import (
    IMAGE_HEIGHT,
    IMAGE_WIDTH,
    MediaModel,
    ProxyAnswer,
    load_handler,
    publish_media,
    version_id,
)

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = json.loads((ROOT / "events" / "apigw-predict.json").read_text())
V1 = version_id(1)


@pytest.fixture
def app(adapters) -> ModuleType:
    return load_handler(ROOT / "functions" / "predict" / "app.py")


@pytest.fixture
def published(adapters) -> dict[str, MediaModel]:
    store, registry = adapters
    return {
        "photos": publish_media(store, registry, "photos", V1, kind="image"),
        "reviews": publish_media(store, registry, "reviews", V1, kind="text"),
    }


@pytest.fixture
def gateway(app, published) -> Iterator[str]:
    server = Gateway(app.lambda_handler, host="127.0.0.1", port=0)
    server.start()
    try:
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()


def encoded(fmt: str = "PNG", seed: int = 0, size: tuple[int, int] = (20, 14)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size[1], size[0], 3))
    buffer = io.BytesIO()
    Image.fromarray(pixels.astype(np.uint8), "RGB").save(buffer, format=fmt)
    return buffer.getvalue()


def pixels_of(data: bytes) -> np.ndarray:
    rgb = Image.open(io.BytesIO(data)).convert("RGB")
    resized = rgb.resize((IMAGE_WIDTH, IMAGE_HEIGHT), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)[None]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


# ---------------------------------------------------------------------- the simple API over HTTP
@pytest.mark.parametrize(
    ("fmt", "media_type"), [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")]
)
def test_a_raw_image_over_http_gets_the_same_answer_as_base64_json(
    gateway, published, fmt, media_type
):
    data = encoded(fmt)

    raw = requests.post(
        f"{gateway}/models/photos/predict",
        data=data,
        headers={"Content-Type": media_type},
        timeout=30,
    )
    as_json = requests.post(
        f"{gateway}/models/photos/predict", json={"instances": [{"image": b64(data)}]}, timeout=30
    )

    assert raw.status_code == HTTPStatus.OK, raw.text
    assert raw.json() == as_json.json()
    expected = published["photos"].expected(pixels_of(data))
    np.testing.assert_allclose(raw.json()["probabilities"], expected, atol=1e-5)


def test_non_image_and_corrupt_bodies_over_http_are_422(gateway, published):
    url = f"{gateway}/models/photos/predict"

    text = requests.post(url, data=b"just words", headers={"Content-Type": "image/png"}, timeout=30)
    corrupt = requests.post(
        url, data=encoded("JPEG")[:150], headers={"Content-Type": "image/jpeg"}, timeout=30
    )
    wrong_field = requests.post(url, json={"instances": [{"photo": b64(encoded())}]}, timeout=30)

    assert text.status_code == HTTPStatus.UNPROCESSABLE_ENTITY
    assert "not a JPEG, PNG or WebP image" in text.json()["error"]["message"]
    assert corrupt.status_code == HTTPStatus.UNPROCESSABLE_ENTITY
    assert "cannot be decoded" in corrupt.json()["error"]["message"]
    assert wrong_field.status_code == HTTPStatus.UNPROCESSABLE_ENTITY
    assert "one key, 'image'" in wrong_field.json()["error"]["message"]


def test_an_oversize_image_body_over_http_is_413(gateway, published):
    answer = requests.post(
        f"{gateway}/models/photos/predict",
        data=b"\xff\xd8" + b"\0" * (5 * 1024 * 1024),
        headers={"Content-Type": "image/jpeg"},
        timeout=30,
    )

    assert answer.status_code == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    assert "image body is" in answer.json()["error"]["message"]


def test_texts_over_http(gateway, published):
    answer = requests.post(
        f"{gateway}/models/reviews/predict",
        json={"instances": ["great product", "broken, awful"]},
        timeout=30,
    )
    empty = requests.post(
        f"{gateway}/models/reviews/predict", json={"instances": [{"review": ""}]}, timeout=30
    )

    assert answer.status_code == HTTPStatus.OK, answer.text
    assert len(answer.json()["probabilities"]) == 2
    assert set(answer.json()["predictions"]) <= {"neg", "pos"}
    assert empty.status_code == HTTPStatus.UNPROCESSABLE_ENTITY
    assert (
        empty.json()["error"]["message"] == "invalid instances: row 0, 'review': the text is empty"
    )


# ---------------------------------------------------------------------- Open Inference Protocol
class OipAnswer(ProxyAnswer):
    @property
    def message(self) -> str:
        assert self.json is not None and set(self.json) == {"error"}, self.json
        return self.json["error"]


def oip(app: ModuleType, method: str, path: str, body: Any = None) -> OipAnswer:
    event = copy.deepcopy(SAMPLE)
    event["httpMethod"] = event["requestContext"]["httpMethod"] = method
    event["path"] = path
    event["resource"] = "/v2/{proxy+}"
    event["pathParameters"] = {"proxy": path.removeprefix("/v2/")}
    event["body"] = None if body is None else json.dumps(body)
    return OipAnswer(app.lambda_handler(event, LambdaContext(function_name="PredictFunction")))


def bytes_input(name: str, values: list[Any], shape: list[int] | None = None) -> dict[str, Any]:
    tensor = {"name": name, "datatype": "BYTES", "shape": shape or [len(values)], "data": values}
    return {"inputs": [tensor]}


def test_metadata_describes_the_one_bytes_input(app, published):
    photos = oip(app, "GET", "/v2/models/photos")
    reviews = oip(app, "GET", "/v2/models/reviews")

    assert photos.status == HTTPStatus.OK
    assert photos.json["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
    assert photos.json["outputs"] == [
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, 2]}
    ]
    assert f"resized to {IMAGE_WIDTH}x{IMAGE_HEIGHT}" in photos.json["parameters"]["input_encoding"]
    assert json.loads(photos.json["parameters"]["input"])["kind"] == "image"
    assert reviews.json["inputs"] == [{"name": "review", "datatype": "BYTES", "shape": [-1]}]
    assert "UTF-8 string" in reviews.json["parameters"]["input_encoding"]


def test_infer_takes_base64_images_and_strings_as_bytes(app, published):
    images = [encoded(seed=1), encoded("JPEG", seed=2)]

    photos = oip(
        app, "POST", "/v2/models/photos/infer", bytes_input("image", [b64(d) for d in images])
    )
    reviews = oip(
        app, "POST", "/v2/models/reviews/infer", bytes_input("review", [["great"], ["bad"]], [2, 1])
    )

    assert photos.status == HTTPStatus.OK, photos.json
    (output,) = photos.json["outputs"]
    assert output["shape"] == [2, 2]
    expected = published["photos"].expected(np.concatenate([pixels_of(d) for d in images]))
    np.testing.assert_allclose(np.reshape(output["data"], (2, 2)), expected, atol=1e-5)
    assert reviews.status == HTTPStatus.OK, reviews.json
    assert reviews.json["outputs"][0]["shape"] == [2, 2]


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        (bytes_input("picture", ["x"]), 422, "the model takes one input 'image', BYTES [-1]"),
        (
            {"inputs": [{"name": "image", "datatype": "UINT8", "shape": [1], "data": [1]}]},
            422,
            "input datatype 'UINT8' is not accepted",
        ),
        (bytes_input("image", [b64(b"no image")]), 422, "row 0, 'image': not a JPEG, PNG or WebP"),
        (bytes_input("image", [7]), 422, "row 0, input 'image': a number is not BYTES data"),
    ],
)
def test_bytes_an_image_model_cannot_take_are_named(app, published, body, status, needle):
    answer = oip(app, "POST", "/v2/models/photos/infer", body)

    assert answer.status == status
    assert needle in answer.message


def test_too_many_pixels_over_the_protocol_is_413(app, published):
    side = 6000
    big = Image.new("L", (side, side))
    buffer = io.BytesIO()
    big.save(buffer, format="PNG")
    count = MAX_REQUEST_PIXELS // (side * side) + 1

    answer = oip(
        app,
        "POST",
        "/v2/models/photos/infer",
        bytes_input("image", [b64(buffer.getvalue())] * count),
    )

    assert answer.status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    assert "pixels in all" in answer.message


def test_an_empty_text_over_the_protocol_is_422(app, published):
    answer = oip(app, "POST", "/v2/models/reviews/infer", bytes_input("review", ["fine", ""]))

    assert answer.status == HTTPStatus.UNPROCESSABLE_ENTITY
    assert answer.message == "invalid input: row 1, 'review': the text is empty"


def test_tritonclient_gets_outputs_for_an_image_sent_as_bytes(gateway, published):
    import tritonclient.http as httpclient  # a dev dependency: never skipped
    from tritonclient.utils import InferenceServerException

    data = encoded("PNG", seed=9)
    client = httpclient.InferenceServerClient(
        url=gateway.removeprefix("http://"), connection_timeout=10.0, network_timeout=10.0
    )
    try:
        assert client.is_model_ready("photos")
        meta = client.get_model_metadata("photos")
        assert meta["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]

        tensor = httpclient.InferInput("image", [1], "BYTES")
        tensor.set_data_from_numpy(np.array([b64(data).encode()], dtype=object), binary_data=False)
        wanted = httpclient.InferRequestedOutput("probabilities", binary_data=False)
        result = client.infer("photos", [tensor], outputs=[wanted])

        probabilities = result.as_numpy("probabilities")
        assert probabilities.shape == (1, 2)
        expected = published["photos"].expected(pixels_of(data))
        np.testing.assert_allclose(probabilities, expected, atol=1e-5)

        bad = httpclient.InferInput("image", [1], "BYTES")
        bad.set_data_from_numpy(np.array([b64(b"text").encode()], dtype=object), binary_data=False)
        with pytest.raises(InferenceServerException, match="not a JPEG, PNG or WebP image"):
            client.infer("photos", [bad], outputs=[wanted])
    finally:
        client.close()
