"""The container tier locally: the server process that `dropflow local up` runs.

Scaling out writes a request into the tier's state folder; the local runtime, which owns the
process, starts it again when it is not running (as an Auto Scaling group replaces a missing
instance once its desired capacity is raised). Nothing else restarts it, so a stopped server
stays stopped until the next promotion asks: its models answer 503 meanwhile.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from dropflow.adapters.local.state_files import write_json

SCALE_OUT_FILE = "scale-out.json"


class ProcessTier:
    def __init__(self, state_dir: str | os.PathLike[str]) -> None:
        self.state_dir = Path(state_dir)

    def scale_out(self, minimum: int = 1) -> str:
        # Atomic: the runtime reads the old request or the new one, never half of one.
        write_json(self.state_dir / SCALE_OUT_FILE, {"minimum": minimum, "at": time.time()})
        return f"asked the local runtime for {minimum} container server(s)"

    def scale_in(self) -> str:
        # Locally the server is a process of `dropflow local up`, started with it and stopped
        # with it; it costs nothing while idle, so it is left alone.
        return "the local container process is left running (it costs nothing idle)"


def scale_out_requested_at(state_dir: str | os.PathLike[str]) -> float | None:
    """When the latest scale-out was asked for (epoch seconds), or None if never."""
    try:
        return float(json.loads((Path(state_dir) / SCALE_OUT_FILE).read_text())["at"])
    except (FileNotFoundError, ValueError, KeyError, TypeError):
        return None
