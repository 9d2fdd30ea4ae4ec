"""Two CPU processes with the gloo backend (torchrun) train the model one process trains.

Each rank takes its share of every global batch and DistributedDataParallel averages the
gradients, so 2 ranks with B/2 rows take the steps 1 rank takes with B rows. Only the order of
floating-point sums differs: the tolerance is max |2 ranks - 1 rank| <= 1e-5 on every weight
(measured: about 3e-8 after a few epochs). torchrun runs with a free port on 127.0.0.1, a
bounded wait, and is killed if it outlives it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from sklearn.datasets import load_breast_cancer

from dropflow.records.jobs import ExitCode, JobState, JobStore
from dropflow.vocabulary.card import read_card
from dropflow.wiring import open_registry, open_store
from tests.net import free_port
from tests.training_jobs import launched_job
from training.checkpoint import loads
from training.job import run_job

REPO = Path(__file__).resolve().parents[2]
DRIVER = Path(__file__).with_name("ddp_driver.py")
TOLERANCE = 1e-5
TIMEOUT = 120  # seconds for a torchrun launch: two interpreters importing torch, then seconds


def torchrun(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={free_port()}",
        *args,
    ]
    environment = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "DROPFLOW_DEVICE": "cpu",
        "AWS_EC2_METADATA_DISABLED": "true",
        **(env or {}),
    }
    # subprocess.run kills the whole launch (torchrun and, through it, its workers) on timeout.
    return subprocess.run(
        command,
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
        start_new_session=True,
    )


def max_weight_diff(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k] - b[k]).abs().max()) for k in a)


@pytest.mark.slow
def test_a_notice_on_rank_0_stops_both_ranks_at_one_step_and_they_resume_to_one_process(
    tmp_path,
):
    sys.path.insert(0, str(DRIVER.parent))
    try:
        import ddp_driver
    finally:
        sys.path.remove(str(DRIVER.parent))
    out = tmp_path / "out"
    out.mkdir()
    done = torchrun(str(DRIVER), "--bucket", str(tmp_path / "bucket"), "--out", str(out))
    assert done.returncode == 0, done.stdout + done.stderr

    reports = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    # Only rank 0 saw the notice; both stopped at the same step, and both resumed from it.
    assert {r["stopped_at"] for r in reports} == {ddp_driver.STOP_AFTER}
    assert not any(r["completed_first"] for r in reports)
    assert {r["resumed_from"] for r in reports} == {ddp_driver.STOP_AFTER}
    assert reports[0]["losses"] == reports[1]["losses"]

    single = ddp_driver.fit(None)
    two_ranks = torch.load(out / "weights.pt", weights_only=True)
    assert max_weight_diff(two_ranks, single.network.state_dict()) <= TOLERANCE
    assert reports[0]["final_step"] == single.step
    # Rank 0 judged the validation rows and fitted the temperature: the same as one process.
    assert float(two_ranks["temperature"]) == single.network.temperature.item() != 1.0


def final_weights(store, model: str, job_id: str) -> dict[str, torch.Tensor]:  # type: ignore[no-untyped-def]
    manifest = json.loads(store.get(f"jobs/{model}/{job_id}/manifest.json"))
    return loads(store.get(manifest["checkpoint"]))["model"]


@pytest.mark.slow
def test_torchrun_runs_the_job_on_two_ranks_and_rank_0_publishes_the_one_process_model(
    tmp_path,
):
    store = open_store(f"file://{tmp_path}/bucket")
    registry = open_registry(f"sqlite://{tmp_path}/registry.db")
    jobs = JobStore(registry)
    data = load_breast_cancer(as_frame=True).frame.to_csv(index=False).encode()
    # No dropout: two ranks draw other masks than one process (the weights are compared).
    spec = b"training: {epochs: 10}\nmodel: {dropout: 0.0}\n"
    for model in ("bc-one", "bc-two"):
        store.put(f"datasets/{model}/data.csv", data)
        store.put(f"datasets/{model}/dropflow.yaml", spec)
    one, two = launched_job(jobs, "bc-one"), launched_job(jobs, "bc-two")

    assert run_job(one, 1, store, registry) == ExitCode.OK
    done = torchrun(
        "-m",
        "training",
        "--job-id",
        two,
        "--attempt",
        "1",
        env={
            "DROPFLOW_STORE_URL": f"file://{tmp_path}/bucket",
            "DROPFLOW_REGISTRY_URL": f"sqlite://{tmp_path}/registry.db",
        },
    )
    assert done.returncode == ExitCode.OK, done.stdout + done.stderr

    job = jobs.get(two)
    assert job.state == JobState.PUBLISHED
    card = read_card(store, "bc-two", job.version)
    assert card.model_extra["training"]["world_size"] == 2
    assert card.model_extra["training"]["device"] == "cpu x2 (DDP)"
    assert len(store.list("models/bc-two/")) == 4  # one version: rank 1 published nothing
    diff = max_weight_diff(final_weights(store, "bc-two", two), final_weights(store, "bc-one", one))
    assert diff <= TOLERANCE
