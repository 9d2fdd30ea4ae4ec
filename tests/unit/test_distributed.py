"""How a rank of a torchrun job ends (training.distributed.end_process)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# A rank's last moments: a log line, output still in stdout's buffer (a pipe under torchrun),
# and an exit hook that only the interpreter's teardown would run.
ENDING = textwrap.dedent(
    """
    import atexit, logging, sys
    from training.distributed import end_process

    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    atexit.register(lambda: print("teardown ran", flush=True))
    logging.getLogger("rank").info("published v1")
    print("last words", end="")
    {call}
    """
)


def run_ending(call: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", ENDING.format(call=call)],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_rank_ends_with_its_code_and_its_output_but_no_interpreter_teardown():
    done = run_ending("end_process(75)")
    assert done.returncode == 75
    assert done.stdout == "last words"  # flushed, and no exit hook ran
    assert "published v1" in done.stderr


def test_the_same_script_ended_normally_runs_the_teardown():
    # The control: what end_process leaves out is there when the process exits the usual way.
    done = run_ending("sys.exit(75)")
    assert done.returncode == 75
    assert done.stdout == "last wordsteardown ran\n"
