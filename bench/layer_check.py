"""Does the predict function run from the pruned layers alone? For bench/serving.py.

    python bench/layer_check.py <dropflow home with a champion> [--python python3.12]

The layers' Makefiles (layers/*/Makefile, what `sam build` runs) are built again for this
machine's architecture (ARCH=x86_64 here: the deployed arm64 artifacts cannot run on it) into
a temporary folder, with boto3 installed beside them in place of the Lambda runtime's own SDK.
Then an isolated python3.12 (-I -S: no site-packages, no user paths) with only the function's
code, the two layers and that SDK on sys.path imports functions/predict/app.py with tracing
on, as in Lambda, and answers GET /health and POST /models/<model>/predict from the home's
local store. Any import of something the layers removed fails here. The predict function
itself must not load the X-Ray SDK (its cold start is what a client waits for); the other
functions' tracer, from the same layer, must work.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = {"DropflowLayer": "layers/dropflow", "OnnxRuntimeLayer": "layers/onnxruntime"}

# Runs inside the isolated python3.12: imports the function as Lambda does; argv[1] = paths.
PRELUDE = r"""
import json, os, sys, time
paths = json.loads(sys.argv[1])
sys.path[:0] = paths
import importlib.util
spec = importlib.util.spec_from_file_location("app", os.path.join(paths[0], "app.py"))
app = importlib.util.module_from_spec(spec)
sys.modules["app"] = app
spec.loader.exec_module(app)

class Context:
    function_name = "PredictFunction"
    function_version = "$LATEST"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:us-east-1:000000000000:function:PredictFunction"
    aws_request_id = "layer-check"
    log_group_name = log_stream_name = "layer-check"
    def get_remaining_time_in_millis(self):
        return 29000
"""
# argv[2]: the events to answer; reports what was loaded from where.
PROBE = (
    PRELUDE
    + r"""
events = json.loads(sys.argv[2])
answers = [app.lambda_handler(event, Context()) for event in events]
xray_at_cold_start = sorted(m for m in sys.modules if m.startswith("aws_xray_sdk"))
stdlib = os.path.dirname(os.__file__)
outside = sorted(
    name for name, module in list(sys.modules.items())
    if getattr(module, "__file__", None)
    and not any(module.__file__.startswith(p) for p in paths + [stdlib, sys.base_prefix])
)
from dropflow.observability import tracer  # the other functions', from the same layer
import aws_xray_sdk, botocore
print("RESULT " + json.dumps({
    "statuses": [a["statusCode"] for a in answers],
    "predict": json.loads(answers[-1]["body"]),
    "outside": outside,
    "botocore_from": botocore.__file__,
    "xray_at_cold_start": xray_at_cold_start,
    "tracer_enabled": not tracer.disabled,
    "xray_in_layer": aws_xray_sdk.__file__.startswith(paths[1]),
}))
"""
)
# argv[2]: one predict event, argv[3]: time.time() when the process was started. A cold start.
COLD = (
    PRELUDE
    + r"""
answer = app.lambda_handler(json.loads(sys.argv[2]), Context())
seconds = time.time() - float(sys.argv[3])
print("COLD " + json.dumps({"status": answer["statusCode"], "seconds": seconds}))
"""
)
COLD_RUNS = 5


def quietly(command: list[str], cwd: Path = ROOT) -> None:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}{done.stderr[-3000:]}")


def build(python: str, arch: str, out: Path) -> dict[str, Path]:
    sites = {}
    for layer, source in LAYERS.items():
        artifacts = out / layer
        quietly(
            [
                *("make", "-s", "-f", str(ROOT / source / "Makefile"), f"build-{layer}"),
                *(f"ARTIFACTS_DIR={artifacts}", f"ARCH={arch}", f"PYTHON={python}"),
            ],
            cwd=ROOT / source,
        )
        sites[layer] = artifacts / "python"
    # What the Lambda python3.12 runtime provides and the dropflow layer leaves out.
    runtime = out / "runtime-sdk"
    quietly(
        [
            *(python, "-m", "pip", "install", "--quiet", "--no-compile"),
            *("--disable-pip-version-check", "--target", str(runtime), "boto3"),
        ]
    )
    sites["runtime"] = runtime
    return sites


def cold_starts(python: str, paths: list[str], event: dict, env: dict) -> list:
    """Seconds from starting python to the predict function's first answer, COLD_RUNS times.

    -B: python writes no bytecode, as in Lambda, where /opt is read-only; what the paths ship
    is used, and the standard library's own (the runtime ships it compiled)."""
    seconds = []
    for _ in range(COLD_RUNS):
        command = [python, "-I", "-S", "-B", "-c", COLD, json.dumps(paths), json.dumps(event)]
        done = subprocess.run(
            [*command, repr(time.time())], env=env, capture_output=True, text=True, timeout=120
        )
        lines = [line for line in done.stdout.splitlines() if line.startswith("COLD ")]
        report = json.loads(lines[-1][len("COLD ") :]) if lines else {}
        if done.returncode != 0 or report.get("status") != 200:
            raise SystemExit(f"cold start failed:\n{done.stdout[-1000:]}{done.stderr[-2000:]}")
        seconds.append(report["seconds"])
    return seconds


def events(model: str) -> list[dict]:
    template = json.loads((ROOT / "events" / "apigw-predict.json").read_text())
    health = json.loads((ROOT / "events" / "apigw-health.json").read_text())
    template["path"] = f"/models/{model}/predict"
    return [health, template]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("home", type=Path)
    parser.add_argument("--model", default="breast-cancer")
    parser.add_argument("--python", default=shutil.which("python3.12") or "python3.12")
    args = parser.parse_args(argv)
    arch = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}[
        platform.machine().lower()
    ]
    home = args.home.resolve()
    with tempfile.TemporaryDirectory(prefix="dropflow-layer-check-") as tmp:
        sites = build(args.python, arch, Path(tmp))
        sizes = {
            k: sum(p.stat().st_size for p in v.rglob("*") if p.is_file()) for k, v in sites.items()
        }
        paths = [
            str(ROOT / "functions" / "predict"),
            str(sites["DropflowLayer"]),
            str(sites["OnnxRuntimeLayer"]),
            str(sites["runtime"]),
        ]
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "DROPFLOW_STORE_URL": (home / "bucket").as_uri(),
            "DROPFLOW_REGISTRY_URL": f"sqlite://{home / 'registry.db'}",
            "DROPFLOW_COMPUTE_URL": f"process://{home / 'compute'}",
            "POWERTOOLS_SERVICE_NAME": "dropflow",
            "POWERTOOLS_LOG_LEVEL": "WARNING",
            "PYDANTIC_DISABLE_PLUGINS": "__all__",  # as template.yaml's Globals set it
            # As in Lambda with Tracing: Active: powertools' Tracer and aws-xray-sdk are on
            # (segments go to the X-Ray daemon's UDP port, where nothing listens here).
            "AWS_LAMBDA_FUNCTION_NAME": "PredictFunction",
            "LAMBDA_TASK_ROOT": paths[0],
            "AWS_REGION": "us-east-1",
            "_X_AMZN_TRACE_ID": "Root=1-6740f0a0-0123456789abcdef01234567;Parent=0123456789abcdef;"
            "Sampled=1",
        }
        done = subprocess.run(
            [
                args.python,
                "-I",
                "-S",
                "-c",
                PROBE,
                json.dumps(paths),
                json.dumps(events(args.model)),
            ],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode == 0:
            predict = events(args.model)[-1]
            shipped = cold_starts(args.python, paths, predict, env)
            # The same layers as they were built before they shipped bytecode.
            bare = [paths[0]]
            for n, site in enumerate(paths[1:]):
                copy = Path(tmp) / "no-bytecode" / str(n)
                shutil.copytree(site, copy, ignore=shutil.ignore_patterns("__pycache__"))
                bare.append(str(copy))
            compiled = cold_starts(args.python, bare, predict, env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        print(
            f"  layer check: FAIL (exit {done.returncode})\n"
            f"{done.stdout[-2000:]}{done.stderr[-3000:]}"
        )
        return 1
    result = json.loads(lines[-1][len("RESULT ") :])
    ok = bool(
        result["statuses"] == [200, 200]
        and not result["outside"]
        and result["predict"].get("predictions")
        and not result["xray_at_cold_start"]
        and result["tracer_enabled"]
        and result["xray_in_layer"]
    )
    print(
        f"  layer check ({arch} build of the same Makefiles, python3.12 -I -S): health and "
        f"predict answered {result['statuses']}, predictions {result['predict'].get('predictions')}"
    )
    loaded = result["xray_at_cold_start"]
    print(f"    X-Ray SDK loaded by the predict function: {loaded or 'none (as it should)'}")
    tracer = "on, aws-xray-sdk from the layer" if result["tracer_enabled"] else "OFF"
    print(f"    the other functions' powertools Tracer {tracer} (as with Tracing: Active)")
    sdk = result["botocore_from"]
    sdk = "the runtime stand-in" if "runtime-sdk" in sdk else sdk
    print(
        f"    on sys.path: the function, DropflowLayer {sizes['DropflowLayer'] / 1e6:.1f} MB, "
        f"OnnxRuntimeLayer {sizes['OnnxRuntimeLayer'] / 1e6:.1f} MB, and boto3 standing in for "
        f"the runtime's SDK; botocore came from {sdk}"
    )
    print(
        f"    cold start from these layers (python -> first prediction, median of {COLD_RUNS}): "
        f"{statistics.median(shipped) * 1e3:.0f} ms with the bytecode they ship, "
        f"{statistics.median(compiled) * 1e3:.0f} ms from the same layers without their bytecode"
    )
    if result["outside"]:
        print(f"    modules from outside those paths: {result['outside'][:10]}")
    print(f"    {'PASS' if ok else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
