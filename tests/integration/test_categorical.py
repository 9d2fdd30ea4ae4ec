"""Categorical features and missing values, end to end on the local adapters.

A synthetic dataset whose label depends on a category (`color`) and a number (`size`), with
some of both missing, and a boolean noise column, split over a CSV and a Parquet file. The
job trains and publishes it; the card lists the categories; the exported graph one-hot
encodes and imputes inside; promotion approves it; serving takes raw values and nulls.
"""

from __future__ import annotations

import io

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
import torch

from dropflow.ports import ObjectStore, Registry
from dropflow.promotion.gate import promote
from dropflow.records.jobs import ExitCode, Job, JobState, JobStore
from dropflow.serving.service import InvalidInstances, ModelCache, PredictionService
from dropflow.vocabulary.card import MISSING_CATEGORY, Card, Feature, read_card
from dropflow.vocabulary.spec import load_spec
from dropflow.wiring import open_registry, open_store
from tests.training_jobs import launched_job
from training.export import check_parity
from training.families.tabular import TabularFamily
from training.job import run_job
from training.split import split

MODEL = "pets"
STRICT = "strict-pets"


def pets_frame(rows: int = 600, seed: int = 0) -> pd.DataFrame:
    """dog when the pet is red xor big, else cat; 5% of sizes and colours then go missing."""
    rng = np.random.default_rng(seed)
    color = rng.choice(["red", "green", "blue"], rows)
    size = rng.normal(size=rows)
    label = np.where((color == "red") ^ (size > 0.5), "dog", "cat")
    frame = pd.DataFrame(
        {
            "size": np.where(rng.random(rows) < 0.05, np.nan, size),
            "color": pd.Series(color, dtype=object).where(rng.random(rows) >= 0.05, None),
            "indoor": rng.choice([True, False], rows),  # noise
            "kind": label,
        }
    )
    return frame


def expected_kind(size: float, color: str) -> str:
    return "dog" if (color == "red") ^ (size > 0.5) else "cat"


PETS_SPEC = "target: kind\n"


def drop_pets(store: ObjectStore, model: str) -> None:
    """The first 400 rows as CSV (booleans as text), the rest as Parquet (typed), and the spec
    that names the label (`kind` is not a name taken as the target)."""
    frame = pets_frame()
    store.put(f"datasets/{model}/dropflow.yaml", PETS_SPEC.encode())
    store.put(f"datasets/{model}/a.csv", frame.iloc[:400].to_csv(index=False).encode())
    buffer = io.BytesIO()
    frame.iloc[400:].to_parquet(buffer, index=False)
    store.put(f"datasets/{model}/b.parquet", buffer.getvalue())


def run(store: ObjectStore, registry: Registry, model: str) -> Job:
    """Create a job as the launcher would and run its first attempt to the end."""
    jobs = JobStore(registry)
    job_id = launched_job(jobs, model)
    code = run_job(job_id, 1, store, registry)
    job = jobs.get(job_id)
    assert (code == ExitCode.OK) == (job.state == JobState.PUBLISHED), job.reason
    return job


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> tuple[ObjectStore, Registry]:
    root = tmp_path_factory.mktemp("home")
    return open_store(f"file://{root}/bucket"), open_registry(f"sqlite://{root}/registry.db")


@pytest.fixture(scope="module")
def published(home: tuple[ObjectStore, Registry]) -> Card:
    store, registry = home
    drop_pets(store, MODEL)
    job = run(store, registry, MODEL)
    assert job.state == JobState.PUBLISHED, job.reason
    assert job.version is not None
    assert promote(MODEL, job.version, store, registry).decision == "approved"
    return read_card(store, MODEL, job.version)


@pytest.fixture(scope="module")
def strict(home: tuple[ObjectStore, Registry]) -> Card:
    """The same data under another model whose spec keeps unseen categories a 422."""
    store, registry = home
    drop_pets(store, STRICT)
    spec = f"{PETS_SPEC}serving: {{unknown_categories: reject}}\ntraining: {{epochs: 5}}\n".encode()
    store.put(f"datasets/{STRICT}/dropflow.yaml", spec)
    job = run(store, registry, STRICT)
    assert job.state == JobState.PUBLISHED, job.reason
    assert job.version is not None
    assert promote(STRICT, job.version, store, registry).decision == "approved"
    return read_card(store, STRICT, job.version)


@pytest.fixture
def service(home: tuple[ObjectStore, Registry]) -> PredictionService:
    return PredictionService(ModelCache(*home))


# --------------------------------------------------------------------------- training
@pytest.mark.slow
def test_the_card_lists_each_feature_with_its_categories(published):
    assert published.features == [
        Feature(name="size", dtype="number", nullable=True),
        Feature(
            name="color",
            dtype="category",
            categories=["blue", "green", "red", MISSING_CATEGORY],
            nullable=True,
        ),
        Feature(name="indoor", dtype="category", categories=[False, True], nullable=False),
    ]
    assert published.classes == ["cat", "dog"]


@pytest.mark.slow
def test_the_model_learns_from_the_category(published):
    # Missing sizes and colours hide the label for a few rows; the rest is learnable.
    assert published.metrics.holdout["accuracy"] >= 0.9
    assert published.metrics.holdout["accuracy"] > published.metrics.baseline["accuracy"] + 0.3


@pytest.mark.slow
def test_the_graph_one_hot_encodes_and_imputes_inside_and_parity_covers_it(published, home):
    store, _ = home
    base = f"models/{MODEL}/{published.version}/"
    graph = onnx.load_from_string(store.get(base + "model.onnx")).graph
    assert graph.input[0].type.tensor_type.shape.dim[1].dim_value == 3  # one column per feature
    ops = {node.op_type for node in graph.node}
    assert {"Equal", "IsNaN", "Where"} <= ops
    assert published.parity.passed and published.parity.argmax_equal
    with np.load(io.BytesIO(store.get(base + "reference.npz"))) as reference:
        inputs = reference["input"]
    assert np.isnan(inputs[:, 0]).any()  # the holdout's missing sizes went through the graph
    assert set(np.unique(inputs[:, 1])) <= {0.0, 1.0, 2.0, 3.0}  # colour codes


# --------------------------------------------------------------------------- serving
@pytest.mark.slow
def test_serving_takes_raw_category_values(published, service):
    rows = [
        {"size": 2.0, "color": "red", "indoor": True},
        {"size": -2.0, "color": "red", "indoor": "false"},
        {"size": 2.0, "color": "blue", "indoor": False},
        {"size": -2.0, "color": "green", "indoor": True},
    ]

    answer = service.predict(MODEL, rows)

    assert answer["version"] == published.version
    assert answer["predictions"] == [expected_kind(r["size"], r["color"]) for r in rows]


@pytest.mark.slow
def test_list_rows_in_card_order_get_the_same_answer(published, service):
    assert service.predict(MODEL, [[-2.0, "red", True]]) == service.predict(
        MODEL, [{"indoor": True, "color": "red", "size": -2.0}]
    )


@pytest.mark.slow
def test_null_is_served_for_a_number_and_for_a_category_that_had_missing_values(published, service):
    answer = service.predict(MODEL, [[None, "red", True], [2.0, None, False]])

    probabilities = np.array(answer["probabilities"])
    assert np.isfinite(probabilities).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    # A missing size is the training median (about 0): small, so a red pet is a dog.
    assert answer["predictions"][0] == "dog"


@pytest.mark.slow
def test_the_card_carries_the_specs_serving_section(published, strict):
    assert published.unknown_categories == "encode"
    assert published.model_extra["serving"]["unknown_categories"] == "encode"
    assert strict.unknown_categories == "reject"


@pytest.mark.slow
def test_an_unseen_category_is_answered_with_its_warning(published, service):
    answer = service.predict(MODEL, [[1.0, "red", True], [1.0, "purple", True]])

    assert answer["warnings"][0] is None
    ((warning,),) = answer["warnings"][1:]
    assert (warning["feature"], warning["value"], warning["kind"]) == (
        "color",
        "purple",
        "unknown_category",
    )
    probabilities = np.array(answer["probabilities"])
    assert np.isfinite(probabilities).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_the_real_graph_answers_finitely_for_nan_in_every_column(published, home):
    # The contract the predict path relies on: NaN in any column is missing or unknown.
    store, _ = home
    session = ort.InferenceSession(
        store.get(f"models/{MODEL}/{published.version}/model.onnx"),
        providers=["CPUExecutionProvider"],
    )
    (probabilities,) = session.run(
        ["probabilities"], {"input": np.full((2, 3), np.nan, dtype=np.float32)}
    )

    assert np.isfinite(probabilities).all()


@pytest.mark.slow
def test_missing_spellings_are_null_and_null_without_missing_values_is_unknown(published, service):
    answer = service.predict(MODEL, [["NA", "n/a", True], [1.0, "red", None]])

    assert answer["warnings"][0] is None
    ((warning,),) = answer["warnings"][1:]
    assert (warning["feature"], warning["value"], warning["kind"]) == (
        "indoor",
        None,
        "missing_value",
    )
    assert np.isfinite(np.array(answer["probabilities"])).all()


@pytest.mark.slow
def test_under_reject_an_unseen_category_is_refused_naming_it_and_the_known_ones(strict, service):
    with pytest.raises(InvalidInstances) as caught:
        service.predict(STRICT, [[1.0, "red", True], [1.0, "purple", True]])

    assert (
        "row 1, feature 'color': unknown category 'purple'; "
        "known categories: 'blue', 'green', 'red', null" in str(caught.value)
    )


@pytest.mark.slow
def test_under_reject_null_is_refused_for_a_category_without_missing_values(strict, service):
    with pytest.raises(InvalidInstances, match="row 0, feature 'indoor': null is not accepted"):
        service.predict(STRICT, [[1.0, "red", None]])


# --------------------------------------------------------------------------- failures
def test_a_stray_word_in_a_numeric_column_fails_the_job_naming_file_line_and_column(home):
    store, registry = home
    rows = "".join(f"{i / 10},{'red' if i % 2 else 'blue'},{'xy'[i % 2]}\n" for i in range(12))
    csv = "size,color,target\n" + rows.replace("0.3,", "big,", 1)
    store.put("datasets/stray/data.csv", csv.encode())

    job = run(store, registry, "stray")

    assert job.state == JobState.FAILED
    assert "datasets/stray/data.csv, line 5, column 'size': 'big' is not a number" in (
        job.reason or ""
    )
    assert store.list("models/stray/") == []


# --------------------------------------------------------------------------- the graph alone
def test_the_exported_graph_matches_torch_on_categories_and_missing_numbers(tmp_path, home):
    """Export and parity for the tabular family's network, without the job around it."""
    store, _ = home
    drop_pets(store, "graph-only")
    family = TabularFamily()
    for spec in (
        load_spec(PETS_SPEC + "model: {hidden_layers: [8]}"),
        load_spec(PETS_SPEC + "model: {family: mlp}"),
    ):
        examples = family.read(store, "graph-only", spec)
        assert any(feature.dtype == "category" for feature in examples.features)
        parts = split(examples, 0.2, 0)
        x_train, y_train = examples.x[parts.train], examples.y[parts.train]
        x_holdout = examples.x[parts.holdout]
        torch.manual_seed(0)
        network = family.build(examples, x_train, y_train, spec)
        network.eval()
        assert np.isnan(x_holdout).any()

        path = family.export(network, x_holdout, tmp_path / f"{spec.model.family}.onnx")
        parity, _ = check_parity(path, network, x_holdout)

        assert parity.passed and parity.rows == len(x_holdout)
