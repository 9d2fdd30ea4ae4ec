"""The text family through the real job on the local adapters (issue 14, Text).

A table of short reviews whose class two sets of keywords decide trains a tiny BERT-style
encoder from scratch (`pretrained: false, size: tiny`) with a WordPiece tokenizer learnt from
the training texts, exports it, publishes tokenizer.json beside model.onnx with its digest,
and is promoted. A checkpoint saved with save_pretrained under `weights/<name>/` in the bucket
is what `pretrained: true` loads; a checkpoint found neither there nor on the Hub fails the
job naming both. An interrupted text job resumes to the weights of an uninterrupted one.
"""

from __future__ import annotations

import io
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import torch
from tokenizers import Tokenizer

from dropflow.errors import UserInputError
from dropflow.promotion.gate import promote
from dropflow.records.jobs import Attempt, ExitCode, JobState, JobStore
from dropflow.serving.service import ModelCache, PredictionService
from dropflow.vocabulary.card import Card, Feature, InputSpec, read_card
from dropflow.vocabulary.digests import sha256_hex
from dropflow.vocabulary.spec import load_spec
from dropflow.wiring import open_registry, open_store
from tests.training_jobs import launched_job
from training.families.text import TextFamily, train_tokenizer
from training.job import run_job

MODEL = "reviews"
SPEC = (
    b"family: text\n"
    b"model: {pretrained: false, size: tiny, max_length: 32}\n"
    b"training: {epochs: 30, batch_size: 16, learning_rate: 1e-3}\n"
)
GOOD = ["great", "wonderful", "excellent", "lovely", "superb"]
BAD = ["awful", "terrible", "broken", "poor", "dreadful"]
FILLER = ["the", "delivery", "was", "and", "product", "really", "quite", "box", "seller", "item"]
TOLERANCE = 1e-6
REPO = Path(__file__).resolve().parents[2]


def reviews(rows: int = 200, seed: int = 0, *, text_only: bool = True) -> pd.DataFrame:
    """Reviews whose label one keyword decides, among shuffled filler words, and a rating
    column (which a text model reads beside the text unless the spec names the text alone;
    `text_only` leaves it out of the table)."""
    rng = random.Random(seed)
    records = []
    for i in range(rows):
        label = "positive" if i % 2 else "negative"
        words = [*rng.sample(FILLER, 6), rng.choice(GOOD if label == "positive" else BAD)]
        rng.shuffle(words)
        records.append({"stars": i % 5, "review": " ".join(words), "label": label})
    frame = pd.DataFrame(records)
    return frame.drop(columns=["stars"]) if text_only else frame


class Home:
    """A bucket and a registry in a folder; jobs run and relaunched as the tracker does."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.store = open_store(f"file://{root}/bucket")
        self.registry = open_registry(f"sqlite://{root}/registry.db")
        self.jobs = JobStore(self.registry)

    def drop(self, model: str, spec: bytes, frame: pd.DataFrame | None = None) -> None:
        frame = reviews() if frame is None else frame
        self.store.put(f"datasets/{model}/data.csv", frame.to_csv(index=False).encode())
        self.store.put(f"datasets/{model}/dropflow.yaml", spec)

    def run(self, model: str, **options) -> str:
        job_id = launched_job(self.jobs, model)
        run_job(job_id, 1, self.store, self.registry, **options)
        return job_id

    def relaunch(self, job_id: str) -> int:
        job = self.jobs.transition(job_id, JobState.INTERRUPTED, reason="attempt ended")
        number = len(job.attempts) + 1
        self.jobs.update(
            job_id,
            lambda j: j.attempts.append(Attempt(number=number, instance_id=f"local-{number}")),
        )
        self.jobs.transition(job_id, JobState.LAUNCHING)
        return number

    def card(self, job_id: str) -> Card:
        job = self.jobs.get(job_id)
        assert job.state == JobState.PUBLISHED, job.reason
        return read_card(self.store, job.model, job.version)

    def file(self, card: Card, name: str) -> bytes:
        return self.store.get(f"models/{card.model}/{card.version}/{name}")

    def reference(self, card: Card) -> dict[str, np.ndarray]:
        with np.load(io.BytesIO(self.file(card, "reference.npz"))) as npz:
            return {key: npz[key] for key in npz.files}


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Home:
    return Home(tmp_path_factory.mktemp("text"))


@pytest.fixture(scope="module")
def trained(home: Home) -> str:
    home.drop(MODEL, SPEC)
    return home.run(MODEL)


# --------------------------------------------------------------------------- from scratch
def test_a_text_drop_trains_and_publishes_a_card_describing_token_ids(home, trained):
    card = home.card(trained)

    assert card.input == InputSpec(
        kind="text", max_length=32, tokenizer="tokenizer.json", field="review", pad_id=0
    )
    assert card.features == [Feature(name="review", dtype="text")]
    assert card.files["tokenizer"] == "tokenizer.json"
    assert card.classes == ["negative", "positive"] and card.target == "label"
    assert card.model_extra["training"]["family"] == "text"
    assert card.metrics.holdout["accuracy"] >= 0.8 > card.metrics.baseline["accuracy"]


def test_the_tokenizer_digest_is_recorded_with_model_onnx(home, trained):
    card = home.card(trained)
    digests = home.jobs.get(trained).digests

    assert digests["tokenizer.json"] == sha256_hex(home.file(card, "tokenizer.json"))
    assert {"model.onnx", "reference.npz", "card.json"} <= set(digests)


def test_the_published_tokenizer_makes_the_graph_input_from_raw_strings(home, trained):
    card = home.card(trained)
    tokenizer = Tokenizer.from_str(home.file(card, "tokenizer.json").decode())
    texts = reviews()["review"].tolist()
    encoded = np.asarray([e.ids for e in tokenizer.encode_batch(texts)], dtype=np.int64)
    reference = home.reference(card)

    # Truncated and padded to max_length by the file's own settings; the holdout rows the
    # parity check ran are among the encodings of the dropped texts.
    assert encoded.shape == (len(texts), 32) and (encoded[:, -1] == 0).any()
    assert reference["input"].dtype == np.int64
    assert {tuple(row) for row in reference["input"]} <= {tuple(row) for row in encoded}


def test_the_graph_takes_any_batch_and_matches_torch_on_the_holdout(home, trained):
    card = home.card(trained)
    session = ort.InferenceSession(home.file(card, "model.onnx"))
    reference = home.reference(card)
    (shape,) = [i.shape for i in session.get_inputs()]

    assert card.parity.passed and card.parity.max_abs_diff <= card.parity.tolerance
    assert shape[1:] == [32] and isinstance(shape[0], str)
    for rows in (1, 3, len(reference["input"])):
        (out,) = session.run(None, {"input": reference["input"][:rows]})
        assert out.shape == (rows, 2)
        np.testing.assert_allclose(out, reference["probabilities"][:rows], atol=1e-4)


def test_a_text_version_is_promoted_with_its_tokenizer_checked(home, trained):
    job = home.jobs.get(trained)

    result = promote(MODEL, job.version, home.store, home.registry)

    assert result.decision == "approved", result.reason


def test_the_promoted_text_model_answers_raw_strings_as_its_graph_does(home, trained):
    # The trained side and the serving side meet: the published tokenizer and graph, the
    # promoted champion, and the prediction service clients reach through the API.
    version = home.jobs.get(trained).version
    assert promote(MODEL, version, home.store, home.registry).decision == "approved"
    card = home.card(trained)
    texts = reviews()["review"].tolist()[:5]
    tokenizer = Tokenizer.from_str(home.file(card, "tokenizer.json").decode())
    ids = np.asarray([e.ids for e in tokenizer.encode_batch(texts)], dtype=np.int64)
    (expected,) = ort.InferenceSession(home.file(card, "model.onnx")).run(None, {"input": ids})
    service = PredictionService(ModelCache(home.store, home.registry, champion_ttl=0))

    answer = service.predict(MODEL, [{"review": text} for text in texts])

    assert answer["version"] == version
    assert answer["predictions"] == [card.classes[i] for i in expected.argmax(axis=1)]
    np.testing.assert_allclose(answer["probabilities"], expected, atol=1e-6)


def test_a_second_version_with_another_tokenizer_is_compared_by_recorded_metrics(home, trained):
    promote(MODEL, home.jobs.get(trained).version, home.store, home.registry)
    home.drop(MODEL, SPEC, reviews(seed=1))  # other texts: another vocabulary
    job = home.jobs.get(home.run(MODEL))

    result = promote(MODEL, job.version, home.store, home.registry)

    assert "compared the cards' recorded metrics" in result.reason
    assert "the versions' tokenizer.json differ" in result.reason


def test_a_tokenizer_changed_after_publish_is_rejected_naming_it(home, trained):
    home.drop("reviews-tampered", SPEC)
    job_id = home.run("reviews-tampered")
    card = home.card(job_id)
    key = f"models/{card.model}/{card.version}/tokenizer.json"
    home.store.put(key, home.store.get(key).replace(b'"[UNK]"', b'"[UNKNOWN]"', 1))

    result = promote(card.model, card.version, home.store, home.registry)

    assert result.decision == "rejected"
    assert "tokenizer.json differs from what job" in result.reason


def test_the_encoder_runs_under_bf16_autocast(home, trained):
    # The loop's placement turns autocast on for GPUs; the CPU's bf16 autocast takes the same
    # path through the encoder's layers.
    family, spec = TextFamily(), load_spec(SPEC)
    examples = family.read(home.store, MODEL, spec)
    network = family.build(examples, examples.x[:8], examples.y[:8], spec)
    x = torch.as_tensor(examples.x[:8])
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        scores = network.scores(x)
    loss = torch.nn.functional.cross_entropy(scores.float(), torch.as_tensor(examples.y[:8]))
    loss.backward()

    assert scores.dtype == torch.bfloat16 and torch.isfinite(loss)
    assert network.classifier.weight.grad is not None


def test_the_same_texts_give_the_same_tokenizer_in_another_process(tmp_path):
    # A resumed attempt is another process: it must tokenize to the ids training used.
    script = (
        "import hashlib, sys\n"
        "from tests.integration.test_text_family import reviews\n"
        "from training.families.text import train_tokenizer\n"
        "tokenizer = train_tokenizer(reviews()['review'].tolist(), 2000)\n"
        "print(hashlib.sha256(tokenizer.to_str().encode()).hexdigest())\n"
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True
        ).stdout
        for _ in range(2)
    }

    assert len(digests) == 1


def test_a_number_to_predict_from_text_trains_a_regression_graph(home):
    frame = reviews().drop(columns=["label"])
    frame["score"] = [4.5 if any(w in text for w in GOOD) else 1.5 for text in frame["review"]]
    spec = SPEC + b"target: score\n"
    home.drop("reviews-score", spec, frame)

    card = home.card(home.run("reviews-score"))
    (out,) = ort.InferenceSession(home.file(card, "model.onnx")).get_outputs()

    assert card.task == "regression" and card.classes is None
    assert out.name == "prediction"
    assert card.metrics.holdout["rmse"] < card.metrics.baseline["rmse"]


# --------------------------------------------------------------------------- reading
def test_a_spec_column_names_the_text_and_the_others_are_left_out(home):
    frame = reviews(text_only=False)
    frame["note"] = [f"a remark that is long enough {i}" for i in range(200)]
    home.drop("reviews-named", SPEC + b"features: [review]\n", frame)

    examples = TextFamily().read(
        home.store, "reviews-named", load_spec(SPEC + b"features: [review]\n")
    )

    assert examples.field == "review" and examples.features == [
        Feature(name="review", dtype="text")
    ]


def test_two_free_text_columns_without_a_spec_line_fail_naming_both(home):
    frame = reviews().assign(note=[f"a remark that is long enough {i}" for i in range(200)])
    home.drop("reviews-two", SPEC, frame)

    with pytest.raises(UserInputError) as caught:
        TextFamily().read(home.store, "reviews-two", load_spec(SPEC))

    assert "several columns hold free text ('review', 'note')" in str(caught.value)
    assert "`features: [review]` in datasets/reviews-two/dropflow.yaml" in str(caught.value)


def test_no_free_text_column_fails_naming_the_columns_and_the_spec_line(home):
    frame = pd.DataFrame({"colour": ["red", "blue"] * 50, "label": [0, 1] * 50})
    home.drop("reviews-none", SPEC, frame)

    with pytest.raises(UserInputError) as caught:
        TextFamily().read(home.store, "reviews-none", load_spec(SPEC))

    assert "no column holds free text" in str(caught.value)
    assert "columns: colour" in str(caught.value) and "`features: [<column>]`" in str(caught.value)


# --------------------------------------------------------------------------- pretrained
@pytest.fixture(scope="module")
def saved_checkpoint(home: Home, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny random BERT and its tokenizer, saved with save_pretrained and uploaded to
    weights/tests/tiny-bert/ in the bucket; its weights as saved."""
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(7)
    backend = train_tokenizer(reviews()["review"].tolist(), 500)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
    )
    config = BertConfig(
        vocab_size=backend.get_vocab_size(),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    model = BertModel(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            home.store.put_file(f"weights/tests/tiny-bert/{path.relative_to(folder)}", path)
    return {k: v.clone() for k, v in model.state_dict().items()}


PRETRAINED = (
    b"family: text\n"
    b"model: {checkpoint: tests/tiny-bert, pretrained: true, max_length: 24}\n"
    b"training: {epochs: 3, batch_size: 32}\n"
)


def test_pretrained_weights_under_the_bucket_are_what_the_encoder_starts_from(
    home, saved_checkpoint
):
    home.drop("reviews-pretrained", PRETRAINED)
    family, spec = TextFamily(), load_spec(PRETRAINED)
    examples = family.read(home.store, "reviews-pretrained", spec)

    network = family.build(examples, examples.x, examples.y, spec)

    loaded = network.encoder.state_dict()
    assert set(saved_checkpoint) <= set(loaded)
    for name, weight in saved_checkpoint.items():
        assert torch.equal(loaded[name], weight), name
    assert examples.pad_id == 0 and examples.x.shape[1] == 24


def test_a_pretrained_text_job_publishes_the_checkpoints_tokenizer(home, saved_checkpoint):
    home.drop("reviews-pretrained", PRETRAINED)
    card = home.card(home.run("reviews-pretrained"))
    published = json.loads(home.file(card, "tokenizer.json"))
    saved = json.loads(home.store.get("weights/tests/tiny-bert/tokenizer.json"))

    assert published["model"]["vocab"] == saved["model"]["vocab"]
    assert published["truncation"]["max_length"] == 24
    assert published["padding"]["strategy"] == {"Fixed": 24}
    assert card.input is not None and card.input.max_length == 24


def test_a_checkpoint_in_neither_the_bucket_nor_the_hub_fails_naming_both(home):
    spec = b"family: text\nmodel: {checkpoint: dropflow-tests/no-such-model}\n"
    home.drop("reviews-absent", spec)

    job = home.jobs.get(home.run("reviews-absent"))

    assert job.state == JobState.FAILED
    assert "model.checkpoint 'dropflow-tests/no-such-model'" in job.reason
    assert "weights/dropflow-tests/no-such-model/" in job.reason
    assert "Hugging Face Hub" in job.reason and "save_pretrained" in job.reason
    assert home.store.list("models/reviews-absent/") == []


# --------------------------------------------------------------------------- resume
class NoticeAfter:
    """An InterruptionWatcher whose spot notice arrives after `n` stop checks."""

    class _Notice:
        kind = "spot-interruption"
        detail = "terminate soon"

    def __init__(self, n: int) -> None:
        self.calls, self.n = 0, n
        self.notice = self._Notice()

    @property
    def event(self) -> NoticeAfter:
        return self

    def is_set(self) -> bool:
        self.calls += 1
        return self.calls > self.n

    def __call__(self) -> bool:
        return self.is_set()

    def start(self) -> None: ...

    def stop(self) -> None: ...


RESUME_SPEC = (
    b"family: text\n"
    b"model: {pretrained: false, size: tiny, max_length: 16}\n"
    b"training: {epochs: 4, batch_size: 32, checkpoint_interval_seconds: 0}\n"
)


def test_an_interrupted_text_job_resumes_to_the_uninterrupted_weights(home):
    home.drop("reviews-resumed", RESUME_SPEC)
    home.drop("reviews-straight", RESUME_SPEC)
    job_id = launched_job(home.jobs, "reviews-resumed")

    first = run_job(job_id, 1, home.store, home.registry, watcher=NoticeAfter(6))
    second = run_job(job_id, home.relaunch(job_id), home.store, home.registry)
    resumed, straight = home.card(job_id), home.card(home.run("reviews-straight"))

    assert (first, second) == (ExitCode.INTERRUPTED, ExitCode.OK)
    assert resumed.model_extra["training"]["resumed_from_step"] == 5
    assert home.file(resumed, "tokenizer.json") == home.file(straight, "tokenizer.json")
    difference = np.abs(
        home.reference(resumed)["probabilities"] - home.reference(straight)["probabilities"]
    )
    assert difference.max() <= TOLERANCE
