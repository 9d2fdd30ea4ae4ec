"""A labelled text table dropped into `dropflow local up`'s bucket trains, publishes, is promoted
and answers raw strings over HTTP (issue 14's acceptance for text).

Runs `dropflow local up` as a user would, writes a seeded table of support tickets (which team a
ticket goes to follows from its words) as CSV with plain file writes, with a spec asking for a
tiny BERT-style encoder trained from scratch, waits for the job and the promotion, then asks the
runtime's URL: raw strings in JSON, tritonclient with a BYTES tensor of UTF-8 strings through the
Open Inference Protocol, and a value that is no string; and runs the event `dropflow events`
makes for it through `dropflow invoke`. The answers are checked against onnxruntime run here on
the published model.onnx with the published tokenizer.json, and the model must route most clear
tickets it never saw to the right team.
"""

from __future__ import annotations

import csv
import io
import json
import random
from http import HTTPStatus
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import requests
from tokenizers import Tokenizer

from dropflow.vocabulary.card import Card
from tests.local_up import LocalUp, invoked_event, status

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

MODEL = "tickets"
FIELD = "ticket"
# What sends a ticket to a team: any of its words.
KEYWORDS = {
    "billing": ["invoice", "refund", "charged", "payment", "receipt"],
    "shipping": ["parcel", "courier", "tracking", "delivery", "package"],
    "technical": ["crash", "password", "error", "login", "freezes"],
}
FILLER = [
    "hello", "my", "the", "was", "please", "help", "today", "again", "since", "order",
    "account", "thanks", "urgent", "still", "yesterday", "about", "with", "is", "it", "this",
]  # fmt: skip
VOCABULARY = set(FILLER).union(*KEYWORDS.values())
ROWS = 300
# Tickets the job never saw: new mixes of the same words, one team's words in each.
HELD_OUT = 24
# Right on at least this share of the held-out tickets: a model that learnt nothing gets a third.
MIN_RIGHT = 0.8
# float32 through the same graph on the same token ids: only the summation order may differ.
TOLERANCE = 1e-5


def ticket(rng: random.Random, team: str) -> str:
    """A ticket for `team`: two of its words among five shuffled filler words."""
    words = [*rng.sample(FILLER, 5), *rng.sample(KEYWORDS[team], 2)]
    rng.shuffle(words)
    return " ".join(words)


def tickets_csv(seed: int = 0) -> bytes:
    """ROWS tickets, the teams in turn, and a priority column the spec leaves out."""
    rng = random.Random(seed)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["priority", FIELD, "team"])
    teams = sorted(KEYWORDS)
    for i in range(ROWS):
        writer.writerow([i % 3, ticket(rng, teams[i % len(teams)]), teams[i % len(teams)]])
    return out.getvalue().encode()


def held_out(seed: int = 99) -> list[tuple[str, str]]:
    """(ticket, team) pairs written with another seed, none of them a training row."""
    rng = random.Random(seed)
    training = set(tickets_csv().decode().splitlines())
    teams = sorted(KEYWORDS)
    pairs = [(ticket(rng, teams[i % len(teams)]), teams[i % len(teams)]) for i in range(HELD_OUT)]
    assert not any(text in line for text, _ in pairs for line in training)
    return pairs


def _published(home: Path, version: str) -> tuple[Card, ort.InferenceSession, Tokenizer]:
    folder = home / "bucket" / "models" / MODEL / version
    card = Card.model_validate_json((folder / "card.json").read_bytes())
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    return card, ort.InferenceSession(str(folder / "model.onnx")), tokenizer


def _expected(session: ort.InferenceSession, tokenizer: Tokenizer, texts: list[str]) -> np.ndarray:
    """The graph's probabilities for `texts`, tokenized here with the published tokenizer."""
    ids = np.asarray([e.ids for e in tokenizer.encode_batch(texts)], dtype=np.int64)
    (name,) = [i.name for i in session.get_inputs()]
    (probabilities,) = session.run(None, {name: ids})
    return probabilities


def test_a_dropped_text_table_trains_is_promoted_and_answers_strings_over_http(tmp_path):
    home = tmp_path / "home"
    with LocalUp(home) as runtime:
        # Given a table of tickets and a spec for a tiny encoder learnt from scratch
        folder = home / "bucket" / "datasets" / MODEL
        folder.mkdir(parents=True)
        (folder / "dropflow.yaml").write_text(
            "target: team\n"
            "features: [ticket]\n"  # the text alone: priority would join as a tabular column
            "model: {family: text, pretrained: false, size: tiny, max_length: 16}\n"
            "training: {epochs: 20, batch_size: 16, learning_rate: 0.001}\n"
        )
        (folder / "tickets.csv").write_bytes(tickets_csv())

        # When the job ends and its version is promoted
        job = runtime.ended(MODEL)
        assert job["state"] == "published", (job, runtime.output)
        runtime.promoted(MODEL, job["version"])
        card, session, tokenizer = _published(home, job["version"])
        assert card.input is not None and card.input.field == FIELD
        predict = f"{runtime.url}/models/{MODEL}/predict"
        pairs = held_out()
        texts = [text for text, _ in pairs]
        expected = _expected(session, tokenizer, texts)

        # Then raw strings get the graph's answer on the published tokenizer's ids
        answer = requests.post(
            predict, json={"instances": [{FIELD: text} for text in texts]}, timeout=60
        )
        assert answer.status_code == HTTPStatus.OK, answer.text
        body = answer.json()
        assert (body["model"], body["version"], body["served_by"]) == (
            MODEL,
            job["version"],
            "lambda",
        )
        np.testing.assert_allclose(body["probabilities"], expected, atol=TOLERANCE)
        assert body["predictions"] == [card.classes[int(i)] for i in expected.argmax(axis=1)]

        # and the model learnt the rule: most tickets it never saw go to their team
        right = sum(p == team for p, (_, team) in zip(body["predictions"], pairs, strict=True))
        assert right >= MIN_RIGHT * HELD_OUT, (right, body["predictions"], pairs)

        # and tritonclient gets the same outputs with the strings as a BYTES tensor
        _infer_with_tritonclient(runtime.url, texts[:3], expected[:3])

        # and a value that is no string is a 422 naming the row and the field
        refused = requests.post(
            predict, json={"instances": [{FIELD: texts[0]}, {FIELD: 42}]}, timeout=60
        )
        assert refused.status_code == HTTPStatus.UNPROCESSABLE_ENTITY, refused.text
        assert f"row 1, '{FIELD}': expected text" in refused.json()["error"]["message"]

        # and the event `dropflow events` writes for it, the holdout tickets decoded by the
        # published tokenizer, is answered by `dropflow invoke`
        event_file = tmp_path / "predict.json"
        result = invoked_event(home, "predict", MODEL, event_file)
        assert result["statusCode"] == HTTPStatus.OK, result
        sent = json.loads(json.loads(event_file.read_text())["body"])["instances"]
        assert all(set(row[FIELD].split()) <= VOCABULARY for row in sent), sent
        assert len(json.loads(result["body"])["predictions"]) == len(sent)

        assert runtime.stop() == 0, runtime.output

    report = status(home)
    assert [(j["model"], j["state"]) for j in report["jobs"]] == [(MODEL, "published")]
    assert report["models"][0]["champion"] == job["version"]


def _infer_with_tritonclient(url: str, texts: list[str], expected: np.ndarray) -> None:
    import tritonclient.http as httpclient  # a dev dependency: never skipped

    client = httpclient.InferenceServerClient(
        url=url.removeprefix("http://"), connection_timeout=30.0, network_timeout=60.0
    )
    try:
        assert client.is_model_ready(MODEL)
        meta = client.get_model_metadata(MODEL)
        assert meta["inputs"] == [{"name": FIELD, "datatype": "BYTES", "shape": [-1]}]
        tensor = httpclient.InferInput(FIELD, [len(texts)], "BYTES")
        encoded = np.array([text.encode() for text in texts], dtype=object)
        tensor.set_data_from_numpy(encoded, binary_data=False)
        wanted = httpclient.InferRequestedOutput("probabilities", binary_data=False)
        result = client.infer(MODEL, [tensor], outputs=[wanted])
        np.testing.assert_allclose(result.as_numpy("probabilities"), expected, atol=TOLERANCE)
    finally:
        client.close()
