"""The tabular reader's memory (issue 13): a generated 200,000-row table, 32 feature columns,
read in little more than the float32 matrix it becomes, as CSV and as Parquet.

The read runs in a child process that has already read a tiny table (imports and pyarrow's
first-use allocations out of the way); its peak resident memory (VmHWM) over its resident
memory just before the read is the read's own. The bound is generous, three times the float32
matrix plus a fixed allowance for pyarrow's read-ahead buffers and allocator pools, so a busy
machine cannot make it fail: this reader needs about 110 MB for the CSV and 90 MB for the
Parquet file (bound 201 MB); the reader it replaced needed 358 MB and 207 MB.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from dropflow.adapters.local.directory_store import DirectoryStore

pytestmark = pytest.mark.slow

ROWS = 200_000
NUMBERS, CATEGORICAL = 28, 4
ALLOWANCE_MB = 128

CHILD = r"""
import json, sys
from pathlib import Path
from dropflow.adapters.local.directory_store import DirectoryStore
from dropflow.vocabulary.spec import Spec
from training.data import load_dataset

def mb(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024

store = DirectoryStore(Path(sys.argv[1]))
load_dataset(store, "warm-up", Spec())
before = mb("VmRSS")
data = load_dataset(store, "big", Spec())
print(json.dumps({
    "growth_mb": mb("VmHWM") - before,
    "matrix_mb": data.x.shape[0] * data.x.shape[1] * 4 / 2**20,
    "shape": list(data.x.shape),
    "dtype": str(data.x.dtype),
    "categorical": sum(c.kind == "category" for c in data.columns),
}))
"""


def table(rows: int) -> pa.Table:
    """Numbers (a few with missing cells), text categories and a two-class target."""
    rng = np.random.default_rng(0)
    columns = {}
    for j in range(NUMBERS):
        columns[f"n{j}"] = pa.array(rng.normal(size=rows), mask=rng.random(rows) < 0.02 * (j % 2))
    for j in range(CATEGORICAL):
        columns[f"c{j}"] = np.array([f"c{j}_{k}" for k in range(5 + 10 * j)])[
            rng.integers(0, 5 + 10 * j, rows)
        ]
    columns["target"] = np.where(rng.random(rows) < 0.5, "yes", "no")
    return pa.table(columns)


@pytest.fixture(scope="module")
def bucket(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("memory")
    folder = root / "bucket" / "datasets"
    for model, rows in (("warm-up", 100), ("big", ROWS)):
        (folder / f"{model}-csv").mkdir(parents=True)
        (folder / f"{model}-parquet").mkdir(parents=True)
        data = table(rows)
        pacsv.write_csv(data, folder / f"{model}-csv" / "data.csv")
        pq.write_table(data, folder / f"{model}-parquet" / "data.parquet")
    return root / "bucket"


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_reading_200k_rows_takes_little_more_than_the_float32_matrix(bucket, fmt):
    store = DirectoryStore(bucket)
    assert store.list(f"datasets/big-{fmt}/")  # the table is in the bucket
    script = CHILD.replace('"warm-up"', f'"warm-up-{fmt}"').replace('"big"', f'"big-{fmt}"')

    done = subprocess.run(
        [sys.executable, "-c", script, str(bucket)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )

    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.splitlines()[-1])
    assert figures["shape"] == [ROWS, NUMBERS + CATEGORICAL] and figures["dtype"] == "float32"
    assert figures["categorical"] == CATEGORICAL
    bound = 3 * figures["matrix_mb"] + ALLOWANCE_MB
    assert figures["growth_mb"] <= bound, figures
