"""The training job's memory (issue 13): a generated 100,000-row table, 32 feature columns,
trained with the default network, exported, checked and promoted in little more than its
float32 matrix.

What this guards against is running the ensemble on whole row sets at once: the per-epoch
holdout score, the holdout metrics, the parity check (torch and onnxruntime) and promotion's
parity re-check each took about 33-50 KB per holdout row ([rows, 16 submodels, width]
activations), over 1 GB for this table's 20,000 holdout rows and 11.5 GB at 1,000,000 rows.

The job runs in a child process that has already run a tiny job (imports, the exporter's and
onnxruntime's first-use allocations out of the way); its peak resident memory (VmHWM) over its
resident memory just before the big job is the job's own. The bound is generous, four times
the float32 matrix plus a fixed allowance for the reader's buffers, the export and the
allocators' pools (449 MB), so that allocator noise cannot make it fail: the job measured
240 MB here, where the whole-set passes measured 1,151 MB.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
ROWS = 100_000
NUMBERS, CATEGORIES = 28, (5, 15, 25, 35)
ALLOWANCE_MB = 400
SPEC = "training: {epochs: 1}\n"

CHILD = r"""
import json, sys
from pathlib import Path
from dropflow.adapters.local.directory_store import DirectoryStore
from dropflow.adapters.local.sqlite_registry import SqliteRegistry
from dropflow.promotion.gate import promote
from dropflow.records.jobs import JobStore
from tests.training_jobs import launched_job
from training.job import run_job

def mb(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024

store = DirectoryStore(Path(sys.argv[1]))
registry = SqliteRegistry(Path(sys.argv[2]))
jobs = JobStore(registry)

def job(model):
    job_id = launched_job(jobs, model)
    code = run_job(job_id, 1, store, registry)
    record = jobs.get(job_id)
    assert code == 0, record.reason
    decision = promote(model, record.version, store, registry)
    assert decision.decision == "approved", decision.reason
    return json.loads(store.get(f"models/{model}/{record.version}/card.json"))

job("warm-up")
before = mb("VmRSS")
card = job("big")
print(json.dumps({
    "growth_mb": mb("VmHWM") - before,
    "matrix_mb": (card["metrics"]["holdout_rows"] + card["metrics"]["train_rows"])
    * len(card["features"]) * 4 / 2**20,
    "holdout_rows": card["metrics"]["holdout_rows"],
}))
"""


def table(rows: int) -> pa.Table:
    """Numbers (a few with missing cells), text categories and a two-class target that
    depends on them."""
    rng = np.random.default_rng(0)
    columns: dict[str, object] = {}
    score = np.zeros(rows)
    for j in range(NUMBERS):
        values = rng.normal(size=rows)
        score += values / (j + 1)
        columns[f"n{j:02d}"] = pa.array(values, mask=rng.random(rows) < 0.02 * (j % 2))
    for j, count in enumerate(CATEGORIES):
        codes = rng.integers(0, count, rows)
        score += (codes % 3 - 1) * 0.5
        columns[f"c{j}"] = np.array([f"c{j}_{k}" for k in range(count)])[codes]
    columns["target"] = np.where(score + rng.normal(scale=0.7, size=rows) > 0, "yes", "no")
    return pa.table(columns)


@pytest.fixture(scope="module")
def bucket(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("job-memory") / "bucket"
    for model, rows in (("warm-up", 2_000), ("big", ROWS)):
        folder = root / "datasets" / model
        folder.mkdir(parents=True)
        pq.write_table(table(rows), folder / "data.parquet")
        (folder / "dropflow.yaml").write_text(SPEC)
    return root


def test_a_100k_row_job_trains_exports_and_is_promoted_in_little_more_than_its_matrix(
    bucket, tmp_path
):
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(bucket), str(tmp_path / "registry.db")],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO), "POWERTOOLS_LOG_LEVEL": "WARNING"},
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.splitlines()[-1])
    assert figures["holdout_rows"] == ROWS // 5
    bound = 4 * figures["matrix_mb"] + ALLOWANCE_MB
    assert figures["growth_mb"] <= bound, figures
