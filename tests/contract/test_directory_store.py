"""The directory store and symbolic links: nothing under its folder may lead out of it.

Local only (S3 has no links), beside the ObjectStore contract that both adapters pass
(test_object_store.py). A link, to a file or to a folder, inside the bucket or out of it, is
not an object: reads name it, writes never go through it, listing leaves it out with a
WARNING naming its key.
"""

from __future__ import annotations

import io
import logging
import os
import re
import threading
from pathlib import Path

import pytest

from dropflow.adapters.local.directory_store import DirectoryStore, LinkRefused
from dropflow.ports import InvalidKey, ObjectNotFound

SECRET = b"aws_secret_access_key = outside the bucket\n"
LINK_RULE = "a symbolic link in the local store"


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder next to the bucket, holding what a link must never reveal or change."""
    folder = tmp_path / "outside"
    (folder / "data").mkdir(parents=True)
    (folder / "secret.txt").write_bytes(SECRET)
    (folder / "data" / "rows.csv").write_bytes(b"a,b\n1,2\n")
    return folder


@pytest.fixture
def bucket(tmp_path: Path) -> Path:
    return tmp_path / "bucket"


@pytest.fixture
def store(bucket: Path) -> DirectoryStore:
    return DirectoryStore(bucket)


def link(bucket: Path, key: str, target: Path) -> None:
    path = bucket / key
    path.parent.mkdir(parents=True, exist_ok=True)
    path.symlink_to(target)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in folder.rglob("*") if p.is_file()
    }


@pytest.fixture
def warnings(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.WARNING, logger="dropflow")
    return caplog


def warned(caplog: pytest.LogCaptureFixture) -> list[str]:
    records = [r for r in caplog.records if r.name == "dropflow"]
    assert all(r.levelno == logging.WARNING and r.exc_info is None for r in records)
    return [r.getMessage() for r in records]


# ---------------------------------------------------------------------- reads
def test_a_linked_file_is_refused_by_every_read_naming_the_key(store, bucket, outside, tmp_path):
    key = "datasets/iris/iris.csv"
    link(bucket, key, outside / "secret.txt")
    refused = re.escape(f"key '{key}' is {LINK_RULE}")

    with pytest.raises(LinkRefused, match=refused):
        store.get(key)
    with pytest.raises(LinkRefused, match=refused):
        store.head(key)
    with pytest.raises(LinkRefused, match=refused):
        store.get_file(key, tmp_path / "copy.csv")
    with pytest.raises(LinkRefused, match=refused):
        store.is_retired(key)
    with pytest.raises(LinkRefused, match=refused):
        store.set_retired(key, True)
    assert not (tmp_path / "copy.csv").exists()
    assert not (outside / ".secret.txt.retired").exists()


def test_a_key_under_a_linked_folder_is_refused_naming_both(store, bucket, outside):
    link(bucket, "datasets/iris", outside / "data")

    with pytest.raises(LinkRefused) as caught:
        store.get("datasets/iris/rows.csv")

    assert str(caught.value) == (
        f"key 'datasets/iris/rows.csv' lies under 'datasets/iris', {LINK_RULE} "
        f"{store.root}, which never follows links (they could lead out of its folder): copy "
        "the file in instead of linking it"
    )
    with pytest.raises(LinkRefused, match="lies under 'datasets/iris'"):
        store.head("datasets/iris/rows.csv")


def test_a_refused_link_reads_as_a_missing_object_to_the_domain(store, bucket, outside):
    # Callers that handle a missing card, model or spec handle a link the same way.
    link(bucket, "models/iris/v1/card.json", outside / "secret.txt")

    with pytest.raises(ObjectNotFound):
        store.get("models/iris/v1/card.json")


def test_a_link_inside_the_bucket_is_refused_too(store, bucket):
    store.put("datasets/iris/real.csv", b"a\n1\n")
    link(bucket, "datasets/iris/alias.csv", bucket / "datasets" / "iris" / "real.csv")

    with pytest.raises(LinkRefused, match=re.escape("alias.csv")):
        store.get("datasets/iris/alias.csv")


def test_a_dangling_link_is_refused_not_missing(store, bucket, tmp_path):
    link(bucket, "datasets/iris/gone.csv", tmp_path / "nowhere.csv")

    with pytest.raises(LinkRefused, match=re.escape("gone.csv")):
        store.get("datasets/iris/gone.csv")


def test_a_named_pipe_is_no_object_and_reading_it_does_not_block(store, bucket):
    (bucket / "datasets" / "iris").mkdir(parents=True)
    os.mkfifo(bucket / "datasets" / "iris" / "pipe.csv")
    result: list[BaseException] = []

    def read() -> None:
        try:
            store.get("datasets/iris/pipe.csv")
        except BaseException as exc:
            result.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(30)  # answers at once; a blocked open would hold it forever

    assert not reader.is_alive()
    assert isinstance(result[0], ObjectNotFound)
    assert store.head("datasets/iris/pipe.csv") is None
    assert store.list("datasets/") == []


# ---------------------------------------------------------------------- listing
def test_list_leaves_links_out_and_warns_naming_each(store, bucket, outside, warnings):
    store.put("datasets/iris/real.csv", b"a\n1\n")
    link(bucket, "datasets/iris/secret.csv", outside / "secret.txt")
    link(bucket, "datasets/iris/more", outside / "data")

    listed = store.list("datasets/")

    assert [info.key for info in listed] == ["datasets/iris/real.csv"]
    messages = warned(warnings)
    assert len(messages) == 2
    assert any("ignoring 'datasets/iris/secret.csv'" in m for m in messages)
    assert any("ignoring 'datasets/iris/more'" in m for m in messages)
    assert all("copy the file in instead of linking it" in m for m in messages)


def test_list_under_a_linked_folder_is_empty_and_warns(store, bucket, outside, warnings):
    link(bucket, "datasets/iris", outside / "data")

    assert store.list("datasets/iris/") == []
    assert store.list("datasets/iris/ro") == []
    assert [m.split(":")[0] for m in warned(warnings)] == ["ignoring 'datasets/iris'"] * 2


def test_a_link_whose_name_is_not_utf8_is_warned_about_in_escaped_form(
    store, bucket, outside, capsys
):
    folder = bucket / "datasets" / "iris"
    folder.mkdir(parents=True)
    os.symlink(outside / "secret.txt", os.path.join(os.fsencode(folder), b"bad-\xff.csv"))
    # The service logger's JSON lines, written as to a UTF-8 stdout.
    output = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
    handler = logging.StreamHandler(output)
    handler.setFormatter(logging.getLogger("dropflow").handlers[0].formatter)
    logging.getLogger("dropflow").addHandler(handler)
    try:
        assert store.list("datasets/") == []
    finally:
        logging.getLogger("dropflow").removeHandler(handler)

    assert "ignoring 'datasets/iris/bad-\\\\udcff.csv'" in output.buffer.getvalue().decode()
    assert "Logging error" not in capsys.readouterr().err


def test_a_link_loop_is_listed_past(store, bucket, warnings):
    store.put("datasets/iris/real.csv", b"1")
    (bucket / "datasets" / "iris" / "loop").symlink_to(bucket / "datasets" / "iris" / "loop")

    assert [i.key for i in store.list("")] == ["datasets/iris/real.csv"]
    assert len(warned(warnings)) == 1


def test_links_outside_the_prefix_are_not_walked_or_warned_about(store, bucket, outside, warnings):
    store.put("models/iris/v1/card.json", b"{}")
    link(bucket, "datasets/iris/secret.csv", outside / "secret.txt")

    assert [i.key for i in store.list("models/")] == ["models/iris/v1/card.json"]
    assert warned(warnings) == []


# ---------------------------------------------------------------------- writes
def test_a_put_never_writes_through_a_linked_folder(store, bucket, outside, tmp_path):
    link(bucket, "models/iris", outside / "data")
    before = snapshot(outside)
    source = tmp_path / "model.onnx"
    source.write_bytes(b"graph")

    with pytest.raises(InvalidKey, match="lies under 'models/iris'"):
        store.put("models/iris/v1/card.json", b"{}")
    with pytest.raises(InvalidKey, match="lies under 'models/iris'"):
        store.put_file("models/iris/v1/model.onnx", source)

    assert snapshot(outside) == before
    assert not (outside / "data" / "v1").exists()
    assert list((bucket / ".tmp").iterdir()) == []  # nothing left half-put


def test_a_put_at_a_linked_key_replaces_the_link_not_its_target(store, bucket, outside):
    link(bucket, "datasets/iris/iris.csv", outside / "secret.txt")

    store.put("datasets/iris/iris.csv", b"new rows\n")

    assert (outside / "secret.txt").read_bytes() == SECRET
    assert not (bucket / "datasets" / "iris" / "iris.csv").is_symlink()
    assert store.get("datasets/iris/iris.csv") == b"new rows\n"


def test_a_delete_never_reaches_through_a_link(store, bucket, outside):
    link(bucket, "jobs/iris", outside / "data")
    link(bucket, "models/iris/v1/model.onnx", outside / "secret.txt")

    with pytest.raises(InvalidKey, match="lies under 'jobs/iris'"):
        store.delete("jobs/iris/rows.csv")
    with pytest.raises(
        InvalidKey, match=re.escape("'models/iris/v1/model.onnx' is a symbolic link")
    ):
        store.delete("models/iris/v1/model.onnx")

    assert (outside / "data" / "rows.csv").exists()
    assert (outside / "secret.txt").read_bytes() == SECRET
    assert (bucket / "models" / "iris" / "v1" / "model.onnx").is_symlink()


def test_a_linked_temp_folder_is_replaced_by_a_real_one(bucket, outside):
    bucket.mkdir()
    (bucket / ".tmp").symlink_to(outside / "data", target_is_directory=True)
    before = snapshot(outside)

    store = DirectoryStore(bucket)
    store.put("a.txt", b"x")

    assert not (bucket / ".tmp").is_symlink() and (bucket / ".tmp").is_dir()
    assert snapshot(outside) == before
