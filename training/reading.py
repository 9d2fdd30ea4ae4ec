"""How far reading a dataset has got: rows read, the share of the work done, the time left.

A family reading a large dataset (a 600 MB CSV takes a while) tells a ReadMeter each piece of
work it finishes; the meter turns that into a ReadProgress and hands it to `report` (the job's
heartbeat) at the first piece done after FIRST_REPORT_SECONDS, then every `every` seconds, and
logs the same line, so the job's log, its heartbeat and the console all show the loading stage
moving, with a time left, long before training starts.

The work is counted in whatever units the reader chooses (the tabular reader counts bytes:
each file's size once for fetching it and once per pass over it), declared up front with
`expect`, so the share done and the time left cover the whole read, not one file.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

# An estimate from the first second is rough but tells a waiting owner the order of magnitude.
FIRST_REPORT_SECONDS = 1.0


@dataclass(frozen=True)
class ReadProgress:
    """Where a read is: what the heartbeat records while the job is loading."""

    rows: int  # data rows read so far
    fraction: float  # share of the whole read done, 0..1
    seconds: float  # since the read began

    @property
    def eta_seconds(self) -> float | None:
        """Seconds left at the rate so far; None before any work is done."""
        if self.fraction <= 0:
            return None
        return max(0.0, self.seconds * (1.0 - self.fraction) / self.fraction)

    def describe(self) -> str:
        """One line for the log, e.g. `120,000 rows read (35%), ETA 12s`."""
        eta = self.eta_seconds
        left = f", ETA {eta:.0f}s" if eta is not None and self.fraction < 1 else ""
        return f"{self.rows:,} rows read ({self.fraction:.0%}){left}"


ReadReport = Callable[[ReadProgress], None]


class ReadMeter:
    """Counts the work of one read and reports it, throttled (see the module docstring).

    `report` gets each ReadProgress (None: log only). A report that raises is logged and
    ignored: a lost progress line is not worth losing the job's data.
    """

    def __init__(
        self,
        report: ReadReport | None = None,
        *,
        every: float = 30.0,
        first: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.report = report
        self.every = every
        self.clock = clock
        self.started = clock()
        # A read that ends within the first second tells nothing: the stage lines say enough.
        self.next_report = self.started + (FIRST_REPORT_SECONDS if first is None else first)
        self.total = 0.0
        self.done = 0.0
        self.rows = 0
        self.reports = 0

    def expect(self, work: float) -> None:
        """Add `work` units to the whole read (before doing them)."""
        self.total += work

    def advance(self, work: float = 0.0, *, rows: int = 0) -> None:
        """`work` more units done and `rows` more data rows read; reports when one is due."""
        self.done += work
        self.rows += rows
        now = self.clock()
        if now >= self.next_report:
            self.next_report = now + self.every
            self._send(self.progress(now))

    def progress(self, now: float | None = None) -> ReadProgress:
        """The read as it stands."""
        now = self.clock() if now is None else now
        fraction = min(1.0, self.done / self.total) if self.total > 0 else 0.0
        return ReadProgress(rows=self.rows, fraction=fraction, seconds=now - self.started)

    def _send(self, progress: ReadProgress) -> None:
        self.reports += 1
        log.info("loading: %s", progress.describe())
        if self.report is None:
            return
        try:
            self.report(progress)
        except Exception as exc:  # progress is informative; the read goes on
            log.warning("loading progress not reported: %s: %s", type(exc).__name__, exc)


__all__ = ["FIRST_REPORT_SECONDS", "ReadMeter", "ReadProgress", "ReadReport"]
