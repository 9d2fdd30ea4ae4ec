"""Shared fixtures: real local adapters in a temporary folder, and fake AWS credentials."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from dropflow.adapters.local.directory_store import DirectoryStore
from dropflow.adapters.local.sqlite_registry import SqliteRegistry


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


@pytest.fixture(autouse=True)
def _unfrozen_heap() -> Iterator[None]:
    # The predict handler freezes the heap after its first answer (a Lambda environment's
    # objects live as long as it does); in the one long test process, thaw it after each test.
    yield
    gc.unfreeze()


@pytest.fixture
def store(tmp_path) -> DirectoryStore:
    return DirectoryStore(tmp_path / "bucket")


@pytest.fixture
def registry(tmp_path) -> SqliteRegistry:
    return SqliteRegistry(tmp_path / "registry.db")


@pytest.fixture
def atomic_moto_dynamodb(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make each of moto's DynamoDB writes atomic, as each of DynamoDB's is.

    moto (5.2) checks a ConditionExpression and then writes the item in plain Python with no
    lock, in-process and behind ThreadedMotoServer alike (its threaded WSGI server locks only
    the choice of backend): two threads can both pass one condition. DynamoDB never lets that
    happen to one item. One lock per write call closes exactly that window and no other: our
    read-then-write sequences across calls still race as they would on AWS.
    """
    import threading

    from moto.dynamodb.models import DynamoDBBackend

    from tests.moto_stack import holding

    lock = threading.RLock()
    for name in ("put_item", "update_item", "delete_item", "transact_write_items"):
        monkeypatch.setattr(DynamoDBBackend, name, holding(lock, getattr(DynamoDBBackend, name)))


@pytest.fixture
def thread_safe_moto_s3(monkeypatch: pytest.MonkeyPatch) -> None:
    """Let many threads send S3 requests to moto in-process (`mock_aws()`) at once.

    moto (5.2) reloads `moto.s3.urls` (importlib.reload) on every in-process S3 request, to
    read its URL patterns afresh; a reload takes the module out of sys.modules for a moment,
    and another thread's reload in that moment raises `ImportError: module moto.s3.urls not in
    sys.modules`. Warming moto up first cannot help, as every request reloads. One lock around
    that reload closes exactly that window: the requests themselves still run concurrently.
    """
    import threading

    from moto.s3.models import S3Backend

    from tests.moto_stack import holding

    lock = threading.RLock()
    reload_urls = holding(lock, S3Backend._url_module.fget)  # moto's, not a product object's
    monkeypatch.setattr(S3Backend, "_url_module", property(reload_urls))


@pytest.fixture
def moto_server() -> Iterator[str]:
    """The URL of moto_server on a free port of 127.0.0.1, stopped (its state reset) after
    the test. It runs in this process, on the same backends as `mock_aws()`."""
    import logging

    import requests
    from moto.server import ThreadedMotoServer

    werkzeug = logging.getLogger("werkzeug")
    level = werkzeug.level
    werkzeug.setLevel(logging.WARNING)  # not one log line per request
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    try:
        yield url
        # The server runs in this process on moto's global backends: leave them empty.
        requests.post(f"{url}/moto-api/reset", timeout=10)
    finally:
        server.stop()
        werkzeug.setLevel(level)
