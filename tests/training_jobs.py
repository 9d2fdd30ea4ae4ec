"""Jobs as the launcher leaves them, for tests that run the training entrypoint directly."""

from __future__ import annotations

from typing import Any

from dropflow.records.jobs import Attempt, Job, JobState, JobStore
from dropflow.vocabulary.names import new_job_id


def launched_job(
    jobs: JobStore,
    model: str,
    *,
    data_version: str | None = None,
    state: JobState = JobState.LAUNCHING,
    **attempt: Any,
) -> str:
    """Record a job whose first attempt is on its instance (`local-1`, spot, unless `attempt`
    says otherwise); its id. The data version defaults to `<model>-v1`."""
    job_id = new_job_id(model)
    first = Attempt(number=1, **{"instance_id": "local-1", "lifecycle": "spot", **attempt})
    jobs.create(
        Job(
            job_id=job_id,
            model=model,
            data_version=data_version or f"{model}-v1",
            state=state,
            attempts=[first],
        )
    )
    return job_id
