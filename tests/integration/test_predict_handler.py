"""functions/predict/app.py called as Lambda calls it, with API Gateway REST proxy events
(events/apigw-*.json), against the local adapters in a temporary folder."""

from __future__ import annotations

import base64
import copy
import gc
import json
import logging
import subprocess
import sys
from http import HTTPStatus
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dropflow.promotion.gate import promote
from dropflow.records.catalog import Catalog
from dropflow.records.jobs import Job, JobState, JobStore
from dropflow.vocabulary.card import MISSING_CATEGORY, Feature
from dropflow.vocabulary.names import new_job_id
from dropflow_dev.lambda_context import LambdaContext
from tests.fakes_serving import ProxyAnswer, load_handler, publish, version_id

# Powertools warns on every invocation that adds no metric of its own (only cold start does).
pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

ROOT = Path(__file__).resolve().parents[2]
EVENTS = ROOT / "events"
FEATURES = [
    *(f"mean {n}" for n in ("radius", "texture", "perimeter", "area", "smoothness")),
    *(f"mean {n}" for n in ("compactness", "concavity", "concave points", "symmetry")),
    "mean fractal dimension",
    *(f"{n} error" for n in ("radius", "texture", "perimeter", "area", "smoothness")),
    *(f"{n} error" for n in ("compactness", "concavity", "concave points", "symmetry")),
    "fractal dimension error",
    *(f"worst {n}" for n in ("radius", "texture", "perimeter", "area", "smoothness")),
    *(f"worst {n}" for n in ("compactness", "concavity", "concave points", "symmetry")),
    "worst fractal dimension",
]
CLASSES = ["malignant", "benign"]
PREDICT_PATH = "/models/breast-cancer/predict"
PREDICT_APP = ROOT / "functions" / "predict" / "app.py"


def sample(name: str) -> dict[str, Any]:
    return json.loads((EVENTS / name).read_text())


SAMPLE_ROWS = json.loads(sample("apigw-predict.json")["body"])["instances"]


@pytest.fixture
def champion(adapters) -> str:
    store, registry = adapters
    version = version_id(1)
    publish(store, registry, "breast-cancer", version, features=FEATURES, classes=CLASSES)
    assert promote("breast-cancer", version, store, registry).decision == "approved"
    return version


@pytest.fixture
def app(adapters) -> ModuleType:
    return load_handler(PREDICT_APP)


class Answer(ProxyAnswer):
    @property
    def message(self) -> str:
        assert self.json is not None and set(self.json) == {"error"}, self.json
        assert self.json["error"]["code"] == self.status
        return self.json["error"]["message"]


def call(
    app: ModuleType,
    method: str = "POST",
    path: str = PREDICT_PATH,
    body: Any = None,
    *,
    raw: str | None = None,
    headers: dict[str, str] | None = None,
    base64_body: bool = False,
) -> Answer:
    """Send a variant of the sample predict event through the handler."""
    event = copy.deepcopy(sample("apigw-predict.json"))
    event["httpMethod"] = event["requestContext"]["httpMethod"] = method
    event["path"] = path
    event["body"] = raw if raw is not None else (None if body is None else json.dumps(body))
    if base64_body and event["body"] is not None:
        event["body"] = base64.b64encode(event["body"].encode()).decode()
        event["isBase64Encoded"] = True
    for name, value in (headers or {}).items():
        event["headers"][name] = value
        event["multiValueHeaders"][name] = [value]
    return Answer(app.lambda_handler(event, LambdaContext(function_name="PredictFunction")))


# ---------------------------------------------------------------------- predictions
def test_the_sample_event_gets_two_labelled_predictions(app, champion):
    event = sample("apigw-predict.json")

    answer = Answer(app.lambda_handler(event, LambdaContext()))

    assert answer.status == HTTPStatus.OK
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.json["model"] == "breast-cancer"
    assert answer.json["version"] == champion
    assert answer.json["served_by"] == "lambda"
    assert len(answer.json["predictions"]) == 2
    assert set(answer.json["predictions"]) <= set(CLASSES)
    assert [len(p) for p in answer.json["probabilities"]] == [2, 2]


def test_rows_as_objects_get_the_same_answer_as_lists(app, champion):
    objects = [dict(zip(FEATURES, row, strict=True)) for row in SAMPLE_ROWS]

    as_lists = call(app, body={"instances": SAMPLE_ROWS})
    as_objects = call(app, body={"instances": objects})

    assert as_objects.status == HTTPStatus.OK
    assert as_objects.json == as_lists.json


def test_a_pinned_version_is_served(app, champion):
    answer = call(app, body={"instances": SAMPLE_ROWS, "version": champion})

    assert answer.status == HTTPStatus.OK
    assert answer.json["version"] == champion


def test_a_regression_answer_has_no_probabilities(app, adapters):
    store, registry = adapters
    publish(store, registry, "house-price", version_id(1), task="regression", n_features=3)
    promote("house-price", version_id(1), store, registry)

    answer = call(app, path="/models/house-price/predict", body={"instances": [[1, 2, 3]]})

    assert answer.status == HTTPStatus.OK
    assert "probabilities" not in answer.json
    assert isinstance(answer.json["predictions"][0], float)


def test_an_absent_content_type_is_taken_as_json(app, champion):
    event = sample("apigw-predict.json")
    del event["headers"]["Content-Type"]
    del event["multiValueHeaders"]["Content-Type"]

    answer = Answer(app.lambda_handler(event, LambdaContext()))

    assert answer.status == HTTPStatus.OK


def test_a_base64_encoded_json_body_is_accepted(app, champion):
    answer = call(app, body={"instances": SAMPLE_ROWS}, base64_body=True)

    assert answer.status == HTTPStatus.OK


# ---------------------------------------------------------------------- client mistakes
def test_malformed_json_is_a_400_saying_so(app, champion):
    answer = call(app, raw='{"instances": [[1, 2,')

    assert answer.status == HTTPStatus.BAD_REQUEST
    assert "request body is not valid JSON" in answer.message


def test_a_body_that_is_not_utf8_text_is_a_400(app, champion):
    event = sample("apigw-predict.json")
    event["body"], event["isBase64Encoded"] = base64.b64encode(b"\xff\xfe\x00").decode(), True

    answer = Answer(app.lambda_handler(event, LambdaContext()))

    assert answer.status == HTTPStatus.BAD_REQUEST
    assert "not UTF-8" in answer.message


@pytest.mark.parametrize("path", [PREDICT_PATH, "/v2/models/breast-cancer/infer"])
def test_a_body_holding_a_raw_lone_surrogate_is_a_400(app, champion, path):
    # The event's JSON carried "\\ud800" in the body string: no UTF-8 encoder takes the text.
    answer = call(app, path=path, raw='{"instances": [["\ud800"]]}')

    assert answer.status == HTTPStatus.BAD_REQUEST
    error = answer.json["error"]
    message = error if path.startswith("/v2/") else error["message"]
    assert message == "request body is not UTF-8 text (a lone surrogate): send JSON"


def test_the_wrong_number_of_features_is_a_422_naming_the_row(app, champion):
    answer = call(app, body={"instances": [SAMPLE_ROWS[0], SAMPLE_ROWS[1][:29]]})

    assert answer.status == HTTPStatus.UNPROCESSABLE_ENTITY
    assert "row 1: has 29 values, the model expects 30 features" in answer.message


def test_a_string_value_is_a_422_naming_row_and_feature(app, champion):
    row = list(SAMPLE_ROWS[0])
    row[1] = "10.38"

    answer = call(app, body={"instances": [SAMPLE_ROWS[1], row]})

    assert answer.status == HTTPStatus.UNPROCESSABLE_ENTITY
    assert "row 1, feature 'mean texture': expected a number, got string '10.38'" in (
        answer.message
    )


def test_nan_is_a_422_naming_row_and_feature(app, champion):
    values = ", ".join(["NaN", *map(str, SAMPLE_ROWS[0][1:])])

    answer = call(app, raw=f'{{"instances": [[{values}]]}}')

    assert answer.status == HTTPStatus.UNPROCESSABLE_ENTITY
    assert "row 0, feature 'mean radius': NaN is not allowed" in answer.message


# ---------------------------------------------------------------------- values never seen
PETS_PATH = "/models/pets/predict"
PETS = [
    Feature(name="color", dtype="category", categories=["blue", "green", "red"]),
    Feature(name="size", nullable=True),
    Feature(
        name="flag", dtype="category", categories=[False, True, MISSING_CATEGORY], nullable=True
    ),
]


def release_pets(adapters, unknown_categories: str | None = None) -> str:
    """The pets model; `unknown_categories` as its spec's serving section set it, if at all."""
    store, registry = adapters
    extra = None
    if unknown_categories is not None:
        extra = {"serving": {"route": "auto", "unknown_categories": unknown_categories}}
    publish(
        store, registry, "pets", version_id(1), features=PETS, classes=CLASSES, card_extra=extra
    )
    assert promote("pets", version_id(1), store, registry).decision == "approved"
    return version_id(1)


@pytest.mark.parametrize("serving", [None, "encode"], ids=["default", "encode"])
def test_an_unseen_category_is_a_200_with_its_warning(app, adapters, serving):
    release_pets(adapters, serving)
    rows = [
        {"color": "red", "size": 1.0, "flag": True},
        {"color": "purple", "size": 1.0, "flag": "NA"},
    ]

    answer = call(app, path=PETS_PATH, body={"instances": rows})

    assert answer.status == HTTPStatus.OK, answer.json
    assert answer.json["warnings"][0] is None
    ((warning,),) = answer.json["warnings"][1:]
    assert warning == {
        "feature": "color",
        "value": "purple",
        "kind": "unknown_category",
        "message": "unknown category 'purple': the training rows never had it; "
        "predicted with the value unknown",
    }
    assert len(answer.json["predictions"]) == len(answer.json["probabilities"]) == 2


def test_under_reject_an_unseen_category_is_a_422_naming_it_and_the_known_ones(app, adapters):
    release_pets(adapters, "reject")

    answer = call(app, path=PETS_PATH, body={"instances": [["purple", 1.0, True]]})

    assert answer.status == HTTPStatus.UNPROCESSABLE_ENTITY
    assert answer.message == (
        "invalid instances: row 0, feature 'color': unknown category 'purple'; "
        "known categories: 'blue', 'green', 'red'"
    )


def test_an_answer_with_warnings_comes_from_the_fast_path_as_the_resolver_gives_it(app, adapters):
    release_pets(adapters)
    event = copy.deepcopy(sample("apigw-predict.json"))
    event["path"] = PETS_PATH
    event["body"] = json.dumps({"instances": [["mauve", 1.0, "maybe"], ["red", 2.0, None]]})

    fast = app.predicted(copy.deepcopy(event))
    resolved = app.resolver().resolve(copy.deepcopy(event), LambdaContext())

    assert fast is not None
    assert Answer(resolved).status == HTTPStatus.OK
    assert json.loads(fast["body"]) == json.loads(resolved["body"])
    assert [w["feature"] for w in json.loads(fast["body"])["warnings"][0]] == ["color", "flag"]


def test_the_model_description_says_what_unseen_categories_get(app, adapters):
    release_pets(adapters, "reject")

    answer = call(app, "GET", "/models/pets")

    assert answer.status == HTTPStatus.OK
    assert answer.json["unknown_categories"] == "reject"


def test_missing_and_unknown_object_keys_are_a_422_naming_them(app, champion):
    row = dict(zip(FEATURES, SAMPLE_ROWS[0], strict=True))
    row["radius"] = row.pop("mean radius")

    answer = call(app, body={"instances": [row]})

    assert answer.status == HTTPStatus.UNPROCESSABLE_ENTITY
    assert "missing features 'mean radius'; unknown features 'radius'" in answer.message


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"instances": []}, "instances: must not be empty"),
        ({"rows": [[1.0]]}, "instances: required; rows: Extra inputs are not permitted"),
        ({"instances": [1.0, 2.0]}, "instances: row 0 is a number"),
        ({"instances": [[1.0], {"a": 1.0}]}, "row 1 is an object but row 0 is a list"),
        ({"instances": [[1.0]], "version": "latest"}, "version: invalid version 'latest'"),
        ([[1.0]], "body: Input should be a valid dictionary"),
    ],
)
def test_a_request_of_the_wrong_shape_is_a_422_naming_the_field(app, champion, body, message):
    answer = call(app, body=body)

    assert answer.status == HTTPStatus.UNPROCESSABLE_ENTITY
    assert message in answer.message


def test_no_body_is_a_422_asking_for_one(app, champion):
    answer = call(app, body=None)

    assert answer.status == HTTPStatus.UNPROCESSABLE_ENTITY
    assert "a JSON body is required" in answer.message


def test_an_unknown_model_is_a_404(app, champion):
    answer = call(app, path="/models/no-such-model/predict", body={"instances": SAMPLE_ROWS})

    assert answer.status == HTTPStatus.NOT_FOUND
    assert "unknown model 'no-such-model'" in answer.message


def test_a_malformed_model_name_is_a_404_stating_the_rule(app, champion):
    answer = call(app, path="/models/Breast_Cancer/predict", body={"instances": SAMPLE_ROWS})

    assert answer.status == HTTPStatus.NOT_FOUND
    assert "invalid model name 'Breast_Cancer'" in answer.message
    assert "a-z, 0-9 and '-'" in answer.message


def test_an_unknown_version_is_a_404(app, champion):
    answer = call(app, body={"instances": SAMPLE_ROWS, "version": version_id(42)})

    assert answer.status == HTTPStatus.NOT_FOUND
    assert f"has no version '{version_id(42)}'" in answer.message


def test_a_model_without_champion_is_a_503_with_retry_after(app, adapters):
    _, registry = adapters
    Catalog(registry).add_model("breast-cancer")  # it has a job, not yet a promoted version

    answer = call(app, body={"instances": SAMPLE_ROWS})

    assert answer.status == HTTPStatus.SERVICE_UNAVAILABLE
    assert int(answer.headers["Retry-After"]) > 0
    assert "no champion yet" in answer.message


def test_a_model_whose_job_failed_is_a_404_saying_why_not_a_retry(app, adapters):
    _, registry = adapters
    jobs = JobStore(registry)
    failed = jobs.create(
        Job(job_id=new_job_id("breast-cancer"), model="breast-cancer", data_version="d1")
    )
    jobs.transition(failed.job_id, JobState.FAILED, reason="budget 2.00 USD spent")

    answer = call(app, body={"instances": SAMPLE_ROWS})

    assert answer.status == HTTPStatus.NOT_FOUND
    assert "Retry-After" not in answer.headers
    assert answer.message == (
        f"model 'breast-cancer' has no servable version: its last training job {failed.job_id} "
        "failed: budget 2.00 USD spent; a new drop under datasets/breast-cancer/ trains it again"
    )


def test_a_non_json_content_type_is_a_415(app, champion):
    answer = call(app, body={"instances": SAMPLE_ROWS}, headers={"Content-Type": "text/csv"})

    assert answer.status == HTTPStatus.UNSUPPORTED_MEDIA_TYPE
    assert "Content-Type 'text/csv' is not supported" in answer.message


def test_curls_default_form_content_type_with_a_json_body_is_read_as_json(app, champion):
    # `curl -X POST URL -d '{"instances": ...}'` sends application/x-www-form-urlencoded.
    form = {"Content-Type": "application/x-www-form-urlencoded"}

    answer = call(app, body={"instances": SAMPLE_ROWS}, headers=form)

    assert answer.status == HTTPStatus.OK
    assert len(answer.json["predictions"]) == len(SAMPLE_ROWS)


def test_a_real_form_body_is_a_415(app, champion):
    form = {"Content-Type": "application/x-www-form-urlencoded"}

    answer = call(app, raw="instances=1,2,3", headers=form)

    assert answer.status == HTTPStatus.UNSUPPORTED_MEDIA_TYPE
    assert "send the body as application/json" in answer.message


def test_a_body_over_6_mb_is_a_413(app, champion):
    answer = call(app, raw='{"instances": [' + "[1.0]," * 1_200_000 + "[1.0]]}")

    assert answer.status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    assert "the limit is 6291456 bytes" in answer.message


def test_more_than_10000_instances_is_a_413_naming_the_limit(app, champion):
    rows = [SAMPLE_ROWS[0]] * 10_001  # about 2 MB: under the body limit, over the row limit

    answer = call(app, body={"instances": rows})

    assert answer.status == HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    assert "10001 instances in one request; the limit is 10000" in answer.message


def test_10000_instances_are_served(app, champion):
    answer = call(app, body={"instances": [SAMPLE_ROWS[0]] * 10_000})

    assert answer.status == HTTPStatus.OK
    assert len(answer.json["predictions"]) == 10_000


@pytest.mark.parametrize(
    "body",
    [
        {"instances": SAMPLE_ROWS},
        {"instances": [dict(zip(FEATURES, SAMPLE_ROWS[0], strict=True))]},
        {"instances": SAMPLE_ROWS, "version": version_id(1)},
    ],
    ids=["lists", "objects", "pinned"],
)
def test_the_fast_path_answers_exactly_as_the_resolver_does(app, champion, body):
    event = copy.deepcopy(sample("apigw-predict.json"))
    event["body"] = json.dumps(body)
    context = LambdaContext(function_name="PredictFunction")

    fast = app.predicted(copy.deepcopy(event))
    resolved = app.resolver().resolve(copy.deepcopy(event), context)

    assert fast is not None
    assert Answer(fast).status == Answer(resolved).status == HTTPStatus.OK
    assert Answer(fast).headers == Answer(resolved).headers
    assert json.loads(fast["body"]) == json.loads(resolved["body"])


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(
        st.lists(
            st.one_of(
                st.floats(min_value=-1e30, max_value=1e30, allow_nan=False),
                st.integers(min_value=-(10**12), max_value=10**12),
            ),
            min_size=len(FEATURES),
            max_size=len(FEATURES),
        ),
        min_size=1,
        max_size=5,
    ),
    as_objects=st.booleans(),
)
def test_for_any_valid_rows_the_fast_path_answers_as_the_resolver_does(
    app, champion, rows, as_objects
):
    instances = [dict(zip(FEATURES, row, strict=True)) for row in rows] if as_objects else rows
    event = copy.deepcopy(sample("apigw-predict.json"))
    event["body"] = json.dumps({"instances": instances})
    context = LambdaContext(function_name="PredictFunction")

    fast = app.predicted(copy.deepcopy(event))
    resolved = app.resolver().resolve(copy.deepcopy(event), context)

    # The fast path answers 200 exactly when the resolver does, with the same body.
    if fast is None:
        assert Answer(resolved).status != HTTPStatus.OK
    else:
        assert Answer(resolved).status == HTTPStatus.OK
        assert json.loads(fast["body"]) == json.loads(resolved["body"])


@pytest.mark.parametrize(
    "variant",
    [
        {"body": '{"instances": [[1, 2'},
        {"body": json.dumps({"instances": [[1, 2, 3]]})},
        {"body": json.dumps({"instances": SAMPLE_ROWS, "version": "v20990101T000000Z-000000"})},
        {"path": "/models/nope/predict"},
        {"httpMethod": "GET"},
    ],
    ids=["bad-json", "wrong-count", "unknown-version", "unknown-model", "wrong-method"],
)
def test_the_fast_path_leaves_every_error_to_the_resolver(app, champion, variant):
    event = {**copy.deepcopy(sample("apigw-predict.json")), **variant}

    assert app.predicted(event) is None


def test_an_unknown_route_is_a_404(app, champion):
    answer = call(app, method="GET", path="/v1/models")

    assert answer.status == HTTPStatus.NOT_FOUND
    assert "no route GET /v1/models" in answer.message


def test_a_known_route_with_the_wrong_method_is_a_405(app, champion):
    answer = call(app, method="GET", path=PREDICT_PATH)

    assert answer.status == HTTPStatus.METHOD_NOT_ALLOWED
    assert answer.headers["Allow"] == "POST"
    assert "use POST" in answer.message


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_an_unexpected_error_is_a_generic_500_and_is_logged(app, champion, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("secret detail in /var/task")

    # Both the fast path and the resolver's route run the model through the cache's session.
    monkeypatch.setattr(app.SERVICE.cache, "session", broken)
    logged = Records()
    service_logger = logging.getLogger(app.logger.name)  # powertools' underlying logger
    service_logger.addHandler(logged)
    try:
        answer = call(app, body={"instances": SAMPLE_ROWS})
    finally:
        service_logger.removeHandler(logged)

    assert answer.status == HTTPStatus.INTERNAL_SERVER_ERROR
    assert "secret" not in answer.message
    assert "c6af9ac6-7b61-11e6-9a41-93e8deadbeef" in answer.message  # the request id
    errors = [r for r in logged.records if r.levelno == logging.ERROR]
    assert errors and "secret detail in /var/task" in str(errors[0].exc_info[1])


# ---------------------------------------------------------------------- GET routes
def test_health_answers_ok_and_nothing_more(app, champion):
    # Open to anyone (no API key): no model names, versions or runtime details.
    assert call(app, body={"instances": SAMPLE_ROWS}).status == HTTPStatus.OK  # one loaded

    answer = Answer(app.lambda_handler(sample("apigw-health.json"), LambdaContext()))

    assert answer.status == HTTPStatus.OK
    assert answer.json == {"status": "ok"}


def test_models_lists_each_model_and_its_champion(app, champion, adapters):
    Catalog(adapters[1]).add_model("still-training")

    answer = Answer(app.lambda_handler(sample("apigw-models.json"), LambdaContext()))

    assert answer.status == HTTPStatus.OK
    assert answer.json == {
        "models": [
            {"name": "breast-cancer", "champion": champion},
            {"name": "still-training", "champion": None},
        ]
    }


def test_a_model_is_described_with_its_input_schema(app, champion):
    answer = call(app, method="GET", path="/models/breast-cancer")

    assert answer.status == HTTPStatus.OK
    assert answer.json["champion"] == champion
    assert answer.json["task"] == "classification"
    assert [f["name"] for f in answer.json["features"]] == FEATURES
    assert answer.json["classes"] == CLASSES


def test_describing_an_unknown_model_is_a_404(app, champion):
    answer = call(app, method="GET", path="/models/no-such-model")

    assert answer.status == HTTPStatus.NOT_FOUND


def test_after_its_first_answer_the_function_keeps_its_heap_out_of_full_collections(app, champion):
    gc.unfreeze()
    assert gc.get_freeze_count() == 0

    first = call(app, body={"instances": SAMPLE_ROWS})

    assert first.status == HTTPStatus.OK
    assert gc.get_freeze_count() > 0


COLD_START = """
import importlib.util, json, sys
from dropflow_dev.lambda_context import LambdaContext
spec = importlib.util.spec_from_file_location("app", sys.argv[1])
app = importlib.util.module_from_spec(spec)
sys.modules["app"] = app
spec.loader.exec_module(app)
answer = app.lambda_handler(json.loads(sys.argv[2]), LambdaContext())
heavy = ("aws_xray_sdk", "aws_lambda_powertools.event_handler", "pydantic_settings", "torch",
         "starlette", "uvicorn", "serving")
loaded = sorted({m.split(".")[0] if m.startswith("aws_x") else m for m in sys.modules
                 if m.startswith(heavy)})
print(json.dumps({"status": answer["statusCode"], "loaded": loaded}))
"""


def test_a_cold_start_answering_a_prediction_loads_no_tracer_resolver_or_settings_library(
    champion,
):
    # What a client waits for on a cold start: X-Ray's SDK (with botocore) ~0.2 s, powertools'
    # event handler and OpenAPI machinery ~50 ms, pydantic-settings ~30 ms. A prediction
    # needs none of them (the resolver is built for the first request that is not one), nor
    # the container tier's ASGI server, which shares the function's endpoint.
    event = json.dumps(sample("apigw-predict.json"))

    done = subprocess.run(
        [sys.executable, "-c", COLD_START, str(PREDICT_APP), event],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )

    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report == {"status": HTTPStatus.OK, "loaded": []}
