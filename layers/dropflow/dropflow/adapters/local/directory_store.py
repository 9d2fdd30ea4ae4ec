"""ObjectStore over a plain directory: the embedded default's "bucket".

Key `a/b/c.json` lives at `<root>/a/b/c.json`, so a data owner can drop files into
`<root>/datasets/<model>/` with any file manager. Writes go to `<root>/.tmp/` first and are
renamed into place, so a reader sees the old file or the whole new one, never half.

The retired mark (ObjectStore.set_retired) is an empty sidecar file `.<name>.retired` next to
the object: hidden, never listed, never a key. Locally nothing deletes retired files (there
is no lifecycle rule on a directory); the mark only records what S3 would expire.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from dropflow.adapters.local.state_files import replace_atomically
from dropflow.ports import InvalidKey, ObjectInfo, ObjectNotFound
from dropflow.vocabulary.keys import check_key, is_valid_key

_CHUNK = 1024 * 1024
# Temp files older than this were left by a writer that died mid-put; removed at start-up.
_STALE_TMP_SECONDS = 24 * 3600
# Bound on the etag cache: enough for every file of a large dataset, small in memory.
_ETAG_CACHE_MAX = 100_000
_RETIRED_SUFFIX = ".retired"


class DirectoryStore:
    """An ObjectStore whose objects are the files under `root` (created if missing).

    `content_type` is accepted for parity with S3 and not stored. A key cannot name both an
    object and a "folder" of other objects (S3 allows it; a filesystem does not): such a put
    raises InvalidKey.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self._tmp = self.root / ".tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)
        self._etags: dict[tuple[str, int, int, int], str] = {}
        self._etags_lock = threading.Lock()
        self._remove_stale_temp_files()

    def __repr__(self) -> str:
        return f"DirectoryStore({str(self.root)!r})"

    # ------------------------------------------------------------------ writes
    def put(self, key: str, data: bytes, *, content_type: str | None = None) -> ObjectInfo:
        """Store `data` at `key` atomically; returns the new object's info."""
        path = self._path(key)
        digest = hashlib.md5(data, usedforsecurity=False)
        return self._commit(key, path, lambda out: out.write(data), digest)

    def put_file(self, key: str, path: Path, *, content_type: str | None = None) -> ObjectInfo:
        """Store the content of the local file `path` at `key` atomically."""
        target = self._path(key)
        digest = hashlib.md5(usedforsecurity=False)

        def copy(out: BinaryIO) -> None:
            with open(path, "rb") as src:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)

        return self._commit(key, target, copy, digest)

    def delete(self, key: str) -> None:
        """Remove the object (and its retired mark) and any parent folders it leaves empty;
        a missing key is fine."""
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return
        except PermissionError:
            # unlink() of a directory reports EPERM on some systems: it is not an object.
            if path.is_dir():
                return
            raise
        _mark_of(path).unlink(missing_ok=True)
        parent = path.parent
        while parent != self.root and self.root in parent.parents:
            try:
                parent.rmdir()
            except OSError:
                break  # not empty (or already gone): stop climbing
            parent = parent.parent

    def set_retired(self, key: str, retired: bool) -> None:
        """Record (or clear) the retired mark; raises ObjectNotFound.

        Only a record: nothing here ever deletes a retired file. The mark keeps the contract
        the same as on S3, where the bucket's lifecycle rule expires retired model files.
        """
        path = self._path(key)
        if not path.is_file():
            raise self._not_found(key)
        mark = _mark_of(path)
        if not retired:
            mark.unlink(missing_ok=True)
            return
        mark.touch()
        if not path.is_file():  # deleted meanwhile: leave no mark without an object
            mark.unlink(missing_ok=True)
            raise self._not_found(key)

    # ------------------------------------------------------------------ reads
    def is_retired(self, key: str) -> bool:
        """Whether the object carries the retired mark; raises ObjectNotFound."""
        path = self._path(key)
        if not path.is_file():
            raise self._not_found(key)
        return _mark_of(path).exists()

    def get(self, key: str) -> bytes:
        """The object's bytes; raises ObjectNotFound naming the key."""
        path = self._path(key)
        try:
            with open(path, "rb") as f:
                return f.read()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise self._not_found(key) from None

    def get_file(self, key: str, path: Path) -> None:
        """Copy the object to `path` atomically (parents created); raises ObjectNotFound."""
        source = self._path(key)
        try:
            src = open(source, "rb")  # noqa: SIM115 - closed below, opened first to fail early
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise self._not_found(key) from None
        with src:
            replace_atomically(Path(path), lambda out: shutil.copyfileobj(src, out, _CHUNK))

    def head(self, key: str) -> ObjectInfo | None:
        """The object's info, or None if there is no object at `key`."""
        path = self._path(key)
        try:
            st = path.stat()
        except (FileNotFoundError, NotADirectoryError):
            return None
        if not stat.S_ISREG(st.st_mode):
            return None
        try:
            return self._info(key, path, st)
        except ObjectNotFound:
            return None  # deleted between stat and open

    def list(self, prefix: str) -> list[ObjectInfo]:
        """Every object whose key starts with `prefix` (a plain string prefix), sorted by key."""
        # Only the folder named by the prefix's complete segments needs walking:
        # "models/ir" -> walk "models/", keep keys starting with "models/ir".
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        if folder and not is_valid_key(folder):
            return []  # no valid key can start with this prefix
        start = self.root / folder if folder else self.root
        found = []
        for key, path in self._walk(start, folder):
            if not key.startswith(prefix):
                continue
            try:
                found.append(self._info(key, path, path.stat()))
            except (FileNotFoundError, ObjectNotFound):
                continue  # deleted while we walked
        found.sort(key=lambda info: info.key)
        return found

    # ------------------------------------------------------------------ internals
    def _path(self, key: str) -> Path:
        return self.root / check_key(key)

    def _not_found(self, key: str) -> ObjectNotFound:
        return ObjectNotFound(f"no object at key {key!r} in {self.root}")

    def _commit(
        self,
        key: str,
        target: Path,
        write: Callable[[BinaryIO], object],
        digest: Any,
    ) -> ObjectInfo:
        """Write through `write(file)` into a temp file, fsync it, rename it over `target`."""
        tmp = self._tmp / f"{secrets.token_hex(8)}.part"
        try:
            # 0o666 so the umask decides permissions, as for any ordinary file.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileNotFoundError:
            self._tmp.mkdir(parents=True, exist_ok=True)  # someone removed .tmp/
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with os.fdopen(fd, "wb") as out:
                write(out)
                out.flush()
                os.fsync(out.fileno())
                st = os.fstat(out.fileno())
            self._rename_into_place(key, tmp, target)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        # A new object starts unmarked, as a PutObject without tags does on S3.
        _mark_of(target).unlink(missing_ok=True)
        etag = digest.hexdigest()
        # The rename keeps inode, size and mtime, so the fstat above identifies the new file.
        self._remember(target, st, etag)
        return ObjectInfo(key=key, size=st.st_size, etag=etag, modified=st.st_mtime)

    def _rename_into_place(self, key: str, tmp: Path, target: Path) -> None:
        # A concurrent delete() may remove the (empty) parent folder between our mkdir and
        # the rename; a few retries make the put win that race.
        for _ in range(5):
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, target)
                return
            except FileNotFoundError:
                continue
            except (NotADirectoryError, FileExistsError):
                raise InvalidKey(
                    f"invalid object key {key!r}: a parent of it is already an object "
                    "in the local store"
                ) from None
            except IsADirectoryError:
                raise InvalidKey(
                    f"invalid object key {key!r}: other objects already live under "
                    f"'{key}/' in the local store"
                ) from None
        raise FileNotFoundError(f"could not create the folder for key {key!r} in {self.root}")

    def _walk(self, folder: Path, rel: str) -> Iterator[tuple[str, Path]]:
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue  # .tmp/ and editor or OS litter: never objects
            key = f"{rel}/{entry.name}" if rel else entry.name
            # Not following folder symlinks keeps a link loop from walking forever.
            if entry.is_dir(follow_symlinks=False):
                yield from self._walk(Path(entry.path), key)
            elif entry.is_file() and is_valid_key(key):
                yield key, Path(entry.path)

    def _info(self, key: str, path: Path, st: os.stat_result) -> ObjectInfo:
        """Info for the file at `path`, whose stat is `st`; hashes it only if unseen."""
        with self._etags_lock:
            etag = self._etags.get(_ident(path, st))
        if etag is None:
            try:
                with open(path, "rb") as f:
                    # Describe the version we hash, which may be newer than `st`.
                    st = os.fstat(f.fileno())
                    digest = hashlib.md5(usedforsecurity=False)
                    while chunk := f.read(_CHUNK):
                        digest.update(chunk)
            except FileNotFoundError:
                raise self._not_found(key) from None
            etag = digest.hexdigest()
            self._remember(path, st, etag)
        return ObjectInfo(key=key, size=st.st_size, etag=etag, modified=st.st_mtime)

    def _remember(self, path: Path, st: os.stat_result, etag: str) -> None:
        ident = _ident(path, st)
        with self._etags_lock:
            if len(self._etags) >= _ETAG_CACHE_MAX:
                # Drop the oldest tenth: dicts keep insertion order.
                for old in list(self._etags)[: _ETAG_CACHE_MAX // 10]:
                    del self._etags[old]
            self._etags[ident] = etag

    def _remove_stale_temp_files(self) -> None:
        cutoff = time.time() - _STALE_TMP_SECONDS
        for entry in os.scandir(self._tmp):
            try:
                if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
            except OSError:
                pass  # another process cleaned it first


def _mark_of(path: Path) -> Path:
    """The retired mark of the object at `path`: a hidden sidecar, so never listed or a key."""
    return path.parent / f".{path.name}{_RETIRED_SUFFIX}"


def _ident(path: Path, st: os.stat_result) -> tuple[str, int, int, int]:
    # A file rewritten in place keeps its inode but changes size or mtime; one replaced by a
    # rename gets a new inode. Either way the cached etag no longer matches.
    return (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
