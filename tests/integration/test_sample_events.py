"""`dropflow events` fills events in for the models of a local home, and each one is taken by its
function through `dropflow invoke`: the real handlers run against the home's adapters.

The home holds one published, approved model (`pets`, with a category column and a missing
colour in its holdout rows) and a job that runs on an instance, as `dropflow local up` leaves
them; no training process is started.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
from http import HTTPStatus
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tokenizers import Tokenizer

from dropflow import wiring
from dropflow.promotion.gate import promote
from dropflow.records.jobs import Attempt, Job, JobState
from dropflow.vocabulary.card import INPUT_NAME, MISSING_CATEGORY, Feature, artifact_key
from dropflow.vocabulary.names import new_job_id
from dropflow_dev import cli
from dropflow_dev.event_shapes import KINDS
from dropflow_dev.local.runtime import configure
from dropflow_dev.sample_events import PLACEHOLDER_TEXT
from tests.fakes_serving import (
    TEXT_MAX_LENGTH,
    TEXT_PAD_ID,
    MediaModel,
    publish,
    publish_media,
    tokenizer_json,
    version_id,
)

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

ROOT = Path(__file__).resolve().parents[2]
SAM_EVENTS = ROOT / "tests" / "fixtures" / "sam-events"
MODEL = "pets"
FEATURES = [
    Feature(name="length", nullable=True),
    Feature(
        name="colour",
        dtype="category",
        categories=["red", "green", MISSING_CATEGORY],
        nullable=True,
    ),
    Feature(name="weight"),
]
# The holdout rows the version publishes, as the graph reads them: colour by its code, 2 being
# the code of a missing colour.
HOLDOUT = np.array(
    [[1.5, 0.0, 3.25], [2.0, 2.0, 4.0], [2.5, 1.0, 5.0]],
    dtype=np.float32,
)
INSTANCE = "local-77"


@pytest.fixture
def home(tmp_path, restored_environ) -> Path:
    """A local home with an approved `pets` and a running job on INSTANCE."""
    for var in ("DROPFLOW_STORE_URL", "DROPFLOW_REGISTRY_URL", "DROPFLOW_COMPUTE_URL"):
        os.environ.pop(var, None)
    home = tmp_path / "home"
    configure(home)
    store, registry = wiring.store(), wiring.registry()
    publish(store, registry, MODEL, version_id(1), features=FEATURES, x=HOLDOUT)
    assert promote(MODEL, version_id(1), store, registry).decision == "approved"
    return home


@pytest.fixture
def running_job(home) -> str:
    job = Job(
        job_id=new_job_id(MODEL),
        model=MODEL,
        data_version="pets-v2",
        state=JobState.RUNNING,
        attempts=[Attempt(number=1, instance_id=INSTANCE, lifecycle="spot")],
    )
    wiring.jobs().create(job)
    return job.job_id


def events(capsys, home: Path, *args: str) -> tuple[int, dict | None, str]:
    code = cli.main(["events", *args, "--home", str(home)])
    captured = capsys.readouterr()
    return code, (json.loads(captured.out) if code == 0 else None), captured.err


def write_event(capsys, home: Path, tmp_path: Path, *args: str) -> Path:
    path = tmp_path / f"{args[0]}.json"
    code = cli.main(["events", *args, "-o", str(path), "--home", str(home)])
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    return path


def invoke(capsys, home: Path, function: str, event: Path) -> tuple[int, str, str]:
    code = cli.main(["invoke", function, "-e", str(event), "--home", str(home)])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def answer(capsys, home: Path, function: str, event: Path) -> dict:
    code, out, err = invoke(capsys, home, function, event)
    assert code == 0, out + err
    return json.loads(out)


# --------------------------------------------------------------------------- predict
def test_a_predict_event_sends_the_champions_holdout_rows_as_a_client_would(capsys, home):
    code, event, _ = events(capsys, home, "predict", "--model", MODEL)

    assert code == 0
    assert (event["httpMethod"], event["resource"]) == ("POST", "/models/{name}/predict")
    assert event["pathParameters"] == {"name": MODEL}
    # Categories by their value, missing values as null, numbers as float32 printed them.
    assert json.loads(event["body"]) == {
        "instances": [
            {"length": 1.5, "colour": "red", "weight": 3.25},
            {"length": 2.0, "colour": None, "weight": 4.0},
        ]
    }


def test_each_predict_function_kind_is_answered_200_by_the_predict_function(capsys, home, tmp_path):
    for kind in ("health", "models", "model", "predict", "metadata", "infer"):
        assert KINDS[kind].function == "PredictFunction"
        path = write_event(capsys, home, tmp_path, kind, "--model", MODEL)
        result = answer(capsys, home, "PredictFunction", path)
        assert result["statusCode"] == HTTPStatus.OK, (kind, result)
        body = json.loads(result["body"])
        if kind == "predict":
            assert body["version"] == version_id(1)
            assert len(body["predictions"]) == 2
        if kind == "infer":
            assert body["model_name"] == MODEL
            [output] = body["outputs"]
            assert output["shape"][0] == 2


def test_a_pinned_version_is_named_in_the_request(capsys, home, tmp_path):
    path = write_event(
        capsys, home, tmp_path, "infer", "--model", MODEL, "--version", version_id(1)
    )
    event = json.loads(path.read_text())
    assert event["path"] == f"/v2/models/{MODEL}/versions/{version_id(1)}/infer"
    assert answer(capsys, home, "PredictFunction", path)["statusCode"] == HTTPStatus.OK

    path = write_event(
        capsys,
        home,
        tmp_path,
        "predict",
        "--model",
        MODEL,
        "--version",
        version_id(1),
        "--rows",
        "3",
    )
    assert len(json.loads(json.loads(path.read_text())["body"])["instances"]) == 3
    body = json.loads(answer(capsys, home, "PredictFunction", path)["body"])
    assert body["version"] == version_id(1)


def test_rows_with_a_missing_value_the_model_cannot_take_are_sent_last(capsys, home):
    # Version 2's first holdout row lacks a weight, which had no missing values in training.
    store, registry = wiring.store(), wiring.registry()
    holdout = np.array([[1.0, 0.0, math.nan], [2.0, 1.0, 6.0], [3.0, 0.0, 7.0]], np.float32)
    publish(store, registry, MODEL, version_id(2), features=FEATURES, x=holdout)

    args = ("predict", "--model", MODEL, "--version", version_id(2), "--rows", "3")
    code, event, _ = events(capsys, home, *args)

    assert code == 0
    assert json.loads(event["body"])["instances"] == [
        {"length": 2.0, "colour": "green", "weight": 6.0},
        {"length": 3.0, "colour": "red", "weight": 7.0},
        {"length": 1.0, "colour": "red", "weight": None},
    ]


def test_a_version_without_readable_holdout_rows_gets_rows_made_up_and_says_so(capsys, home):
    store, registry = wiring.store(), wiring.registry()
    publish(store, registry, MODEL, version_id(2), features=FEATURES, reference_bytes=b"junk")

    code, event, err = events(capsys, home, "predict", "--model", MODEL, "--version", version_id(2))

    assert code == 0
    assert (
        json.loads(event["body"])["instances"]
        == [{"length": 0.0, "colour": "red", "weight": 0.0}] * 2
    )
    assert "no readable holdout rows (reference.npz): the rows are made up" in err


def test_a_model_the_home_does_not_have_is_a_404_from_the_function(capsys, home, tmp_path):
    path = write_event(capsys, home, tmp_path, "model", "--model", "ghost")
    result = answer(capsys, home, "PredictFunction", path)
    assert result["statusCode"] == HTTPStatus.NOT_FOUND
    assert "ghost" in result["body"]


def test_rows_for_a_model_without_champion_are_refused_saying_what_to_pass(capsys, home):
    code, _, err = events(capsys, home, "predict", "--model", "ghost")

    assert code == 2
    assert "'ghost' has no champion" in err and "pass --version V" in err
    assert "Traceback" not in err


# --------------------------------------------------------------------------- images and texts
@pytest.fixture
def media(home) -> dict[str, MediaModel]:
    """An image model `photos` and a text model `reviews`, each champion of the home."""
    store, registry = wiring.store(), wiring.registry()
    return {
        kind: publish_media(store, registry, name, version_id(1), kind=kind, seed=4)
        for name, kind in (("photos", "image"), ("reviews", "text"))
    }


def holdout_input(model: str) -> np.ndarray:
    raw = wiring.store().get(artifact_key(model, version_id(1), "reference.npz"))
    with np.load(io.BytesIO(raw)) as npz:
        return npz[INPUT_NAME]


def decoded(value: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(value))).convert("RGB"))


def test_an_image_models_predict_event_sends_its_holdout_images_as_base64_png(
    capsys, home, media, tmp_path
):
    path = write_event(capsys, home, tmp_path, "predict", "--model", "photos", "--rows", "3")
    instances = json.loads(json.loads(path.read_text())["body"])["instances"]

    # Under the card's field, PNG files of the card's size holding the holdout pixels exactly.
    assert [list(i) for i in instances] == [["image"]] * 3
    pixels = np.stack([decoded(i["image"]) for i in instances])
    np.testing.assert_array_equal(pixels, holdout_input("photos")[:3])
    result = answer(capsys, home, "PredictFunction", path)
    assert result["statusCode"] == HTTPStatus.OK, result
    np.testing.assert_allclose(
        json.loads(result["body"])["probabilities"], media["image"].expected(pixels), atol=1e-5
    )


def test_a_raw_image_event_carries_one_png_in_base64_and_is_answered(capsys, home, media, tmp_path):
    path = write_event(capsys, home, tmp_path, "predict-image", "--model", "photos")
    event = json.loads(path.read_text())

    assert event["isBase64Encoded"] is True
    assert event["headers"]["Content-Type"] == "image/png"
    pixels = decoded(event["body"])[None]
    np.testing.assert_array_equal(pixels, holdout_input("photos")[:1])
    result = answer(capsys, home, "PredictFunction", path)
    assert result["statusCode"] == HTTPStatus.OK, result
    body = json.loads(result["body"])
    np.testing.assert_allclose(body["probabilities"], media["image"].expected(pixels), atol=1e-5)


def test_a_raw_image_event_pins_a_version_by_query(capsys, home, media, tmp_path):
    args = ("predict-image", "--model", "photos", "--version", version_id(1))
    path = write_event(capsys, home, tmp_path, *args)
    event = json.loads(path.read_text())

    assert event["queryStringParameters"] == {"version": version_id(1)}
    result = answer(capsys, home, "PredictFunction", path)
    assert result["statusCode"] == HTTPStatus.OK, result
    assert json.loads(result["body"])["version"] == version_id(1)


def test_a_raw_image_event_for_a_model_of_other_input_is_refused(capsys, home, media):
    for model, takes in ((MODEL, "table rows"), ("reviews", "text")):
        code, _, err = events(capsys, home, "predict-image", "--model", model)

        assert code == 2
        assert f"takes {takes}, not images" in err
        assert f"use `dropflow events predict --model {model}`" in err


def test_a_text_models_predict_event_sends_the_texts_its_tokenizer_decodes(
    capsys, home, media, tmp_path
):
    path = write_event(capsys, home, tmp_path, "predict", "--model", "reviews", "--rows", "3")
    instances = json.loads(json.loads(path.read_text())["body"])["instances"]

    tokenizer = Tokenizer.from_str(tokenizer_json().decode())
    texts = tokenizer.decode_batch(holdout_input("reviews")[:3].tolist(), skip_special_tokens=True)
    assert instances == [{"review": text} for text in texts]
    assert all(isinstance(text, str) and text.strip() for text in texts)
    result = answer(capsys, home, "PredictFunction", path)
    assert result["statusCode"] == HTTPStatus.OK, result
    # The serving side cuts and pads what this plain tokenizer leaves as it is.
    ids = np.asarray(
        [
            (e.ids + [TEXT_PAD_ID] * TEXT_MAX_LENGTH)[:TEXT_MAX_LENGTH]
            for e in tokenizer.encode_batch(texts)
        ],
        dtype=np.int64,
    )
    np.testing.assert_allclose(
        json.loads(result["body"])["probabilities"], media["text"].expected(ids), atol=1e-5
    )


def test_a_text_event_leaves_out_the_tokens_the_tokenizer_adds_to_every_text(
    capsys, home, tmp_path
):
    # As the text family's learnt WordPiece vocabulary: [CLS] and [SEP] come from the template
    # post-processor, and are not registered as special tokens that decode would skip.
    from tokenizers import processors

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "great", "bad", "fine", "awful", "product"]
    tokenizer = Tokenizer.from_str(tokenizer_json(vocab).decode())
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    store, registry = wiring.store(), wiring.registry()
    publish_media(
        store, registry, "tickets", version_id(1), kind="text",
        tokenizer=tokenizer.to_str().encode(),
    )  # fmt: skip
    held = holdout_input("tickets")[:4]
    assert np.isin(held, [2, 3]).any()  # the seeded holdout ids hold [CLS] or [SEP]

    path = write_event(capsys, home, tmp_path, "predict", "--model", "tickets", "--rows", "4")
    texts = [i["review"] for i in json.loads(json.loads(path.read_text())["body"])["instances"]]

    assert texts == [" ".join(vocab[i] for i in row if i not in (0, 2, 3)) for row in held.tolist()]
    assert answer(capsys, home, "PredictFunction", path)["statusCode"] == HTTPStatus.OK


@pytest.mark.parametrize(("model", "field"), [("photos", "image"), ("reviews", "review")])
def test_an_infer_event_for_an_image_or_text_model_sends_one_bytes_input(
    capsys, home, media, tmp_path, model, field
):
    path = write_event(capsys, home, tmp_path, "infer", "--model", model)
    [tensor] = json.loads(json.loads(path.read_text())["body"])["inputs"]

    assert (tensor["name"], tensor["datatype"], tensor["shape"]) == (field, "BYTES", [2])
    result = answer(capsys, home, "PredictFunction", path)
    assert result["statusCode"] == HTTPStatus.OK, result
    [output] = json.loads(result["body"])["outputs"]
    assert output["shape"] == [2, 2]


def test_a_media_version_without_readable_holdout_rows_gets_a_placeholder_and_says_so(
    capsys, home, media, tmp_path
):
    for model in ("photos", "reviews"):
        wiring.store().put(artifact_key(model, version_id(1), "reference.npz"), b"junk")

    image_code, image, image_err = events(capsys, home, "predict", "--model", "photos")
    text_code, text, text_err = events(capsys, home, "predict", "--model", "reviews")

    assert (image_code, text_code) == (0, 0)
    assert "has no readable holdout rows: the event sends a grey 6x8 PNG" in image_err
    assert "has no readable holdout rows: the event sends the text 'an example text'" in text_err
    instances = json.loads(image["body"])["instances"]
    assert [decoded(i["image"]).shape for i in instances] == [(8, 6, 3)] * 2
    assert json.loads(text["body"])["instances"] == [{"review": PLACEHOLDER_TEXT}] * 2
    for event in (image, text):
        path = tmp_path / "event.json"
        path.write_text(json.dumps(event))
        assert answer(capsys, home, "PredictFunction", path)["statusCode"] == HTTPStatus.OK


# --------------------------------------------------------------------------- control plane
def test_a_dataset_drop_event_is_taken_by_the_launch_function(capsys, home, tmp_path):
    code, event, err = events(capsys, home, "dataset-created", "--model", MODEL)
    assert code == 0
    assert event["detail"]["object"]["key"] == f"datasets/{MODEL}/data.csv"
    assert "no .csv or .parquet file under datasets/pets/" in err

    path = write_event(capsys, home, tmp_path, "dataset-created", "--model", MODEL)
    [outcome] = answer(capsys, home, "LaunchTrainingFunction", path)["results"]
    assert (outcome["action"], outcome["model"]) == ("no-data", MODEL)


def test_a_dataset_drop_event_names_the_newest_file_of_the_dataset(capsys, home):
    folder = home / "bucket" / "datasets" / MODEL
    folder.mkdir(parents=True)
    (folder / "old.csv").write_text("a,b\n1,2\n")
    os.utime(folder / "old.csv", (1_000_000_000, 1_000_000_000))
    (folder / "new.csv").write_text("a,b\n3,4\n")

    code, event, _ = events(capsys, home, "dataset-created", "--model", MODEL)

    assert code == 0
    assert event["detail"]["object"]["key"] == f"datasets/{MODEL}/new.csv"
    assert event["detail"]["object"]["size"] == len("a,b\n3,4\n")


def test_the_schedules_are_taken_by_their_functions(capsys, home, tmp_path):
    retrain = write_event(capsys, home, tmp_path, "schedule-retrain")
    # No model has data: the schedule has nothing to retrain.
    assert answer(capsys, home, "LaunchTrainingFunction", retrain)["results"] == []
    watchdog = write_event(capsys, home, tmp_path, "schedule-watchdog")
    assert isinstance(answer(capsys, home, "TrackTrainingFunction", watchdog)["results"], list)


def test_a_card_event_names_the_version_the_newest_job_published(capsys, home, tmp_path):
    path = write_event(capsys, home, tmp_path, "card-created", "--model", MODEL)
    key = json.loads(path.read_text())["detail"]["object"]["key"]
    assert key == f"models/{MODEL}/{version_id(1)}/card.json"

    result = answer(capsys, home, "PromoteModelFunction", path)
    assert result["decision"] == "approved"


def test_a_card_event_for_a_job_that_published_nothing_is_refused(capsys, home, running_job):
    code, _, err = events(capsys, home, "card-created", "--job", running_job)

    assert code == 2
    assert f"job {running_job} is running and has published no version: pass --version V" in err


@pytest.mark.parametrize("kind", ["spot-interruption", "rebalance-recommendation", "state-change"])
def test_the_ec2_events_name_the_jobs_instance(capsys, home, tmp_path, running_job, kind):
    path = write_event(capsys, home, tmp_path, kind, "--job", running_job)
    event = json.loads(path.read_text())
    assert event["detail"]["instance-id"] == INSTANCE

    result = answer(capsys, home, "TrackTrainingFunction", path)
    # The home's compute never launched INSTANCE: the tracker looked it up and let it be.
    assert result["action"] == "ignored"
    assert INSTANCE in result["message"]


def test_an_ec2_event_for_a_model_finds_its_newest_jobs_instance(capsys, home, running_job):
    code, event, err = events(capsys, home, "state-change", "--model", MODEL, "--state", "running")

    assert code == 0
    assert event["detail"] == {"instance-id": INSTANCE, "state": "running"}
    assert f"instance {INSTANCE} of job {running_job}" in err


# --------------------------------------------------------------------------- wrong pairings
def test_an_event_for_another_function_is_refused_naming_the_right_one(capsys, home, tmp_path):
    path = write_event(capsys, home, tmp_path, "predict", "--model", MODEL)

    code, out, err = invoke(capsys, home, "LaunchTrainingFunction", path)

    assert code == 2
    assert out == ""
    assert "LaunchTrainingFunction takes an EventBridge event 'Object Created' from aws.s3" in err
    assert "this looks like an API Gateway REST (v1) proxy event (POST /models/pets/predict)" in err
    assert "use PredictFunction, or `dropflow events dataset-created --model M`" in err
    assert "Traceback" not in err


# --------------------------------------------------------------------------- SAM's events
def test_sams_rest_proxy_event_reaches_the_predict_function(capsys, home):
    result = answer(capsys, home, "PredictFunction", SAM_EVENTS / "apigateway-aws-proxy.json")
    assert result["statusCode"] == HTTPStatus.NOT_FOUND  # POST /path/to/resource: no such route


@pytest.mark.parametrize("function", ["TrackTrainingFunction", "LaunchTrainingFunction"])
def test_sams_scheduled_event_without_version_runs_the_scheduled_functions(capsys, home, function):
    code, out, err = invoke(capsys, home, function, SAM_EVENTS / "cloudwatch-scheduled-event.json")

    assert code == 0, out + err
    assert isinstance(json.loads(out)["results"], list)
    assert 'the event has no "version"' in err
