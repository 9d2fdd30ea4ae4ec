"""The local runtime's small state files: instance records and exit codes, the IMDS
emulator's tags and notices, the container tier's scale-out request.

Other processes read them while they change (the runtime, the training processes, the IMDS
server), so each is written whole or not at all: a temporary file beside it, flushed to disk,
then renamed over it.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO


def write_json(path: Path, data: Any, *, indent: int | None = None) -> None:
    """Replace `path` with `data` as JSON, atomically (creating its folder if need be)."""
    text = json.dumps(data, indent=indent).encode()
    replace_atomically(path, lambda f: f.write(text))


def replace_atomically(path: Path, write: Callable[[BinaryIO], Any]) -> None:
    """Replace `path` with what `write(file)` writes: into a temporary file beside it, flushed
    to disk, then renamed over it (its folder created if need be). A failed write leaves the
    old file, and no temporary one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
