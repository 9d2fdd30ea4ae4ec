"""The image family through the real job: scikit-learn's digits, rendered as PNG files in
label folders, train, export, publish and are promoted; resume is exact; pretrained weights
come from the bucket's weights/ folder; a bad file is named (or skipped and counted).

Every network here is the tiny built-in backbone (resnet-tiny) or a tiny one the test saves,
on 32 x 32 images: the accuracy target on the real digits belongs to bench/.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import onnx
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_digits
from transformers import AutoModelForImageClassification, ResNetConfig, ViTConfig

from dropflow.ports import ObjectStore
from dropflow.promotion.gate import promote
from dropflow.records.jobs import ExitCode, JobState
from dropflow.vocabulary.card import Feature, InputSpec
from dropflow.vocabulary.spec import read_spec
from tests.integration.test_ddp import torchrun
from tests.integration.test_resume import TOLERANCE, FakeWatcher, Home
from training.export import check_parity, export_onnx
from training.families.image import ImageFamily
from training.image_network import build_image_network
from training.job import run_job

SIZE = 32
SPEC = (
    f"model: {{family: image, backbone: resnet-tiny, pretrained: false, image_size: {SIZE}}}\n"
    "training: {epochs: 12, batch_size: 32, learning_rate: 0.005, checkpoint_interval_seconds: 0}\n"
).encode()


def digit_png(image: np.ndarray, size: int = SIZE) -> bytes:
    """One 8 x 8 digit (values 0-16) as a size x size grey PNG."""
    pixels = Image.fromarray((image * (255 / 16)).astype(np.uint8))
    out = io.BytesIO()
    pixels.resize((size, size), Image.Resampling.BILINEAR).save(out, format="PNG")
    return out.getvalue()


def drop_digits(store: ObjectStore, model: str, spec: bytes = SPEC, count: int = 300) -> None:
    digits = load_digits()
    for i in range(count):
        store.put(f"datasets/{model}/{digits.target[i]}/{i:04d}.png", digit_png(digits.images[i]))
    store.put(f"datasets/{model}/dropflow.yaml", spec)


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    # No test reaches the Hugging Face Hub (nor waits for its retries).
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Home:
    return Home(tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="module")
def digits_job(home: Home) -> str:
    drop_digits(home.store, "digits")
    job_id = home.new_job("digits")
    assert run_job(job_id, 1, home.store, home.registry) == ExitCode.OK
    return job_id


def test_digit_folders_train_publish_and_are_promoted(digits_job, home):
    job = home.jobs.get(digits_job)
    assert job.state == JobState.PUBLISHED, job.reason
    card = home.card(digits_job)

    assert card.input == InputSpec(
        kind="image",
        field="image",
        height=SIZE,
        width=SIZE,
        channels=3,
        dtype="uint8",
        layout="NHWC",
    )
    assert card.features == [Feature(name="image", dtype="image")]
    assert card.classes == [str(d) for d in range(10)]
    assert card.model_extra["training"]["family"] == "image"
    assert card.model_extra["training"]["skipped_files"] == 0
    assert card.model_extra["training"]["image_size"] == {
        "pixels": SIZE,
        "from": "model.image_size in the spec",
    }
    assert card.parity.passed and card.parity.rows == card.metrics.holdout_rows == 60
    assert card.metrics.holdout["accuracy"] > 2 * card.metrics.baseline["accuracy"]

    result = promote("digits", job.version, home.store, home.registry)
    assert result.decision == "approved", result.reason


def test_from_scratch_without_image_size_the_images_own_size_is_the_graph_s(home):
    # 48 px digits, image_size left out: the median longer side, 48, rounded up to 64 (not
    # the pretrained backbones' 224); the card's input, which serving resizes to, says 64.
    digits = load_digits()
    for i in range(40):
        home.store.put(
            f"datasets/digits-own/{digits.target[i]}/{i:04d}.png", digit_png(digits.images[i], 48)
        )
    spec_file = b"model: {family: image, pretrained: false}\n"
    home.store.put("datasets/digits-own/dropflow.yaml", spec_file)
    spec = read_spec(home.store, "digits-own")
    family = ImageFamily()

    examples = family.read(home.store, "digits-own", spec)

    assert examples.x.shape == (40, 64, 64, 3)
    assert family.input_spec(examples).height == family.input_spec(examples).width == 64
    chosen = family.card_training(examples)["image_size"]
    assert chosen["pixels"] == 64
    assert chosen["from"].startswith("from scratch: the images' median longer side (48 px")


def test_the_graph_takes_uint8_pixels_channels_last_with_a_dynamic_batch(digits_job, home):
    job = home.jobs.get(digits_job)
    graph = onnx.load_from_string(home.store.get(f"models/digits/{job.version}/model.onnx"))
    (given,) = graph.graph.input
    dims = [d.dim_param or d.dim_value for d in given.type.tensor_type.shape.dim]

    assert given.name == "input"
    assert given.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert isinstance(dims[0], str) and dims[1:] == [SIZE, SIZE, 3]
    with np.load(io.BytesIO(home.store.get(f"models/digits/{job.version}/reference.npz"))) as ref:
        assert ref["input"].dtype == np.uint8 and ref["input"].shape == (60, SIZE, SIZE, 3)


def test_an_interrupted_image_job_resumes_to_the_uninterrupted_weights(digits_job, home):
    drop_digits(home.store, "digits-resumed")
    job_id = home.new_job("digits-resumed")
    # One check before training, then one per step: stopped inside the 3rd epoch (6 a epoch).
    assert run_job(job_id, 1, home.store, home.registry, watcher=FakeWatcher(16)) == (
        ExitCode.INTERRUPTED
    )
    attempt = home.relaunch(job_id)
    assert run_job(job_id, attempt, home.store, home.registry) == ExitCode.OK

    resumed, straight = (home.reference_outputs(j) for j in (job_id, digits_job))
    assert home.card(job_id).model_extra["training"]["resumed_from_step"] == 15
    assert np.max(np.abs(resumed - straight)) <= TOLERANCE
    assert home.card(job_id).metrics == home.card(digits_job).metrics


def save_tiny_resnet(folder: Path, *, labels: int) -> dict[str, torch.Tensor]:
    """A random tiny ResNet written as save_pretrained does (with a preprocessor config);
    returns its weights."""
    torch.manual_seed(7)
    config = ResNetConfig(depths=[1], hidden_sizes=[8], embedding_size=8, num_labels=labels)
    network = AutoModelForImageClassification.from_config(config)
    network.save_pretrained(folder)
    (folder / "preprocessor_config.json").write_text(
        json.dumps({"image_mean": [0.5, 0.5, 0.5], "image_std": [0.25, 0.25, 0.25]})
    )
    return {k: v.clone() for k, v in network.state_dict().items()}


def upload(store: ObjectStore, folder: Path, prefix: str) -> None:
    for path in folder.iterdir():
        store.put(prefix + path.name, path.read_bytes())


def test_pretrained_weights_come_from_the_buckets_weights_folder(tmp_path, home):
    saved = save_tiny_resnet(tmp_path / "acme", labels=5)
    upload(home.store, tmp_path / "acme", "weights/acme/tiny-resnet/")

    network = build_image_network(
        home.store, backbone="acme/tiny-resnet", pretrained=True, image_size=SIZE, n_classes=10
    )

    loaded = network.backbone.state_dict()
    body = [k for k in saved if not k.startswith("classifier")]
    assert body and all(torch.equal(loaded[k], saved[k]) for k in body)
    assert network.backbone.config.num_labels == 10  # a new head for this data's classes
    assert network.mean.flatten().tolist() == [0.5, 0.5, 0.5]
    assert network.std.flatten().tolist() == [0.25, 0.25, 0.25]


def test_a_pretrained_job_trains_from_the_weights_folder_and_publishes(tmp_path, home):
    save_tiny_resnet(tmp_path / "acme", labels=5)
    upload(home.store, tmp_path / "acme", "weights/acme/tiny-resnet/")
    spec = (
        f"model: {{family: image, backbone: acme/tiny-resnet, pretrained: true, "
        f"image_size: {SIZE}}}\ntraining: {{epochs: 2, batch_size: 32}}\n"
    ).encode()
    drop_digits(home.store, "digits-pretrained", spec, count=100)
    job_id = home.new_job("digits-pretrained")

    assert run_job(job_id, 1, home.store, home.registry) == ExitCode.OK
    assert home.jobs.get(job_id).state == JobState.PUBLISHED


def failed_reason(home: Home, model: str, spec: bytes, extra: dict[str, bytes]) -> str | None:
    drop_digits(home.store, model, spec, count=60)
    for key, data in extra.items():
        home.store.put(f"datasets/{model}/{key}", data)
    job_id = home.new_job(model)
    assert run_job(job_id, 1, home.store, home.registry) == ExitCode.USER_ERROR
    job = home.jobs.get(job_id)
    assert job.state == JobState.FAILED
    return job.reason


def test_neither_weights_folder_nor_hub_fails_the_job_naming_both(home):
    spec = b"model: {family: image, backbone: acme/absent, pretrained: true, image_size: 32}\n"

    reason = failed_reason(home, "digits-no-weights", spec, {})

    assert reason is not None
    assert reason.startswith("model.backbone 'acme/absent': no pretrained weights reachable.")
    assert "under the bucket at weights/acme/absent/" in reason
    assert "let the training instance reach the Hugging Face Hub" in reason


def test_a_corrupt_image_fails_the_job_naming_the_file(home):
    reason = failed_reason(home, "digits-corrupt", SPEC, {"3/broken.png": b"\x89PNG not really"})

    assert reason is not None
    assert reason.startswith("datasets/digits-corrupt/3/broken.png: not a JPEG, PNG or WebP image")
    assert "set `data: {skip_bad: true}`" in reason


def test_with_skip_bad_a_corrupt_image_is_left_out_and_counted(home):
    spec = SPEC.replace(b"training:", b"data: {skip_bad: true}\ntraining:")
    drop_digits(home.store, "digits-skip", spec, count=100)
    home.store.put("datasets/digits-skip/3/broken.png", b"\x89PNG not really")
    home.store.put("datasets/digits-skip/4/cut.png", digit_png(np.eye(8) * 16)[:40])
    job_id = home.new_job("digits-skip")

    assert run_job(job_id, 1, home.store, home.registry) == ExitCode.OK
    training = home.card(job_id).model_extra["training"]
    assert training["skipped_files"] == 2
    assert [line.split(":")[0] for line in training["skipped"]] == [
        "datasets/digits-skip/3/broken.png",
        "datasets/digits-skip/4/cut.png",
    ]
    assert (
        training["rows"]["holdout"] + training["rows"]["train"] + training["rows"]["validation"]
        == 100
    )


def test_a_second_image_version_is_scored_beside_the_champion_on_its_holdout(digits_job, home):
    champion = home.jobs.get(digits_job).version
    assert promote("digits", champion, home.store, home.registry).champion_after == champion
    job_id = home.new_job("digits")  # the same data again: another version of the model
    assert run_job(job_id, 1, home.store, home.registry) == ExitCode.OK

    result = promote("digits", home.jobs.get(job_id).version, home.store, home.registry)

    # Both graphs took the candidate's uint8 holdout pixels: the fair basis, not the cards'.
    assert result.metrics["basis"] == "holdout", result.reason
    assert result.metrics["rows"] == 60
    assert result.metrics["candidate"] == result.metrics["champion"]  # same data, same weights


@pytest.mark.slow
def test_torchrun_trains_an_image_job_on_two_ranks_that_stream_their_shares(tmp_path):
    home = Home(tmp_path)
    spec = SPEC.replace(b"epochs: 12", b"epochs: 3")
    drop_digits(home.store, "digits-ddp", spec, count=120)
    job_id = home.new_job("digits-ddp")

    done = torchrun(
        "-m",
        "training",
        "--job-id",
        job_id,
        "--attempt",
        "1",
        env={
            "DROPFLOW_STORE_URL": f"file://{tmp_path}/bucket",
            "DROPFLOW_REGISTRY_URL": f"sqlite://{tmp_path}/registry.db",
            "HF_HUB_OFFLINE": "1",
        },
    )

    assert done.returncode == ExitCode.OK, done.stdout + done.stderr
    card = home.card(job_id)
    assert card.model_extra["training"]["world_size"] == 2
    assert card.model_extra["training"]["device"] == "cpu x2 (DDP)"
    assert card.parity.passed and card.input is not None


def test_a_pretrained_vit_at_another_image_size_interpolates_and_exports(tmp_path, home):
    torch.manual_seed(3)
    config = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        num_labels=3,
    )
    AutoModelForImageClassification.from_config(config).save_pretrained(tmp_path / "vit")
    upload(home.store, tmp_path / "vit", "weights/acme/tiny-vit/")
    network = build_image_network(
        home.store, backbone="acme/tiny-vit", pretrained=True, image_size=48, n_classes=4
    ).eval()
    pixels = np.random.default_rng(0).integers(0, 256, (5, 48, 48, 3), dtype=np.uint8)

    parity, _ = check_parity(export_onnx(network, pixels, tmp_path / "m.onnx"), network, pixels)

    assert network(torch.from_numpy(pixels)).shape == (5, 4)
    assert parity.passed and parity.rows == 5
