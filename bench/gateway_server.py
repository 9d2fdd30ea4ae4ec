"""The local HTTP API alone, for bench/serving.py's load test.

    python bench/gateway_server.py <dropflow home>

Serves functions/predict/app.py through dropflow_dev.local.gateway on 127.0.0.1 (a free port)
with the local adapters of <home>, as `dropflow local up` does, but without the watcher,
scheduler and training processes, so that nothing else competes for the CPU. Prints
`url <url>` once listening, then writes its stdout (the handler's logs) to
<home>/gateway-stdout.txt; stops when its stdin closes (or on SIGTERM / Ctrl-C).
"""

import os
import signal
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    from dropflow_dev.invoke import load_function
    from dropflow_dev.local.gateway import Gateway
    from dropflow_dev.local.runtime import configure

    configure(Path(sys.argv[1]))
    warnings.filterwarnings("ignore", message="No application metrics to publish")
    handler, _ = load_function(ROOT / "template.yaml", "PredictFunction")  # as local up does
    gateway = Gateway(handler, host="127.0.0.1", port=0)
    signal.signal(signal.SIGTERM, lambda *_: sys.stdin.close())
    gateway.start()
    try:
        print(f"url {gateway.url}", flush=True)
        # Nobody reads the pipe on: the handlers' log and metric lines (powertools writes to
        # the stdout it found at import) go to <home>/gateway-stdout.txt instead, at fd level.
        log = os.open(
            Path(sys.argv[1]) / "gateway-stdout.txt", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644
        )
        os.dup2(log, sys.stdout.fileno())
        sys.stdin.read()  # until the parent closes our stdin
    except (KeyboardInterrupt, ValueError):
        pass
    finally:
        gateway.stop()


if __name__ == "__main__":
    main()
