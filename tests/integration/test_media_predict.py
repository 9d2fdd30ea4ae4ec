"""Image and text models (a card with `input`) through functions/predict/app.py, called as
Lambda calls it: base64 images in JSON, raw image bodies, texts, and every refusal a client
of such a model can meet. The graphs are tiny (tests/fakes_serving.py): what they compute is
checked against numpy on pixels decoded here with Pillow directly."""

from __future__ import annotations

import base64
import copy
import io
import json
from http import HTTPStatus
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest
from PIL import Image

from dropflow.serving.api import MAX_IMAGE_BODY_BYTES
from dropflow.serving.media_input import MAX_REQUEST_PIXELS
from dropflow.vocabulary.card import artifact_key
from dropflow.vocabulary.pixels import MAX_IMAGE_PIXELS
from dropflow_dev.lambda_context import LambdaContext
from tests.fakes_serving import (
    IMAGE_HEIGHT,
    IMAGE_WIDTH,
    TEXT_MAX_LENGTH,
    TEXT_VOCAB,
    MediaModel,
    ProxyAnswer,
    load_handler,
    publish,
    publish_media,
    version_id,
)

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
PREDICT_APP = ROOT / "functions" / "predict" / "app.py"
V1 = version_id(1)


@pytest.fixture
def app(adapters) -> ModuleType:
    return load_handler(PREDICT_APP)


@pytest.fixture
def photos(adapters) -> MediaModel:
    store, registry = adapters
    return publish_media(store, registry, "photos", V1, kind="image")


@pytest.fixture
def reviews(adapters) -> MediaModel:
    store, registry = adapters
    return publish_media(store, registry, "reviews", V1, kind="text")


def picture(width: int = 20, height: int = 14, seed: int = 0, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB").convert(mode)


def encoded(image: Image.Image, fmt: str = "PNG", **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def pixels_of(data: bytes) -> np.ndarray:
    """The graph's input as the card's docstring describes it, made here with Pillow alone."""
    rgb = Image.open(io.BytesIO(data)).convert("RGB")
    resized = rgb.resize((IMAGE_WIDTH, IMAGE_HEIGHT), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)[None]


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


class Answer(ProxyAnswer):
    @property
    def message(self) -> str:
        assert self.json is not None and set(self.json) == {"error"}, self.json
        return self.json["error"]["message"]


def call(
    app: ModuleType,
    model: str,
    body: Any = None,
    *,
    raw: bytes | None = None,
    content_type: str = "application/json",
    query: dict[str, str] | None = None,
) -> Answer:
    """POST /models/{model}/predict as API Gateway sends it: a raw body of a binary media type
    base64-encoded (template.yaml's BinaryMediaTypes), JSON as text."""
    event = copy.deepcopy(json.loads((EVENTS / "apigw-predict.json").read_text()))
    event["path"] = f"/models/{model}/predict"
    event["pathParameters"] = {"name": model}
    if raw is not None:
        event["body"], event["isBase64Encoded"] = b64(raw), True
    else:
        event["body"], event["isBase64Encoded"] = json.dumps(body), False
    event["headers"]["Content-Type"] = content_type
    event["multiValueHeaders"]["Content-Type"] = [content_type]
    event["queryStringParameters"] = query
    return Answer(app.lambda_handler(event, LambdaContext(function_name="PredictFunction")))


# ---------------------------------------------------------------------- images
@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP"])
def test_a_base64_image_in_json_gets_the_graphs_answer_on_its_resized_pixels(app, photos, fmt):
    data = encoded(picture(), fmt)

    answer = call(app, "photos", {"instances": [{"image": b64(data)}]})

    assert answer.status == HTTPStatus.OK, answer.json
    expected = photos.expected(pixels_of(data))
    np.testing.assert_allclose(answer.json["probabilities"], expected, atol=1e-5)
    assert answer.json["predictions"] == [photos.card.classes[int(expected.argmax())]]
    assert answer.json["served_by"] == "lambda"


@pytest.mark.parametrize(
    ("fmt", "media_type"), [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")]
)
def test_a_raw_image_body_of_each_type_gets_the_same_answer_as_base64(app, photos, fmt, media_type):
    data = encoded(picture(seed=3), fmt)

    raw = call(app, "photos", raw=data, content_type=media_type)
    as_json = call(app, "photos", {"instances": [{"image": b64(data)}]})

    assert raw.status == HTTPStatus.OK, raw.json
    assert raw.json == as_json.json


def test_a_raw_image_body_is_pinned_to_a_version_by_query(app, photos):
    answer = call(app, "photos", raw=encoded(picture()), content_type="image/png",
                  query={"version": V1})  # fmt: skip

    assert answer.status == HTTPStatus.OK
    assert answer.json["version"] == V1


def test_several_images_bare_or_as_objects_and_a_data_url(app, photos):
    images = [encoded(picture(seed=s), "PNG") for s in range(3)]
    bare = [b64(images[0]), "data:image/png;base64," + b64(images[1]), b64(images[2])]

    as_objects = call(app, "photos", {"instances": [{"image": b64(d)} for d in images]})
    as_values = call(app, "photos", {"instances": bare})

    assert as_objects.status == HTTPStatus.OK, as_objects.json
    assert as_values.json == as_objects.json
    expected = photos.expected(np.concatenate([pixels_of(d) for d in images]))
    np.testing.assert_allclose(as_objects.json["probabilities"], expected, atol=1e-5)


def test_an_image_is_upright_rgb_whatever_its_mode_and_orientation(app, photos):
    grey_with_alpha = encoded(picture(mode="LA"), "PNG")
    turned = picture(width=14, height=20, seed=5)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored turned; shown rotated 90 degrees clockwise
    with_orientation = encoded(turned, "PNG", exif=exif)
    upright = encoded(turned.transpose(Image.Transpose.ROTATE_270), "PNG")

    grey = call(app, "photos", {"instances": [b64(grey_with_alpha)]})
    rotated = call(app, "photos", {"instances": [b64(with_orientation), b64(upright)]})

    assert grey.status == HTTPStatus.OK, grey.json
    expected = photos.expected(pixels_of(grey_with_alpha))
    np.testing.assert_allclose(grey.json["probabilities"], expected, atol=1e-5)
    assert rotated.status == HTTPStatus.OK, rotated.json
    first, second = rotated.json["probabilities"]
    np.testing.assert_allclose(first, second, atol=1e-6)


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        (b64(b"plain text, no image at all"), "not a JPEG, PNG or WebP image"),
        (b64(encoded(picture(), "PNG")[:60]), "the image cannot be decoded"),
        (b64(encoded(picture(), "GIF")), "not a JPEG, PNG or WebP image"),
        ("", "the image is empty (0 bytes)"),
        ("not base64 !!", "not base64 text"),
        (12, "expected the image in base64 text, got a number"),
    ],
)
def test_a_bad_image_in_json_is_a_422_naming_the_row_and_the_problem(app, photos, value, needle):
    good = b64(encoded(picture()))

    answer = call(app, "photos", {"instances": [{"image": good}, {"image": value}]})

    assert answer.status == HTTPStatus.UNPROCESSABLE_ENTITY
    assert answer.message.startswith("invalid instances: row 1, 'image': ")
    assert needle in answer.message


def test_a_non_image_body_and_a_corrupt_image_body_are_422(app, photos):
    text = call(app, "photos", raw=b"hello, this is text", content_type="image/png")
    corrupt = call(app, "photos", raw=encoded(picture(), "JPEG")[:200], content_type="image/jpeg")

    assert text.status == HTTPStatus.UNPROCESSABLE_ENTITY
    assert "row 0" in text.message and "not a JPEG, PNG or WebP image" in text.message
    assert corrupt.status == HTTPStatus.UNPROCESSABLE_ENTITY
    assert "the image cannot be decoded" in corrupt.message


def test_a_wrong_field_is_a_422_naming_the_field_the_model_takes(app, photos):
    answer = call(app, "photos", {"instances": [{"picture": b64(encoded(picture()))}]})

    assert answer.status == HTTPStatus.UNPROCESSABLE_ENTITY
    assert answer.message == (
        "invalid instances: row 0: the model takes one key, 'image' (the image); got 'picture'"
    )


def test_a_decompression_bomb_is_a_422_refused_from_its_header(app, photos):
    side = int(MAX_IMAGE_PIXELS**0.5) + 10
    bomb = encoded(Image.new("L", (side, side)), "PNG")  # a few kB declaring > 50 MP
    assert len(bomb) < 100_000

    answer = call(app, "photos", {"instances": [b64(bomb)]})

    assert answer.status == HTTPStatus.UNPROCESSABLE_ENTITY
    assert f"the image is {side}x{side}" in answer.message
    assert f"the limit is {MAX_IMAGE_PIXELS:,}" in answer.message


def test_images_declaring_more_pixels_than_a_request_may_hold_are_a_413(app, photos):
    side = int(MAX_IMAGE_PIXELS**0.5) - 10  # each under the per-image bound
    big = b64(encoded(Image.new("L", (side, side)), "PNG"))
    count = MAX_REQUEST_PIXELS // (side * side) + 1

    answer = call(app, "photos", {"instances": [big] * count})

    assert answer.status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    assert "send fewer or smaller images per request" in answer.message


def test_an_image_body_over_the_payload_limit_is_a_413(app, photos):
    answer = call(app, "photos", raw=b"\x89PNG" + b"\0" * MAX_IMAGE_BODY_BYTES,
                  content_type="image/png")  # fmt: skip

    assert answer.status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    assert f"the limit is {MAX_IMAGE_BODY_BYTES} bytes" in answer.message


def test_an_image_body_for_a_table_model_is_a_415(app, adapters):
    store, registry = adapters
    publish(store, registry, "iris", V1)
    from dropflow.promotion.gate import promote

    promote("iris", V1, store, registry)

    answer = call(app, "iris", raw=encoded(picture()), content_type="image/png")

    assert answer.status == HTTPStatus.UNSUPPORTED_MEDIA_TYPE
    assert answer.message.startswith("model 'iris' takes rows of features, not images")


def test_an_image_body_elsewhere_than_predict_is_a_415(app, photos):
    event = json.loads((EVENTS / "apigw-predict.json").read_text())
    event["path"] = "/v2/models/photos/infer"
    event["headers"]["Content-Type"] = "image/png"
    event["multiValueHeaders"]["Content-Type"] = ["image/png"]
    event["body"], event["isBase64Encoded"] = b64(encoded(picture())), True

    answer = Answer(app.lambda_handler(event, LambdaContext()))

    assert answer.status == HTTPStatus.UNSUPPORTED_MEDIA_TYPE


def test_the_model_description_states_its_input(app, photos):
    event = json.loads((EVENTS / "apigw-predict.json").read_text())
    event.update(httpMethod="GET", path="/models/photos", body=None, resource="/models/{name}")

    answer = Answer(app.lambda_handler(event, LambdaContext()))

    assert answer.status == HTTPStatus.OK
    assert answer.json["input"] == photos.card.input.model_dump(exclude_none=True)
    assert answer.json["features"] == [
        {"name": "image", "dtype": "image", "categories": None, "nullable": False}
    ]


# ---------------------------------------------------------------------- text
def ids_of(*texts: str) -> np.ndarray:
    """Token ids as the card says (lower case, words, unknown -> 1, cut and padded to L)."""
    index = {w: i for i, w in enumerate(TEXT_VOCAB)}
    rows = []
    for text in texts:
        words = text.lower().replace(",", " , ").replace("!", " ! ").split()
        ids = [index.get(w, 1) for w in words][:TEXT_MAX_LENGTH]
        rows.append(ids + [0] * (TEXT_MAX_LENGTH - len(ids)))
    return np.array(rows, dtype=np.int64)


def test_texts_are_tokenized_with_the_versions_tokenizer(app, reviews):
    texts = ["Great product!", "awful, broken", "good good good good good good good fine bad"]

    as_objects = call(app, "reviews", {"instances": [{"review": t} for t in texts]})
    as_strings = call(app, "reviews", {"instances": texts})

    assert as_objects.status == HTTPStatus.OK, as_objects.json
    expected = reviews.expected(ids_of(*texts))
    np.testing.assert_allclose(as_objects.json["probabilities"], expected, atol=1e-5)
    assert as_objects.json["predictions"] == [reviews.card.classes[i] for i in expected.argmax(1)]
    assert as_strings.json == as_objects.json


@pytest.mark.parametrize(
    ("instances", "needle"),
    [
        ([{"review": "fine"}, {"review": ""}], "row 1, 'review': the text is empty"),
        ([{"review": "fine"}, {"review": "   "}], "row 1, 'review': the text is empty"),
        ([{"review": 3}], "row 0, 'review': expected text, got a number"),
        ([{"review": None}], "row 0, 'review': expected text, got null"),
        ([{"text": "fine"}], "row 0: the model takes one key, 'review' (the text); got 'text'"),
        ([{"review": "fine", "stars": 5}], "got 'review', 'stars'"),
    ],
)
def test_a_text_that_is_not_a_non_empty_string_is_a_422_naming_the_row(
    app, reviews, instances, needle
):
    answer = call(app, "reviews", {"instances": instances})

    assert answer.status == HTTPStatus.UNPROCESSABLE_ENTITY
    assert needle in answer.message


def test_a_bare_string_for_a_table_model_is_a_422(app, adapters):
    store, registry = adapters
    publish(store, registry, "iris", V1)
    from dropflow.promotion.gate import promote

    promote("iris", V1, store, registry)

    answer = call(app, "iris", {"instances": ["setosa?"]})

    assert answer.status == HTTPStatus.UNPROCESSABLE_ENTITY
    assert "row 0 is string 'setosa?'" in answer.message


def test_a_tokenizer_changed_after_promotion_is_refused_with_a_503(app, adapters, reviews):
    store, _ = adapters
    store.put(artifact_key("reviews", V1, "tokenizer.json"), b'{"changed": true}')

    answer = call(app, "reviews", {"instances": ["great"]})

    assert answer.status == HTTPStatus.SERVICE_UNAVAILABLE
    assert "tokenizer.json differs from what job" in answer.message


def test_the_openapi_description_lists_the_raw_image_bodies_of_predict(app, photos):
    event = json.loads((EVENTS / "apigw-predict.json").read_text())
    event.update(httpMethod="GET", path="/openapi.json", body=None, resource="/openapi.json")

    answer = Answer(app.lambda_handler(event, LambdaContext()))

    body = answer.json["paths"]["/models/{name}/predict"]["post"]["requestBody"]
    assert set(body["content"]) == {"application/json", "image/jpeg", "image/png", "image/webp"}
    assert body["content"]["image/png"]["schema"] == {"type": "string", "format": "binary"}


def test_the_cards_length_and_padding_hold_whatever_the_tokenizer_file_says(app, adapters):
    from tokenizers import Tokenizer

    from tests.fakes_serving import tokenizer_json

    store, registry = adapters
    odd = Tokenizer.from_str(tokenizer_json().decode())
    odd.enable_truncation(2)
    odd.enable_padding(direction="left", pad_id=1, pad_token="[UNK]", length=3)
    reviews = publish_media(
        store, registry, "reviews", V1, kind="text", tokenizer=odd.to_str().encode()
    )
    texts = ["great product", "awful broken bad fine good great product"]

    answer = call(app, "reviews", {"instances": texts})

    assert answer.status == HTTPStatus.OK, answer.json
    expected = reviews.expected(ids_of(*texts))
    np.testing.assert_allclose(answer.json["probabilities"], expected, atol=1e-5)
