"""The job's log in the store: `jobs/<model>/<job-id>/log.txt`, one section per attempt.

While an attempt runs, its Python logging output (the `training` loggers at INFO and whatever
else reaches the root logger) is kept in memory; at the end of the attempt, whatever the end
(published, failed, crashed, interrupted), its section is appended to log.txt with a line
saying how it ended. Earlier attempts' sections stay as they were.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable
from types import TracebackType

from dropflow.ports import ObjectNotFound, ObjectStore
from dropflow.vocabulary.clock import iso_utc
from training.checkpoint import job_prefix

log = logging.getLogger(__name__)

LOG_FILE = "log.txt"
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# An attempt's section keeps its first and last half of this many characters.
MAX_SECTION_CHARS = 1_000_000
_CAPTURED = "training"  # the loggers whose INFO lines are wanted even when the root is quieter


def log_key(model: str, job_id: str) -> str:
    return f"{job_prefix(model, job_id)}{LOG_FILE}"


class AttemptLog:
    """A context that captures one attempt's log lines; `upload(outcome)` appends them."""

    def __init__(
        self,
        store: ObjectStore,
        model: str,
        job_id: str,
        attempt: int,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.key = log_key(model, job_id)
        self.attempt = attempt
        self.clock = clock
        self.started_at = clock()
        self._buffer = io.StringIO()
        self._handler = logging.StreamHandler(self._buffer)
        self._handler.setFormatter(logging.Formatter(FORMAT))
        self._handler.setLevel(logging.INFO)
        self._level: int | None = None

    def __enter__(self) -> AttemptLog:
        logging.getLogger().addHandler(self._handler)
        captured = logging.getLogger(_CAPTURED)
        if captured.getEffectiveLevel() > logging.INFO:
            self._level = captured.level
            captured.setLevel(logging.INFO)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        logging.getLogger().removeHandler(self._handler)
        if self._level is not None:
            logging.getLogger(_CAPTURED).setLevel(self._level)
            self._level = None

    @property
    def text(self) -> str:
        """What this attempt logged so far."""
        return self._buffer.getvalue()

    def upload(self, outcome: str) -> None:
        """Append this attempt's section to log.txt; a failure is logged, not raised."""
        self._handler.flush()
        text = self.text
        if len(text) > MAX_SECTION_CHARS:
            half = MAX_SECTION_CHARS // 2
            left_out = f"\n[... {len(text) - 2 * half} characters left out ...]\n"
            text = text[:half] + left_out + text[-half:]
        started = iso_utc(self.started_at, zone="+00:00")
        ended = iso_utc(self.clock(), zone="+00:00")
        section = (
            f"===== attempt {self.attempt}, started {started} =====\n"
            f"{text}"
            f"===== attempt {self.attempt} ended {ended}: {outcome} =====\n"
        )
        try:
            try:
                previous = self.store.get(self.key).decode("utf-8", errors="replace")
            except ObjectNotFound:
                previous = ""
            self.store.put(
                self.key, (previous + section).encode(), content_type="text/plain; charset=utf-8"
            )
        except Exception as exc:  # the job's outcome matters more than its log
            log.warning("could not store the job log: %s: %s", type(exc).__name__, exc)
