"""The scale benchmark's verdict (bench/scale.py): issue 13's targets on this tree's jobs of a
million rows, which decide its exit status."""

from __future__ import annotations

from typing import Any

from bench.scale import verdicts


def measured(rows: int, peak_mib: float, seconds: float = 300.0, **changes: Any) -> dict:
    """One child's figures as main() collects them: a job on this tree unless `changes` say."""
    return {
        "rows": rows,
        "format": "csv",
        "what": "job",
        "code": "this tree",
        "peak_mb": peak_mib,
        "seconds": seconds,
        **changes,
    }


def test_a_million_row_job_under_1_5_gb_meets_the_peak_target() -> None:
    (check,) = verdicts([measured(1_000_000, 1_430.0)], default_spec=False)

    assert check[1] is True
    assert "peak 1,430 MiB (1.50 GB) <= 1.5 GB" in check[0]


def test_a_peak_over_1_5_gb_misses_it_though_under_1_5_gib() -> None:
    (check,) = verdicts([measured(1_000_000, 1_431.0)], default_spec=False)

    assert check[1] is False


def test_drop_to_served_is_judged_only_under_the_default_spec() -> None:
    slow = measured(1_000_000, 1_000.0, seconds=600.0)

    assert [passed for _, passed in verdicts([slow], default_spec=False)] == [True]
    (peak, served) = verdicts([slow], default_spec=True)
    assert peak[1] is True
    assert served[1] is False and "drop to served 600 s <= 503 s" in served[0]


def test_smaller_tables_reads_and_the_baseline_tree_set_no_target() -> None:
    results = [
        measured(100_000, 5_000.0),
        measured(1_000_000, 5_000.0, what="read", seconds=10.0),
        measured(1_000_000, 5_000.0, code="main (e40ee92)"),
    ]

    assert verdicts(results, default_spec=True) == []


def test_a_measurement_that_failed_counts_as_missed() -> None:
    failed = {"rows": 100_000, "format": "parquet", "what": "read", "code": "this tree"}
    failed["error"] = "child exited 1: MemoryError"

    assert verdicts([failed], default_spec=False) == [
        ("100,000 rows parquet read: the measurement failed", False)
    ]
