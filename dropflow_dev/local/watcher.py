"""Watching the local bucket directory the way S3 + EventBridge watch a bucket.

A file someone is still copying must not start a job: a key is reported only once its size
and mtime have stayed the same for `settle_seconds`, and a model's dataset files are reported
only when *all* of them have settled. Editor and download leftovers are ignored.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

IGNORED_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload", ".swp", ".download", "~")

Stat = tuple[int, int]  # size, mtime_ns


def ignored(name: str) -> bool:
    return name.startswith((".", "~")) or name.endswith(IGNORED_SUFFIXES)


class BucketWatcher:
    """Reports keys under `datasets/` and `models/*/*/card.json` that are new or changed."""

    def __init__(
        self,
        root: Path,
        *,
        settle_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.root = root
        self.settle_seconds = settle_seconds
        self.clock = clock
        self._seen: dict[str, tuple[Stat, float]] = {}  # key -> (stat, when it last changed)
        self._reported: dict[str, Stat] = {}

    def _files(self) -> Iterator[tuple[str, Stat]]:
        datasets = self.root / "datasets"
        if datasets.is_dir():
            for dirpath, dirnames, filenames in os.walk(datasets):
                dirnames[:] = [d for d in dirnames if not ignored(d)]
                for name in filenames:
                    if not ignored(name):
                        yield from self._stat(Path(dirpath) / name)
        for card in self.root.glob("models/*/*/card.json"):
            yield from self._stat(card)

    def _stat(self, path: Path) -> Iterator[tuple[str, Stat]]:
        try:
            st = path.stat()
        except FileNotFoundError:  # removed while we walked
            return
        yield path.relative_to(self.root).as_posix(), (st.st_size, st.st_mtime_ns)

    def scan(self) -> list[str]:
        """Keys that settled since the last scan with content not yet reported, sorted."""
        now = self.clock()
        current = dict(self._files())
        for key in list(self._seen):
            if key not in current:
                del self._seen[key]
                self._reported.pop(key, None)
        for key, stat in current.items():
            if key not in self._seen or self._seen[key][0] != stat:
                self._seen[key] = (stat, now)

        def settled(key: str) -> bool:
            return now - self._seen[key][1] >= self.settle_seconds

        unsettled_models = {
            key.split("/")[1]
            for key in current
            if key.startswith("datasets/") and key.count("/") >= 2 and not settled(key)
        }
        ready = []
        for key, stat in sorted(current.items()):
            if self._reported.get(key) == stat or not settled(key):
                continue
            if key.startswith("datasets/") and key.split("/")[1] in unsettled_models:
                continue
            self._reported[key] = stat
            ready.append(key)
        return ready
