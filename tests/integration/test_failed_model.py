"""A model whose only job failed answers with that failure, not a promise to retry.

The launcher claims the drop (a FakeCompute records the launch) and the test plays the
instance by running the training entrypoint's run_job, as EC2 would: the job fails on the
data and records why. The predict function, called with events/ files, then answers 404 with
the job and its reason on the simple API and the Open Inference Protocol alike, until a new
drop starts another job: then 503 with Retry-After again, while it runs.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest

from dropflow.control.launcher import Launcher
from dropflow.records.jobs import ExitCode, JobState, JobStore
from dropflow_dev.demo import breast_cancer_csv
from dropflow_dev.lambda_context import LambdaContext
from tests.fakes_compute import FakeCompute
from tests.fakes_serving import ProxyAnswer, load_handler
from training.job import run_job

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

ROOT = Path(__file__).resolve().parents[2]
MODEL = "cancer"
# A spec naming a feature the data does not have: the job fails as a user error. (A target
# the data does not have fails before any launch: the launcher reads the header.)
BAD_SPEC = b"target: diagnosis\nfeatures: [mean radius, mean radiuss]\n"


def request(app: Any, method: str, path: str, body: Any = None) -> ProxyAnswer:
    event = json.loads((ROOT / "events" / "apigw-predict.json").read_text())
    event["httpMethod"], event["path"] = method, path
    event["body"] = None if body is None else json.dumps(body)
    return ProxyAnswer(app.lambda_handler(event, LambdaContext(function_name="PredictFunction")))


def message(answer: ProxyAnswer) -> str:
    # Under /v2 the protocol's {"error": "..."}; elsewhere {"error": {"code", "message"}}.
    error = answer.json["error"]
    return error if isinstance(error, str) else error["message"]


def test_a_model_whose_job_failed_answers_why_until_a_new_drop(adapters):
    store, registry = adapters
    launcher = Launcher(store, registry, FakeCompute())
    store.put(f"datasets/{MODEL}/data.csv", breast_cancer_csv())
    store.put(f"datasets/{MODEL}/dropflow.yaml", BAD_SPEC)
    outcome = launcher.request_training(MODEL)
    assert outcome.action == "launched", outcome
    assert run_job(outcome.job_id, 1, store, registry) == ExitCode.USER_ERROR
    failed = JobStore(registry).get(outcome.job_id)
    assert failed.state == JobState.FAILED and failed.reason
    launcher.release_slot(MODEL, outcome.job_id)
    app = load_handler(ROOT / "functions" / "predict" / "app.py")

    predict = request(app, "POST", f"/models/{MODEL}/predict", {"instances": [[1.0] * 30]})
    ready = request(app, "GET", f"/v2/models/{MODEL}/ready")
    metadata = request(app, "GET", f"/v2/models/{MODEL}")

    says = f"its last training job {outcome.job_id} failed: {failed.reason[:60]}"
    for answer in (predict, ready, metadata):
        assert answer.status == HTTPStatus.NOT_FOUND
        assert "Retry-After" not in answer.headers
        assert says in message(answer)
        assert "retry" not in message(answer)

    store.put(f"datasets/{MODEL}/dropflow.yaml", b"target: diagnosis\n")  # the fix
    assert launcher.request_training(MODEL).action == "launched"
    app.SERVICE.cache.champion_ttl = 0.0  # the cached answer is past its time

    training = request(app, "POST", f"/models/{MODEL}/predict", {"instances": [[1.0] * 30]})
    assert training.status == HTTPStatus.SERVICE_UNAVAILABLE
    assert int(training.headers["Retry-After"]) > 0
    assert "no champion yet" in message(training)
