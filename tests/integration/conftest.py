"""Integration fixtures: the handlers' configuration pointed at local adapters in tmp_path."""

from __future__ import annotations

import os

import pytest

from dropflow import wiring


@pytest.fixture
def adapters(tmp_path, monkeypatch):
    """(store, registry) behind DROPFLOW_* variables, as a handler's cold start reads them."""
    monkeypatch.setenv("DROPFLOW_STORE_URL", (tmp_path / "bucket").as_uri())
    monkeypatch.setenv("DROPFLOW_REGISTRY_URL", f"sqlite://{tmp_path / 'registry.db'}")
    monkeypatch.setenv("POWERTOOLS_LOG_LEVEL", "WARNING")
    wiring.reset()
    yield wiring.store(), wiring.registry()
    wiring.reset()


@pytest.fixture
def restored_environ():
    """For tests whose code configures the local runtime in this process (`dropflow local up`,
    `invoke`, `models`: they write DROPFLOW_* and POWERTOOLS_* variables): the environment is
    put back whole afterwards, and the cached adapters dropped."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
    wiring.reset()
