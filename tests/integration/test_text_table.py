"""A text model with tabular columns alongside (issue 14, Text: "other columns may be tabular
features alongside"), through the real job on the local adapters, promotion, the predict
function and the Open Inference Protocol.

The tickets' label needs both the text and a number: a positive word says yes unless the
rating is below 2, a negative word says no unless the rating is above 4. Either alone
predicts at most about 3 in 4 rows (checked on the data itself); a model that reads both can
get them all. A category column with some missing values rides along, to be encoded as a
table's.
"""

from __future__ import annotations

import copy
import json
import os
import random
import signal
import subprocess
import sys
from http import HTTPStatus
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import torch
from tokenizers import Tokenizer

from dropflow import wiring
from dropflow.promotion.gate import promote
from dropflow.records.jobs import ExitCode, JobState
from dropflow.vocabulary.card import MISSING_CATEGORY, Card, Feature, InputSpec
from dropflow.vocabulary.spec import load_spec
from dropflow_dev.lambda_context import LambdaContext
from tests.fakes_serving import ProxyAnswer, load_handler
from tests.integration.test_text_family import Home, NoticeAfter
from tests.net import free_port, wait_ready
from tests.training_jobs import launched_job
from training.families.text import TextFamily, TextTableNetwork
from training.job import run_job

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = json.loads((ROOT / "events" / "apigw-predict.json").read_text())
MODEL = "tickets"
LENGTH = 12
SPEC = (
    b"family: text\n"
    b"model: {pretrained: false, size: tiny, max_length: 12}\n"
    b"training: {epochs: 30, batch_size: 16, learning_rate: 1e-3}\n"
)
POSITIVE = ["great", "superb", "lovely"]
NEGATIVE = ["awful", "broken", "poor"]
FILLER = ["the", "delivery", "was", "and", "product", "really", "quite", "box", "seller", "item"]
CHANNELS = ["chat", "email", "phone"]


def tickets(rows: int = 400, seed: int = 0) -> pd.DataFrame:
    """The module docstring's table: review (free text), rating (1 to 5), channel, label."""
    rng = random.Random(seed)
    records = []
    for i in range(rows):
        tone = 1 if i % 2 else -1
        rating = rng.uniform(1.0, 5.0)
        while abs(rating - 2.0) < 0.25 or abs(rating - 4.0) < 0.25:  # a margin to learn
            rating = rng.uniform(1.0, 5.0)
        words = [*rng.sample(FILLER, 3), rng.choice(POSITIVE if tone > 0 else NEGATIVE)]
        rng.shuffle(words)
        channel = rng.choice(CHANNELS) if rng.random() > 0.05 else None
        label = "yes" if rating > 3.0 - tone else "no"
        records.append(
            {
                "review": " ".join(words),
                "rating": round(rating, 3),
                "channel": channel,
                "label": label,
            }
        )
    return pd.DataFrame(records)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Home:
    return Home(tmp_path_factory.mktemp("text-table"))


@pytest.fixture(scope="module")
def trained(home: Home) -> str:
    home.drop(MODEL, SPEC, tickets())
    return home.run(MODEL)


@pytest.fixture(scope="module")
def champion(home: Home, trained: str) -> Card:
    card = home.card(trained)
    result = promote(MODEL, card.version, home.store, home.registry)
    assert result.decision == "approved", result.reason
    return card


@pytest.fixture
def app(home: Home, champion: Card, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.setenv("DROPFLOW_STORE_URL", f"file://{home.root}/bucket")
    monkeypatch.setenv("DROPFLOW_REGISTRY_URL", f"sqlite://{home.root}/registry.db")
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "WARNING")
    wiring.reset()
    yield load_handler(ROOT / "functions" / "predict" / "app.py")
    wiring.reset()


def graph_input(card: Card, home: Home, rows: list[dict[str, Any]]) -> np.ndarray:
    """The graph's input as the card's docstring describes it, made here by hand."""
    tokenizer = Tokenizer.from_str(home.file(card, "tokenizer.json").decode())
    ids = np.asarray([e.ids for e in tokenizer.encode_batch([r["review"] for r in rows])])
    channel = next(f for f in card.features if f.name == "channel")
    codes = [
        (channel.categories or []).index(
            r["channel"] if r["channel"] is not None else MISSING_CATEGORY
        )
        for r in rows
    ]
    columns = np.asarray([[r["rating"], code] for r, code in zip(rows, codes, strict=True)])
    return np.concatenate([ids, columns], axis=1).astype(np.float32)


def run_graph(card: Card, home: Home, x: np.ndarray) -> np.ndarray:
    (out,) = ort.InferenceSession(home.file(card, "model.onnx")).run(None, {"input": x})
    return out


ROWS = [
    {"review": "the box was great", "rating": 4.6, "channel": "email"},
    {"review": "the box was great", "rating": 1.2, "channel": "chat"},
    {"review": "really poor item", "rating": 4.7, "channel": None},
    {"review": "really poor item", "rating": 3.1, "channel": "phone"},
]


# --------------------------------------------------------------------------- training
def test_neither_the_text_nor_the_rating_alone_predicts_the_label_well():
    frame = tickets()
    tone = frame["review"].str.contains("|".join(POSITIVE))
    by_text = (tone == (frame["label"] == "yes")).mean()
    by_rating = max(
        ((frame["rating"] > cut) == (frame["label"] == "yes")).mean()
        for cut in np.arange(1.0, 5.0, 0.05)
    )

    assert by_text <= 0.8 and by_rating <= 0.8


def test_a_text_table_trains_a_model_that_reads_both_the_words_and_the_rating(home, trained):
    card = home.card(trained)

    assert card.input == InputSpec(
        kind="text", max_length=LENGTH, tokenizer="tokenizer.json", field="review", pad_id=0
    )
    assert card.features == [
        Feature(name="review", dtype="text"),
        Feature(name="rating", dtype="number", nullable=True),
        Feature(
            name="channel",
            dtype="category",
            categories=[*CHANNELS, MISSING_CATEGORY],
            nullable=True,
        ),
    ]
    # Above what either alone allows (at most 0.8, the test above), by a margin the
    # holdout's 80 rows cannot reach by chance.
    assert card.metrics.holdout["accuracy"] >= 0.92, card.metrics.holdout


def test_the_graph_takes_the_ids_then_the_columns_as_float32(home, trained):
    card = home.card(trained)
    reference = home.reference(card)
    x = reference["input"]
    (shape,) = [i.shape for i in ort.InferenceSession(home.file(card, "model.onnx")).get_inputs()]

    assert x.dtype == np.float32 and shape[1:] == [LENGTH + 2]
    assert np.array_equal(x[:, :LENGTH], np.round(x[:, :LENGTH])) and (x[:, 0] > 0).all()
    assert card.parity.passed and card.parity.max_abs_diff <= card.parity.tolerance
    for rows in (1, 3, len(x)):
        np.testing.assert_allclose(
            run_graph(card, home, x[:rows]), reference["probabilities"][:rows], atol=1e-4
        )


def test_the_model_answers_what_the_rating_and_the_words_say_together(home, trained):
    card = home.card(trained)

    answers = run_graph(card, home, graph_input(card, home, ROWS)).argmax(axis=1)

    assert [card.classes[i] for i in answers] == ["yes", "no", "yes", "no"]


def test_the_network_runs_under_bf16_autocast(home, trained):
    family, spec = TextFamily(), load_spec(SPEC)
    examples = family.read(home.store, MODEL, spec)
    network = family.build(examples, examples.x[:64], examples.y[:64], spec)
    x = torch.as_tensor(examples.x[:8])
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        scores = network.scores(x)
    loss = torch.nn.functional.cross_entropy(scores.float(), torch.as_tensor(examples.y[:8]))
    loss.backward()

    assert isinstance(network, TextTableNetwork) and torch.isfinite(loss)
    # Every parameter is reached by the loss (DDP refuses any that is not).
    assert all(p.grad is not None for p in network.parameters())


def test_the_specs_features_name_the_text_and_the_columns_read_beside_it(home):
    home.drop("tickets-named", SPEC, tickets(rows=60))
    spec = load_spec(SPEC + b"features: [channel, review]\n")

    examples = TextFamily().read(home.store, "tickets-named", spec)

    assert examples.field == "review"
    assert [f.name for f in examples.features] == ["review", "channel"]
    assert examples.x.shape == (60, LENGTH + 1) and examples.x.dtype == np.float32


def test_a_column_the_tabular_reader_refuses_fails_the_job_with_its_message(home):
    frame = tickets(rows=60).assign(rating=["4.5"] * 59 + ["lots"])
    home.drop("tickets-bad", SPEC, frame)

    job = home.jobs.get(home.run("tickets-bad"))

    assert job.state == JobState.FAILED
    assert "'rating'" in job.reason and "'lots'" in job.reason, job.reason


QUICK_SPEC = (
    b"family: text\n"
    b"model: {pretrained: false, size: tiny, max_length: 12}\n"
    b"training: {epochs: 8, batch_size: 32, learning_rate: 1e-3}\n"
)


def test_a_version_that_learnt_a_category_is_compared_by_recorded_metrics(home):
    # The holdout rows carry the candidate's category codes, which mean other values to the
    # champion: the two graphs cannot be scored on them.
    first = tickets(rows=200)
    home.drop("tickets-sms", QUICK_SPEC, first)
    version = home.jobs.get(home.run("tickets-sms")).version
    assert promote("tickets-sms", version, home.store, home.registry).decision == "approved"
    home.drop("tickets-sms", QUICK_SPEC, first.assign(channel=["sms", *first["channel"][1:]]))
    job = home.jobs.get(home.run("tickets-sms"))

    result = promote("tickets-sms", job.version, home.store, home.registry)

    assert "compared the cards' recorded metrics" in result.reason, result.reason
    assert "encode their tabular columns differently" in result.reason


RESUME_SPEC = (
    b"family: text\n"
    b"model: {pretrained: false, size: tiny, max_length: 12}\n"
    b"training: {epochs: 4, batch_size: 32, checkpoint_interval_seconds: 0}\n"
)


def test_an_interrupted_text_table_job_resumes_to_the_uninterrupted_weights(home):
    home.drop("tickets-resumed", RESUME_SPEC, tickets(rows=120))
    home.drop("tickets-straight", RESUME_SPEC, tickets(rows=120))
    job_id = launched_job(home.jobs, "tickets-resumed")

    first = run_job(job_id, 1, home.store, home.registry, watcher=NoticeAfter(3))
    second = run_job(job_id, home.relaunch(job_id), home.store, home.registry)
    resumed, straight = home.card(job_id), home.card(home.run("tickets-straight"))

    assert (first, second) == (ExitCode.INTERRUPTED, ExitCode.OK)
    assert resumed.model_extra["training"]["resumed_from_step"] > 0
    difference = np.abs(
        home.reference(resumed)["probabilities"] - home.reference(straight)["probabilities"]
    )
    assert difference.max() <= 1e-6


# --------------------------------------------------------------------------- serving
class Answer(ProxyAnswer):
    @property
    def message(self) -> str:
        assert self.json is not None, self.json
        error = self.json["error"]
        return error["message"] if isinstance(error, dict) else error


def call(app: ModuleType, method: str, path: str, body: Any = None) -> Answer:
    event = copy.deepcopy(SAMPLE)
    event["httpMethod"] = event["requestContext"]["httpMethod"] = method
    event["path"] = path
    if path.startswith("/v2/"):
        event["resource"] = "/v2/{proxy+}"
        event["pathParameters"] = {"proxy": path.removeprefix("/v2/")}
    else:
        event["pathParameters"] = {"name": path.split("/")[2]}
    event["body"] = None if body is None else json.dumps(body)
    event["isBase64Encoded"] = False
    return Answer(app.lambda_handler(event, LambdaContext(function_name="PredictFunction")))


def predict(app: ModuleType, instances: Any) -> Answer:
    return call(app, "POST", f"/models/{MODEL}/predict", {"instances": instances})


def test_rows_as_objects_or_lists_get_the_graphs_answer(app, home, champion):
    expected = run_graph(champion, home, graph_input(champion, home, ROWS))
    as_lists = [[r["review"], r["rating"], r["channel"]] for r in ROWS]

    by_objects, by_lists = predict(app, ROWS), predict(app, as_lists)

    assert by_objects.status == HTTPStatus.OK, by_objects.json
    np.testing.assert_allclose(by_objects.json["probabilities"], expected, atol=1e-5)
    assert by_objects.json["predictions"] == ["yes", "no", "yes", "no"]
    assert by_lists.json == by_objects.json


def test_an_unseen_category_is_predicted_as_unknown_with_a_warning(app, champion):
    answer = predict(app, [{**ROWS[0], "channel": "fax"}])

    assert answer.status == HTTPStatus.OK, answer.json
    (warning,) = answer.json["warnings"][0]
    assert warning["feature"] == "channel" and warning["value"] == "fax"


@pytest.mark.parametrize(
    ("instances", "needle"),
    [
        ([{"review": "great", "channel": "chat"}], "row 0: missing features 'rating'"),
        ([{"review": "great", "rating": 4, "channel": "chat", "x": 1}], "unknown features 'x'"),
        ([{"rating": 4, "channel": "chat"}], "row 0: missing the text 'review'"),
        ([{"review": "", "rating": 4, "channel": "chat"}], "row 0, 'review': the text is empty"),
        ([{"review": None, "rating": 4, "channel": "chat"}], "'review': expected text, got null"),
        ([{"review": "great", "rating": "four", "channel": "chat"}], "row 0, feature 'rating'"),
        (
            [["great", 4]],
            "row 0: has 2 values, the model expects 3 ('review', 'rating', 'channel')",
        ),
        (["great"], "each row is an object with the keys 'review', 'rating', 'channel'"),
    ],
)
def test_a_row_the_model_cannot_take_is_a_422_naming_the_problem(app, champion, instances, needle):
    answer = predict(app, instances)

    assert answer.status == HTTPStatus.UNPROCESSABLE_ENTITY, answer.json
    assert needle in answer.message


def test_the_model_description_lists_the_text_and_the_columns(app, champion):
    answer = call(app, "GET", f"/models/{MODEL}")

    assert answer.status == HTTPStatus.OK, answer.json
    assert [f["name"] for f in answer.json["features"]] == ["review", "rating", "channel"]
    assert answer.json["input"]["field"] == "review"


def oip_inputs(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "inputs": [
            {
                "name": "review",
                "datatype": "BYTES",
                "shape": [len(rows)],
                "data": [r["review"] for r in rows],
            },
            {
                "name": "rating",
                "datatype": "FP32",
                "shape": [len(rows)],
                "data": [r["rating"] for r in rows],
            },
            {
                "name": "channel",
                "datatype": "BYTES",
                "shape": [len(rows)],
                "data": [r["channel"] for r in rows],
            },
        ]
    }


def test_oip_metadata_lists_one_input_per_feature(app, champion):
    answer = call(app, "GET", f"/v2/models/{MODEL}")

    assert answer.status == HTTPStatus.OK, answer.json
    assert answer.json["inputs"] == [
        {"name": "review", "datatype": "BYTES", "shape": [-1]},
        {"name": "rating", "datatype": "FP32", "shape": [-1]},
        {"name": "channel", "datatype": "BYTES", "shape": [-1]},
    ]


def test_oip_takes_the_text_as_bytes_and_the_columns_as_a_tables(app, home, champion):
    expected = run_graph(champion, home, graph_input(champion, home, ROWS))

    answer = call(app, "POST", f"/v2/models/{MODEL}/infer", oip_inputs(ROWS))

    assert answer.status == HTTPStatus.OK, answer.json
    (output,) = answer.json["outputs"]
    np.testing.assert_allclose(np.reshape(output["data"], (4, 2)), expected, atol=1e-5)


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda b: b["inputs"].pop(1), "no input for feature 'rating': send one input per feature"),
        (lambda b: b["inputs"][0]["data"].__setitem__(0, ""), "row 0, 'review': the text is empty"),
        (
            lambda b: b["inputs"][1]["data"].__setitem__(1, "high"),
            "row 1, input 'rating': string 'high' is not FP32 data",
        ),
    ],
)
def test_oip_inputs_the_model_cannot_take_are_a_422(app, champion, change, needle):
    body = oip_inputs(ROWS)
    change(body)

    answer = call(app, "POST", f"/v2/models/{MODEL}/infer", body)

    assert answer.status == HTTPStatus.UNPROCESSABLE_ENTITY, answer.json
    assert needle in answer.message


@pytest.mark.parametrize(("kind", "path"), [("predict", "predict"), ("infer", "infer")])
def test_dropflow_events_sends_the_holdout_text_and_columns_and_is_answered(
    app, home, champion, capsys, tmp_path, kind, path
):
    from dropflow_dev import cli
    from dropflow_dev.sample_events import PLACEHOLDER_TEXT

    event = tmp_path / f"{kind}.json"
    code = cli.main(["events", kind, "--model", MODEL, "-o", str(event), "--home", str(home.root)])
    assert code == 0, capsys.readouterr().err
    body = json.loads(json.loads(event.read_text())["body"])
    sent = body["instances"] if kind == "predict" else body["inputs"]
    if kind == "predict":
        assert [set(row) for row in sent] == [{"review", "rating", "channel"}] * len(sent)
        rows = sent
    else:
        assert [(t["name"], t["datatype"]) for t in sent] == [
            ("review", "BYTES"),
            ("rating", "FP32"),
            ("channel", "BYTES"),
        ]
        rows = [
            dict(zip([t["name"] for t in sent], r, strict=True))
            for r in zip(*[t["data"] for t in sent], strict=True)
        ]
    capsys.readouterr()
    # the holdout's own texts and ratings, not made-up ones
    assert all(r["review"] != PLACEHOLDER_TEXT and r["rating"] != 0 for r in rows), rows

    code = cli.main(["invoke", "PredictFunction", "-e", str(event), "--home", str(home.root)])
    out = capsys.readouterr().out
    assert code == 0, out
    result = json.loads(out)
    assert result["statusCode"] == HTTPStatus.OK, result
    answer = json.loads(result["body"])
    got = answer["probabilities"] if kind == "predict" else answer["outputs"][0]["data"]
    expected = run_graph(champion, home, graph_input(champion, home, rows))
    np.testing.assert_allclose(np.reshape(got, expected.shape), expected, atol=1e-5)


# --------------------------------------------------------------------------- container tier
@pytest.fixture(scope="module")
def routed_to_container(home: Home) -> Card:
    """The same table trained under `serving: {route: container}` and promoted there."""
    home.drop("tickets-large", SPEC + b"serving: {route: container}\n", tickets())
    card = home.card(home.run("tickets-large"))
    result = promote("tickets-large", card.version, home.store, home.registry)
    assert result.decision == "approved" and result.route == "container", result.reason
    return card


@pytest.fixture
def container(home: Home, routed_to_container: Card, tmp_path: Path, monkeypatch) -> str:
    """The container tier's server (`python -m serving`) on the same store and registry, and
    the predict function pointed at it; the server's URL."""
    monkeypatch.setenv("DROPFLOW_STORE_URL", f"file://{home.root}/bucket")
    monkeypatch.setenv("DROPFLOW_REGISTRY_URL", f"sqlite://{home.root}/registry.db")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with open(tmp_path / "server.log", "wb") as log:
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
        try:
            if wait_ready(url, 120, alive=lambda: proc.poll() is None) != HTTPStatus.OK:
                pytest.fail(
                    "the container server never became ready:\n" + Path(log.name).read_text()
                )
            monkeypatch.setenv("DROPFLOW_CONTAINER_URL", url)
            yield url
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(30)


def test_the_container_tier_answers_text_and_columns_as_the_function_does(
    home, routed_to_container, container
):
    wiring.reset()  # a cold start with DROPFLOW_CONTAINER_URL set
    app = load_handler(ROOT / "functions" / "predict" / "app.py")
    card = routed_to_container
    expected = run_graph(card, home, graph_input(card, home, ROWS))

    answer = call(app, "POST", "/models/tickets-large/predict", {"instances": ROWS})
    refused = call(
        app, "POST", "/models/tickets-large/predict", {"instances": [{"review": "great"}]}
    )

    assert answer.status == HTTPStatus.OK, answer.json
    assert answer.json["served_by"] == "container"
    np.testing.assert_allclose(answer.json["probabilities"], expected, atol=1e-5)
    assert refused.status == HTTPStatus.UNPROCESSABLE_ENTITY
    assert "missing features 'rating', 'channel'" in refused.message
    wiring.reset()
