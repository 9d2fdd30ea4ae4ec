"""Why a training attempt should stop early: a spot notice, a signal, or the caller.

A StopRequest is what the training loop polls at every step boundary. It turns true when

- the interruption watcher (training.interruption) has seen a spot interruption notice or a
  rebalance recommendation on the instance metadata service;
- the process received SIGTERM or SIGINT (EC2 shutting the instance down, `dropflow local
  up` stopping, Ctrl-C) while `signals()` is active; a second one gets the default
  behaviour (Ctrl-C twice stops at once);
- the caller's own event or check says so (tests, embedding code).

`reason` is the kind of notice, recorded on the attempt as "interrupted: <reason>".
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Notice(Protocol):
    kind: str  # "spot-interruption" | "rebalance-recommendation"
    detail: str


class Watcher(Protocol):
    """What training.interruption.InterruptionWatcher offers."""

    event: threading.Event
    notice: Notice | None

    def start(self) -> Any: ...

    def stop(self) -> Any: ...


class StopRequest:
    """Polled by the loop: true once a notice, a signal or `external` asks to stop."""

    def __init__(
        self,
        external: threading.Event | Callable[[], bool] | None = None,
        watcher: Watcher | None = None,
    ) -> None:
        self.event = threading.Event()  # set by signals() and request()
        self.watcher = watcher
        if external is not None and hasattr(external, "is_set"):
            external = external.is_set
        self._external: Callable[[], bool] | None = external  # type: ignore[assignment]
        self._reason: str | None = None

    def __call__(self) -> bool:
        if self.event.is_set():
            return True
        if self.watcher is not None and self.watcher.event.is_set():
            return True
        return self._external is not None and bool(self._external())

    def request(self, reason: str) -> None:
        """Ask the loop to stop at the next step boundary, for `reason`."""
        if self._reason is None:
            self._reason = reason
        self.event.set()

    @property
    def reason(self) -> str:
        """What asked to stop: the notice kind, the signal name, or "stop requested"."""
        if self._reason is not None:
            return self._reason
        notice = self.watcher.notice if self.watcher is not None else None
        if notice is not None:
            return str(notice.kind)
        return "stop requested"

    @property
    def detail(self) -> str:
        notice = self.watcher.notice if self.watcher is not None else None
        return str(notice.detail) if notice is not None and self._reason is None else ""

    @contextlib.contextmanager
    def signals(self) -> Iterator[None]:
        """While active, SIGTERM/SIGINT ask to stop (main thread only; elsewhere a no-op)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {signum: signal.getsignal(signum) for signum in SIGNALS}

        def on_signal(signum: int, frame: Any) -> None:
            name = signal.Signals(signum).name
            if self.event.is_set() and self._reason in {s.name for s in SIGNALS}:
                # Asked twice: do what the signal would have done without us.
                handler = previous.get(signum)
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
                if callable(handler):
                    handler(signum, frame)
                else:
                    signal.raise_signal(signum)
                return
            log.warning("%s received: stopping at the next step boundary", name)
            self.request(name)

        for signum in SIGNALS:
            signal.signal(signum, on_signal)
        try:
            yield
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
