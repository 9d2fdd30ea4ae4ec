"""An image folder dropped into `dropflow local up`'s bucket trains, publishes and is promoted.

Runs `dropflow local up` as a user would, writes a spec and scikit-learn's digits as PNG files
into label folders with plain file writes, and waits for the job and the promotion. (Serving
an image over HTTP is the prediction function's part of issue 14.)
"""

from __future__ import annotations

import pytest
from sklearn.datasets import load_digits

from tests.integration.test_image_family import digit_png
from tests.local_up import LocalUp, status

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def test_a_dropped_image_folder_trains_publishes_and_is_promoted(tmp_path):
    home = tmp_path / "home"
    digits = load_digits()
    with LocalUp(home) as runtime:
        folder = home / "bucket" / "datasets" / "digits"
        folder.mkdir(parents=True)
        (folder / "dropflow.yaml").write_text(
            "model: {family: image, backbone: resnet-tiny, pretrained: false, image_size: 32}\n"
            "training: {epochs: 8, batch_size: 32, learning_rate: 0.005}\n"
        )
        for i in range(200):
            label = folder / str(digits.target[i])
            label.mkdir(exist_ok=True)
            (label / f"{i:04d}.png").write_bytes(digit_png(digits.images[i]))

        job = runtime.ended("digits")
        assert job["state"] == "published", (job, runtime.output)
        runtime.promoted("digits", job["version"])
        assert runtime.stop() == 0, runtime.output

    report = status(home)
    assert [(j["model"], j["state"]) for j in report["jobs"]] == [("digits", "published")]
    assert report["models"][0]["champion"] == job["version"]
