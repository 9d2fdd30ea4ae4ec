"""dropflow.config: settings from DROPFLOW_* variables, a clear error naming each bad one."""

from __future__ import annotations

import pytest

from dropflow.config import load_settings
from dropflow.errors import ConfigError

REQUIRED = {
    "DROPFLOW_STORE_URL": "s3://bucket/prefix",
    "DROPFLOW_REGISTRY_URL": "dynamodb://table",
}


@pytest.fixture
def environment(monkeypatch):
    for name, value in REQUIRED.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def test_settings_are_read_from_their_variables_with_their_types(environment):
    environment.setenv("DROPFLOW_CHAMPION_TTL_SECONDS", "2.5")
    environment.setenv("DROPFLOW_MAX_ATTEMPTS", "4")
    environment.setenv("DROPFLOW_MODEL_CACHE_MB", "512")

    settings = load_settings()

    assert settings.store_url == "s3://bucket/prefix"
    assert settings.registry_url == "dynamodb://table"
    assert settings.champion_ttl_seconds == 2.5
    assert settings.max_attempts == 4
    assert settings.model_cache_mb == 512.0


def test_absent_optional_settings_take_their_defaults(environment):
    settings = load_settings()

    assert settings.compute_url == ""
    assert settings.model_cache_mb is None
    assert settings.served_by == "lambda"


def test_a_missing_variable_is_named(environment):
    environment.delenv("DROPFLOW_STORE_URL")

    with pytest.raises(ConfigError, match="DROPFLOW_STORE_URL: Field required"):
        load_settings()


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("DROPFLOW_MAX_ATTEMPTS", "three", "valid integer"),
        ("DROPFLOW_MAX_ATTEMPTS", "0", "greater than or equal to 1"),
        ("DROPFLOW_STORE_URL", "ftp://x", "should match pattern"),
        ("DROPFLOW_SERVED_BY", "gpu", "Input should be 'lambda' or 'container'"),
    ],
)
def test_a_wrong_variable_is_named_with_the_problem(environment, name, value, message):
    environment.setenv(name, value)

    with pytest.raises(ConfigError, match=name) as caught:
        load_settings()
    assert message in str(caught.value)


def test_every_problem_is_named_at_once(environment):
    environment.delenv("DROPFLOW_REGISTRY_URL")
    environment.setenv("DROPFLOW_KEEP_VERSIONS", "-1")

    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert "DROPFLOW_REGISTRY_URL" in str(caught.value)
    assert "DROPFLOW_KEEP_VERSIONS" in str(caught.value)


def test_other_dropflow_variables_are_ignored(environment):
    environment.setenv("DROPFLOW_SOMETHING_ELSE", "x")

    assert load_settings().store_url == "s3://bucket/prefix"
