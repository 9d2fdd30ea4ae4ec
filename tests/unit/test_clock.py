"""dropflow.vocabulary.clock: the strings other code and tests compare byte for byte."""

from __future__ import annotations

from dropflow.vocabulary.clock import compact_utc, iso_utc

# 2026-11-23T10:17:00.75Z: the fraction must be dropped, never rounded up.
MOMENT = 1795429020.75


def test_iso_utc_writes_whole_seconds_with_z():
    assert iso_utc(MOMENT) == "2026-11-23T10:17:00Z"


def test_iso_utc_writes_the_offset_cards_and_job_logs_use():
    assert iso_utc(MOMENT, zone="+00:00") == "2026-11-23T10:17:00+00:00"


def test_compact_utc_is_the_stamp_of_job_and_version_ids():
    assert compact_utc(MOMENT) == "20261123T101700Z"
