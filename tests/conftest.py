"""Shared fixtures: real local adapters in a temporary folder, and fake AWS credentials."""

from __future__ import annotations

import pytest

from dropflow.adapters.local_store import DirectoryStore
from dropflow.adapters.sqlite_registry import SqliteRegistry


@pytest.fixture(autouse=True)
def _no_real_aws(monkeypatch: pytest.MonkeyPatch) -> None:
    # No test may reach a real AWS account, whatever the developer's shell has.
    for var, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "POWERTOOLS_METRICS_DISABLED": "true",
        "POWERTOOLS_TRACE_DISABLED": "true",
    }.items():
        monkeypatch.setenv(var, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)


@pytest.fixture
def store(tmp_path) -> DirectoryStore:
    return DirectoryStore(tmp_path / "bucket")


@pytest.fixture
def registry(tmp_path) -> SqliteRegistry:
    return SqliteRegistry(tmp_path / "registry.db")
