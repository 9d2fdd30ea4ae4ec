"""The digests that bind a version's files to the job that published them, and the job
records that hold them: the partition a training instance may write, apart from the catalog."""

from __future__ import annotations

import hashlib

from dropflow.records.catalog import Catalog, VersionRecord, model_pk
from dropflow.records.jobs import Job, JobStore, jobs_pk
from dropflow.vocabulary.digests import CHUNK_BYTES, file_sha256_hex, mismatch, sha256_hex
from tests.unit.fakes import MemoryRegistry

JOB = "iris-20261123T101500Z-0a1b2c"


def test_a_file_is_hashed_a_chunk_at_a_time_to_the_digest_of_its_bytes(tmp_path):
    data = bytes(range(256)) * (CHUNK_BYTES // 256 * 2 + 3)  # over two chunks and a bit
    path = tmp_path / "model.onnx"
    path.write_bytes(data)
    assert file_sha256_hex(path) == sha256_hex(data) == hashlib.sha256(data).hexdigest()


def test_matching_bytes_have_no_mismatch():
    assert mismatch("model.onnx", b"graph", {"model.onnx": sha256_hex(b"graph")}, "job J") is None


def test_other_bytes_are_named_with_the_job_and_both_digests():
    problem = mismatch("model.onnx", b"other", {"model.onnx": sha256_hex(b"graph")}, "job J")
    assert problem is not None
    assert problem.startswith("model.onnx differs from what job J published")
    assert sha256_hex(b"other")[:16] in problem and sha256_hex(b"graph")[:16] in problem


def test_a_file_without_a_recorded_digest_was_not_published_by_the_job():
    problem = mismatch("extra.onnx", b"x", {"model.onnx": sha256_hex(b"x")}, "job J")
    assert problem == "job J recorded no digest for extra.onnx: it did not publish that file"


def test_jobs_live_in_a_partition_of_their_own_apart_from_the_catalog():
    registry = MemoryRegistry()
    jobs = JobStore(registry)
    jobs.create(Job(job_id=JOB, model="iris", data_version="d1"))
    Catalog(registry).record_version(VersionRecord(model="iris", version="v1", job_id=JOB))

    # What template.yaml's training role may write (dynamodb:LeadingKeys JOBS#*) holds the
    # jobs and nothing of the catalog's.
    assert [r.sk for r in registry.query(jobs_pk("iris"))] == [f"JOB#{JOB}"]
    assert [r.sk for r in registry.query(model_pk("iris"))] == ["VERSION#v1"]
    assert jobs_pk("iris").startswith("JOBS#") and not model_pk("iris").startswith("JOBS#")


def test_a_publication_records_the_version_and_its_digests_on_the_job():
    jobs = JobStore(MemoryRegistry())
    jobs.create(Job(job_id=JOB, model="iris", data_version="d1"))
    digests = {"model.onnx": sha256_hex(b"m"), "card.json": sha256_hex(b"c")}
    jobs.record_publication(JOB, "v20261123T101600Z-0a1b2c", digests)
    job = jobs.get(JOB)
    assert (job.version, job.digests) == ("v20261123T101600Z-0a1b2c", digests)
