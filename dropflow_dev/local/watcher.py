"""Watching the local bucket directory the way S3 + EventBridge watch a bucket.

A file someone is still copying must not start a job: a key is reported only once its size
and mtime have stayed the same for `settle_seconds`, and a model's dataset files are reported
only when *all* of them have settled. Editor and download leftovers are ignored. So are
symbolic links, never followed (the local store refuses them: they could lead out of the
bucket); each is named in a WARNING once, so a data owner sees why a drop starts nothing.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from stat import S_ISLNK, S_ISREG

log = logging.getLogger("dropflow.watcher")

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
        self._links: set[str] = set()  # links met in the last scan, each warned about once

    def _files(self, links: set[str]) -> Iterator[tuple[str, Stat]]:
        """Every dataset file and card, (key, stat); the links met go into `links`."""
        yield from self._walk("datasets", links)
        # models/<model>/<version>/card.json
        for model in self._folders("models", links):
            for version in self._folders(model, links):
                yield from self._regular(f"{version}/card.json", links)

    def _walk(self, rel: str, links: set[str]) -> Iterator[tuple[str, Stat]]:
        for entry in self._entries(rel, links):
            key = f"{rel}/{entry.name}"
            if entry.is_dir(follow_symlinks=False):
                yield from self._walk(key, links)
            elif entry.is_file(follow_symlinks=False):
                yield from self._regular(key, links)

    def _folders(self, rel: str, links: set[str]) -> Iterator[str]:
        for entry in self._entries(rel, links):
            if entry.is_dir(follow_symlinks=False):
                yield f"{rel}/{entry.name}"

    def _entries(self, rel: str, links: set[str]) -> list[os.DirEntry[str]]:
        """The entries of folder `rel` that are neither litter nor links (those go into
        `links`); none when `rel` is itself a link or gone."""
        path = self.root / rel
        if path.is_symlink():
            links.add(rel)
            return []
        try:
            entries = list(os.scandir(path))
        except (FileNotFoundError, NotADirectoryError):
            return []
        kept = []
        for entry in entries:
            if ignored(entry.name):
                continue
            if entry.is_symlink():
                links.add(f"{rel}/{entry.name}")
            else:
                kept.append(entry)
        return kept

    def _regular(self, key: str, links: set[str]) -> Iterator[tuple[str, Stat]]:
        try:
            st = (self.root / key).lstat()
        except (FileNotFoundError, NotADirectoryError):  # removed while we walked
            return
        if S_ISLNK(st.st_mode):
            links.add(key)
        elif S_ISREG(st.st_mode):
            yield key, (st.st_size, st.st_mtime_ns)

    def _warn_new_links(self, links: set[str]) -> None:
        for key in sorted(links - self._links):
            log.warning(
                "ignoring %r in %s: a symbolic link, never followed (it could lead out of the "
                "bucket); copy the file in instead of linking it",
                key,
                self.root,
            )
        self._links = links

    def present(self) -> set[str]:
        """The keys in the bucket now, settled or not, that a scan would report in time."""
        return {key for key, _ in self._files(set())}

    def scan(self) -> list[str]:
        """Keys that settled since the last scan with content not yet reported, sorted."""
        now = self.clock()
        links: set[str] = set()
        current = dict(self._files(links))
        self._warn_new_links(links)
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
