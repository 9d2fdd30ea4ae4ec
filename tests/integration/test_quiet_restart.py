"""`dropflow local up` on a home it ran before: the files already there replay decisions made
earlier, and the console says so in one line per model instead of one per file (issue 15)."""

from __future__ import annotations

import pytest

from dropflow import wiring
from dropflow.promotion.gate import promote
from dropflow.records.catalog import model_pk
from dropflow.records.jobs import JobState
from dropflow.vocabulary.datasets import data_version, dataset_prefix
from dropflow_dev.local.runtime import LocalRuntime, configure
from tests.fakes_serving import publish, version_id
from tests.net import wait_until

pytestmark = pytest.mark.filterwarnings("ignore:No application metrics to publish")

V1, V2 = version_id(1), version_id(2)
SECONDS = 60  # the handlers load and a few turns of the loop, on a loaded 2-core machine


@pytest.fixture
def home(tmp_path, restored_environ):
    """The home of an earlier run: model `m` trained on its data, two versions decided."""
    configure(tmp_path)
    store, registry = wiring.store(), wiring.registry()
    store.put(f"{dataset_prefix('m')}data.csv", b"a,b,c,d,target\n1,2,3,4,yes\n5,6,7,8,no\n")
    # What the earlier run's launcher left: this data version is claimed, trained.
    claim = f"CLAIM#{data_version(store.list(dataset_prefix('m')))}"
    assert registry.put_if_absent(model_pk("m"), claim, {"trigger": "drop", "at": 0.0})
    publish(store, registry, "m", V1, value=0.90, seed=0)
    publish(store, registry, "m", V2, value=0.95, seed=1)
    assert promote("m", V1, store, registry).decision == "approved"
    assert promote("m", V2, store, registry).decision == "approved"
    jobs = wiring.jobs()
    for job in jobs.all():  # their jobs ended, as a real job does once its card is written
        jobs.transition(job.job_id, JobState.PUBLISHED)
    return tmp_path


def _restart(home, *, verbose: bool) -> list[str]:
    """The console of a `local up` on `home` until its summary line, then stopped."""
    lines: list[str] = []
    runtime = LocalRuntime(
        home, port=0, container=False, settle_seconds=0.0, verbose=verbose, say=lines.append
    )
    try:
        runtime.start()
        wait_until(
            lambda: runtime.tick() or any(line.startswith("m: ") for line in lines),
            SECONDS,
            interval=0.1,
            what=lambda: f"the summary line; console: {lines}",
        )
    finally:
        runtime.stop()
    return lines


def test_a_restart_prints_one_summary_line_per_model_instead_of_the_replays(home):
    lines = _restart(home, verbose=False)

    assert f"m: champion {V2}, 2 versions, nothing to do" in lines
    assert not [line for line in lines if "duplicate" in line or "decided earlier" in line]


def test_verbose_keeps_the_replayed_lines(home):
    lines = _restart(home, verbose=True)

    assert any(line.startswith("[m] duplicate: data version") for line in lines), lines
    decided = [line for line in lines if "(decided earlier)" in line]
    assert {line.split()[1] for line in decided} == {V1, V2}
    assert f"m: champion {V2}, 2 versions, nothing to do" in lines
