"""The container tier's server: dropflow's HTTP API for the models too large for Lambda.

It runs the predict function's own code (functions/predict/app.py: the same routes, checks,
errors, simple API and Open Inference Protocol) behind dropflow's API Gateway translation
(dropflow_dev.local.gateway), with DROPFLOW_SERVED_BY=container: it serves every version it is
asked for itself, never forwards, and answers `"served_by": "container"`. The predict
function forwards to it the versions that promotion routed `container`
(dropflow.vocabulary.routing).

Readiness: /v2/health/live answers at once; /v2/health/ready answers 503 until the sessions
of every champion routed `container` are loaded. The load balancer's health check, Docker's
HEALTHCHECK and the local runtime all read it, so no request reaches a server that would
first spend minutes loading. New container champions are preloaded every --refresh seconds
afterwards, so a forwarded request rarely pays for a load either.

    python serving/server.py [--host 0.0.0.0] [--port 8080] [--refresh 30]

Configuration is the predict function's (DROPFLOW_STORE_URL, DROPFLOW_REGISTRY_URL, ...);
on EC2 the launch template's user data sets it, locally `dropflow local up` does.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import signal
import sys
import threading
import time
import warnings
from http import HTTPStatus
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
PREDICT_APP = ROOT / "functions" / "predict" / "app.py"
READY_PATH = "/v2/health/ready"
# While models load, how soon to ask again (the health check asks on its own schedule).
LOADING_RETRY_AFTER = 5
# After a failed preload (registry unreachable), how soon to try again.
RETRY_SECONDS = 5.0


def load_predict_app(path: Path = PREDICT_APP) -> ModuleType:
    """functions/predict/app.py, imported as Lambda imports it (its settings read now)."""
    spec = importlib.util.spec_from_file_location("dropflow_predict_app", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import the predict function from {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


class ContainerServer:
    """The predict app behind an HTTP server, ready once its models are loaded."""

    def __init__(
        self, app: ModuleType, host: str, port: int, *, refresh_seconds: float = 30.0
    ) -> None:
        from dropflow_dev.local.gateway import Gateway

        self.app = app
        self.refresh_seconds = refresh_seconds
        self.ready = threading.Event()
        self.stopping = threading.Event()
        self.gateway = Gateway(self.handle, host=host, port=port, function_name="ContainerTier")
        self._loader = threading.Thread(target=self._preload, name="preload", daemon=True)

    @property
    def url(self) -> str:
        return self.gateway.url

    def start(self) -> None:
        self.gateway.start()
        self._loader.start()

    def stop(self) -> None:
        self.stopping.set()
        self.gateway.stop()

    def handle(self, event: dict[str, Any], context: Any) -> dict[str, Any]:
        if event.get("path") == READY_PATH and not self.ready.is_set():
            return {
                "statusCode": int(HTTPStatus.SERVICE_UNAVAILABLE),
                "headers": {
                    "Content-Type": "application/json",
                    "Retry-After": str(LOADING_RETRY_AFTER),
                },
                "body": json.dumps({"ready": False}),
            }
        return self.app.lambda_handler(event, context)

    def _preload(self) -> None:
        while not self.stopping.is_set():
            started = time.monotonic()
            try:
                loaded = self.app.SERVICE.preload()
            except Exception as exc:  # the registry or the store cannot be reached yet
                _say(f"cannot list the models to load yet: {type(exc).__name__}: {exc}")
                self.stopping.wait(RETRY_SECONDS)
                continue
            if not self.ready.is_set():
                took = time.monotonic() - started
                shown = ", ".join(f"{m} {v}" for m, v in loaded) or "none routed here yet"
                _say(f"ready: models loaded in {took:.1f} s ({shown})")
                self.ready.set()
            self.stopping.wait(self.refresh_seconds)


def _say(line: str) -> None:
    print(f"dropflow container tier: {line}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default=os.environ.get("DROPFLOW_SERVING_HOST", "0.0.0.0"))
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("DROPFLOW_SERVING_PORT", "8080"))
    )
    parser.add_argument(
        "--refresh", type=float, default=30.0, help="seconds between preloads of new champions"
    )
    args = parser.parse_args(argv)

    os.environ["DROPFLOW_SERVED_BY"] = "container"
    # No X-Ray daemon and no Lambda metrics agent here: powertools would only print noise.
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "dropflow-serving")
    warnings.filterwarnings("ignore", message="No application metrics to publish")

    server = ContainerServer(load_predict_app(), args.host, args.port, refresh_seconds=args.refresh)
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    server.start()
    _say(f"listening on {server.url} (pid {os.getpid()}); loading models")
    stop.wait()
    server.stop()
    _say("stopped")
    return 0


if __name__ == "__main__":
    # Run as a script: the checkout's dropflow package sits in layers/dropflow.
    layer = ROOT / "layers" / "dropflow"
    if layer.is_dir() and str(layer) not in sys.path:
        sys.path.insert(0, str(layer))
    sys.exit(main())
