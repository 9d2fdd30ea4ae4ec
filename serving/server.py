"""The container tier's server: dropflow's HTTP API for the models too large for Lambda.

It serves the predict function's own endpoint (dropflow.serving.endpoint: the same routes,
checks, errors, simple API and Open Inference Protocol) through serving.asgi on uvicorn,
with DROPFLOW_SERVED_BY=container: it serves every version it is asked for itself, never
forwards, and answers `"served_by": "container"`. The predict function forwards to it the
versions that promotion routed `container` (dropflow.vocabulary.routing).

    python -m serving [--host 0.0.0.0] [--port 8080] [--workers N] [--refresh 30]

Readiness: /v2/health/live answers at once; /v2/health/ready answers 503 until the sessions
of every champion routed `container` are loaded, in every worker (serving.readiness). The load
balancer's health check, Docker's HEALTHCHECK and the local runtime all read it, so no request
reaches a server that would first spend minutes loading. New container champions are
preloaded every --refresh seconds afterwards, so a forwarded request rarely pays for a load.

Workers: --workers processes (default: the CPUs, at most 4; 1 with onnxruntime-gpu), each
with its own sessions, so each gets its share of the session memory budget and of the CPUs
for onnxruntime's threads. SIGTERM (the Auto Scaling group's scale-in, `docker stop`) stops
accepting connections, lets the requests under way finish (at most --graceful seconds) and
exits 0.

Configuration is the predict function's (DROPFLOW_STORE_URL, DROPFLOW_REGISTRY_URL, ...) and
DROPFLOW_SERVING_HOST/PORT/WORKERS/REFRESH_SECONDS; on EC2 the launch template's user data
sets it, locally `dropflow local up` does.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from serving.asgi import MAX_HEADER_BYTES

ENV = "DROPFLOW_SERVING_"
# Each worker holds every container model in memory: beyond a few, memory runs out before
# throughput grows (onnxruntime already spreads one request over the CPUs).
DEFAULT_MAX_WORKERS = 4
MAX_WORKERS = 64
# Above the load balancer's idle timeout (22 s in template.yaml; AWS's default is 60 s), so
# that the balancer, never the server, closes an idle connection: else a request it sends as
# the server closes fails (a 502).
KEEP_ALIVE_SECONDS = 75
# Scale-in: the requests under way get this long to finish (the predict function waits
# DROPFLOW_CONTAINER_TIMEOUT_SECONDS, 20 s by default, for an answer).
GRACEFUL_SECONDS = 30
# What h11 buffers of a request line and headers still incomplete: a bound on memory, above
# serving.asgi.MAX_HEADER_BYTES, past which the app refuses a complete head (a JSON 431).
H11_MAX_HEAD_BYTES = 4 * MAX_HEADER_BYTES
APP_FACTORY = "serving.server:create_app"


@dataclass(frozen=True)
class ServerOptions:
    """What the server runs with; the workers read it from the environment the server sets."""

    host: str = "0.0.0.0"
    port: int = 8080
    workers: int = 1
    refresh_seconds: float = 30.0
    keep_alive_seconds: int = KEEP_ALIVE_SECONDS
    graceful_seconds: int = GRACEFUL_SECONDS
    access_log: bool = False
    peers_dir: str = ""

    @classmethod
    def from_environ(cls) -> ServerOptions:
        """The options a worker was started with (defaults for what is not set)."""
        env = os.environ
        return cls(
            workers=int(env.get(ENV + "WORKERS", "1")),
            refresh_seconds=float(env.get(ENV + "REFRESH_SECONDS", "30")),
            peers_dir=env.get(ENV + "PEERS_DIR", ""),
        )

    def to_environ(self) -> dict[str, str]:
        return {
            ENV + "WORKERS": str(self.workers),
            ENV + "REFRESH_SECONDS": str(self.refresh_seconds),
            ENV + "PEERS_DIR": self.peers_dir,
        }


def create_app() -> Any:
    """The ASGI application of one worker (uvicorn calls it in each worker process)."""
    from dropflow import wiring
    from dropflow.serving.endpoint import PredictEndpoint
    from dropflow.vocabulary.routing import CONTAINER
    from serving.asgi import build_app
    from serving.readiness import Preloader, Readiness

    options = ServerOptions.from_environ()
    load_cuda_libraries()
    # Whatever the environment says, this is the tier; each worker takes its share of the
    # machine's memory for sessions and of its CPUs for their threads.
    service = wiring.prediction_service(served_by=CONTAINER, share=options.workers)
    endpoint = PredictEndpoint(service)
    peers = Path(options.peers_dir) if options.peers_dir else None
    readiness = Readiness(peers, options.workers)
    preloader = Preloader(service.preload, readiness, refresh_seconds=options.refresh_seconds)
    return build_app(endpoint.handle, preloader)


def session_providers() -> list[str]:
    """The onnxruntime execution providers the models' sessions ask for, in order: CUDA first
    where this onnxruntime has it (onnxruntime-gpu, on a GPU instance), then the CPU."""
    import onnxruntime

    from dropflow.vocabulary.onnx_session import execution_providers

    return execution_providers(gpu=True, available=onnxruntime.get_available_providers())


def load_cuda_libraries() -> bool:
    """Where this onnxruntime has the CUDA provider, load the CUDA and cuDNN libraries that
    pip installed beside it (onnxruntime-gpu[cuda,cudnn]: the nvidia-* wheels, which the
    dynamic loader does not search) before any session asks for CUDA; True when it tried.

    Without them the CUDA provider cannot start and every session runs on the CPU (with a
    warning, dropflow.vocabulary.onnx_session); a failure here is said and is not fatal."""
    import onnxruntime

    from dropflow.vocabulary.onnx_session import CUDA
    from serving.readiness import say

    if CUDA not in onnxruntime.get_available_providers():
        return False
    try:
        onnxruntime.preload_dlls()
    except (OSError, RuntimeError) as exc:  # a library missing or of another CUDA version
        say(f"CUDA libraries did not load ({exc}); sessions may fall back to the CPU")
    return True


def default_workers() -> int:
    """The CPUs this process may use, at most DEFAULT_MAX_WORKERS; 1 where onnxruntime runs
    on a GPU (each worker would hold its own copy of every model in the GPU's memory)."""
    from dropflow.vocabulary.onnx_session import CUDA

    if CUDA in session_providers():
        return 1
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, DEFAULT_MAX_WORKERS))


def parse_options(argv: list[str] | None = None) -> ServerOptions:
    env = os.environ
    parser = argparse.ArgumentParser(
        prog="python -m serving", description=(__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument("--host", default=env.get(ENV + "HOST", "0.0.0.0"))
    parser.add_argument("--port", type=int, default=int(env.get(ENV + "PORT", "8080")))
    parser.add_argument(
        "--workers",
        type=_workers,
        default=env.get(ENV + "WORKERS"),
        help=f"worker processes (default: {ENV}WORKERS, else the CPUs, at most "
        f"{DEFAULT_MAX_WORKERS})",
    )
    parser.add_argument(
        "--refresh",
        type=float,
        default=float(env.get(ENV + "REFRESH_SECONDS", "30")),
        help="seconds between preloads of new champions",
    )
    parser.add_argument(
        "--keep-alive",
        type=int,
        default=KEEP_ALIVE_SECONDS,
        help="seconds an idle connection is kept open",
    )
    parser.add_argument(
        "--graceful",
        type=int,
        default=GRACEFUL_SECONDS,
        help="seconds the requests under way get to finish on SIGTERM",
    )
    parser.add_argument("--access-log", action="store_true", help="log every request")
    args = parser.parse_args(argv)
    return ServerOptions(
        host=args.host,
        port=args.port,
        workers=args.workers if args.workers is not None else default_workers(),
        refresh_seconds=args.refresh,
        keep_alive_seconds=args.keep_alive,
        graceful_seconds=args.graceful,
        access_log=args.access_log,
    )


def _workers(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"{raw!r} is not a whole number from 1 to {MAX_WORKERS}")
    return value


def main(argv: list[str] | None = None) -> int:
    options = parse_options(argv)

    os.environ["DROPFLOW_SERVED_BY"] = "container"
    # No X-Ray daemon here. Metrics stay on: the few this server publishes (a model file that
    # is not its job's: dropflow.serving.service) are EMF lines on stdout, which the awslogs
    # driver takes to CloudWatch Logs, where they become metrics. `local up` turns them off.
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_SERVICE_NAME", "dropflow-serving")
    warnings.filterwarnings("ignore", message="No application metrics to publish")

    from dropflow.config import load_settings
    from dropflow.errors import ConfigError
    from serving.readiness import say

    try:  # here, once, rather than in every worker: a wrong variable stops the server
        load_settings()
    except ConfigError as exc:
        say(str(exc))
        return 2

    import uvicorn

    with tempfile.TemporaryDirectory(prefix="dropflow-serving-") as peers:
        options = replace(options, peers_dir=peers)
        os.environ.update(options.to_environ())  # what the workers read (create_app)
        # While uvicorn serves, it handles these itself (a graceful shutdown); before, there
        # is nothing under way to wait for; after, it raises the signal again, to exit as if
        # killed by it. A scale-in is a normal end: exit 0.
        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, _exit_normally)
        say(
            f"listening on http://{options.host}:{options.port} (pid {os.getpid()}, "
            f"{options.workers} worker{'s' if options.workers > 1 else ''}); loading models"
        )
        # GET /health names the provider each loaded model runs on (onnxruntime falls back
        # to the CPU, with a warning in this log, where CUDA cannot start).
        say(f"onnxruntime sessions ask for {', then '.join(session_providers())}")
        uvicorn.run(APP_FACTORY, factory=True, **uvicorn_settings(options))
    say("stopped")
    return 0


def uvicorn_settings(options: ServerOptions) -> dict[str, Any]:
    """uvicorn's settings (uvicorn.run's and uvicorn.Config's keywords) for `options`."""
    return {
        "host": options.host,
        "port": options.port,
        "workers": options.workers,
        "http": "h11",  # its header limit is settable (httptools' is not)
        "h11_max_incomplete_event_size": H11_MAX_HEAD_BYTES,
        "lifespan": "on",  # the preloading thread: a server that cannot start it fails
        "timeout_keep_alive": options.keep_alive_seconds,
        "timeout_graceful_shutdown": options.graceful_seconds,
        "access_log": options.access_log,
        "server_header": False,
        "proxy_headers": False,  # the event's sourceIp is the peer's (the load balancer's)
        "log_level": "info",
    }


def _exit_normally(signum: int, frame: Any) -> None:
    from serving.readiness import say

    say(f"stopped ({signal.Signals(signum).name})")
    raise SystemExit(0)


if __name__ == "__main__":
    sys.exit(main())
