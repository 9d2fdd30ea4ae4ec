"""The Lambda handlers import as modules of the `functions` package (SAM still finds each as
functions/<fn>/app.py), so product code and tests never load a handler by its file path."""

from __future__ import annotations

import importlib
import sys

import pytest

HANDLERS = [
    "functions.launch_training.app",
    "functions.track_training.app",
    "functions.promote_model.app",
    "functions.predict.app",
]


@pytest.fixture
def local_environment(adapters, tmp_path, monkeypatch):
    """The handlers' configuration on local adapters; their modules forgotten afterwards."""
    monkeypatch.setenv("DROPFLOW_COMPUTE_URL", f"process://{tmp_path}/compute")
    yield
    for name in HANDLERS:
        sys.modules.pop(name, None)


@pytest.mark.parametrize("module", HANDLERS)
def test_a_handler_imports_as_a_module_of_the_functions_package(local_environment, module):
    handler = importlib.import_module(module).lambda_handler

    assert callable(handler)


def test_the_predict_module_answers_health(local_environment):
    app = importlib.import_module("functions.predict.app")
    event = {"httpMethod": "GET", "path": "/health", "resource": "/health", "headers": {}}

    answer = app.ENDPOINT.handle(event, None)

    assert answer["statusCode"] == 200, answer
