"""Which job published a version, and whether the bytes read now are the ones it published.

Anyone who can write under `models/` can make a version folder; only a training job records,
on its own registry record, the version it published and the sha256 of its files
(training/job.py, before card.json). Promotion and rollback trust a version only when its
card names a job of the same model that recorded this very version, and the bytes they read
hash to what that job recorded (dropflow.vocabulary.digests). Each refusal says what does not
hold and what to do, in words a person can act on.
"""

from __future__ import annotations

from collections.abc import Mapping

from dropflow.errors import DropflowError, NotFoundError
from dropflow.ports import Registry
from dropflow.records.jobs import JobStore
from dropflow.vocabulary.digests import mismatch


class Untrusted(DropflowError):
    """The version's files are not what a known job of its model published (the message says
    which and why)."""


def published_digests(model: str, version: str, job_id: str, registry: Registry) -> dict[str, str]:
    """The digests (file name -> sha256 hex) that job `job_id` recorded when it published
    `version` of `model`.

    Raises Untrusted when no job of `model` recorded `version`: the job is unknown (a card
    written by hand), belongs to another model, published another version, or recorded no
    digests.
    """
    try:
        job = JobStore(registry).get(job_id)
    except NotFoundError:
        raise Untrusted(
            f"no job published this version: its card.json names job {job_id!r}, which the "
            f"registry does not know. Only a training job publishes a version; drop the data "
            f"under datasets/{model}/ to train one"
        ) from None
    if job.model != model:
        raise Untrusted(
            f"no job of {model} published this version: its card.json names job {job_id}, a "
            f"job of model {job.model}"
        )
    if job.version != version:
        published = f"version {job.version}" if job.version else "no version yet"
        raise Untrusted(
            f"no job published this version: job {job_id} recorded {published}, not {version}"
        )
    if not job.digests:
        raise Untrusted(
            f"job {job_id} recorded no digests for {version} (it ran before dropflow recorded "
            f"them): retrain {model} to publish a version that can be verified"
        )
    return dict(job.digests)


def check_bytes(name: str, data: bytes, digests: Mapping[str, str], job_id: str) -> None:
    """Raise Untrusted unless `data`, read as the file `name`, hashes to what job `job_id`
    recorded in `digests` ("model.onnx differs from what job J published ...")."""
    problem = mismatch(name, data, digests, f"job {job_id}")
    if problem is not None:
        raise Untrusted(problem)
