"""What `dropflow status` shows: every job and every model, for people and for scripts.

Each job shows what it cost, what it saved against on-demand, and the seconds of work its
interrupted attempts lost (dropflow.records.ledger has the ledger). A job waiting for a
training slot (the cap on jobs at once, `local up --max-jobs`) shows its place in line
(dropflow.records.training_queue).
"""

from __future__ import annotations

import time
from typing import Any

from dropflow import wiring
from dropflow.records.catalog import VersionRecord
from dropflow.records.ledger import describe_usd, job_ledger
from dropflow.records.training_queue import TrainingQueue


def collect(now: float | None = None) -> dict[str, Any]:
    """Jobs (newest first) and models with their champion, as plain JSON-able data.

    Each job has its cost ledger as of `now` (dropflow.records.ledger.Ledger.to_dict: cost_usd,
    on_demand_equivalent_usd, savings_usd, savings_percent, seconds_lost, and per attempt);
    an unknown amount is null, never 0. `queue_position` is a waiting job's place in line for
    a training slot (1: next to start), null for the others; `training_slots` says how many
    jobs hold a slot and how many wait.
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
            }
            for j in jobs
        ],
        "models": models,
        "training_slots": {"running": len(queue.running), "waiting": len(queue.waiting)},
    }


_ACTIVE = {"launching", "running", "exporting"}


def _table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


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
    it runs, or why it failed. Never shortened: it is the last column, and the reason is what
    the data owner needs to read in full."""
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


def render(report: dict[str, Any]) -> str:
    """The report as two aligned tables."""
    slots = report.get("training_slots")
    job_rows = [
        [
            j["job_id"],
            j["model"],
            j["state"],
            str(j["attempts"]),
            *describe_cost(j.get("cost")),
            _age(j["created_at"]),
            describe_place(j.get("queue_position"), slots) or _outcome(j),
        ]
        for j in report["jobs"]
    ]
    model_rows = [
        [
            m["model"],
            m["champion"] or "(none yet)",
            m["route"] or "",
            str(m["versions"]),
            f"{m['metric']}={m['value']:.4f}" if m["metric"] and m["value"] is not None else "",
        ]
        for m in report["models"]
    ]
    return "\n".join(
        [
            "JOBS",
            _table(
                [
                    "JOB ID",
                    "MODEL",
                    "STATE",
                    "ATTEMPTS",
                    "COST",
                    "SAVED",
                    "LOST",
                    "CREATED",
                    "VERSION / PROGRESS / REASON",
                ],
                job_rows,
            )
            if job_rows
            else "  (no jobs yet)",
            "",
            "MODELS",
            _table(["MODEL", "CHAMPION", "SERVED BY", "VERSIONS", "METRIC"], model_rows)
            if model_rows
            else "  (no models yet)",
        ]
    )
