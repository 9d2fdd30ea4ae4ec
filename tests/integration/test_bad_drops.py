"""A broken dataset or spec fails its job with a message naming the problem, and the model in
service keeps serving: nothing a data owner drops can replace a working champion.

The launcher claims each drop (a FakeCompute records the launch) and the test plays the
instance by running the training entrypoint's run_job for that attempt, as EC2 would.
"""

from __future__ import annotations

import pytest

from dropflow.adapters.local.process_compute import ProcessCompute
from dropflow.control.launcher import Launcher
from dropflow.promotion.gate import promote
from dropflow.records.jobs import ExitCode, JobState
from dropflow.serving.service import ModelCache, PredictionService
from dropflow_dev.demo import breast_cancer_csv
from tests.fakes_compute import FakeCompute
from training.job import run_job

pytestmark = pytest.mark.slow

MODEL = "cancer"
CSV = breast_cancer_csv()
SPEC = b"target: diagnosis\n"  # the label is not named like a target: the spec says which
HEADER, FIRST_ROW = CSV.decode().splitlines()[:2]
ROW = [float(v) for v in FIRST_ROW.split(",")[:-1]]


def _train(launcher: Launcher, store, registry) -> tuple[int, str]:
    outcome = launcher.request_training(MODEL)
    assert outcome.action == "launched", outcome
    code = run_job(outcome.job_id, 1, store, registry)
    return code, outcome.job_id


@pytest.fixture
def serving(store, registry):
    """A champion trained on good data, and a launcher for the next drops."""
    launcher = Launcher(store, registry, FakeCompute())
    store.put(f"datasets/{MODEL}/dropflow.yaml", SPEC)
    store.put(f"datasets/{MODEL}/data.csv", CSV)
    code, job_id = _train(launcher, store, registry)
    assert code == ExitCode.OK
    version = launcher.jobs.get(job_id).version
    assert promote(MODEL, version, store, registry).decision == "approved"
    launcher.hand_over(MODEL, job_id)
    service = PredictionService(ModelCache(store, registry, champion_ttl=0))
    assert service.predict(MODEL, [ROW])["version"] == version
    return launcher, service, version


_cells = FIRST_ROW.split(",")
BROKEN_CSV = "\n".join([HEADER, FIRST_ROW, ",".join([_cells[0], "twelve", *_cells[2:]])]).encode()
# An upload interrupted in the middle of its third line: 7 of the row's fields arrived.
CUT_CSV = "\n".join([HEADER, FIRST_ROW, ",".join(_cells[:7])[:-2]]).encode()


@pytest.mark.parametrize(
    ("key", "content", "expected"),
    [
        (
            f"datasets/{MODEL}/more.csv",
            BROKEN_CSV,
            ["datasets/cancer/more.csv", "line 3", "'mean texture'", "'twelve'"],
        ),
        (
            f"datasets/{MODEL}/part-2.csv",
            CUT_CSV,
            [
                "datasets/cancer/part-2.csv, line 3: 7 fields, the header has",
                "the file may have been cut off mid-upload",
            ],
        ),
    ],
    ids=["broken-csv-row", "csv-cut-mid-row"],
)
def test_a_bad_drop_fails_with_the_problem_named_and_the_champion_keeps_serving(
    serving, store, registry, key, content, expected
):
    launcher, service, champion = serving

    store.put(key, content)
    code, job_id = _train(launcher, store, registry)

    assert code == ExitCode.USER_ERROR
    job = launcher.jobs.get(job_id)
    assert job.state == JobState.FAILED
    for part in expected:
        assert part in (job.reason or ""), job.reason
    published = {o.key.split("/")[2] for o in store.list(f"models/{MODEL}/")}
    assert published == {champion}  # nothing of the failed job was published
    answer = service.predict(MODEL, [ROW])
    assert answer["version"] == champion
    assert answer["predictions"] == [FIRST_ROW.split(",")[-1]]


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            b"training:\n  epochs: -3\n",
            f"datasets/{MODEL}/dropflow.yaml: training.epochs: Input should be greater than 0",
        ),
        (
            b"target: diagnosys\n",
            f"target column 'diagnosys' (from datasets/{MODEL}/dropflow.yaml) not found; "
            "available columns: mean radius,",
        ),
    ],
    ids=["invalid-spec", "unknown-target"],
)
def test_an_invalid_spec_fails_its_job_before_any_launch_and_the_champion_keeps_serving(
    serving, store, spec, expected
):
    launcher, service, champion = serving
    store.put(f"datasets/{MODEL}/dropflow.yaml", spec)

    outcome = launcher.request_training(MODEL)

    assert outcome.action == "failed"
    assert launcher.compute.launches[-1].job_id != outcome.job_id  # no instance for a typo
    job = launcher.jobs.get(outcome.job_id)
    assert job.state == JobState.FAILED and job.attempts == []
    assert (job.reason or "").startswith(expected)
    published = {o.key.split("/")[2] for o in store.list(f"models/{MODEL}/")}
    assert published == {champion}
    assert service.predict(MODEL, [ROW])["version"] == champion


def test_a_spec_typo_fails_before_any_training_process_starts(store, registry, tmp_path):
    # Issue 15: the local runtime's own Compute, a child process per launch: none is started.
    compute = ProcessCompute(tmp_path / "compute")
    launcher = Launcher(store, registry, compute)
    store.put(f"datasets/{MODEL}/dropflow.yaml", b"target: diagnosis\ntrainig: {epochs: 5}\n")
    store.put(f"datasets/{MODEL}/data.csv", CSV)

    outcome = launcher.request_training(MODEL)

    assert outcome.action == "failed"
    assert compute.list_instances() == []
    assert not any((tmp_path / "compute").iterdir())
    job = launcher.jobs.get(outcome.job_id)
    assert job.state == JobState.FAILED and job.attempts == []
    assert (job.reason or "").startswith(f"datasets/{MODEL}/dropflow.yaml: trainig")
