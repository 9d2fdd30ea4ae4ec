"""dropflow.yaml: every key optional, typos and bad values rejected with the key path named."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime

import pytest

from dropflow.errors import UserInputError
from dropflow.vocabulary.spec import Spec, load_spec, parse_duration, spec_hash


@pytest.mark.parametrize("text", [None, "", "   \n", b"", "# only a comment\n"])
def test_an_absent_or_empty_spec_means_the_defaults(text):
    assert load_spec(text) == Spec()


def test_defaults_are_the_documented_ones():
    spec = Spec()
    assert spec.task is None and spec.target is None and spec.features is None
    # The network's own defaults apply (training.families.tabular): tabm unless chosen.
    assert spec.model.family == "tabm"
    assert spec.model.hidden_layers is None and spec.model.dropout is None
    assert spec.model.ensemble_size is None
    assert spec.training.epochs is None  # scaled to the data (training.budget)
    assert spec.training.batch_size == 256
    assert spec.training.learning_rate == pytest.approx(2e-3)
    assert spec.training.weight_decay == pytest.approx(3e-4)
    assert spec.training.early_stopping is True
    assert spec.training.validation_fraction == pytest.approx(0.2)
    assert spec.training.seed == 0
    assert spec.training.holdout_fraction == pytest.approx(0.2)
    assert spec.promotion.metric is None and spec.promotion.tolerance == 0.0


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "model: {family: xgboost}",
            "model.family: Input should be 'tabm', 'mlp', 'text' or 'image'",
        ),
        ("model: {family: mlp, ensemble_size: 8}", "ensemble_size applies to family tabm"),
        ("model: {hidden_layers: [64, 32]}", "tabm's layers share one width"),
        ("model: {hidden_layers: []}", "tabm needs at least one layer"),
        ("model: {ensemble_size: 0}", "model.ensemble_size: Input should be greater"),
        ("training: {validation_fraction: 0.9}", "training.validation_fraction: Input should"),
        ("training: {early_stopping: 'no'}", "training.early_stopping: Input should be"),
    ],
)
def test_the_network_choices_are_checked(text, message):
    with pytest.raises(UserInputError, match=re.escape(message)):
        load_spec(text)


def test_the_mlp_keeps_its_layer_list_and_tabm_its_ensemble_size():
    assert load_spec("model: {family: mlp, hidden_layers: []}").model.hidden_layers == []
    assert load_spec("model: {ensemble_size: 8}").model.ensemble_size == 8


def test_a_full_spec_is_read():
    spec = load_spec(
        b"""
task: classification
target: diagnosis
features: [radius, texture]
model:
  hidden_layers: [128]
  dropout: 0.1
training:
  epochs: 5
  batch_size: 32
  learning_rate: 1e-2
  weight_decay: 0.0001
  seed: 7
  holdout_fraction: 0.25
promotion:
  metric: macro_f1
  tolerance: 0.01
compute: {instance_types: [g5.xlarge]}
schedule: {every: 12h}
"""
    )
    assert spec.task == "classification"
    assert spec.target == "diagnosis"
    assert spec.features == ["radius", "texture"]
    assert spec.model.hidden_layers == [128]
    assert spec.training.epochs == 5
    assert spec.training.learning_rate == pytest.approx(0.01)
    assert spec.training.seed == 7
    assert spec.promotion.metric == "macro_f1"
    assert spec.compute.instance_types == ["g5.xlarge"]
    assert spec.compute.on_demand == "fallback"
    assert spec.schedule.every_seconds == 12 * 3600


def test_exponent_notation_is_a_number_not_a_string():
    # YAML 1.1 reads `1e-3` as a string; data owners write it meaning the number.
    assert load_spec("training: {learning_rate: 1e-3}").training.learning_rate == pytest.approx(
        0.001
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("training: {epochs: 0}", "training.epochs: Input should be greater than 0"),
        ("training: {epochs: ten}", "training.epochs: Input should be a valid integer"),
        ("model: {dropout: 0.95}", "model.dropout: Input should be less than or equal to 0.9"),
        ("model: {hidden_layers: [64, 0]}", "model.hidden_layers[1]: Input should be greater"),
        ("task: clustering", "task: Input should be 'classification' or 'regression'"),
        ("training: {holdout_fraction: 0.9}", "training.holdout_fraction: Input should be"),
    ],
)
def test_an_invalid_value_names_the_file_and_key_path(text, expected):
    with pytest.raises(UserInputError) as caught:
        load_spec(text)
    assert str(caught.value).startswith(f"dropflow.yaml: {expected}")


def test_a_misspelt_key_is_rejected_with_the_allowed_keys():
    with pytest.raises(UserInputError) as caught:
        load_spec("training:\n  epoch: 10\n")
    message = str(caught.value)
    assert "dropflow.yaml: training.epoch: unknown key" in message
    assert "epochs" in message


def test_an_unknown_top_level_key_is_rejected():
    with pytest.raises(UserInputError, match=r"dropflow.yaml: targte: unknown key"):
        load_spec("targte: price")


def test_the_message_names_the_file_it_came_from():
    with pytest.raises(UserInputError, match=r"^datasets/iris/dropflow.yaml: training.epochs:"):
        load_spec("training: {epochs: -1}", source="datasets/iris/dropflow.yaml")


def test_broken_yaml_names_the_line():
    with pytest.raises(UserInputError, match=r"dropflow.yaml: invalid YAML at line 2, column"):
        load_spec("target: price\nfeatures: a: b\n")


def test_a_document_that_is_not_a_mapping_is_rejected():
    with pytest.raises(UserInputError, match="expected a mapping"):
        load_spec("- target\n- price\n")


def test_a_boolean_is_not_accepted_as_a_number():
    with pytest.raises(UserInputError, match=r"training\.epochs"):
        load_spec("training: {epochs: yes}")


def test_the_target_cannot_also_be_a_feature():
    with pytest.raises(
        UserInputError, match="features: the target 'price' cannot also be a feature"
    ):
        load_spec("target: price\nfeatures: [rooms, price]")


def test_a_feature_listed_twice_is_rejected():
    with pytest.raises(UserInputError, match="features: column 'rooms' is listed twice"):
        load_spec("features: [rooms, rooms]")


def test_an_unknown_metric_is_rejected():
    with pytest.raises(UserInputError, match=r"promotion\.metric: unknown metric 'auc'"):
        load_spec("promotion: {metric: auc}")


def test_a_metric_of_the_other_task_is_rejected_when_the_task_is_given():
    with pytest.raises(UserInputError, match=r"promotion\.metric: 'accuracy' is not a regression"):
        load_spec("task: regression\npromotion: {metric: accuracy}")


def test_a_metric_of_the_other_task_is_rejected_once_the_task_is_inferred():
    spec = load_spec("promotion: {metric: rmse}")
    assert spec.primary_metric("regression") == "rmse"
    with pytest.raises(UserInputError, match="'rmse' is not a classification metric"):
        spec.primary_metric("classification")


def test_the_primary_metric_defaults_to_accuracy_or_rmse():
    assert Spec().primary_metric("classification") == "accuracy"
    assert Spec().primary_metric("regression") == "rmse"


def test_invalid_utf8_is_rejected():
    with pytest.raises(UserInputError, match="not UTF-8"):
        load_spec(b"target: \xff\xfe")


def test_the_hash_is_of_the_effective_spec():
    assert spec_hash(load_spec(None)) == spec_hash(load_spec("training: {batch_size: 256}"))
    assert spec_hash(load_spec(None)) == spec_hash(load_spec("model: {family: tabm}"))
    assert spec_hash(load_spec(None)) != spec_hash(load_spec("training: {epochs: 61}"))
    assert spec_hash(load_spec(None)) != spec_hash(load_spec("model: {family: mlp}"))
    assert len(spec_hash(Spec())) == 64


# --------------------------------------------------------------------------- compute limits
def test_budget_deadline_and_max_runtime_are_read():
    compute = load_spec("compute: {budget_usd: 5, deadline: 6h, max_runtime: 1h30m}").compute

    assert compute.budget_usd == 5.0
    assert compute.deadline == "6h"
    assert compute.deadline_at(created_at=1000.0) == 1000.0 + 6 * 3600
    assert compute.max_runtime_seconds == 5400.0


def test_compute_limits_are_off_by_default():
    compute = Spec().compute

    assert compute.budget_usd is None and compute.max_runtime_seconds is None
    assert compute.deadline_at(created_at=1000.0) is None


@pytest.mark.parametrize(
    "text",
    [
        "compute: {deadline: 2026-11-24T06:00:00Z}",  # YAML reads it as a datetime
        "compute: {deadline: '2026-11-24T06:00:00Z'}",
        "compute: {deadline: '2026-11-24T08:00:00+02:00'}",
    ],
)
def test_a_deadline_may_be_a_utc_time(text):
    compute = load_spec(text).compute

    assert compute.deadline == "2026-11-24T06:00:00Z"
    assert compute.deadline_at(created_at=0.0) == datetime(2026, 11, 24, 6, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("compute: {budget_usd: 0}", "compute.budget_usd: Input should be greater than 0"),
        ("compute: {budget_usd: cheap}", "compute.budget_usd: Input should be a valid number"),
        ("compute: {deadline: soon}", "compute.deadline: 'soon' is not a deadline; give a"),
        ("compute: {deadline: 3600}", "compute.deadline: 3600 is not a deadline"),
        ("compute: {deadline: 2026-11-24}", "compute.deadline: 2026-11-24 is not a deadline"),
        (
            "compute: {deadline: 2026-11-24 06:00:00}",
            "compute.deadline: 2026-11-24T06:00:00 has no",
        ),
        ("compute: {deadline: 0h}", "compute.deadline: '0h': a duration must be more than 0"),
        ("compute: {max_runtime: 2026-11-24T06:00:00Z}", "compute.max_runtime: "),
        ("compute: {max_runtime: 6 hours}", "compute.max_runtime: '6 hours' is not a duration"),
        (
            "compute: {instance_types: [P5.48XLARGE]}",
            "compute.instance_types: 'P5.48XLARGE' is not an EC2 instance type name",
        ),
        ("compute: {instance_types: [g6]}", "compute.instance_types: 'g6' is not an EC2"),
        (
            "compute: {instance_types: [g6.xlarge, g5.xlarge, g6.xlarge]}",
            "compute.instance_types: g6.xlarge listed twice",
        ),
        ("compute: {instance_types: []}", "compute.instance_types: List should have at least 1"),
    ],
)
def test_an_invalid_compute_limit_names_its_key(text, expected):
    with pytest.raises(UserInputError) as caught:
        load_spec(text)
    assert str(caught.value).startswith(f"dropflow.yaml: {expected}")


@pytest.mark.parametrize(
    ("text", "seconds"), [("90m", 5400.0), ("1h30m", 5400.0), ("45s", 45.0), ("2d", 172800.0)]
)
def test_durations_read_in_days_hours_minutes_and_seconds(text, seconds):
    assert parse_duration(text) == seconds


def test_a_schedule_that_is_not_a_duration_is_named():
    with pytest.raises(UserInputError, match=r"schedule\.every.*not a duration"):
        load_spec("schedule: {every: daily}")


def test_without_a_schedule_section_the_schedule_does_not_retrain():
    assert load_spec("target: y").schedule is None


def test_allow_schema_change_is_off_by_default_and_a_boolean():
    assert load_spec(None).promotion.allow_schema_change is False
    assert load_spec("promotion: {allow_schema_change: true}").promotion.allow_schema_change
    with pytest.raises(UserInputError, match=r"promotion\.allow_schema_change: Input should be"):
        load_spec("promotion: {allow_schema_change: 'yes please'}")


def test_allow_schema_change_left_off_keeps_the_hash_specs_had_before_it():
    # A job's checkpoints resume only under the same hash: a new key's default is no change.
    effective = Spec().model_dump(mode="json")
    del effective["family"], effective["promotion"]["allow_schema_change"]
    for key in TEXT_MODEL_KEYS + IMAGE_MODEL_KEYS:
        del effective["model"][key]
    del effective["data"]
    canonical = json.dumps(effective, sort_keys=True, separators=(",", ":")).encode()

    assert spec_hash(Spec()) == hashlib.sha256(canonical).hexdigest()
    assert spec_hash(load_spec("promotion: {allow_schema_change: false}")) == spec_hash(Spec())
    assert spec_hash(load_spec("promotion: {allow_schema_change: true}")) != spec_hash(Spec())


# The text family's model keys (added after the hashes above were first taken).
TEXT_MODEL_KEYS = ("checkpoint", "pretrained", "max_length", "size")
# The image family's (pretrained is text's too).
IMAGE_MODEL_KEYS = ("backbone", "image_size")


# --------------------------------------------------------------------------- serving
def test_unknown_categories_are_encoded_unless_the_spec_says_reject():
    assert load_spec("serving: {route: auto}").serving.unknown_categories == "encode"
    assert load_spec("serving: {unknown_categories: reject}").serving.unknown_categories == (
        "reject"
    )


def test_an_unknown_categories_policy_that_does_not_exist_is_named_with_the_choices():
    with pytest.raises(UserInputError) as caught:
        load_spec("serving: {unknown_categories: refuse}")

    assert str(caught.value).startswith(
        "dropflow.yaml: serving.unknown_categories: Input should be 'encode' or 'reject'"
    )


def test_unknown_categories_left_at_encode_keeps_the_hash_specs_had_before_it():
    # What the hash of `serving: {route: container}` was before the key existed.
    effective = load_spec("serving: {route: container}").model_dump(mode="json")
    del effective["family"], effective["promotion"]["allow_schema_change"]
    del effective["serving"]["unknown_categories"]
    for key in TEXT_MODEL_KEYS + IMAGE_MODEL_KEYS:
        del effective["model"][key]
    del effective["data"]
    canonical = json.dumps(effective, sort_keys=True, separators=(",", ":")).encode()
    before = hashlib.sha256(canonical).hexdigest()

    assert spec_hash(load_spec("serving: {route: container}")) == before
    assert spec_hash(load_spec("serving: {route: container, unknown_categories: encode}")) == (
        before
    )
    assert spec_hash(load_spec("serving: {route: container, unknown_categories: reject}")) != (
        before
    )


# --------------------------------------------------------------------------- text family
def test_text_keys_left_off_keep_the_hash_tabular_specs_had_before_them():
    effective = load_spec("model: {family: mlp}").model_dump(mode="json")
    del effective["family"], effective["promotion"]["allow_schema_change"]
    for key in TEXT_MODEL_KEYS + IMAGE_MODEL_KEYS:
        assert effective["model"].pop(key) is None
    assert effective.pop("data") is None
    canonical = json.dumps(effective, sort_keys=True, separators=(",", ":")).encode()

    assert spec_hash(load_spec("model: {family: mlp}")) == hashlib.sha256(canonical).hexdigest()


@pytest.mark.parametrize(
    "text",
    [
        "family: text",
        "model: {family: text}",
        "family: text\nmodel: {size: tiny}",
    ],
)
def test_family_text_at_the_top_or_in_model_says_the_same(text):
    spec = load_spec(text)

    assert (spec.family, spec.model.family) == ("text", "text")
    assert not spec.model.loads_checkpoint


def test_a_named_checkpoint_is_loaded_unless_the_spec_says_pretrained_false():
    spec = load_spec("family: text\nmodel: {checkpoint: google-bert/bert-base-uncased}")

    assert spec.model.loads_checkpoint and spec.model.checkpoint == "google-bert/bert-base-uncased"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("family: text\nmodel: {pretrained: true}", "pretrained: true needs `checkpoint:"),
        ("family: text\nmodel: {checkpoint: a/b, size: tiny}", "fixes the encoder's size"),
        (
            "family: text\nmodel: {checkpoint: a/b, pretrained: false}",
            "is loaded only with pretrained: true",
        ),
        ("model: {size: tiny}", "model: size: only for family text; remove for tabm"),
        ("family: text\nmodel: {family: mlp}", "family: text and model.family: mlp disagree"),
        ("family: text\nmodel: {ensemble_size: 4}", "ensemble_size: only for the tabular"),
        ("family: text\nmodel: {checkpoint: a/b..c}", "`..` is not allowed"),
        ("family: text\nmodel: {max_length: 4096}", "model.max_length: Input should be less"),
        ("family: text\nmodel: {size: huge}", "model.size: Input should be 'tiny', 'small'"),
    ],
)
def test_text_model_keys_that_do_not_fit_are_named(text, message):
    with pytest.raises(UserInputError) as caught:
        load_spec(text)

    assert message in str(caught.value)


def test_a_text_models_features_may_name_tabular_columns_beside_its_text():
    spec = load_spec("family: text\nfeatures: [review, stars, channel]")

    assert spec.features == ["review", "stars", "channel"]


# --------------------------------------------------------------------------- image family
# spec_hash of these specs before the image keys and the data section existed (computed by
# the code of commit 1c02356): a job's checkpoints must resume across the change.
@pytest.mark.parametrize(
    ("text", "before"),
    [
        ("", "b951e257554d82c85788b469730aaec74a901c292f4e7a3741a71f169855cd94"),
        (
            "model: {family: mlp}\ntraining: {epochs: 3}",
            "4284b7e82052fe558f9ec0aff9fd47bf6bad906e5eb690861208c874d96bcef2",
        ),
    ],
)
def test_image_keys_left_out_keep_the_hash_specs_had_before_them(text, before):
    assert spec_hash(load_spec(text)) == before


def test_model_family_image_is_the_image_family_and_takes_the_image_keys():
    spec = load_spec("model: {family: image, backbone: microsoft/resnet-18, image_size: 64}")

    assert spec.family == "image"
    assert (spec.model.backbone, spec.model.image_size, spec.model.pretrained) == (
        "microsoft/resnet-18",
        64,
        None,
    )
    assert load_spec("family: image").model.family == "image"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "model: {family: image, hidden_layers: [8]}",
            "dropflow.yaml: model: hidden_layers: not for family image (its keys: backbone, "
            "pretrained, image_size)",
        ),
        (
            "model: {backbone: resnet-18}",
            "dropflow.yaml: model: backbone: only for family image; remove for tabm",
        ),
        (
            "family: tabular\nmodel: {family: image}",
            "dropflow.yaml: family: tabular and model.family: image disagree; say family: image "
            "for an image model",
        ),
        (
            "family: text\nmodel: {image_size: 64}",
            "dropflow.yaml: model: image_size: only for family image; remove for text",
        ),
        (
            "family: image\nmodel: {max_length: 64}",
            "dropflow.yaml: model: max_length: not for family image",
        ),
        (
            "family: image\ndata: {label: kind}",
            "dropflow.yaml: data: image and label name a manifest's columns; add `manifest:",
        ),
        (
            "family: image\ndata: {manifest: list.txt}",
            "dropflow.yaml: data.manifest: String should match pattern",
        ),
        (
            "family: image\nmodel: {image_size: 8}",
            "dropflow.yaml: model.image_size: Input should be greater than or equal to 16",
        ),
    ],
)
def test_image_keys_in_the_wrong_place_are_named(text, message):
    with pytest.raises(UserInputError) as caught:
        load_spec(text)

    assert str(caught.value).startswith(message)


def test_a_manifest_names_its_image_and_label_columns():
    spec = load_spec("family: image\ndata: {manifest: labels.csv, image: path, label: kind}")

    assert spec.data is not None
    assert (spec.data.manifest, spec.data.image, spec.data.label, spec.data.skip_bad) == (
        "labels.csv",
        "path",
        "kind",
        False,
    )
