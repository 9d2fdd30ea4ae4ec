"""The model family seam: the spec's `family:` key, the registry, and what stays family-free."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from dropflow.errors import UserInputError
from dropflow.vocabulary.card import Feature
from dropflow.vocabulary.spec import Spec, load_spec, spec_hash
from tests.families.echo_family import EchoFamily
from training import families
from training.examples import Examples
from training.families.tabular import TabularFamily, category_counts
from training.model import build_network
from training.tabm_model import DROPOUT, ENSEMBLE_SIZE, HIDDEN_LAYERS, TabMNetwork, build_tabm

TRAINING = Path(__file__).resolve().parents[2] / "training"
# The stages every family shares (docs/architecture.md, Model families): none may know a family.
SHARED = [
    "loop.py",
    "checkpoint.py",
    "interruption.py",
    "stop.py",
    "distributed.py",
    "export.py",
    "job.py",
    "network.py",
    "examples.py",
    "metrics.py",
    "heartbeat.py",
]
FAMILY_MODULES = {"training.data", "training.model", "training.families.tabular"}


@pytest.fixture
def echo():
    families.register(EchoFamily)
    yield
    families.unregister(EchoFamily.name)


def test_a_spec_without_a_family_trains_the_tabular_family():
    assert Spec().family == "tabular"
    assert isinstance(families.family_for(load_spec(None)), TabularFamily)


def test_spelling_out_the_default_family_keeps_the_spec_hash():
    assert spec_hash(load_spec("family: tabular")) == spec_hash(load_spec(None))


def test_an_unknown_family_is_rejected_naming_the_key():
    with pytest.raises(UserInputError, match=r"^dropflow.yaml: family: unknown family 'images'"):
        families.family_for(load_spec("family: images"))


def test_a_registered_family_is_accepted_and_chosen_until_it_is_unregistered(echo):
    spec = load_spec("family: echo")
    assert isinstance(families.family_for(spec), EchoFamily)
    assert spec_hash(spec) != spec_hash(load_spec(None))  # its checkpoints are not tabular's
    families.unregister("echo")
    with pytest.raises(UserInputError, match="unknown family 'echo'; choose one of image, tabular"):
        families.family_for(spec)


def test_a_family_name_a_spec_could_not_spell_is_refused():
    class Shouting(EchoFamily):
        name = "ECHO!"

    with pytest.raises(ValueError, match="family name 'ECHO!'"):
        families.register(Shouting)


def test_a_spec_naming_no_family_name_is_refused_naming_the_key():
    with pytest.raises(UserInputError, match="family"):
        load_spec("family: Not A Name")


def test_the_default_family_cannot_be_unregistered():
    with pytest.raises(ValueError, match="built-in default"):
        families.unregister("tabular")


@pytest.mark.parametrize("module", SHARED)
def test_the_shared_stages_import_no_family(module):
    tree = ast.parse((TRAINING / module).read_text())
    imported = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    } | {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    assert not imported & FAMILY_MODULES


def tabular_examples() -> Examples:
    x = np.array(
        [[0.5, 1.0, 2.0], [np.nan, 0.0, 1.0], [2.5, 2.0, 0.0], [1.0, 1.0, 2.0]], np.float32
    )
    y = np.array([0, 1, 1, 0])
    features = [
        Feature(name="a", dtype="number", nullable=True),
        Feature(name="b", dtype="category", categories=["p", "q", "r"]),
        Feature(name="c", dtype="category", categories=["u", "v", "<missing>"], nullable=True),
    ]
    return Examples("classification", "t", x, y, ["no", "yes"], features, [])


def same_state(built: torch.nn.Module, expected: torch.nn.Module) -> None:
    assert built.state_dict().keys() == expected.state_dict().keys()
    for name, value in expected.state_dict().items():
        assert torch.equal(built.state_dict()[name], value), name


def test_model_family_mlp_builds_the_network_the_job_always_built():
    examples = tabular_examples()
    x, y = examples.x, examples.y
    spec = load_spec("model: {family: mlp, hidden_layers: [4], dropout: 0.1}")
    assert category_counts(examples.features) == {1: 3, 2: 3}

    torch.manual_seed(0)
    built = TabularFamily().build(examples, x, y, spec)
    torch.manual_seed(0)
    expected = build_network(
        "classification",
        x,
        y,
        n_classes=2,
        hidden_layers=[4],
        dropout=0.1,
        category_counts={1: 3, 2: 3},
    )
    same_state(built, expected)


def test_the_default_network_is_tabm_with_its_own_defaults():
    examples = tabular_examples()
    x, y = examples.x, examples.y

    torch.manual_seed(0)
    built = TabularFamily().build(examples, x, y, load_spec(None))
    torch.manual_seed(0)
    expected = build_tabm(
        "classification",
        x,
        y,
        n_classes=2,
        category_counts={1: 3, 2: 3},
        ensemble_size=ENSEMBLE_SIZE,
        hidden_layers=HIDDEN_LAYERS,
        dropout=DROPOUT,
    )
    assert isinstance(built, TabMNetwork) and built.ensemble_size == 16
    same_state(built, expected)
    # The MLP's own defaults when it is chosen without sizes.
    mlp = TabularFamily().build(examples, x, y, load_spec("model: {family: mlp}"))
    assert [m.out_features for m in mlp.mlp if isinstance(m, torch.nn.Linear)] == [64, 32, 2]
