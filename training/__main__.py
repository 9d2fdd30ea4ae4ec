"""`python -m training --job-id J --attempt N`: run one training attempt and exit.

Arguments fall back to DROPFLOW_JOB_ID and DROPFLOW_ATTEMPT (how the launcher passes them to
an instance or child process). The store and registry come from DROPFLOW_STORE_URL and
DROPFLOW_REGISTRY_URL. The exit code is a dropflow.records.jobs.ExitCode for the tracker: 0
published,
1 crashed, 2 bad data or spec, 75 interrupted with a checkpoint stored (resume me); see
training.job.

Several GPUs: `torchrun --nproc_per_node=<gpus> -m training --job-id J --attempt N`. Rank 0
watches the instance metadata service for spot notices (AWS_EC2_METADATA_SERVICE_ENDPOINT,
else the EC2 default) and does all the writing; SIGTERM or SIGINT to any rank stops them all
at the same step, after a checkpoint.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any

from dropflow.config import settings
from dropflow.errors import ConfigError
from dropflow.records.jobs import ExitCode
from dropflow.wiring import open_registry, open_store


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, open the adapters and run the job; return the exit code.

    A rank of a torchrun job (WORLD_SIZE > 1) does not return: it ends the process with that
    code (training.distributed.end_process).
    """
    parser = argparse.ArgumentParser(
        prog="python -m training", description="Run one dropflow training attempt."
    )
    parser.add_argument(
        "--job-id", default=os.environ.get("DROPFLOW_JOB_ID"), help="default: $DROPFLOW_JOB_ID"
    )
    parser.add_argument(
        "--attempt",
        type=int,
        default=os.environ.get("DROPFLOW_ATTEMPT", "1"),
        help="1-based attempt number (default: $DROPFLOW_ATTEMPT, else 1)",
    )
    args = parser.parse_args(argv)
    if not args.job_id:
        parser.error("--job-id is required (or set DROPFLOW_JOB_ID)")

    # Plain lines on stdout: the instance console (log.txt gets them through training.joblog).
    rank = int(os.environ.get("RANK", "0") or 0)
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    prefix = f"[rank {rank}] " if world > 1 else ""
    logging.basicConfig(
        stream=sys.stdout,
        level=logging.INFO,
        format=f"%(asctime)s %(levelname)s {prefix}%(message)s",
    )
    try:
        config = settings()
        store = open_store(config.store_url)
        registry = open_registry(config.registry_url)
    except ConfigError as exc:
        print(f"dropflow training: {exc}", file=sys.stderr)
        return ExitCode.CRASHED

    # torch loads here, after the cheap checks, so a misconfigured run fails in milliseconds.
    from training.job import run_job

    code = run_job(args.job_id, args.attempt, store, registry, watcher=_watcher(rank))
    if world > 1:
        from training.distributed import end_process

        end_process(code)  # see there: a torchrun rank must not tear the interpreter down
    return code


def _watcher(rank: int) -> Any:
    """The spot-notice watcher for the main rank (None on the others)."""
    if rank != 0:
        return None
    from training.interruption import InterruptionWatcher

    return InterruptionWatcher()


if __name__ == "__main__":
    sys.exit(int(main()))
