"""The local EventPublishers: a JSON-lines file shaped like EventBridge events, or nowhere."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

from dropflow.ports import EventPublishError
from dropflow.vocabulary.events import SOURCE


class NullEventPublisher:
    """Publishes nowhere (a local run that keeps no event log)."""

    def publish(self, detail_type: str, detail: dict[str, Any]) -> None:
        return None


class JsonLinesEventPublisher:
    """Appends each event as one JSON line, shaped like an EventBridge event, to a file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    def publish(self, detail_type: str, detail: dict[str, Any]) -> None:
        line = json.dumps(
            {"source": SOURCE, "detail-type": detail_type, "time": time.time(), "detail": detail},
            default=str,
        )
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self._lock, self.path.open("a", encoding="utf-8") as out:
                out.write(line + "\n")
        except OSError as exc:
            raise EventPublishError(f"cannot append to {self.path}: {exc}") from exc

    def read(self) -> list[dict[str, Any]]:
        """Every event written so far (tests, `dropflow status`)."""
        if not self.path.exists():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]
