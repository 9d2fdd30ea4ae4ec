"""One cold start, for bench/serving.py: import a handler file, answer one event, report.

    python bench/cold_start.py <handler.py> <event.json>

Run in a fresh process with the handler's environment set by the caller; it does what the
Lambda runtime does on a cold start (import the handler module from its code directory, call
lambda_handler once) and prints one JSON line: the answer's status and where the time went.
The caller times the whole, from starting the process to reading that line.
"""

import time

STARTED = time.perf_counter()

import importlib.util  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import uuid  # noqa: E402
from pathlib import Path  # noqa: E402


class Context:
    """The attributes of the Lambda context that handlers and powertools read."""

    function_name = "PredictFunction"
    function_version = "$LATEST"
    memory_limit_in_mb = 1024
    invoked_function_arn = "arn:aws:lambda:local:000000000000:function:PredictFunction"
    log_group_name = "/aws/lambda/PredictFunction"
    log_stream_name = "cold-start"
    aws_request_id = str(uuid.uuid4())

    @staticmethod
    def get_remaining_time_in_millis() -> int:
        return 29_000


def main() -> None:
    handler_file, event_file = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
    sys.path.insert(0, str(handler_file.parent))  # the function's code directory
    spec = importlib.util.spec_from_file_location("handler_under_test", handler_file)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    imported = time.perf_counter()
    event = json.loads(event_file.read_text())
    answer = module.lambda_handler(event, Context())
    answered = time.perf_counter()
    report = {
        "status": answer["statusCode"],
        "import_s": imported - STARTED,
        "first_call_s": answered - imported,
    }
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
