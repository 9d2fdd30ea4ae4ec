"""The bucket watcher reports settled files only, once per content."""

from __future__ import annotations

import logging
import os

from dropflow_dev.local.watcher import BucketWatcher


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _watcher(tmp_path):
    clock = Clock()
    return BucketWatcher(tmp_path, settle_seconds=1.0, clock=clock), clock


def _write(path, data: bytes, mtime_ns: int | None = None):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))


def test_a_file_is_reported_once_it_has_settled(tmp_path):
    watcher, clock = _watcher(tmp_path)
    _write(tmp_path / "datasets/iris/a.csv", b"x,y\n")

    assert watcher.scan() == []
    clock.now = 1.5
    assert watcher.scan() == ["datasets/iris/a.csv"]
    clock.now = 3.0
    assert watcher.scan() == []


def test_a_file_still_growing_is_not_reported(tmp_path):
    watcher, clock = _watcher(tmp_path)
    path = tmp_path / "datasets/iris/a.csv"
    _write(path, b"x,y\n", mtime_ns=1)
    watcher.scan()
    clock.now = 0.9
    _write(path, b"x,y\n1,2\n", mtime_ns=2)
    watcher.scan()

    clock.now = 1.5
    assert watcher.scan() == []
    clock.now = 2.0
    assert watcher.scan() == ["datasets/iris/a.csv"]


def test_a_models_files_wait_for_each_other(tmp_path):
    watcher, clock = _watcher(tmp_path)
    _write(tmp_path / "datasets/iris/a.csv", b"1")
    watcher.scan()
    clock.now = 0.8
    _write(tmp_path / "datasets/iris/b.csv", b"2")
    watcher.scan()

    clock.now = 1.2
    assert watcher.scan() == []
    clock.now = 2.0
    assert watcher.scan() == ["datasets/iris/a.csv", "datasets/iris/b.csv"]


def test_changed_content_is_reported_again(tmp_path):
    watcher, clock = _watcher(tmp_path)
    path = tmp_path / "datasets/iris/a.csv"
    _write(path, b"1", mtime_ns=1)
    watcher.scan()
    clock.now = 1.5
    watcher.scan()

    _write(path, b"22", mtime_ns=2)
    clock.now = 2.0
    watcher.scan()
    clock.now = 3.5
    assert watcher.scan() == ["datasets/iris/a.csv"]


def test_temporary_and_hidden_files_and_other_model_files_are_ignored(tmp_path):
    watcher, clock = _watcher(tmp_path)
    for name in (".a.csv.swp", "b.csv.part", "c.csv~", ".tmp/x.csv"):
        _write(tmp_path / "datasets/iris" / name, b"1")
    _write(tmp_path / "models/iris/v1/model.onnx", b"1")
    _write(tmp_path / "models/iris/v1/card.json", b"{}")

    watcher.scan()
    clock.now = 2.0
    assert watcher.scan() == ["models/iris/v1/card.json"]


# ---------------------------------------------------------------------- symbolic links
def _outside(tmp_path):
    folder = tmp_path.parent / f"{tmp_path.name}-outside"
    _write(folder / "secret.csv", b"a,b\n1,2\n")
    _write(folder / "v9" / "card.json", b"{}")
    return folder


def test_links_are_never_followed_nor_reported(tmp_path):
    outside = _outside(tmp_path)
    watcher, clock = _watcher(tmp_path)
    _write(tmp_path / "datasets/iris/real.csv", b"1")
    (tmp_path / "datasets/iris/linked.csv").symlink_to(outside / "secret.csv")
    (tmp_path / "datasets/wine").symlink_to(outside, target_is_directory=True)
    (tmp_path / "models/iris").mkdir(parents=True)
    (tmp_path / "models/iris/v9").symlink_to(outside / "v9", target_is_directory=True)

    watcher.scan()
    clock.now = 2.0
    assert watcher.scan() == ["datasets/iris/real.csv"]


def test_a_linked_datasets_folder_reports_nothing(tmp_path):
    outside = _outside(tmp_path)
    (tmp_path / "datasets").symlink_to(outside, target_is_directory=True)
    watcher, clock = _watcher(tmp_path)

    watcher.scan()
    clock.now = 2.0
    assert watcher.scan() == []


def test_each_link_is_named_in_one_warning(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="dropflow.watcher")
    outside = _outside(tmp_path)
    watcher, clock = _watcher(tmp_path)
    (tmp_path / "datasets/iris").mkdir(parents=True)
    (tmp_path / "datasets/iris/linked.csv").symlink_to(outside / "secret.csv")

    for now in (0.0, 1.0, 2.0):
        clock.now = now
        watcher.scan()

    (message,) = [r.getMessage() for r in caplog.records if r.name == "dropflow.watcher"]
    assert message.startswith("ignoring 'datasets/iris/linked.csv' in ")
    assert "a symbolic link, never followed" in message
    assert all(r.levelno == logging.WARNING and r.exc_info is None for r in caplog.records)
