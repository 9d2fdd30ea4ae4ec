"""An image folder dropped into `dropflow local up`'s bucket trains, publishes, is promoted and
is served over HTTP (issue 14's acceptance for images).

Runs `dropflow local up` as a user would, writes a spec and scikit-learn's digits as PNG files
into label folders with plain file writes, waits for the job and the promotion, then asks the
runtime's URL as clients do: base64 images in JSON, raw PNG and JPEG bodies, tritonclient with
a BYTES tensor through the Open Inference Protocol, and a body that is no image; and runs the
events `dropflow events` makes for it through `dropflow invoke`. What the API answers is
checked against onnxruntime run here on the published model.onnx, on pixels decoded here with
Pillow the way the card's input documents (RGB, bilinear resize to its size).
"""

from __future__ import annotations

import base64
import io
import json
from http import HTTPStatus
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import requests
from PIL import Image
from sklearn.datasets import load_digits

from dropflow.vocabulary.card import Card
from tests.integration.test_image_family import digit_png
from tests.local_up import LocalUp, invoked_event, status

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

MODEL = "digits"
TRAINING_IMAGES = 200
# Images the job never saw, sent at another size than the card's so that the function's resize
# is part of what is checked.
ASKED = range(TRAINING_IMAGES, TRAINING_IMAGES + 6)
SENT_SIZE = 40
# float32 through the same graph on the same pixels: only the summation order may differ.
TOLERANCE = 1e-5


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _jpeg(png: bytes) -> bytes:
    out = io.BytesIO()
    Image.open(io.BytesIO(png)).convert("RGB").save(out, format="JPEG", quality=95)
    return out.getvalue()


def _pixels(data: bytes, card: Card) -> np.ndarray:
    """The graph's input for one encoded image as the card documents it, made with Pillow
    alone: RGB, resized bilinearly to the card's width x height, uint8 [1, H, W, 3]."""
    assert card.input is not None
    size = (int(card.input.width or 0), int(card.input.height or 0))
    rgb = Image.open(io.BytesIO(data)).convert("RGB").resize(size, Image.Resampling.BILINEAR)
    return np.asarray(rgb, dtype=np.uint8)[None]


def _published(home: Path, version: str) -> tuple[Card, ort.InferenceSession]:
    folder = home / "bucket" / "models" / MODEL / version
    card = Card.model_validate_json((folder / "card.json").read_bytes())
    return card, ort.InferenceSession(str(folder / "model.onnx"))


def _expected(session: ort.InferenceSession, pixels: np.ndarray) -> np.ndarray:
    (name,) = [i.name for i in session.get_inputs()]
    (probabilities,) = session.run(None, {name: pixels})
    return probabilities


def test_a_dropped_image_folder_trains_is_promoted_and_answers_images_over_http(tmp_path):
    home = tmp_path / "home"
    digits = load_digits()
    with LocalUp(home) as runtime:
        # Given digits dropped as PNG files in label folders
        folder = home / "bucket" / "datasets" / MODEL
        folder.mkdir(parents=True)
        (folder / "dropflow.yaml").write_text(
            "model: {family: image, backbone: resnet-tiny, pretrained: false, image_size: 32}\n"
            "training: {epochs: 8, batch_size: 32, learning_rate: 0.005}\n"
        )
        for i in range(TRAINING_IMAGES):
            label = folder / str(digits.target[i])
            label.mkdir(exist_ok=True)
            (label / f"{i:04d}.png").write_bytes(digit_png(digits.images[i]))

        # When the job ends and its version is promoted
        job = runtime.ended(MODEL)
        assert job["state"] == "published", (job, runtime.output)
        runtime.promoted(MODEL, job["version"])
        card, session = _published(home, job["version"])
        assert card.input is not None and card.input.kind == "image"
        predict = f"{runtime.url}/models/{MODEL}/predict"
        pngs = [digit_png(digits.images[i], size=SENT_SIZE) for i in ASKED]
        expected = np.concatenate([_expected(session, _pixels(png, card)) for png in pngs])

        # Then base64 images in JSON get the graph's answer on their documented pixels
        as_json = requests.post(
            predict, json={"instances": [{"image": _b64(png)} for png in pngs]}, timeout=60
        )
        assert as_json.status_code == HTTPStatus.OK, as_json.text
        body = as_json.json()
        assert (body["model"], body["version"], body["served_by"]) == (
            MODEL,
            job["version"],
            "lambda",
        )
        np.testing.assert_allclose(body["probabilities"], expected, atol=TOLERANCE)
        assert body["predictions"] == [card.classes[int(i)] for i in expected.argmax(axis=1)]

        # and so do a raw PNG body and a raw JPEG body, one image each
        jpeg = _jpeg(pngs[0])
        for data, media_type in ((pngs[0], "image/png"), (jpeg, "image/jpeg")):
            raw = requests.post(
                predict, data=data, headers={"Content-Type": media_type}, timeout=60
            )
            assert raw.status_code == HTTPStatus.OK, (media_type, raw.text)
            wanted = _expected(session, _pixels(data, card))
            np.testing.assert_allclose(raw.json()["probabilities"], wanted, atol=TOLERANCE)
            assert raw.json()["predictions"] == [card.classes[int(wanted.argmax())]]

        # and tritonclient gets the same outputs through /v2/models/digits/infer
        _infer_with_tritonclient(runtime.url, pngs[:2], expected[:2])

        # and a body that is no image is a 422 that names the problem
        words = requests.post(
            predict, data=b"seven, probably", headers={"Content-Type": "image/png"}, timeout=60
        )
        in_json = requests.post(
            predict, json={"instances": [{"image": _b64(b"seven, probably")}]}, timeout=60
        )
        for refused in (words, in_json):
            assert refused.status_code == HTTPStatus.UNPROCESSABLE_ENTITY, refused.text
            assert "not a JPEG, PNG or WebP image" in refused.json()["error"]["message"]

        # and the events `dropflow events` writes for it are answered by `dropflow invoke`
        for kind in ("predict", "predict-image"):
            result = invoked_event(home, kind, MODEL, tmp_path / f"{kind}.json")
            assert result["statusCode"] == HTTPStatus.OK, (kind, result)
            assert json.loads(result["body"])["version"] == job["version"]

        assert runtime.stop() == 0, runtime.output

    report = status(home)
    assert [(j["model"], j["state"]) for j in report["jobs"]] == [(MODEL, "published")]
    assert report["models"][0]["champion"] == job["version"]


def _infer_with_tritonclient(url: str, pngs: list[bytes], expected: np.ndarray) -> None:
    import tritonclient.http as httpclient  # a dev dependency: never skipped

    client = httpclient.InferenceServerClient(
        url=url.removeprefix("http://"), connection_timeout=30.0, network_timeout=60.0
    )
    try:
        assert client.is_model_ready(MODEL)
        meta = client.get_model_metadata(MODEL)
        assert meta["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]}]
        tensor = httpclient.InferInput("image", [len(pngs)], "BYTES")
        encoded = np.array([_b64(png).encode() for png in pngs], dtype=object)
        tensor.set_data_from_numpy(encoded, binary_data=False)
        wanted = httpclient.InferRequestedOutput("probabilities", binary_data=False)
        result = client.infer(MODEL, [tensor], outputs=[wanted])
        np.testing.assert_allclose(result.as_numpy("probabilities"), expected, atol=TOLERANCE)
    finally:
        client.close()
