"""A data file's column names from a few of its bytes (dropflow.vocabulary.data_header), as
the training job's reader (pyarrow) sees them."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dropflow.vocabulary.data_header import HEADER_BYTES, data_columns
from tests.unit.fakes import MemoryStore


class CountingStore(MemoryStore):
    """Remembers how many bytes the ranged reads asked for."""

    def __init__(self) -> None:
        super().__init__()
        self.read = 0

    def get_start(self, key: str, count: int) -> bytes:
        self.read += count
        return super().get_start(key, count)

    def get_end(self, key: str, count: int) -> bytes:
        self.read += count
        return super().get_end(key, count)


def columns_of(name: str, data: bytes, store: MemoryStore | None = None) -> list[str] | None:
    store = store or MemoryStore()
    info = store.put(f"datasets/m/{name}", data)
    return data_columns(store, info)


def parquet(table: pa.Table | pd.DataFrame, **options) -> bytes:
    buffer = io.BytesIO()
    if isinstance(table, pd.DataFrame):
        table.to_parquet(buffer, **options)
    else:
        pq.write_table(table, buffer, **options)
    return buffer.getvalue()


# --------------------------------------------------------------------------- CSV
def test_the_csv_header_is_the_first_line_trimmed_as_the_reader_trims_it():
    assert columns_of("d.csv", b'\xef\xbb\xbfa, Label ,"b,c"\r\n1,2,3\r\n') == ["a", "Label", "b,c"]


def test_a_one_line_csv_without_a_line_end_is_its_header():
    assert columns_of("d.csv", b"a,target") == ["a", "target"]


def test_what_a_csv_s_first_bytes_cannot_tell_is_left_to_the_job():
    assert columns_of("d.csv", b"") is None
    assert columns_of("d.csv", b"a,caf\xe9\n1,2\n") is None  # not UTF-8: the reader names it
    assert columns_of("d.csv", b"x" * (HEADER_BYTES + 10) + b"\n") is None  # no line end
    assert columns_of("d.csv", b'a,"two\nlines"\n1,2\n') is None  # a quoted line break


def test_only_the_csv_s_first_bytes_are_read():
    store = CountingStore()
    big = b"a,target\n" + b"1,2\n" * 200_000

    assert columns_of("d.csv", big, store) == ["a", "target"]
    assert store.read <= HEADER_BYTES < len(big)


# --------------------------------------------------------------------------- Parquet
def test_parquet_columns_are_the_schema_s_names_in_order():
    frame = pd.DataFrame({"species": ["a", "b"], "Bill Length": [1.0, 2.0], "year": [1, 2]})
    assert columns_of("d.parquet", parquet(frame, index=False)) == [
        "species",
        "Bill Length",
        "year",
    ]


def test_a_pandas_index_saved_beside_the_columns_is_not_a_column():
    frame = pd.DataFrame({"x": [1.0, 2.0], "label": ["p", "q"]}, index=pd.Index([7, 9], name="id"))
    assert columns_of("d.parquet", parquet(frame)) == ["x", "label"]


def test_nested_and_typed_parquet_columns_count_once_each():
    table = pa.table(
        {
            "point": pa.array([{"x": 1, "y": {"z": 2.0}}, {"x": 3, "y": {"z": 4.0}}]),
            "tags": pa.array([["a", "b"], []]),
            "color": pa.array(["red", "blue"]).dictionary_encode(),
            "flag": pa.array([True, False]),
            "when": pa.array(np.array(["2026-01-01", "2026-01-02"], dtype="datetime64[ms]")),
            "Class": pa.array([0, 1]),
        }
    )
    columns = columns_of("d.parquet", parquet(table))
    assert columns == pq.read_schema(io.BytesIO(parquet(table))).names
    assert columns == ["point", "tags", "color", "flag", "when", "Class"]


def test_a_footer_beyond_the_first_read_is_fetched_whole():
    # Many row groups make a footer far larger than the first 64 KiB read of the tail.
    frame = pd.DataFrame({f"c{i}": np.arange(400.0) for i in range(40)} | {"target": 0})
    data = parquet(frame, index=False, row_group_size=2)

    assert columns_of("d.parquet", data) == [*(f"c{i}" for i in range(40)), "target"]


def test_only_the_parquet_footer_is_read():
    store = CountingStore()
    frame = pd.DataFrame({"a": np.random.default_rng(0).normal(size=300_000), "y": 1.0})
    data = parquet(frame, index=False)

    assert columns_of("d.parquet", data, store) == ["a", "y"]
    assert store.read < len(data) / 10


@pytest.mark.parametrize(
    "data",
    [b"", b"PAR1", b"PAR1 not really PAR1", b"PAR1" + b"\x00" * 20 + b"\xff\xff\xff\x7fPAR1"],
    ids=["empty", "magic-only", "garbage", "footer-too-long"],
)
def test_a_damaged_parquet_footer_is_left_to_the_job(data):
    assert columns_of("d.parquet", data) is None


def test_a_truncated_parquet_file_is_left_to_the_job():
    data = parquet(pd.DataFrame({"a": [1.0], "target": [0]}), index=False)
    assert columns_of("d.parquet", data[:-3]) is None
