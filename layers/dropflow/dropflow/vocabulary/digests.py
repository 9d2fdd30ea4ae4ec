"""SHA-256 digests of a version's files: what binds the bytes promoted and served to the job
that produced them.

The training job hashes model.onnx, reference.npz, card.json and the files a family publishes
beside them (a text model's tokenizer.json, named in the card's `files`) as it publishes them and
records the digests on its job before card.json appears (training/job.py,
dropflow.records.jobs.Job.digests). Promotion hashes the bytes it reads and approves a version
only when they match (dropflow.promotion.provenance), and keeps the digests on the version's
record (dropflow.records.catalog.VersionRecord.digests); serving and rollback hash what they
load and refuse a mismatch. Digests are keyed by the file's name within the version's folder
and written as lowercase hex.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping

# Read this much of a file at a time: a model.onnx may be hundreds of MB.
CHUNK_BYTES = 1 << 20


def sha256_hex(data: bytes) -> str:
    """The SHA-256 of `data`, as lowercase hex."""
    return hashlib.sha256(data).hexdigest()


def file_sha256_hex(path: str | os.PathLike[str]) -> str:
    """The SHA-256 of the file at `path`, as lowercase hex, read a chunk at a time."""
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        while chunk := file.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def mismatch(name: str, data: bytes, recorded: Mapping[str, str], source: str) -> str | None:
    """Why `data`, read as the file `name`, is not what `source` (e.g. "job <id>") published,
    or None when its digest is the one recorded.

    The sentence names the file and the source, and shows the start of both digests so that
    a person can tell which copy is which.
    """
    expected = recorded.get(name)
    if expected is None:
        return f"{source} recorded no digest for {name}: it did not publish that file"
    actual = sha256_hex(data)
    if actual != expected:
        return (
            f"{name} differs from what {source} published "
            f"(sha256 {actual[:16]}..., recorded {expected[:16]}...)"
        )
    return None
