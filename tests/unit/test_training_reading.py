"""A read's progress: rows, the share done and the time left, reported from its first second."""

from __future__ import annotations

import logging

import pytest

from training.reading import FIRST_REPORT_SECONDS, ReadMeter, ReadProgress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_time_left_is_the_time_so_far_scaled_by_the_share_still_to_do():
    progress = ReadProgress(rows=1000, fraction=0.25, seconds=10.0)

    assert progress.eta_seconds == pytest.approx(30.0)
    assert progress.describe() == "1,000 rows read (25%), ETA 30s"


def test_nothing_done_yet_has_no_time_left_and_a_finished_read_shows_none():
    assert ReadProgress(rows=0, fraction=0.0, seconds=3.0).eta_seconds is None
    assert ReadProgress(rows=5, fraction=1.0, seconds=3.0).describe() == "5 rows read (100%)"


def test_the_first_report_comes_after_the_first_second_then_one_every_interval():
    clock, reports = Clock(), []
    meter = ReadMeter(reports.append, every=30.0, clock=clock)
    meter.expect(1000)

    meter.advance(100, rows=10)  # at once: too early to say anything useful
    clock.now += FIRST_REPORT_SECONDS
    meter.advance(100, rows=10)
    clock.now += 29.0
    meter.advance(100, rows=10)  # 29 s after the first report: not yet
    clock.now += 1.0
    meter.advance(200, rows=20)

    assert [(r.rows, r.fraction) for r in reports] == [(20, 0.2), (50, 0.5)]
    assert reports[0].eta_seconds == pytest.approx(4.0)  # 1 s for a fifth: 4 s more
    assert reports[1].seconds == pytest.approx(31.0)


def test_the_share_done_covers_all_the_work_expected_and_never_passes_one():
    clock, reports = Clock(), []
    meter = ReadMeter(reports.append, every=0.0, first=0.0, clock=clock)
    meter.expect(300)
    meter.expect(100)

    meter.advance(100)
    meter.advance(500)

    assert [r.fraction for r in reports] == [0.25, 1.0]


def test_each_report_is_logged_too(caplog):
    clock = Clock()
    meter = ReadMeter(every=0.0, first=0.0, clock=clock)
    meter.expect(10)
    clock.now += 2.0

    with caplog.at_level(logging.INFO, logger="training.reading"):
        meter.advance(5, rows=1234)

    assert "loading: 1,234 rows read (50%), ETA 2s" in caplog.text


def test_a_report_that_fails_is_logged_and_the_read_goes_on(caplog):
    def unreachable(progress: ReadProgress) -> None:
        raise ConnectionError("registry unreachable")

    meter = ReadMeter(unreachable, every=0.0, first=0.0, clock=Clock())
    meter.expect(10)
    with caplog.at_level(logging.WARNING, logger="training.reading"):
        meter.advance(5)
        meter.advance(5)

    assert meter.done == 10 and meter.reports == 2
    assert "loading progress not reported: ConnectionError: registry unreachable" in caplog.text
