"""The serving benchmark's baselines (bench/serving.py) on what the job trains: the torch.load
handler gets the job's own network back from its final checkpoint, for the default network and
for the MLP, and answers what the published graph answers; a network that the job's split and
data no longer reproduce is refused instead of being timed."""

from __future__ import annotations

import copy
import json
import runpy
import shutil
from http import HTTPStatus
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bench import serving
from dropflow.records.jobs import ExitCode, JobStore
from dropflow.wiring import open_registry, open_store
from dropflow_dev.demo import breast_cancer_csv
from tests.training_jobs import launched_job
from training.job import run_job

pytestmark = pytest.mark.slow

BASELINES = Path(serving.__file__).resolve().parent / "baselines"
SPECS = {
    "default network": "target: diagnosis\ntraining: {epochs: 3}\n",
    "mlp": "target: diagnosis\nmodel: {family: mlp}\ntraining: {epochs: 3}\n",
}


@pytest.fixture(scope="module", params=list(SPECS))
def home(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dropflow home where a job trained and published the benchmark's model."""
    home = tmp_path_factory.mktemp("bench-serving")
    store = open_store(f"file://{home}/bucket")
    registry = open_registry(f"sqlite://{home}/registry.db")
    store.put(f"datasets/{serving.MODEL}/data.csv", breast_cancer_csv())
    store.put(f"datasets/{serving.MODEL}/dropflow.yaml", SPECS[request.param].encode())
    job_id = launched_job(JobStore(registry), serving.MODEL)
    assert run_job(job_id, 1, store, registry) == ExitCode.OK
    return home


def answer(handler_file: Path, model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The baseline handler's answer to a 5-row predict event, loaded as a cold start does."""
    monkeypatch.setenv("BENCH_MODEL_DIR", str(model_dir))
    handler = runpy.run_path(str(handler_file))["lambda_handler"]
    reply = handler(copy.deepcopy(serving.predict_event(serving.rows(5))), None)
    assert reply["statusCode"] == HTTPStatus.OK
    return json.loads(reply["body"])


def test_the_torch_baseline_answers_what_the_published_graph_answers(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    onnx_dir, torch_dir, card = serving.export_baselines(home, tmp_path / "baselines")

    from_graph = answer(BASELINES / "onnx_app.py", onnx_dir, monkeypatch)
    from_torch = answer(BASELINES / "torch_app.py", torch_dir, monkeypatch)

    assert from_torch["predictions"] == from_graph["predictions"]
    np.testing.assert_allclose(
        from_torch["probabilities"], from_graph["probabilities"], rtol=0, atol=1e-5
    )
    assert set(from_graph["predictions"]) <= set(card["classes"])


def test_a_dataset_changed_since_training_is_refused(home: Path, tmp_path: Path) -> None:
    changed = tmp_path / "home"
    shutil.copytree(home, changed)
    data = changed / "bucket" / "datasets" / serving.MODEL / "data.csv"
    header, *lines = data.read_text().splitlines()
    data.write_text("\n".join([header, *reversed(lines)]) + "\n")

    with pytest.raises(SystemExit, match=r"does not give reference\.npz's rows"):
        serving.rebuild_network(changed / "bucket")
