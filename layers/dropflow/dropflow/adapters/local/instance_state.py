"""The local instances' metadata on disk: their tags and their announced notices.

ProcessCompute writes an instance's tags at launch; `dropflow local interrupt` announces spot
interruptions and rebalance recommendations; the IMDS emulator (dropflow_dev.local.imds)
serves both to the instance, as EC2's instance metadata service would; the local runtime
terminates instances whose interruption time has passed.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

from dropflow.adapters.local.state_files import write_json
from dropflow.vocabulary.clock import iso_utc

ACTIONS = ("terminate", "stop", "hibernate")  # what spot/instance-action may announce
# Instance ids become file names: letters, digits, '-' and '_' only (no '.', no '/').
INSTANCE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def tags_path(state_dir: Path, instance_id: str) -> Path:
    """Where the tags of `instance_id` live (written by ProcessCompute at launch)."""
    return Path(state_dir) / "tags" / f"{checked_instance_id(instance_id)}.json"


def notice_path(state_dir: Path, instance_id: str) -> Path:
    """Where the announced notices of `instance_id` live."""
    return Path(state_dir) / "notices" / f"{checked_instance_id(instance_id)}.json"


def write_tags(state_dir: Path, instance_id: str, tags: dict[str, str]) -> None:
    """Record the instance's tags, as EC2 would attach them at launch."""
    write_json(tags_path(state_dir, instance_id), {str(k): str(v) for k, v in tags.items()})


def read_tags(state_dir: Path, instance_id: str) -> dict[str, str] | None:
    """The instance's tags, or None when none were recorded."""
    data = read_json_object(tags_path(state_dir, instance_id))
    return {str(k): str(v) for k, v in data.items()} if data is not None else None


def announce_interruption(
    state_dir: Path,
    instance_id: str,
    *,
    in_seconds: float = 120.0,
    action: str = "terminate",
    now: float | None = None,
) -> dict[str, str]:
    """Announce a spot interruption of `instance_id`, `in_seconds` from `now`.

    Returns the notice as IMDS serves it: {"action": ..., "time": "2026-11-23T10:17:00Z"}.
    The instance is due for termination (due_terminations) once that time has passed.
    A second announcement replaces the first; a rebalance recommendation is kept.
    """
    if action not in ACTIONS:
        raise ValueError(f"action must be one of {', '.join(ACTIONS)}, not {action!r}")
    if in_seconds < 0:
        raise ValueError(f"in_seconds must be >= 0, not {in_seconds}")
    at = (time.time() if now is None else now) + in_seconds
    served = {"action": action, "time": iso_utc(at)}
    path = notice_path(state_dir, instance_id)
    notices = read_json_object(path) or {}
    # "at" keeps sub-second precision for due_terminations; IMDS shows whole seconds.
    notices["spot"] = {**served, "at": at}
    write_json(path, notices)
    return served


def announce_rebalance(
    state_dir: Path, instance_id: str, *, now: float | None = None
) -> dict[str, str]:
    """Announce a rebalance recommendation to `instance_id`; returns {"noticeTime": ...}.

    Like EC2, a rebalance recommendation never ends the instance by itself.
    """
    served = {"noticeTime": iso_utc(now)}
    path = notice_path(state_dir, instance_id)
    notices = read_json_object(path) or {}
    notices["rebalance"] = served
    write_json(path, notices)
    return served


def due_terminations(state_dir: Path, *, now: float | None = None) -> list[str]:
    """Ids of instances whose announced interruption time has passed, sorted.

    The local runtime terminates them, as EC2 would, then clear()s the notice. Every action
    (terminate, stop, hibernate) ends a local instance: a child process cannot be resumed.
    """
    moment = time.time() if now is None else now
    due = []
    for path in sorted((Path(state_dir) / "notices").glob("*.json")):
        if not INSTANCE_ID.fullmatch(path.stem):
            continue
        spot = (read_json_object(path) or {}).get("spot")
        if isinstance(spot, dict) and float(spot.get("at", float("inf"))) <= moment:
            due.append(path.stem)
    return due


def clear(state_dir: Path, instance_id: str) -> None:
    """Forget every notice of `instance_id` (IMDS answers 404 again). Missing is fine."""
    notice_path(state_dir, instance_id).unlink(missing_ok=True)


def checked_instance_id(instance_id: str) -> str:
    if not isinstance(instance_id, str) or not INSTANCE_ID.fullmatch(instance_id):
        raise ValueError(f"not an instance id: {instance_id!r}")
    return instance_id


def read_json_object(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return data if isinstance(data, dict) else None
