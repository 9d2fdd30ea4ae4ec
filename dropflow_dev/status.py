"""What `dropflow status` shows: every job and every model, for people and for scripts.

Each job shows what it cost, what it saved against on-demand, and the seconds of work its
interrupted attempts lost (dropflow.records.ledger has the ledger). A job waiting for a
training slot (the cap on jobs at once, `local up --max-jobs`) shows its place in line
(dropflow.records.training_queue).

The table fits the terminal (rich measures it; COLUMNS or 80 where there is none): a column
that does not fit ends with an ellipsis, and `--wide` or `dropflow status <model>` shows
every text whole. Cost columns appear only where some job was priced (locally nothing is).
A job the registry still calls active whose process has ended reads "stale (runtime
stopped)": nothing is left to move it on until `dropflow local up` runs again.
"""

from __future__ import annotations

import io
import time
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from dropflow import wiring
from dropflow.control.tracker import INTERRUPTED_PREFIX
from dropflow.ports import Compute, InstanceState
from dropflow.records.catalog import VersionRecord
from dropflow.records.jobs import Job
from dropflow.records.ledger import describe_usd, job_ledger
from dropflow.records.training_queue import TrainingQueue

STALE = "stale (runtime stopped)"


def collect(now: float | None = None, *, compute: Compute | None = None) -> dict[str, Any]:
    """Jobs (newest first) and models with their champion, as plain JSON-able data.

    Each job has its cost ledger as of `now` (dropflow.records.ledger.Ledger.to_dict: cost_usd,
    on_demand_equivalent_usd, savings_usd, savings_percent, seconds_lost, and per attempt);
    an unknown amount is null, never 0. `queue_position` is a waiting job's place in line for
    a training slot (1: next to start), null for the others; `training_slots` says how many
    jobs hold a slot and how many wait. `duration_seconds` is how long the job has run (an
    active one) or took (an ended one) since it was created, its wait in line included;
    `resumes` counts the attempts that followed an interruption; `stale` is true for an
    active job whose instance has ended with no tracker to record it (`compute`, default the
    wiring's, says which instances still run).
    """
    now = time.time() if now is None else now
    store = wiring.jobs()
    jobs = sorted(store.all(), key=lambda j: j.created_at, reverse=True)
    queue = TrainingQueue(store.registry).state()  # the line lives beside the jobs
    catalog = wiring.catalog()
    models = []
    decided: dict[tuple[str, str | None], VersionRecord] = {}  # (model, version) -> decision
    for name in catalog.models():
        champion = catalog.champion(name)
        versions = catalog.versions(name)
        decided.update({(name, v.version): v for v in versions})
        current = next((v for v in versions if champion and v.version == champion.version), None)
        models.append(
            {
                "model": name,
                "champion": champion.version if champion else None,
                # Which tier serves the champion: lambda, or container (serving/).
                "route": champion.route if champion else None,
                "versions": len(versions),
                "metric": current.primary_metric if current else None,
                "value": current.primary_value if current else None,
            }
        )
    # What promotion decided for the version each job published (None before it did), and why.
    outcome = {j.job_id: decided.get((j.model, j.version)) for j in jobs}
    return {
        "jobs": [
            {
                "job_id": j.job_id,
                "model": j.model,
                "state": j.state.value,
                "attempts": len(j.attempts),
                "version": j.version,
                "reason": j.reason,
                "decision": getattr(outcome[j.job_id], "decision", None),
                "decision_reason": getattr(outcome[j.job_id], "reason", None),
                "progress": j.progress,
                "created_at": j.created_at,
                "queue_position": queue.position(j.job_id),
                "cost": job_ledger(j, now).to_dict(),
                "duration_seconds": _duration(j, now),
                "resumes": resumes(j),
                "stale": _stale(j, compute),
            }
            for j in jobs
        ],
        "models": models,
        "training_slots": {"running": len(queue.running), "waiting": len(queue.waiting)},
    }


_ACTIVE = {"launching", "running", "exporting"}


def resumes(job: Job) -> int:
    """How many of the job's attempts started again after an interrupted one."""
    before = [a.exit_reason or "" for a in job.attempts[:-1]]
    return sum(1 for reason in before if reason.startswith(INTERRUPTED_PREFIX))


def _duration(job: Job, now: float) -> float:
    # An ended job's record was last written when it ended; an active one runs until now.
    end = job.updated_at if job.state.terminal else now
    return max(0.0, end - job.created_at)


def _stale(job: Job, compute: Compute | None) -> bool:
    attempt = job.current_attempt
    if job.state.value not in _ACTIVE or attempt is None or not attempt.instance_id:
        return False
    compute = compute if compute is not None else wiring.compute()
    instance = compute.describe(attempt.instance_id)
    return instance is None or instance.state == InstanceState.TERMINATED


def _age(epoch: float) -> str:
    seconds = max(0, int(time.time() - epoch))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def describe_progress(progress: dict[str, Any]) -> str:
    """One line from a job's heartbeat: stage, rows read while loading, epoch, loss,
    throughput and time left (of the read while loading, of training after)."""
    if not progress:
        return ""
    parts = [str(progress.get("stage") or "")]
    if isinstance(progress.get("rows_read"), int | float):
        parts.append(f"{progress['rows_read']:,.0f} rows read")
    if isinstance(progress.get("read_fraction"), int | float):
        parts.append(f"({progress['read_fraction']:.0%})")
    if isinstance(progress.get("load_eta_seconds"), int | float):
        parts.append(f"ETA {progress['load_eta_seconds']:.0f}s")
    if progress.get("epoch") is not None and progress.get("epochs"):
        parts.append(f"epoch {progress['epoch']}/{progress['epochs']}")
    if isinstance(progress.get("loss"), int | float):
        parts.append(f"loss {progress['loss']:.4g}")
    if isinstance(progress.get("samples_per_second"), int | float):
        parts.append(f"{progress['samples_per_second']:,.0f} samples/s")
    if isinstance(progress.get("eta_seconds"), int | float):
        parts.append(f"ETA {progress['eta_seconds']:.0f}s")
    if progress.get("notice"):
        parts.append(f"notice: {progress['notice']}")
    return " ".join(p for p in parts if p)


def _seconds(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def describe_cost(cost: dict[str, Any] | None) -> tuple[str, str, str]:
    """(cost, savings, seconds lost) of a job's ledger for the table, e.g.
    ("$0.42", "$0.96 (70%)", "1m05s"). Unknown amounts read `unknown`; no ledger, blanks."""
    if not cost:
        return "", "", ""
    savings = describe_usd(cost.get("savings_usd"))
    if cost.get("savings_percent") is not None:
        savings += f" ({cost['savings_percent']:.0f}%)"
    return (
        describe_usd(cost.get("cost_usd")),
        savings,
        _seconds(float(cost.get("seconds_lost") or 0.0)),
    )


def _outcome(job: dict[str, Any]) -> str:
    """The job's last column: its version (and why promotion rejected it), its progress while
    it runs, or why it failed. The table may cut it to fit; `status <model>` shows it whole."""
    if job["version"]:
        if job.get("decision") == "rejected":
            return f"{job['version']} rejected: {job.get('decision_reason') or ''}".rstrip()
        return job["version"]
    if job["state"] in _ACTIVE:
        return describe_progress(job["progress"])
    return job["reason"] or ""


def describe_place(position: int | None, slots: dict[str, int] | None) -> str:
    """A waiting job's place in line, e.g. "number 2 of 5 in line for a training slot (3
    training)"; "" for a job that is not waiting."""
    if position is None:
        return ""
    slots = slots or {}
    waiting = slots.get("waiting") or position
    training = f" ({slots['running']} training)" if slots.get("running") is not None else ""
    return f"number {position} of {waiting} in line for a training slot{training}"


def _priced(report: dict[str, Any]) -> bool:
    """True when some job ran at a price: locally every price is 0, and the cost columns
    would only repeat $0.00."""
    for job in report["jobs"]:
        cost = job.get("cost") or {}
        amounts = (cost.get("cost_usd"), cost.get("on_demand_equivalent_usd"))
        if cost and any(a is None or a != 0 for a in amounts):
            return True
    return False


def _state(job: dict[str, Any]) -> str:
    return STALE if job.get("stale") else job["state"]


def _resumed(job: dict[str, Any]) -> str:
    """e.g. "2, lost 1m05s"; "" for a job that never resumed and lost nothing."""
    count = int(job.get("resumes") or 0)
    lost = float((job.get("cost") or {}).get("seconds_lost") or 0.0)
    if not count and not lost:
        return ""
    return f"{count}, lost {_seconds(lost)}"


def _detail(job: dict[str, Any], slots: dict[str, int] | None) -> str:
    return describe_place(job.get("queue_position"), slots) or _outcome(job)


def _console(width: int | None) -> tuple[Console, io.StringIO]:
    buffer = io.StringIO()
    # No colour, markup or highlighting: reasons quote file names and brackets verbatim.
    console = Console(
        file=buffer,
        width=width,
        color_system=None,
        force_terminal=False,
        markup=False,
        emoji=False,
        highlight=False,
    )
    return console, buffer


# The last column's least width before others give way, and the order they give it up in:
# the model is the job id's first part, the age orders nothing the list does not.
_DETAIL_MIN = 20
_DROPPED_FIRST = ("CREATED", "MODEL", "SAVED")
_WRAPPED = ("STATE", "RESUMES")
_GAP = 2


def render(report: dict[str, Any], *, width: int | None = None, wide: bool = False) -> str:
    """The report as two tables that fit `width` columns (default: the terminal's, else
    $COLUMNS, else 80). Where a row is too long, the job's age, then its model (the job id
    begins with it) are left out, and the last column ends with an ellipsis. With `wide`,
    nothing is cut or left out: each row is as long as its texts."""
    slots = report.get("training_slots")
    jobs = report["jobs"]
    priced = _priced(report)
    resumed = any(_resumed(j) for j in jobs)
    console, buffer = _console(None if wide else width)
    if wide:
        console.width = 100_000  # rows as long as their texts; trailing blanks are cut below

    columns: dict[str, list[str]] = {
        "JOB ID": [j["job_id"] for j in jobs],
        "MODEL": [j["model"] for j in jobs],
        "STATE": [_state(j) for j in jobs],
        "TIME": [_seconds(j.get("duration_seconds") or 0) for j in jobs],
    }
    if resumed:
        columns["RESUMES"] = [_resumed(j) for j in jobs]
    if priced:
        costs = [describe_cost(j.get("cost")) for j in jobs]
        columns["COST"] = [c[0] for c in costs]
        columns["SAVED"] = [c[1] for c in costs]
    columns["CREATED"] = [_age(j["created_at"]) for j in jobs]
    detail = ("DETAIL", [_detail(j, slots) for j in jobs])
    job_table = _fitted(columns, detail, console.width)

    model_table = _fitted(
        {
            "MODEL": [m["model"] for m in report["models"]],
            "CHAMPION": [m["champion"] or "(none yet)" for m in report["models"]],
            "SERVED BY": [m["route"] or "" for m in report["models"]],
            "VERSIONS": [str(m["versions"]) for m in report["models"]],
        },
        ("METRIC", [_metric(m) for m in report["models"]]),
        console.width,
    )

    console.print("JOBS")
    console.print(job_table if jobs else "  (no jobs yet)")
    console.print()
    console.print("MODELS")
    console.print(model_table if report["models"] else "  (no models yet)")
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines())


def _fitted(columns: dict[str, list[str]], last: tuple[str, list[str]], width: int) -> Table:
    """A table of `columns` then `last`, within `width`: until `last` has _DETAIL_MIN
    characters, the columns of _DROPPED_FIRST are left out, then those of _WRAPPED wrap at
    their words; `last` is cut with an ellipsis. The job id is never cut: it is what
    `dropflow local interrupt` and the logs name."""

    def natural(name: str) -> int:
        return max([len(name), *(len(c) for c in columns[name])])

    def narrow(name: str) -> int:
        words = [w for c in columns[name] for w in c.split()]
        return max([len(name), *(len(w) for w in words)])

    widths = {name: natural(name) for name in columns}

    def room() -> int:
        return width - sum(w + _GAP for w in widths.values())

    for name in _DROPPED_FIRST:
        if room() >= _DETAIL_MIN:
            break
        widths.pop(name, None)
    for name in _WRAPPED:
        if room() >= _DETAIL_MIN:
            break
        if name in widths:
            widths[name] = narrow(name)
    table = _new_table()
    for name, size in widths.items():
        table.add_column(name, no_wrap=name not in _WRAPPED, width=size)
    header, cells = last
    table.add_column(header, no_wrap=True, overflow="ellipsis", max_width=max(len(header), room()))
    for row in zip(*(columns[n] for n in widths), cells, strict=True):
        table.add_row(*(Text(c) for c in row))
    return table


def _new_table() -> Table:
    # Plain columns two spaces apart, as `docker ps` and `kubectl get` print them.
    return Table(
        box=None,
        padding=(0, 2, 0, 0),
        pad_edge=False,
        show_edge=False,
        header_style="",
        expand=False,
    )


def _metric(model: dict[str, Any]) -> str:
    if model["metric"] and model["value"] is not None:
        return f"{model['metric']}={model['value']:.4f}"
    return ""


def _when(epoch: float) -> str:
    stamp = datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    return f"{stamp} ({_age(epoch)})"


def render_model(report: dict[str, Any], model: str) -> str:
    """One model in full: its champion, then each of its jobs (newest first) as a block of
    `name  value` lines, every text whole (a terminal wraps them; nothing is cut)."""
    found = next((m for m in report["models"] if m["model"] == model), None)
    jobs = [j for j in report["jobs"] if j["model"] == model]
    lines = []
    if found is not None:
        champion = found["champion"] or "(none yet)"
        served = f", served by {found['route']}" if found["route"] else ""
        metric = f", {_metric(found)}" if _metric(found) else ""
        lines.append(
            f"{model}: champion {champion}{served}, {found['versions']} "
            f"version{'s' if found['versions'] != 1 else ''}{metric}"
        )
    priced = _priced({"jobs": jobs})
    slots = report.get("training_slots")
    for j in jobs:
        ended = j["state"] in ("published", "failed")
        fields = [
            ("state", _state(j)),
            ("attempts", str(j["attempts"])),
            ("resumes", _resumed(j) or "0"),
            ("took" if ended else "running for", _seconds(j.get("duration_seconds") or 0)),
            ("created", _when(j["created_at"])),
        ]
        if priced:
            cost, saved, _lost = describe_cost(j.get("cost"))
            fields.append(("cost", f"{cost}, saved {saved}"))
        if j.get("queue_position") is not None:
            fields.append(("waiting", describe_place(j["queue_position"], slots)))
        if j["version"]:
            fields.append(("version", j["version"]))
            if j.get("decision"):
                reason = j.get("decision_reason") or ""
                fields.append(("decision", f"{j['decision']}: {reason}".rstrip(": ")))
        elif j["state"] in _ACTIVE and j.get("progress"):
            fields.append(("progress", describe_progress(j["progress"])))
        if j["reason"]:
            fields.append(("reason", j["reason"]))
        lines += ["", f"job {j['job_id']}"]
        lines += [f"  {name:<12}{value}" for name, value in fields]
    return "\n".join(lines)
