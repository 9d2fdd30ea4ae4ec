"""The `dropflow` command: the local runtime, status, the demo and Docker-free invoke.

Heavy imports happen inside each command, so `dropflow --help` answers at once.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

from dropflow_dev.local.runtime import DEFAULT_HOME, MAX_JOBS_RULE, default_max_jobs


def _home(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--home",
        type=Path,
        default=DEFAULT_HOME,
        help=f"state folder of the local runtime (default {DEFAULT_HOME}, or $DROPFLOW_HOME)",
    )


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is less than 1: at least one job must run")
    return value


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dropflow")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "(not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="dropflow",
        description="Drop data, get a fresh model served. Locally, or on AWS with SAM.",
    )
    parser.add_argument(
        "--version", action="version", version=f"dropflow {_version()}", help="print the version"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    local = sub.add_parser("local", help="the embedded default: the whole loop on this machine")
    local_sub = local.add_subparsers(dest="local_command", required=True)
    up = local_sub.add_parser("up", help="watch the bucket folder, train, promote, serve HTTP")
    _home(up)
    up.add_argument(
        "--host",
        default="127.0.0.1",
        help="address the API listens on (default 127.0.0.1: this machine only)",
    )
    up.add_argument("--port", type=int, default=8080, help="port the API listens on (default 8080)")
    up.add_argument(
        "--schedule",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="send the retrain schedule event every SECONDS (default: off)",
    )
    up.add_argument("--verbose", action="store_true", help="also print the handlers' JSON logs")
    up.add_argument(
        "--max-jobs",
        type=_positive_int,
        metavar="N",
        help="training processes at once; the others wait in line, first come first served "
        f"(default: $DROPFLOW_MAX_CONCURRENT_JOBS, else {MAX_JOBS_RULE}: "
        f"{default_max_jobs()} on this machine)",
    )
    up.add_argument(
        "--container-threshold-mb",
        type=float,
        metavar="MB",
        help="route versions whose model.onnx is larger than MB to the container tier "
        "(default 200, as on AWS; lower it to exercise the container route)",
    )
    up.add_argument(
        "--container-port",
        type=int,
        default=0,
        help="port of the container tier's server (default: a free one)",
    )
    up.add_argument(
        "--no-container",
        dest="container",
        action="store_false",
        help="do not run the container tier (its models then answer 503)",
    )
    interrupt = local_sub.add_parser(
        "interrupt", help="announce a spot interruption to a running job (IMDS emulator)"
    )
    interrupt.add_argument(
        "job_id", metavar="JOB_ID", help="the running job (its id as `dropflow status` shows it)"
    )
    _home(interrupt)
    interrupt.add_argument(
        "--rebalance", action="store_true", help="send a rebalance recommendation instead"
    )

    status = sub.add_parser(
        "status", help="jobs and models, as a table that fits the terminal, or --json"
    )
    status.add_argument(
        "model", nargs="?", help="show only this model, its jobs in full (nothing cut)"
    )
    _home(status)
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.add_argument(
        "--wide", action="store_true", help="rows as long as their texts: nothing cut or left out"
    )

    demo = sub.add_parser("demo", help="run the loop once on a real dataset and exit")
    demo.add_argument("--data", type=Path, help="a CSV file to train on instead of the default")
    demo.add_argument(
        "--target",
        help="the column to predict in --data (default: the one named target, label, class or y)",
    )
    demo.add_argument("--home", type=Path, help="keep the demo's state here (default: a temp dir)")
    demo.add_argument("--timeout", type=float, default=300.0, help="seconds to wait for a model")

    _sample_parser(sub)

    invoke = sub.add_parser(
        "invoke", help="run one function of template.yaml with an event file (no Docker)"
    )
    invoke.add_argument(
        "function",
        metavar="FunctionLogicalId",
        help="the function's logical id in template.yaml, e.g. PredictFunction",
    )
    invoke.add_argument("-e", "--event", required=True, type=Path, help="event JSON file")
    invoke.add_argument("--template", type=Path, help="template.yaml (default: the checkout's)")
    invoke.add_argument("--env-vars", type=Path, help="JSON of environment overrides")
    _home(invoke)

    _events_parser(sub)

    models = sub.add_parser("models", help="the model registry: versions, cards, rollback")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    listing = models_sub.add_parser("list", help="versions of a model with their decisions")
    listing.add_argument("model", help="the model's name (its folder under datasets/)")
    _home(listing)
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    show = models_sub.add_parser("show", help="a version's card and decision (default: champion)")
    show.add_argument("model", help="the model's name (its folder under datasets/)")
    show.add_argument("--version", help="the version to show (default: the champion)")
    _home(show)
    show.add_argument("--json", action="store_true", help="the card and decision as JSON")
    back = models_sub.add_parser("rollback", help="make an earlier sound version the champion")
    back.add_argument("model", help="the model's name (its folder under datasets/)")
    back.add_argument(
        "--to",
        dest="to_version",
        metavar="VERSION",
        help="this version (default: the previous champion)",
    )
    _home(back)
    return parser


def _sample_parser(sub: Any) -> None:
    from dropflow_dev.sample import DEFAULT_TARGET, SAMPLES

    sample = sub.add_parser(
        "sample",
        help="write a small real dataset as CSV to stdout (dropflow sample iris > iris.csv)",
        description="Datasets shipped inside scikit-learn, so no download: "
        + "; ".join(f"{name}: {s.about}" for name, s in SAMPLES.items()),
    )
    sample.add_argument("name", choices=list(SAMPLES), help="which dataset")
    sample.add_argument(
        "--target",
        default=DEFAULT_TARGET,
        metavar="COLUMN",
        help=f"name of the label column, written last (default {DEFAULT_TARGET!r}: the name "
        "training looks for when the model's dropflow.yaml names no target)",
    )


def _events_parser(sub: Any) -> None:
    from dropflow_dev.event_shapes import KINDS

    listing = "\n".join(f"  {k.name:<25}{k.function:<23}{k.what}" for k in KINDS.values())
    events = sub.add_parser(
        "events",
        help="write an event for one function, filled in for your models (for invoke)",
        description="Write the event a function of template.yaml receives, filled in from the "
        "local home (or DROPFLOW_STORE_URL/DROPFLOW_REGISTRY_URL): e.g. `dropflow events "
        "predict --model iris > my.json && dropflow invoke PredictFunction -e my.json`.",
        epilog=f"kinds, the function each goes to, and what it holds:\n{listing}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    events.add_argument("kind", metavar="KIND", choices=list(KINDS), help="one of the kinds below")
    events.add_argument("--model", help="the model the event is about")
    events.add_argument(
        "--version",
        help="a published version (default: the champion; for card-created, the version the "
        "model's newest job published)",
    )
    events.add_argument(
        "--job", help="the job whose instance (EC2 kinds) or version (card-created) to use"
    )
    events.add_argument("--instance", help="the EC2 kinds' instance id, instead of a job's")
    events.add_argument(
        "--state", default="terminated", help="state-change only: the instance's new state"
    )
    events.add_argument(
        "--rows",
        type=_positive_int,
        default=2,
        help="predict and infer: how many of the version's holdout rows to send (default 2)",
    )
    events.add_argument("-o", "--output", type=Path, help="write the event here, not stdout")
    _home(events)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = _run(args)
        # Inside the try: a reader that left early is seen here, not at the interpreter's exit.
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # The reader (`dropflow status | head`) closed the pipe: it has what it wanted. Later
        # writes, the interpreter's last flush included, go nowhere instead of failing again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


def _run(args: argparse.Namespace) -> int:
    try:
        if args.command == "local":
            if args.local_command == "interrupt":
                return cmd_local_interrupt(args)
            return cmd_local_up(args)
        if args.command == "status":
            return cmd_status(args)
        if args.command == "demo":
            from dropflow_dev.demo import run_demo

            return run_demo(args.data, args.target, args.home, args.timeout)
        if args.command == "invoke":
            return cmd_invoke(args)
        if args.command == "sample":
            return cmd_sample(args)
        if args.command == "events":
            return cmd_events(args)
        if args.command == "models":
            return cmd_models(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        from dropflow.errors import DropflowError

        if isinstance(exc, BrokenPipeError):
            raise  # not the command's failure: main() handles it
        if isinstance(exc, DropflowError | OSError):
            print(f"dropflow: {exc}", file=sys.stderr)
            return 2
        raise
    return 2


def cmd_local_up(args: argparse.Namespace) -> int:
    # Said before anything slow: loading the handlers and their libraries takes seconds (tens
    # of seconds on a first start), and a silent terminal looks like a hang.
    print(
        f"dropflow local: starting in {args.home.expanduser()} (loading the functions; "
        "a first start can take a minute)",
        flush=True,
    )
    from dropflow_dev.local.runtime import LocalRuntime

    runtime = LocalRuntime(
        args.home,
        host=args.host,
        port=args.port,
        schedule_seconds=args.schedule,
        verbose=args.verbose,
        container=args.container,
        container_port=args.container_port,
        container_threshold_mb=args.container_threshold_mb,
        max_jobs=args.max_jobs,
    )
    # Ctrl-C and SIGTERM (a supervisor, a test) stop the loop, the API and the jobs cleanly,
    # also where the shell started us with SIGINT ignored (a background job).
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: runtime.request_stop())
    runtime.run()
    return 0


def cmd_sample(args: argparse.Namespace) -> int:
    import os

    from dropflow_dev.sample import write_sample

    try:
        write_sample(args.name, sys.stdout, target=args.target)
        sys.stdout.flush()
    except BrokenPipeError:
        # `dropflow sample iris | head`: the reader has what it wanted. Point stdout at
        # /dev/null so that the interpreter's own flush at exit has nowhere to fail.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0


def cmd_local_interrupt(args: argparse.Namespace) -> int:
    from dropflow import wiring
    from dropflow.adapters.local import instance_state
    from dropflow.errors import DropflowError
    from dropflow.records.jobs import JobState
    from dropflow_dev.local.runtime import configure

    paths = configure(args.home)
    job = wiring.jobs().get(args.job_id)
    attempt = job.current_attempt
    live = (JobState.LAUNCHING, JobState.RUNNING, JobState.EXPORTING)
    if job.state not in live or attempt is None or not attempt.instance_id:
        raise DropflowError(f"job {job.job_id} is {job.state.value}: nothing to interrupt")
    where = f"job {job.job_id} attempt {attempt.number} (instance {attempt.instance_id})"
    if args.rebalance:
        instance_state.announce_rebalance(paths.compute, attempt.instance_id)
        print(f"rebalance recommendation sent to {where}")
    else:
        notice = instance_state.announce_interruption(paths.compute, attempt.instance_id)
        print(
            f"spot interruption announced to {where}: {notice['action']} at {notice['time']}; "
            "the job checkpoints and exits, and `dropflow local up` starts the next attempt"
        )
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    from dropflow_dev.local.runtime import configure
    from dropflow_dev.status import collect, render, render_model

    configure(args.home)
    report = collect()
    if args.model is not None:
        known = sorted(
            {m["model"] for m in report["models"]} | {j["model"] for j in report["jobs"]}
        )
        if args.model not in known:
            listed = ", ".join(known) or "none yet"
            print(
                f"dropflow: no model {args.model!r} in {args.home} (models: {listed})",
                file=sys.stderr,
            )
            return 2
        report["jobs"] = [j for j in report["jobs"] if j["model"] == args.model]
        report["models"] = [m for m in report["models"] if m["model"] == args.model]
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    elif args.model is not None:
        print(render_model(report, args.model))
    else:
        print(render(report, wide=args.wide))
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from dropflow import wiring
    from dropflow.config import settings
    from dropflow.promotion.rollback import list_versions, rollback, show_version
    from dropflow_dev.local.runtime import configure

    configure(args.home)
    if args.models_command == "list":
        rows = list_versions(args.model, wiring.registry())
        if args.json:
            print(json.dumps(rows, indent=2, default=str))
            return 0
        for row in rows:
            mark = "*" if row["champion"] else " "
            value = row["primary_value"]
            metric = "" if value is None else f"{row['primary_metric']}={value:.4g}"
            reason = row["reason"] or ""
            if row.get("retired_at"):
                reason = f"[retired: files expire] {reason}"
            print(f"{mark} {row['version']}  {row['decision']:<8}  {metric:<18}  {reason}")
        return 0
    if args.models_command == "show":
        shown = show_version(args.model, wiring.store(), wiring.registry(), args.version)
        if args.json:
            print(json.dumps(shown, indent=2, default=str))
        else:
            from dropflow_dev.cards import render_card

            print(render_card(shown))
        return 0
    result = rollback(
        args.model,
        wiring.store(),
        wiring.registry(),
        args.to_version,
        keep_versions=settings().keep_versions,
        tier=wiring.container_tier(),
    )
    print(
        f"{args.model}: champion {result.champion_before} -> {result.champion_after}"
        f" ({result.reason})"
    )
    return 0


def cmd_events(args: argparse.Namespace) -> int:
    from dropflow_dev import sample_events

    request = sample_events.Request(
        args.kind,
        model=args.model,
        version=args.version,
        job=args.job,
        instance=args.instance,
        state=args.state,
        rows=args.rows,
        bucket=sample_events.bucket_name(),
    )
    event, notes = sample_events.build(request, sample_events.open_state(args.home))
    for note in notes:
        print(f"dropflow events: {note}", file=sys.stderr)
    text = json.dumps(event, indent=2) + "\n"
    if args.output is None:
        sys.stdout.write(text)
    else:
        args.output.write_text(text)
        print(f"dropflow events: wrote {args.output}", file=sys.stderr)
    return 0


def cmd_invoke(args: argparse.Namespace) -> int:
    import os

    from dropflow_dev import invoke
    from dropflow_dev.local.runtime import configure, find_template

    if "DROPFLOW_STORE_URL" not in os.environ:  # default to the local runtime's state
        configure(args.home)
    argv: list[Any] = [args.function, "-e", str(args.event)]
    argv += ["--template", str(args.template or find_template())]
    if args.env_vars:
        argv += ["--env-vars", str(args.env_vars)]
    return invoke.main(argv)


if __name__ == "__main__":
    sys.exit(main())
