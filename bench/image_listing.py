"""Benchmark: listing and hashing a folder of many small images (issue 14: the data version
and the exactly-once claim must stay fast at 100,000 files).

Writes N distinct small PNG files (default 100,000 grey 32 x 32 noise, about 1.1 KB each)
into datasets/many/<label>/ of a local store (a directory, as `dropflow local up` uses) in a
temporary folder, removed afterwards, then times in fresh child processes what the drop path
does with them:

- claim: what the launcher's request_training does before it creates a job (list the prefix,
  hash every key and ETag into the data version, claim it in the registry): the first list
  in a process hashes every file's content for its ETag (the local store's stand-in for S3's);
- again: the same process claiming again (the duplicate answer), with the ETags cached;
- job listing: the training job's observed_data_version plus the image family's listing and
  labelling (training.images.list_images), in a fresh process as on the instance.

On S3 the listing returns the ETags (1,000 keys a ListObjectsV2 page): nothing is read, so
100,000 files are 100 list requests; that is not measured here.

No target is asserted: the figures go to BENCHMARKS.md. Usage:
    .venv/bin/python bench/image_listing.py [--files 100000]
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
LABELS = 10

CHILD = r"""
import json, sys, time
from dropflow.wiring import open_registry, open_store
root, what = sys.argv[1], sys.argv[2]
store = open_store(f"file://{root}/bucket")
out = {}
if what == "claim":
    from dropflow.records.catalog import model_pk
    from dropflow.vocabulary.datasets import data_version, dataset_prefix
    registry = open_registry(f"sqlite://{root}/registry.db")
    started = time.perf_counter()
    objects = store.list(dataset_prefix("many"))
    version = data_version(objects)
    claimed = registry.put_if_absent(model_pk("many"), f"CLAIM#{version}", {"trigger": "bench"})
    out["claim"] = time.perf_counter() - started
    started = time.perf_counter()
    version_again = data_version(store.list(dataset_prefix("many")))
    again = registry.put_if_absent(model_pk("many"), f"CLAIM#{version_again}", {"trigger": "bench"})
    out["again"] = time.perf_counter() - started
    out["objects"] = len(objects)
    out["claimed_once"] = bool(claimed) and not again and version == version_again
else:
    from training.images import list_images
    from training.job import observed_data_version
    started = time.perf_counter()
    observed_data_version(store, "many")
    listing = list_images(store, "many", None)
    out["job_listing"] = time.perf_counter() - started
    out["images"] = len(listing.keys)
print(json.dumps(out))
"""


def write_images(root: Path, files: int) -> float:
    """N distinct small PNGs under datasets/many/<label>/; returns the seconds it took."""
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    folder = root / "bucket" / "datasets" / "many"
    for label in range(LABELS):
        (folder / f"label-{label}").mkdir(parents=True)
    for i in range(files):
        pixels = rng.integers(0, 256, (32, 32), dtype=np.uint8)
        out = io.BytesIO()
        Image.fromarray(pixels).save(out, "PNG")
        (folder / f"label-{i % LABELS}" / f"{i:07d}.png").write_bytes(out.getvalue())
    (folder / "dropflow.yaml").write_text("family: image\n")
    return time.perf_counter() - started


def child(root: Path, what: str) -> dict[str, float]:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(root), what],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env={"PYTHONPATH": f"{REPO}:{REPO / 'layers' / 'dropflow'}", "PATH": "/usr/bin:/bin"},
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--files", type=int, default=100_000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="dropflow-bench-images-"))
    try:
        written = write_images(root, args.files)
        size = sum(p.stat().st_size for p in (root / "bucket").rglob("*.png"))
        print(f"{args.files:,} PNG files, {size / 2**20:.1f} MiB, written in {written:.1f} s")
        claim = child(root, "claim")
        job = child(root, "job")
        print(
            f"launcher claim (cold: list + hash every file): {claim['claim']:.2f} s for "
            f"{claim['objects']:,} objects; claimed once: {claim['claimed_once']}"
        )
        print(f"launcher claim again (ETags cached, duplicate): {claim['again']:.2f} s")
        print(
            f"job: data version + image listing (fresh process): {job['job_listing']:.2f} s "
            f"for {job['images']:,} images"
        )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
