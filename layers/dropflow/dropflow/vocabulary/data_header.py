"""A data file's column names, read from a few of its bytes through the ObjectStore, without
pyarrow (the launch function has none): a CSV file's first line, a Parquet file's footer.

The names are those the training job's reader sees (training.data): a CSV header's names with
the spaces around them trimmed; a Parquet file's top-level columns, less the index pandas
saved beside them. Whatever cannot be told from those bytes (no line end near the start, text
that is not UTF-8, a damaged footer, a footer beyond FOOTER_BYTES) answers None: the training
job's reader then reads the whole file and says what is wrong with it, naming the file.

Parquet's footer is its FileMetaData in Thrift's compact protocol, followed by its length (4
bytes, little-endian) and the magic `PAR1`. `_Compact` decodes just enough of that protocol to
walk it: the schema (field 2: a flattened tree of SchemaElements, each with its name, field 4,
and its number of children, field 5) and the key-value metadata (field 5: where pandas keeps
its JSON under the key `pandas`).
"""

from __future__ import annotations

import csv
import io
import json
import struct
from typing import Any

from dropflow.ports import ObjectInfo, ObjectStore

# A header longer than this (thousands of columns) is left to the training job's reader.
HEADER_BYTES = 256 * 1024
# A footer larger than this (a file of very many row groups) is left to the reader too.
FOOTER_BYTES = 8 * 1024 * 1024
_MAGIC = b"PAR1"
_TAIL = 64 * 1024  # read first: the footer of most files fits in it


def data_columns(store: ObjectStore, info: ObjectInfo) -> list[str] | None:
    """The column names of the data file `info` (.csv or .parquet), or None when they cannot
    be told from its first (CSV) or last (Parquet) bytes."""
    if info.key.lower().endswith(".parquet"):
        return parquet_columns(store, info)
    return csv_header(store, info)


def csv_header(store: ObjectStore, info: ObjectInfo) -> list[str] | None:
    """The names on the first line of the CSV object `info`, read from at most HEADER_BYTES."""
    start = store.get_start(info.key, min(info.size, HEADER_BYTES))
    end = min((i for i in (start.find(b"\n"), start.find(b"\r")) if i >= 0), default=-1)
    if end < 0:
        if len(start) < info.size or not start:
            return None
        end = len(start)
    try:
        line = start[:end].decode("utf-8-sig")
    except UnicodeDecodeError:
        return None
    if line.count('"') % 2:
        return None  # a quoted name with a line break inside: the reader knows best
    names = next(csv.reader(io.StringIO(line)), [])
    return [name.strip() for name in names] or None


def parquet_columns(store: ObjectStore, info: ObjectInfo) -> list[str] | None:
    """The top-level column names in the footer of the Parquet object `info`, less a pandas
    index saved beside them."""
    if info.size < 12:
        return None
    tail = store.get_end(info.key, min(info.size, _TAIL))
    if tail[-4:] != _MAGIC:
        return None
    length = int.from_bytes(tail[-8:-4], "little")
    if length + 8 > info.size or length > FOOTER_BYTES:
        return None
    if length + 8 > len(tail):
        tail = store.get_end(info.key, length + 8)
    try:
        meta = _Compact(tail[-8 - length : -8]).struct()
        return _top_level(meta)
    except (IndexError, KeyError, TypeError, ValueError, struct.error):
        return None


def _top_level(meta: dict[int, Any]) -> list[str] | None:
    schema = meta[2]
    names: list[str] = []
    # The schema is a tree flattened depth first: the root, then each column with, after it,
    # its own children (a nested column's). Only the root's children are columns.
    at = 1
    for _ in range(schema[0].get(5, 0)):
        element = schema[at]
        names.append(element[4].decode("utf-8"))
        at = _after(schema, at)
    pandas = next((kv.get(2) for kv in meta.get(5, []) if kv.get(1) == b"pandas"), None)
    index: set[str] = set()
    if pandas is not None:
        saved = json.loads(pandas.decode("utf-8")).get("index_columns", [])
        index = {c for c in saved if isinstance(c, str)}
    return [n for n in names if n not in index] or None


def _after(schema: list[dict[int, Any]], at: int) -> int:
    """The index of the element that follows element `at` and all its descendants."""
    following = at + 1
    for _ in range(schema[at].get(5, 0)):
        following = _after(schema, following)
    return following


class _Compact:
    """Thrift's compact protocol, read only: a struct is a dict of field id to value (structs
    as dicts, lists and sets as lists, maps as dicts, strings as bytes)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.at = 0

    def struct(self) -> dict[int, Any]:
        fields: dict[int, Any] = {}
        last = 0
        while True:
            head = self._byte()
            kind = head & 0x0F
            if kind == 0:
                return fields
            delta = head >> 4
            last = last + delta if delta else _zigzag(self._varint())
            fields[last] = True if kind == 1 else False if kind == 2 else self._value(kind)

    def _value(self, kind: int) -> Any:
        if kind in (1, 2):  # a boolean in a list: one byte
            return self._byte() == 1
        if kind == 3:
            return struct.unpack("b", bytes([self._byte()]))[0]
        if kind in (4, 5, 6):
            return _zigzag(self._varint())
        if kind == 7:
            value = struct.unpack_from("<d", self.data, self.at)[0]
            self.at += 8
            return value
        if kind == 8:
            size = self._varint()
            value = self.data[self.at : self.at + size]
            if len(value) != size:
                raise ValueError("a string runs past the footer")
            self.at += size
            return value
        if kind in (9, 10):
            head = self._byte()
            size = head >> 4 if head >> 4 != 15 else self._varint()
            return [self._value(head & 0x0F) for _ in range(size)]
        if kind == 11:
            size = self._varint()
            if not size:
                return {}
            types = self._byte()
            return {self._value(types >> 4): self._value(types & 0x0F) for _ in range(size)}
        if kind == 12:
            return self.struct()
        raise ValueError(f"unknown compact type {kind}")

    def _byte(self) -> int:
        value = self.data[self.at]
        self.at += 1
        return value

    def _varint(self) -> int:
        value = shift = 0
        while True:
            byte = self._byte()
            value |= (byte & 0x7F) << shift
            if not byte & 0x80:
                return value
            shift += 7


def _zigzag(n: int) -> int:
    return (n >> 1) ^ -(n & 1)
