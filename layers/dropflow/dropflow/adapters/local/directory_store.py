"""ObjectStore over a plain directory: the embedded default's "bucket".

Key `a/b/c.json` lives at `<root>/a/b/c.json`, so a data owner can drop files into
`<root>/datasets/<model>/` with any file manager. Writes go to `<root>/.tmp/` first and are
renamed into place, so a reader sees the old file or the whole new one, never half.

The retired mark (ObjectStore.set_retired) is an empty sidecar file `.<name>.retired` next to
the object: hidden, never listed, never a key. Locally nothing deletes retired files (there
is no lifecycle rule on a directory); the mark only records what S3 would expire.

Nothing under the root may lead out of it, so the store never follows a symbolic link: every
path is walked from the root one folder at a time (openat with O_NOFOLLOW), never resolved
as a string. A key that is, or lies under, a link is not an object: `list` leaves it out and
logs a WARNING naming it (so a data owner sees why a file is ignored); get, get_file, head and
the retired mark raise LinkRefused (an ObjectNotFound) naming it; put and delete raise
InvalidKey naming it, and a put replaces a link at the key itself rather than write through it.
Other files that are not regular (a named pipe, a socket) are not objects either.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import shutil
import stat
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from dropflow.adapters.local.state_files import replace_atomically
from dropflow.observability import logger
from dropflow.ports import InvalidKey, ObjectInfo, ObjectNotFound
from dropflow.vocabulary.keys import check_key, is_valid_key

_CHUNK = 1024 * 1024
# Temp files older than this were left by a writer that died mid-put; removed at start-up.
_STALE_TMP_SECONDS = 24 * 3600
# Bound on the etag cache, one entry per key (about 430 bytes each: some 110 MB when full):
# room for an image dataset of 100,000 files several times over. A listing of more files than
# this hashes some of them on every list (entries are dropped oldest first).
_ETAG_CACHE_MAX = 250_000
_RETIRED_SUFFIX = ".retired"
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
# A folder on the walk from the root, never through a link.
_FOLDER = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | _CLOEXEC
# An object to read: never a link; non-blocking so that a named pipe cannot stall the open
# (it is refused as not a regular file right after).
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | _CLOEXEC


class LinkRefused(ObjectNotFound):
    """A key that is, or lies under, a symbolic link: the local store never follows one, so
    to it there is no object there (the message names the key and the link)."""


class _Link(Exception):
    """Internal: the walk met a link at `key` (a prefix of the key asked for, or that key)."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


class DirectoryStore:
    """An ObjectStore whose objects are the files under `root` (created if missing).

    `content_type` is accepted for parity with S3 and not stored. A key cannot name both an
    object and a "folder" of other objects (S3 allows it; a filesystem does not): such a put
    raises InvalidKey.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self._tmp = self.root / ".tmp"
        if self._tmp.is_symlink():  # our own folder: puts must not pass through elsewhere
            self._tmp.unlink()
        self._tmp.mkdir(parents=True, exist_ok=True)
        # key -> (the file's identity when hashed, its etag): a replaced file's entry is
        # overwritten, so the cache holds one entry per key it has seen.
        self._etags: dict[str, tuple[tuple[int, int, int], str]] = {}
        self._etags_lock = threading.Lock()
        self._remove_stale_temp_files()

    def __repr__(self) -> str:
        return f"DirectoryStore({str(self.root)!r})"

    # ------------------------------------------------------------------ writes
    def put(self, key: str, data: bytes, *, content_type: str | None = None) -> ObjectInfo:
        """Store `data` at `key` atomically; returns the new object's info."""
        digest = hashlib.md5(data, usedforsecurity=False)
        return self._commit(check_key(key), lambda out: out.write(data), digest)

    def put_file(self, key: str, path: Path, *, content_type: str | None = None) -> ObjectInfo:
        """Store the content of the local file `path` at `key` atomically."""
        digest = hashlib.md5(usedforsecurity=False)

        def copy(out: BinaryIO) -> None:
            with open(path, "rb") as src:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)

        return self._commit(check_key(key), copy, digest)

    def delete(self, key: str) -> None:
        """Remove the object (and its retired mark) and any parent folders it leaves empty;
        a missing key is fine. Raises InvalidKey for a key that is, or lies under, a link."""
        parts = check_key(key).split("/")
        try:
            with self._folder(parts[:-1]) as folder:
                if _is_link(parts[-1], folder):
                    raise _Link(key)
                try:
                    os.unlink(parts[-1], dir_fd=folder)
                except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                    return
                except PermissionError:
                    # unlink() of a directory reports EPERM on some systems: not an object.
                    if stat.S_ISDIR(os.stat(parts[-1], dir_fd=folder).st_mode):
                        return
                    raise
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(_mark_name(parts[-1]), dir_fd=folder)
        except (FileNotFoundError, NotADirectoryError):
            return
        except _Link as link:
            raise InvalidKey(self._link_message(key, link.key)) from None
        # Every folder on the way was a real one: climbing removes empty ones, never a link.
        for depth in range(len(parts) - 1, 0, -1):
            try:
                os.rmdir(self.root.joinpath(*parts[:depth]))
            except OSError:
                break  # not empty (or already gone): stop climbing

    def set_retired(self, key: str, retired: bool) -> None:
        """Record (or clear) the retired mark; raises ObjectNotFound.

        Only a record: nothing here ever deletes a retired file. The mark keeps the contract
        the same as on S3, where the bucket's lifecycle rule expires retired model files.
        """
        parts = check_key(key).split("/")
        with self._reading(key), self._folder(parts[:-1]) as folder:
            self._regular(key, parts[-1], folder)
            mark = _mark_name(parts[-1])
            if not retired:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(mark, dir_fd=folder)
                return
            flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | _CLOEXEC
            os.close(os.open(mark, flags, 0o666, dir_fd=folder))
            try:
                self._regular(key, parts[-1], folder)
            except ObjectNotFound:  # deleted meanwhile: leave no mark without an object
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(mark, dir_fd=folder)
                raise

    # ------------------------------------------------------------------ reads
    def is_retired(self, key: str) -> bool:
        """Whether the object carries the retired mark; raises ObjectNotFound."""
        parts = check_key(key).split("/")
        with self._reading(key), self._folder(parts[:-1]) as folder:
            self._regular(key, parts[-1], folder)
            try:
                os.stat(_mark_name(parts[-1]), dir_fd=folder, follow_symlinks=False)
            except FileNotFoundError:
                return False
            return True

    def get(self, key: str) -> bytes:
        """The object's bytes; raises ObjectNotFound naming the key."""
        with self._reading(key):
            f = self._open(key)
        with f:
            return f.read()

    def get_start(self, key: str, count: int) -> bytes:
        """The object's first `count` bytes; raises ObjectNotFound naming the key."""
        with self._reading(key):
            f = self._open(key)
        with f:
            return f.read(max(count, 0))

    def get_end(self, key: str, count: int) -> bytes:
        """The object's last `count` bytes; raises ObjectNotFound naming the key."""
        with self._reading(key):
            f = self._open(key)
        with f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(size - max(count, 0), 0))
            return f.read()

    def get_file(self, key: str, path: Path) -> None:
        """Copy the object to `path` atomically (parents created); raises ObjectNotFound."""
        with self._reading(key):
            src = self._open(key)  # first, to fail before anything is written
        with src:
            replace_atomically(Path(path), lambda out: shutil.copyfileobj(src, out, _CHUNK))

    def head(self, key: str) -> ObjectInfo | None:
        """The object's info, or None if there is no object at `key`; raises LinkRefused for
        a key that is, or lies under, a link."""
        parts = check_key(key).split("/")
        try:
            with self._reading(key), self._folder(parts[:-1]) as folder:
                st = os.stat(parts[-1], dir_fd=folder, follow_symlinks=False)
                if stat.S_ISLNK(st.st_mode):
                    raise _Link(key)
                if not stat.S_ISREG(st.st_mode):
                    return None
                return self._info(key, parts[-1], folder, st)
        except LinkRefused:
            raise
        except ObjectNotFound:
            return None  # missing, or deleted between stat and open

    def list(self, prefix: str) -> list[ObjectInfo]:
        """Every object whose key starts with `prefix` (a plain string prefix), sorted by key.

        A link met on the way is left out, with a WARNING naming its key.
        """
        # Only the folder named by the prefix's complete segments needs walking:
        # "models/ir" -> walk "models/", keep keys starting with "models/ir".
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        if folder and not is_valid_key(folder):
            return []  # no valid key can start with this prefix
        found: list[ObjectInfo] = []
        try:
            with self._folder(folder.split("/") if folder else []) as fd:
                self._walk(fd, folder, prefix, found)
        except (FileNotFoundError, NotADirectoryError):
            return []
        except _Link as link:
            self._warn_link(link.key)
            return []
        found.sort(key=lambda info: info.key)
        return found

    # ------------------------------------------------------------------ internals
    def _not_found(self, key: str) -> ObjectNotFound:
        return ObjectNotFound(f"no object at key {key!r} in {self.root}")

    def _link_message(self, key: str, link: str) -> str:
        where = f"key {key!r} is" if link == key else f"key {key!r} lies under {link!r},"
        return (
            f"{where} a symbolic link in the local store {self.root}, which never follows "
            "links (they could lead out of its folder): copy the file in instead of linking it"
        )

    def _warn_link(self, key: str) -> None:
        # The key only as repr() writes it: a file name that is not UTF-8 comes back from the
        # filesystem with lone surrogates, which the logger's UTF-8 output cannot take.
        logger.warning(f"ignoring {key!r}: {self._link_message(key, key)}")

    @contextlib.contextmanager
    def _reading(self, key: str) -> Iterator[None]:
        """Maps what the walk meets to the reads' errors, naming `key`."""
        try:
            yield
        except _Link as link:
            raise LinkRefused(self._link_message(key, link.key)) from None
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            raise self._not_found(key) from None

    @contextlib.contextmanager
    def _folder(self, parts: Sequence[str], *, create: bool = False) -> Iterator[int]:
        """The open folder root/parts/..., reached one folder at a time without following a
        link (created when `create`). Raises _Link naming the first link met,
        FileNotFoundError or NotADirectoryError."""
        fd = os.open(self.root, _FOLDER)
        try:
            for depth, name in enumerate(parts):
                if create:
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(name, dir_fd=fd)
                try:
                    child = os.open(name, _FOLDER, dir_fd=fd)
                except OSError:
                    if _is_link(name, fd):
                        raise _Link("/".join(parts[: depth + 1])) from None
                    raise
                os.close(fd)
                fd = child
            yield fd
        finally:
            os.close(fd)

    def _open(self, key: str) -> BinaryIO:
        """The object at `key` open for reading: a regular file reached without a link."""
        parts = check_key(key).split("/")
        with self._folder(parts[:-1]) as folder:
            try:
                fd = os.open(parts[-1], _READ, dir_fd=folder)
            except OSError:
                if _is_link(parts[-1], folder):
                    raise _Link(key) from None
                raise
        f = os.fdopen(fd, "rb")
        if not stat.S_ISREG(os.fstat(fd).st_mode):  # a folder, a named pipe, a socket
            f.close()
            raise self._not_found(key)
        os.set_blocking(fd, True)
        return f

    def _regular(self, key: str, name: str, folder: int) -> None:
        """Raise unless `name` in `folder` is a regular file (a link is _Link)."""
        try:
            st = os.stat(name, dir_fd=folder, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            raise self._not_found(key) from None
        if stat.S_ISLNK(st.st_mode):
            raise _Link(key)
        if not stat.S_ISREG(st.st_mode):
            raise self._not_found(key)

    def _commit(
        self,
        key: str,
        write: Callable[[BinaryIO], object],
        digest: Any,
    ) -> ObjectInfo:
        """Write through `write(file)` into a temp file, fsync it, rename it over `key`."""
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
            self._rename_into_place(key, tmp)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        etag = digest.hexdigest()
        # The rename keeps inode, size and mtime, so the fstat above identifies the new file.
        self._remember(key, st, etag)
        return ObjectInfo(key=key, size=st.st_size, etag=etag, modified=st.st_mtime)

    def _rename_into_place(self, key: str, tmp: Path) -> None:
        parts = key.split("/")
        # A concurrent delete() may remove the (empty) parent folder between our mkdir and
        # the rename; a few retries make the put win that race.
        for _ in range(5):
            try:
                with self._folder(parts[:-1], create=True) as folder:
                    # rename() replaces a link at the key itself; it never writes through it.
                    os.rename(tmp, parts[-1], dst_dir_fd=folder)
                    # A new object starts unmarked, as a PutObject without tags does on S3.
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(_mark_name(parts[-1]), dir_fd=folder)
                return
            except FileNotFoundError:
                continue
            except _Link as link:
                raise InvalidKey(self._link_message(key, link.key)) from None
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

    def _walk(self, folder: int, rel: str, prefix: str, found: list[ObjectInfo]) -> None:
        """Add to `found` the objects under the open `folder` (key prefix `rel`) whose keys
        start with `prefix`; links are left out with a warning, never followed."""
        for entry in list(os.scandir(folder)):
            if entry.name.startswith("."):
                continue  # .tmp/ and editor or OS litter: never objects
            key = f"{rel}/{entry.name}" if rel else entry.name
            if not key.startswith(prefix):
                continue  # the walk starts at the prefix's last full folder: nothing below
            if entry.is_symlink():
                self._warn_link(key)
            elif entry.is_dir(follow_symlinks=False):
                try:
                    child = os.open(entry.name, _FOLDER, dir_fd=folder)
                except OSError:
                    continue  # removed, or swapped for a link, while we walked
                try:
                    self._walk(child, key, prefix, found)
                finally:
                    os.close(child)
            elif entry.is_file(follow_symlinks=False) and is_valid_key(key):
                try:
                    st = entry.stat(follow_symlinks=False)
                    found.append(self._info(key, entry.name, folder, st))
                except (FileNotFoundError, ObjectNotFound):
                    continue  # deleted while we walked
                except _Link:
                    self._warn_link(key)  # swapped for a link while we walked

    def _info(self, key: str, name: str, folder: int, st: os.stat_result) -> ObjectInfo:
        """Info for the file `name` in `folder`, whose stat is `st`; hashes it only if unseen."""
        with self._etags_lock:
            cached = self._etags.get(key)
        etag = cached[1] if cached is not None and cached[0] == _ident(st) else None
        if etag is None:
            try:
                fd = os.open(name, _READ, dir_fd=folder)
            except FileNotFoundError:
                raise self._not_found(key) from None
            except OSError:
                if _is_link(name, folder):
                    raise _Link(key) from None
                raise
            with os.fdopen(fd, "rb") as f:
                # Describe the version we hash, which may be newer than `st`.
                st = os.fstat(f.fileno())
                if not stat.S_ISREG(st.st_mode):
                    raise self._not_found(key)
                os.set_blocking(f.fileno(), True)
                digest = hashlib.md5(usedforsecurity=False)
                while chunk := f.read(_CHUNK):
                    digest.update(chunk)
            etag = digest.hexdigest()
            self._remember(key, st, etag)
        return ObjectInfo(key=key, size=st.st_size, etag=etag, modified=st.st_mtime)

    def _remember(self, key: str, st: os.stat_result, etag: str) -> None:
        with self._etags_lock:
            if key not in self._etags and len(self._etags) >= _ETAG_CACHE_MAX:
                # Drop the oldest tenth: dicts keep insertion order.
                for old in list(self._etags)[: _ETAG_CACHE_MAX // 10]:
                    del self._etags[old]
            self._etags[key] = (_ident(st), etag)

    def _remove_stale_temp_files(self) -> None:
        cutoff = time.time() - _STALE_TMP_SECONDS
        for entry in os.scandir(self._tmp):
            try:
                if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
            except OSError:
                pass  # another process cleaned it first


def _is_link(name: str, folder: int) -> bool:
    try:
        return stat.S_ISLNK(os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode)
    except OSError:
        return False


def _mark_name(name: str) -> str:
    """The retired mark of object `name`: a hidden sidecar, so never listed or a key."""
    return f".{name}{_RETIRED_SUFFIX}"


def _ident(st: os.stat_result) -> tuple[int, int, int]:
    # A file rewritten in place keeps its inode but changes size or mtime; one replaced by a
    # rename gets a new inode. Either way the cached etag no longer matches.
    return (st.st_size, st.st_mtime_ns, st.st_ino)
