"""The embedded default refuses a version that no training job published.

Someone with write access to the bucket copies a real version's files into a new version folder
and writes a card claiming accuracy 0.99: `dropflow local up` sees the card, its promotion finds
that no job recorded that version, and the real champion keeps answering.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from http import HTTPStatus
from typing import Any

import pytest
import requests

from dropflow.vocabulary.card import version_prefix
from dropflow.vocabulary.names import new_version
from dropflow_dev.demo import breast_cancer_csv
from tests.local_up import DROPFLOW, START_SECONDS, STEP_SECONDS, LocalUp
from tests.net import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]


def versions(home, model: str) -> dict[str, dict[str, Any]]:
    """`dropflow models list <model> --json`, by version, as a user's script reads it."""
    done = subprocess.run(
        [*DROPFLOW, "models", "list", model, "--home", str(home), "--json"],
        capture_output=True,
        text=True,
        timeout=START_SECONDS,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return {row["version"]: row for row in json.loads(done.stdout)}


def test_a_forged_version_folder_is_never_promoted_and_the_champion_keeps_serving(tmp_path):
    home = tmp_path / "home"
    bucket = home / "bucket"
    lines = breast_cancer_csv().decode().splitlines()[1:4]
    instances = [[float(v) for v in line.split(",")[:-1]] for line in lines]
    with LocalUp(home) as runtime:
        (bucket / "datasets" / "cancer").mkdir(parents=True)
        (bucket / "datasets" / "cancer" / "dropflow.yaml").write_text("target: diagnosis\n")
        (bucket / "datasets" / "cancer" / "data.csv").write_bytes(breast_cancer_csv())
        job = runtime.ended("cancer")
        assert job["state"] == "published", (job, runtime.output)
        real = job["version"]
        runtime.promoted("cancer", real)

        # Given a version folder written by hand: the real graph and evidence copied, and a
        # card that claims accuracy 0.99 under a newer version id (card.json last, at once)
        forged = new_version(job["job_id"], now=job["created_at"] + 3600)
        source, target = (
            bucket / version_prefix("cancer", real),
            bucket / version_prefix("cancer", forged),
        )
        target.mkdir(parents=True)
        for name in ("model.onnx", "reference.npz"):
            shutil.copyfile(source / name, target / name)
        card = json.loads((source / "card.json").read_text())
        card["version"] = forged
        card["metrics"]["holdout"]["accuracy"] = 0.99
        (target / "card.json.tmp").write_text(json.dumps(card))
        os.replace(target / "card.json.tmp", target / "card.json")

        # When the runtime has decided on it
        decided = wait_until(
            lambda: versions(home, "cancer").get(forged),
            STEP_SECONDS,
            interval=1.0,
            what=lambda: f"a decision on {forged}; {runtime.output}",
        )

        # Then it is rejected, saying no job published it, and the real champion still answers
        assert decided["decision"] == "rejected", decided
        assert decided["reason"] == (
            f"no job published this version: job {job['job_id']} recorded version {real}, "
            f"not {forged}"
        )
        assert runtime.champion("cancer") == real
        answer = requests.post(
            f"{runtime.url}/models/cancer/predict", json={"instances": instances}, timeout=30
        )
        assert answer.status_code == HTTPStatus.OK, (answer.text, runtime.output)
        assert answer.json()["version"] == real
        # A pinned request for the forged version is refused as rejected, never served.
        pinned = requests.post(
            f"{runtime.url}/models/cancer/predict",
            json={"instances": instances, "version": forged},
            timeout=30,
        )
        assert pinned.status_code == HTTPStatus.NOT_FOUND
        assert "rejected by promotion" in pinned.json()["error"]["message"]
        assert runtime.stop() == 0, runtime.output
