"""The Open Inference Protocol v2 in the predict function: handler-level tests of each route
and error, and tritonclient's HTTP client (binary data off) against the local gateway."""

from __future__ import annotations

import copy
import json
from http import HTTPStatus
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest

from dropflow.promotion.gate import promote
from dropflow.records.catalog import Catalog, VersionRecord
from dropflow.records.jobs import Job, JobState, JobStore
from dropflow.vocabulary.card import Feature, artifact_key
from dropflow.vocabulary.digests import sha256_hex
from dropflow.vocabulary.names import new_job_id
from dropflow_dev.lambda_context import LambdaContext
from dropflow_dev.local.gateway import Gateway
from tests.fakes_serving import ProxyAnswer, expected_output, load_handler, publish, version_id

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = json.loads((ROOT / "events" / "apigw-predict.json").read_text())
CLASSES = ["malignant", "benign"]
N_FEATURES = 30
MIXED = [
    Feature(name="size"),
    Feature(name="weight", nullable=True),
    Feature(name="color", dtype="category", categories=["red", "green", "blue"]),
]


@pytest.fixture
def models(adapters) -> dict[str, str]:
    """A classifier with two approved versions, a regressor, a mixed-feature classifier, a
    model still training, a rejected and a pending version."""
    store, registry = adapters
    versions = {}
    for n in (1, 2):
        publish(
            store,
            registry,
            "breast-cancer",
            version_id(n),
            n_features=N_FEATURES,
            classes=CLASSES,
            seed=n,
        )
        assert promote("breast-cancer", version_id(n), store, registry).decision == "approved"
    versions["old"], versions["champion"] = version_id(1), version_id(2)
    publish(
        store, registry, "breast-cancer", version_id(3), n_features=N_FEATURES, parity_passed=False
    )
    assert promote("breast-cancer", version_id(3), store, registry).decision == "rejected"
    versions["rejected"] = version_id(3)
    Catalog(registry).record_version(
        VersionRecord(model="breast-cancer", version=version_id(4), job_id="j4")
    )
    versions["pending"] = version_id(4)
    publish(store, registry, "house-prices", version_id(1), task="regression", n_features=3)
    promote("house-prices", version_id(1), store, registry)
    publish(store, registry, "mixed", version_id(1), features=MIXED, classes=["a", "b", "c"])
    promote("mixed", version_id(1), store, registry)
    strict = {"serving": {"route": "auto", "unknown_categories": "reject"}}
    publish(
        store,
        registry,
        "strict",
        version_id(1),
        features=MIXED,
        classes=["a", "b", "c"],
        card_extra=strict,
    )
    promote("strict", version_id(1), store, registry)
    Catalog(registry).add_model("still-training")
    return versions


@pytest.fixture
def app(adapters) -> ModuleType:
    return load_handler(ROOT / "functions" / "predict" / "app.py")


class Answer(ProxyAnswer):
    @property
    def message(self) -> str:
        # The protocol's error object: {"error": "<message>"}, nothing else.
        assert self.json is not None and set(self.json) == {"error"}, self.json
        assert isinstance(self.json["error"], str)
        return self.json["error"]


def call(
    app: ModuleType,
    method: str,
    path: str,
    body: Any = None,
    *,
    raw: str | None = None,
    headers: dict[str, str] | None = None,
) -> Answer:
    event = copy.deepcopy(SAMPLE)
    event["httpMethod"] = event["requestContext"]["httpMethod"] = method
    event["path"] = path
    event["resource"] = "/v2/{proxy+}"
    event["pathParameters"] = {"proxy": path.removeprefix("/v2/")}
    event["body"] = raw if raw is not None else (None if body is None else json.dumps(body))
    for name, value in (headers or {}).items():
        event["headers"][name] = value
        event["multiValueHeaders"][name] = [value]
    return Answer(app.lambda_handler(event, LambdaContext(function_name="PredictFunction")))


def rows(n: int, n_features: int = N_FEATURES, seed: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, n_features)).astype(np.float32)


def infer_body(x: np.ndarray, **extra: Any) -> dict[str, Any]:
    tensor = {"name": "input", "shape": list(x.shape), "datatype": "FP32"}
    return {"inputs": [{**tensor, "data": x.reshape(-1).tolist()}], **extra}


def with_tensor(**changes: Any) -> dict[str, Any]:
    body = infer_body(rows(2))
    body["inputs"][0].update(changes)
    return body


INFER = "/v2/models/breast-cancer/infer"


# ---------------------------------------------------------------------- health and metadata
def test_server_is_live_ready_and_describes_itself(app, models):
    live = call(app, "GET", "/v2/health/live")
    ready = call(app, "GET", "/v2/health/ready")
    server = call(app, "GET", "/v2")

    assert (live.status, live.json) == (HTTPStatus.OK, {"live": True})
    assert (ready.status, ready.json) == (HTTPStatus.OK, {"ready": True})
    assert server.status == HTTPStatus.OK
    assert server.json["name"] == "dropflow" and server.json["extensions"] == []


def test_server_is_not_ready_when_its_registry_fails(app, models, monkeypatch):
    def broken() -> list[str]:
        raise OSError("registry unreachable")

    monkeypatch.setattr(app.SERVICE.catalog, "models", broken)

    answer = call(app, "GET", "/v2/health/ready")

    assert (answer.status, answer.json) == (HTTPStatus.SERVICE_UNAVAILABLE, {"ready": False})


def test_model_metadata_states_the_graphs_tensor_contract(app, models):
    answer = call(app, "GET", "/v2/models/breast-cancer")

    assert answer.status == HTTPStatus.OK
    meta = answer.json
    assert meta["name"] == "breast-cancer"
    assert meta["platform"] == "onnxruntime"
    assert meta["versions"] == [models["old"], models["champion"]]  # approved ones only
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, N_FEATURES]}]
    assert meta["outputs"] == [
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, len(CLASSES)]}
    ]
    assert meta["parameters"]["version"] == models["champion"]
    assert json.loads(meta["parameters"]["classes"]) == CLASSES
    # Parameter values are scalars, as the protocol types them.
    assert all(isinstance(v, str | int | float | bool) for v in meta["parameters"].values())


def test_version_metadata_and_category_codes_are_documented(app, models):
    pinned = call(app, "GET", f"/v2/models/breast-cancer/versions/{models['old']}")
    regression = call(app, "GET", "/v2/models/house-prices")
    mixed = call(app, "GET", "/v2/models/mixed")

    assert pinned.status == HTTPStatus.OK
    assert pinned.json["versions"] == [models["old"]]
    assert pinned.json["parameters"]["version"] == models["old"]
    assert regression.json["outputs"] == [{"name": "prediction", "datatype": "FP32", "shape": [-1]}]
    assert "classes" not in regression.json["parameters"]
    assert mixed.json["parameters"]["unknown_categories"] == "encode"
    features = json.loads(mixed.json["parameters"]["features"])
    assert features[2] == {
        "name": "color",
        "column": 2,
        "dtype": "category",
        "categories": ["red", "green", "blue"],
        "nullable": False,
    }
    assert features[1]["nullable"] is True


def test_model_readiness(app, models):
    champion = call(app, "GET", "/v2/models/breast-cancer/ready")
    pinned = call(app, "GET", f"/v2/models/breast-cancer/versions/{models['old']}/ready")
    training = call(app, "GET", "/v2/models/still-training/ready")
    pending = call(app, "GET", f"/v2/models/breast-cancer/versions/{models['pending']}/ready")
    unknown = call(app, "GET", "/v2/models/nope/ready")
    rejected = call(app, "GET", f"/v2/models/breast-cancer/versions/{models['rejected']}/ready")

    assert champion.status == pinned.status == HTTPStatus.OK
    assert champion.json["ready"] is True
    for not_ready in (training, pending):
        assert not_ready.status == HTTPStatus.SERVICE_UNAVAILABLE
        assert int(not_ready.headers["Retry-After"]) > 0
        assert not_ready.message
    assert unknown.status == rejected.status == HTTPStatus.NOT_FOUND
    assert "nope" in unknown.message
    assert "rejected" in rejected.message


def test_a_graph_replaced_after_approval_is_not_ready(app, adapters):
    store, registry = adapters
    publish(store, registry, "broken", version_id(1), n_features=3)
    promote("broken", version_id(1), store, registry)
    store.put(artifact_key("broken", version_id(1), "model.onnx"), b"not a graph")

    answer = call(app, "GET", "/v2/models/broken/ready")

    assert answer.status == HTTPStatus.SERVICE_UNAVAILABLE
    assert "model.onnx differs from what job" in answer.message


def test_a_graph_that_cannot_load_is_not_ready(app, adapters):
    store, registry = adapters
    publish(store, registry, "broken", version_id(1), n_features=3)
    promote("broken", version_id(1), store, registry)
    # Its job's own bytes, which this runtime cannot load (say, a newer opset than it knows).
    store.put(artifact_key("broken", version_id(1), "model.onnx"), b"not a graph")
    catalog = Catalog(registry)
    record = catalog.version("broken", version_id(1))
    digests = {**record.digests, "model.onnx": sha256_hex(b"not a graph")}
    catalog.record_version(record.model_copy(update={"digests": digests}))

    answer = call(app, "GET", "/v2/models/broken/ready")

    assert answer.status == HTTPStatus.SERVICE_UNAVAILABLE
    assert "cannot be loaded" in answer.message


def test_unknown_models_and_versions_are_404_in_the_protocols_shape(app, models):
    for path in (
        "/v2/models/nope",
        "/v2/models/Bad_Name",
        "/v2/models/breast-cancer/versions/1",
        f"/v2/models/breast-cancer/versions/{version_id(9)}",
        f"/v2/models/breast-cancer/versions/{models['rejected']}",
        "/v2/no/such/route",
    ):
        answer = call(app, "GET", path)
        assert answer.status == HTTPStatus.NOT_FOUND, path
        assert answer.message, path


def test_a_model_without_champion_is_503(app, models):
    meta = call(app, "GET", "/v2/models/still-training")
    infer = call(app, "POST", "/v2/models/still-training/infer", infer_body(rows(1, 3)))

    for answer in (meta, infer):
        assert answer.status == HTTPStatus.SERVICE_UNAVAILABLE
        assert int(answer.headers["Retry-After"]) > 0
        assert "no champion" in answer.message


def test_a_model_whose_job_failed_is_404_with_the_failure_on_every_route(
    app, adapters, monkeypatch
):
    _, registry = adapters
    jobs = JobStore(registry)
    failed = jobs.create(Job(job_id=new_job_id("iris"), model="iris", data_version="d1"))
    jobs.transition(failed.job_id, JobState.FAILED, reason="no column named 'species'")

    answers = [
        call(app, "GET", "/v2/models/iris"),
        call(app, "GET", "/v2/models/iris/ready"),
        call(app, "POST", "/v2/models/iris/infer", infer_body(rows(1, 3))),
    ]

    for answer in answers:
        assert answer.status == HTTPStatus.NOT_FOUND
        assert "Retry-After" not in answer.headers
        assert answer.message == (
            f"model 'iris' has no servable version: its last training job {failed.job_id} "
            "failed: no column named 'species'; a new drop under datasets/iris/ trains it again"
        )

    jobs.create(Job(job_id=new_job_id("iris"), model="iris", data_version="d2"))  # a new drop
    monkeypatch.setattr(app.SERVICE.cache, "champion_ttl", 0.0)  # the cached answer is stale
    ready = call(app, "GET", "/v2/models/iris/ready")
    assert ready.status == HTTPStatus.SERVICE_UNAVAILABLE
    assert int(ready.headers["Retry-After"]) > 0


def test_a_wrong_method_is_405_with_allow(app, models):
    answer = call(app, "GET", INFER)

    assert answer.status == HTTPStatus.METHOD_NOT_ALLOWED
    assert answer.headers["Allow"] == "POST"
    assert answer.message


# ---------------------------------------------------------------------- inference
def test_infer_matches_onnxruntime_and_echoes_the_id(app, models, adapters):
    store, _ = adapters
    x = rows(5)

    answer = call(app, "POST", INFER, infer_body(x, id="req-1"))

    assert answer.status == HTTPStatus.OK
    assert answer.json["model_name"] == "breast-cancer"
    assert answer.json["model_version"] == models["champion"]
    assert answer.json["id"] == "req-1"
    (output,) = answer.json["outputs"]
    assert output["name"] == "probabilities"
    assert (output["datatype"], output["shape"]) == ("FP32", [5, 2])
    got = np.array(output["data"], dtype=np.float32).reshape(5, 2)
    np.testing.assert_allclose(
        got, expected_output(store, "breast-cancer", models["champion"], x), rtol=1e-5, atol=1e-6
    )


def test_nested_data_pinned_versions_and_output_filter(app, models, adapters):
    store, _ = adapters
    x = rows(3)
    body = infer_body(x, outputs=[{"name": "probabilities"}])
    body["inputs"][0]["data"] = x.tolist()  # nested as the shape

    answer = call(app, "POST", f"/v2/models/breast-cancer/versions/{models['old']}/infer", body)

    assert answer.status == HTTPStatus.OK
    assert answer.json["model_version"] == models["old"]
    assert "id" not in answer.json
    got = np.array(answer.json["outputs"][0]["data"], dtype=np.float32).reshape(3, 2)
    expected = expected_output(store, "breast-cancer", models["old"], x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_regression_infer_and_null_for_a_nullable_number(app, models, adapters):
    store, _ = adapters
    x = rows(4, 3)
    regression = call(app, "POST", "/v2/models/house-prices/infer", infer_body(x))
    body = infer_body(np.array([[1.0, 2.0, 1.0]], dtype=np.float32))
    body["inputs"][0]["data"] = [1.0, None, 2]  # weight missing, color "blue" (code 2)
    mixed = call(app, "POST", "/v2/models/mixed/infer", body)

    assert regression.status == HTTPStatus.OK
    (output,) = regression.json["outputs"]
    assert (output["name"], output["shape"]) == ("prediction", [4])
    np.testing.assert_allclose(
        output["data"], expected_output(store, "house-prices", version_id(1), x), rtol=1e-5
    )
    # The null passes the input checks; the fake graph has no imputation (a real one fills in
    # the median), so its NaN output is refused as such rather than sent as JSON nulls.
    assert mixed.status == HTTPStatus.UNPROCESSABLE_ENTITY, mixed.json
    assert "output is not a finite number for row 0" in mixed.json["error"]
    body["inputs"][0]["data"] = [1.0, 2.0, 2]
    mixed = call(app, "POST", "/v2/models/mixed/infer", body)
    assert mixed.status == HTTPStatus.OK, mixed.json
    assert mixed.json["outputs"][0]["shape"] == [1, 3]


@pytest.mark.parametrize(
    ("body", "raw", "needle"),
    [
        (None, "{not json", "not valid JSON"),
        (None, "", "body is required"),
        ([1, 2], None, "JSON object"),
        ({}, None, "inputs"),
        ({"inputs": []}, None, "inputs"),
        ({"inputs": ["x"]}, None, "tensor object"),
        ({"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32"}]}, None, "data"),
        (with_tensor(shape="2x30"), None, "shape"),
        (with_tensor(shape=[2, -30]), None, "non-negative"),
        (with_tensor(data=[1.0, 2.0]), None, "needs 60"),
        (with_tensor(data=[[1.0] * 30, [1.0] * 29]), None, "nested"),
        ({**infer_body(rows(1)), "id": 5}, None, "id"),
        ({**infer_body(rows(1)), "outputs": "probabilities"}, None, "outputs"),
        ({"inputs": infer_body(rows(1))["inputs"] * 2}, None, "more than once"),
    ],
)
def test_malformed_requests_are_400(app, models, body, raw, needle):
    answer = call(app, "POST", INFER, body, raw=raw)

    assert answer.status == HTTPStatus.BAD_REQUEST, answer.json
    assert needle in answer.message


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (with_tensor(name="x"), "unknown input 'x'"),
        (with_tensor(datatype="FP64"), "FP64"),
        (with_tensor(datatype="INT64"), "FP32 [-1, 30]"),
        (with_tensor(shape=[60]), "[60]"),
        (with_tensor(shape=[2, 29], data=[0.0] * 58), "[2, 29]"),
        (with_tensor(shape=[0, 30], data=[]), "N >= 1"),
        (with_tensor(data=["1.0"] + [0.0] * 59), "row 0, feature 'f0': expected a number"),
        (with_tensor(data=[0.0] * 59 + [True]), "row 1, feature 'f29'"),
        (with_tensor(data=[0.0] * 31 + [None] + [0.0] * 28), "row 1, feature 'f1': null"),
        (with_tensor(data=[0.0] * 5 + [1e39] + [0.0] * 54), "feature 'f5': 1e+39 is not a finite"),
        (with_tensor(data=[10**400] + [0.0] * 59), "beyond float32"),
        ({**infer_body(rows(1)), "outputs": [{"name": "labels"}]}, "unknown output 'labels'"),
    ],
)
def test_tensors_the_model_cannot_take_are_422(app, models, body, needle):
    answer = call(app, "POST", INFER, body)

    assert answer.status == HTTPStatus.UNPROCESSABLE_ENTITY, answer.json
    assert needle in answer.message


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_literals_are_422(app, models, literal):
    body = infer_body(rows(1))
    body["inputs"][0]["data"][29] = float(literal)
    text = json.dumps(body)  # Python writes the literal, as some JSON clients do

    answer = call(app, "POST", INFER, raw=text)

    assert answer.status == HTTPStatus.UNPROCESSABLE_ENTITY
    assert "feature 'f29'" in answer.message and "not a finite" in answer.message


def test_category_columns_take_codes_only(app, models):
    def send(color: Any) -> Answer:
        body = infer_body(np.zeros((1, 3), dtype=np.float32))
        body["inputs"][0]["data"] = [1.0, 2.0, color]
        return call(app, "POST", "/v2/models/mixed/infer", body)

    for bad in (3, -1, 1.5, "red"):
        answer = send(bad)
        assert answer.status == HTTPStatus.UNPROCESSABLE_ENTITY, bad
        assert "feature 'color'" in answer.message
    assert "from 0 to 2" in send(3).message
    assert send(2).status == send(0.0).status == HTTPStatus.OK


# ---------------------------------------------------------------------- values never seen
def by_feature(size: list, weight: list, color: list, color_type: str = "BYTES") -> dict:
    """An inference request with one input per feature of the mixed model."""
    n = len(size)
    return {
        "inputs": [
            {"name": "size", "shape": [n], "datatype": "FP32", "data": size},
            {"name": "weight", "shape": [n, 1], "datatype": "FP64", "data": weight},
            {"name": "color", "shape": [n], "datatype": color_type, "data": color},
        ]
    }


def test_one_input_per_feature_takes_raw_values_as_the_predict_api_does(app, models, adapters):
    store, _ = adapters

    answer = call(
        app, "POST", "/v2/models/mixed/infer", by_feature([1, 2], [0.5, 3], ["blue", "red"])
    )

    assert answer.status == HTTPStatus.OK, answer.json
    assert "parameters" not in answer.json
    got = np.array(answer.json["outputs"][0]["data"]).reshape(2, 3)
    codes = np.array([[1, 0.5, 2], [2, 3, 0]])  # blue is code 2, red code 0
    expected = expected_output(store, "mixed", version_id(1), codes)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_an_unseen_category_as_bytes_is_a_200_with_its_warning_in_the_parameters(
    app, models, adapters
):
    store, _ = adapters

    answer = call(
        app, "POST", "/v2/models/mixed/infer", by_feature([1, 2], [0.5, 3], ["purple", "red"])
    )

    assert answer.status == HTTPStatus.OK, answer.json
    # Parameter values are scalars, as the protocol types them: the warnings are JSON text.
    warnings = json.loads(answer.json["parameters"]["warnings"])
    assert warnings == [
        [
            {
                "feature": "color",
                "value": "purple",
                "kind": "unknown_category",
                "message": "unknown category 'purple': the training rows never had it; "
                "predicted with the value unknown",
            }
        ],
        None,
    ]
    got = np.array(answer.json["outputs"][0]["data"]).reshape(2, 3)
    expected = expected_output(
        store, "mixed", version_id(1), np.array([[1, 0.5, np.nan], [2, 3, 0]])
    )
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_under_reject_an_unseen_category_as_bytes_is_a_422_naming_it(app, models):
    answer = call(
        app, "POST", "/v2/models/strict/infer", by_feature([1, 2], [0.5, 3], ["red", "purple"])
    )

    assert answer.status == HTTPStatus.UNPROCESSABLE_ENTITY
    assert answer.message == (
        "invalid input: row 1, feature 'color': unknown category 'purple'; "
        "known categories: 'red', 'green', 'blue'"
    )


@pytest.mark.parametrize("model", ["mixed", "strict"])
def test_missing_values_in_a_feature_input_are_read_as_the_predict_api_reads_them(
    app, models, model
):
    # weight is nullable: "NA"-like spellings are missing. The fake graph has no median fill,
    # so a missing weight makes its output NaN: a 422 that says so, past the input checks.
    answer = call(app, "POST", f"/v2/models/{model}/infer", by_feature([1], [None], ["red"]))

    assert answer.status == HTTPStatus.UNPROCESSABLE_ENTITY
    assert "output is not a finite number for row 0" in answer.message


def test_null_for_a_category_code_without_missing_values_is_unknown_with_a_warning(app, models):
    body = infer_body(np.zeros((2, 3), dtype=np.float32))
    body["inputs"][0]["data"] = [1.0, 2.0, None, 1.0, 2.0, 0]

    encoded = call(app, "POST", "/v2/models/mixed/infer", body)
    strict = call(app, "POST", "/v2/models/strict/infer", body)

    assert encoded.status == HTTPStatus.OK, encoded.json
    warnings = json.loads(encoded.json["parameters"]["warnings"])
    assert warnings[1] is None
    assert [(w["feature"], w["value"], w["kind"]) for w in warnings[0]] == [
        ("color", None, "missing_value")
    ]
    assert strict.status == HTTPStatus.UNPROCESSABLE_ENTITY
    assert "row 0, feature 'color': null is not accepted: the feature had no missing values" in (
        strict.message
    )


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        (
            {"inputs": by_feature([1], [1], ["red"])["inputs"][:2]},
            "no input for feature 'color'",
        ),
        (
            {
                "inputs": [
                    *by_feature([1], [1], ["red"])["inputs"],
                    {"name": "colour", "shape": [1], "datatype": "BYTES", "data": ["red"]},
                ]
            },
            "unknown input 'colour': the model takes one input 'input' (FP32 [-1, 3]), or one "
            "input per feature: 'size', 'weight', 'color'",
        ),
        (
            {
                "inputs": [
                    *infer_body(np.zeros((1, 3), dtype=np.float32))["inputs"],
                    by_feature([1], [1], ["red"])["inputs"][0],
                ]
            },
            "unknown input 'input'",
        ),
        (by_feature([1], [1], ["red"], color_type="STRING"), "datatype 'STRING' is not accepted"),
        (
            by_feature([1], [1], [3], color_type="BYTES"),
            "row 0, input 'color': a number is not BYTES data",
        ),
        (by_feature([1], [1], ["red"], color_type="BOOL"), "string 'red' is not BOOL data"),
        (by_feature(["1"], [1], ["red"]), "row 0, input 'size': string '1' is not FP32 data"),
        (
            {
                "inputs": [
                    {**by_feature([1], [1], ["red"])["inputs"][0], "shape": [1, 2], "data": [1, 2]},
                    *by_feature([1], [1], ["red"])["inputs"][1:],
                ]
            },
            "input 'size': shape [1, 2] does not fit",
        ),
        (
            {
                "inputs": [
                    *by_feature([1, 2], [1, 2], ["red", "red"])["inputs"][:2],
                    by_feature([1], [1], ["red"])["inputs"][2],
                ]
            },
            "the inputs hold different numbers of rows: 2 in 'size', 1 in 'color'",
        ),
        (
            by_feature([True], [1], ["red"], color_type="BYTES"),
            "row 0, input 'size': true is not FP32",
        ),
        (by_feature([1], [1], [["red"]]), "nested"),
        (by_feature([1e39], [1], ["red"]), "row 0, feature 'size': 1e+39 is not a finite"),
        (by_feature([1], [1], [False], color_type="BOOL"), "row 0, feature 'color': unknown"),
    ],
    ids=[
        "a feature without input",
        "an unknown input",
        "input beside features",
        "an unknown datatype",
        "a number in BYTES",
        "text in BOOL",
        "text in FP32",
        "a shape of two columns",
        "rows of different counts",
        "a boolean in FP32",
        "data nested deeper",
        "a number beyond float32",
        "under reject a boolean is no text category",
    ],
)
def test_feature_inputs_the_model_cannot_take_are_named(app, models, body, needle):
    answer = call(app, "POST", "/v2/models/strict/infer", body)

    assert answer.status in (HTTPStatus.UNPROCESSABLE_ENTITY, HTTPStatus.BAD_REQUEST), answer.json
    assert needle in answer.message


def test_too_many_rows_is_413(app, models):
    answer = call(app, "POST", INFER, with_tensor(shape=[10_001, 30], data=[0.0] * 300_030))

    assert answer.status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    assert "10000" in answer.message


def test_refusals_before_routing_take_the_protocols_shape(app, models):
    answer = call(app, "POST", INFER, raw="1,2", headers={"Content-Type": "text/csv"})

    assert answer.status == HTTPStatus.UNSUPPORTED_MEDIA_TYPE
    assert "text/csv" in answer.message


def test_the_simple_api_keeps_its_error_shape(app, models):
    answer = call(app, "GET", "/models/nope")

    assert answer.status == HTTPStatus.NOT_FOUND
    assert answer.json["error"]["code"] == HTTPStatus.NOT_FOUND


# ---------------------------------------------------------------------- an off-the-shelf client
def test_tritonclient_over_the_local_gateway(app, models, adapters):
    httpclient = pytest.importorskip("tritonclient.http")
    store, _ = adapters
    x = rows(8)
    session = ort.InferenceSession(
        store.get(artifact_key("breast-cancer", models["champion"], "model.onnx")),
        providers=["CPUExecutionProvider"],
    )
    (expected,) = session.run(["probabilities"], {"input": x})

    gateway = Gateway(app.lambda_handler, host="127.0.0.1", port=0)
    gateway.start()
    client = None
    try:
        client = httpclient.InferenceServerClient(
            url=f"127.0.0.1:{gateway.port}", connection_timeout=10.0, network_timeout=10.0
        )
        assert client.is_server_live()
        assert client.is_server_ready()
        assert client.is_model_ready("breast-cancer")
        assert client.is_model_ready("breast-cancer", models["old"])
        assert not client.is_model_ready("still-training")
        meta = client.get_model_metadata("breast-cancer")
        assert meta["inputs"][0] == {"name": "input", "datatype": "FP32", "shape": [-1, 30]}

        tensor = httpclient.InferInput("input", list(x.shape), "FP32")
        tensor.set_data_from_numpy(x, binary_data=False)
        wanted = httpclient.InferRequestedOutput("probabilities", binary_data=False)
        result = client.infer("breast-cancer", [tensor], outputs=[wanted], request_id="t-1")

        probabilities = result.as_numpy("probabilities")
        assert probabilities.shape == (8, 2)
        np.testing.assert_array_equal(probabilities, expected)
        labels = [CLASSES[i] for i in probabilities.argmax(axis=1)]
        assert labels == [CLASSES[i] for i in expected.argmax(axis=1)]
        response = result.get_response()
        assert response["id"] == "t-1"
        assert response["model_version"] == models["champion"]

        from tritonclient.utils import InferenceServerException

        bad = httpclient.InferInput("input", [1, 29], "FP32")
        bad.set_data_from_numpy(x[:1, :29], binary_data=False)
        with pytest.raises(InferenceServerException, match=r"\[-1, 30\]"):
            client.infer("breast-cancer", [bad], outputs=[wanted])
    finally:
        if client is not None:
            client.close()
        gateway.stop()
