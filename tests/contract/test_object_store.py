"""The ObjectStore contract, run against the directory store and S3 (moto)."""

from __future__ import annotations

import re
import threading
import time
from contextlib import ExitStack
from pathlib import Path

import boto3
import pytest
from botocore.stub import Stubber

from dropflow.adapters.aws.s3_store import S3Store
from dropflow.adapters.local.directory_store import DirectoryStore
from dropflow.ports import InvalidKey, ObjectNotFound, ObjectStore

INVALID_KEYS = [
    pytest.param("", id="empty"),
    pytest.param("/absolute/key.csv", id="leading-slash"),
    pytest.param("datasets/../secrets.txt", id="dot-dot"),
    pytest.param("..", id="only-dot-dot"),
    pytest.param("datasets//iris.csv", id="empty-segment"),
    pytest.param("datasets/iris/", id="trailing-slash"),
    pytest.param("datasets\\iris.csv", id="backslash"),
    pytest.param("./datasets/iris.csv", id="dot-segment"),
    pytest.param("datasets/.hidden", id="hidden-name"),
    pytest.param("nul\x00byte", id="nul"),
    pytest.param("x" * 300, id="segment-too-long"),
]


# --------------------------------------------------------------------------- round trips
def test_put_then_get_returns_the_same_bytes(store: ObjectStore) -> None:
    data = bytes(range(256)) * 10

    info = store.put("datasets/iris/iris.csv", data, content_type="text/csv")

    assert store.get("datasets/iris/iris.csv") == data
    assert info.key == "datasets/iris/iris.csv"
    assert info.size == len(data)


def test_put_returns_the_info_head_reports(store: ObjectStore) -> None:
    info = store.put("models/iris/v1/card.json", b'{"ok": true}')

    head = store.head("models/iris/v1/card.json")

    assert head is not None
    assert (head.key, head.size, head.etag) == (info.key, info.size, info.etag)
    assert head.modified == pytest.approx(info.modified, abs=5)


def test_empty_object_round_trips(store: ObjectStore) -> None:
    store.put("jobs/iris/j1/empty", b"")

    head = store.head("jobs/iris/j1/empty")
    assert store.get("jobs/iris/j1/empty") == b""
    assert head is not None and head.size == 0


def test_get_start_reads_only_the_first_bytes(store: ObjectStore) -> None:
    store.put("datasets/iris/iris.csv", b"species,petal\nsetosa,1.4\n")

    assert store.get_start("datasets/iris/iris.csv", 8) == b"species,"
    assert store.get_start("datasets/iris/iris.csv", 1000) == b"species,petal\nsetosa,1.4\n"


def test_get_end_reads_only_the_last_bytes(store: ObjectStore) -> None:
    store.put("datasets/iris/iris.parquet", b"PAR1 columns footer PAR1")

    assert store.get_end("datasets/iris/iris.parquet", 4) == b"PAR1"
    assert store.get_end("datasets/iris/iris.parquet", 1000) == b"PAR1 columns footer PAR1"


def test_get_start_and_end_of_an_empty_object_are_empty(store: ObjectStore) -> None:
    # S3 refuses a range on an empty object (416 InvalidRange): the port answers b"".
    store.put("datasets/iris/empty.csv", b"")

    assert store.get_start("datasets/iris/empty.csv", 100) == b""
    assert store.get_end("datasets/iris/empty.csv", 100) == b""


def test_get_start_and_end_of_a_missing_key_name_the_key(store: ObjectStore) -> None:
    for read in (store.get_start, store.get_end):
        with pytest.raises(ObjectNotFound, match=re.escape("datasets/iris/none.csv")):
            read("datasets/iris/none.csv", 100)


def test_put_file_then_get_file_round_trips(store: ObjectStore, tmp_path: Path) -> None:
    source = tmp_path / "model.onnx"
    source.write_bytes(b"\x08\x07onnx" * 1000)

    info = store.put_file("models/iris/v1/model.onnx", source)
    dest = tmp_path / "downloads" / "nested" / "model.onnx"
    store.get_file("models/iris/v1/model.onnx", dest)

    assert dest.read_bytes() == source.read_bytes()
    assert info.size == source.stat().st_size
    assert store.head("models/iris/v1/model.onnx").etag == info.etag  # type: ignore[union-attr]


def test_get_file_replaces_an_existing_file(store: ObjectStore, tmp_path: Path) -> None:
    store.put("code/bundle.zip", b"new bundle")
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    dest = downloads / "bundle.zip"
    dest.write_bytes(b"old bundle, longer than the new one")

    store.get_file("code/bundle.zip", dest)

    assert dest.read_bytes() == b"new bundle"
    assert [p.name for p in downloads.iterdir()] == ["bundle.zip"]  # no temp file left over


# --------------------------------------------------------------------------- etags
def test_overwrite_changes_content_and_etag(store: ObjectStore) -> None:
    first = store.put("jobs/iris/j1/manifest.json", b'{"step": 1}')

    second = store.put("jobs/iris/j1/manifest.json", b'{"step": 2}')

    assert second.etag != first.etag
    assert store.get("jobs/iris/j1/manifest.json") == b'{"step": 2}'
    assert store.head("jobs/iris/j1/manifest.json").etag == second.etag  # type: ignore[union-attr]


def test_etag_is_stable_while_the_content_is_unchanged(store: ObjectStore) -> None:
    info = store.put("datasets/iris/a.csv", b"x,y\n1,2\n")

    assert store.head("datasets/iris/a.csv").etag == info.etag  # type: ignore[union-attr]
    assert [i.etag for i in store.list("datasets/iris/")] == [info.etag]
    assert [i.etag for i in store.list("datasets/iris/")] == [info.etag]


# --------------------------------------------------------------------------- atomicity
def test_readers_never_see_a_partial_object(store: ObjectStore) -> None:
    # Two large payloads of different sizes and bytes: a torn read matches neither.
    big = b"A" * (3 * 1024 * 1024)
    small = b"B" * (1024 * 1024 + 7)
    key = "jobs/iris/j1/manifest.json"
    store.put(key, big)
    stop = threading.Event()
    torn: list[int] = []
    failures: list[BaseException] = []
    reads = [0]

    def reader() -> None:
        try:
            while not stop.is_set():
                data = store.get(key)
                reads[0] += 1
                if data != big and data != small:
                    torn.append(len(data))
                time.sleep(0.001)  # let the writer in: lock hand-over is not fair
        except BaseException as exc:  # a reader that crashes must fail the test
            failures.append(exc)

    threads = [threading.Thread(target=reader) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for i in range(24):
            store.put(key, small if i % 2 == 0 else big)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)

    assert not any(t.is_alive() for t in threads)
    assert failures == []
    assert torn == []
    assert reads[0] > 0


# --------------------------------------------------------------------------- listing
LAYOUT = [
    "datasets/iris/a.csv",
    "datasets/iris/sub/b.csv",
    "datasets/iris-2/x.csv",
    "datasets/irisx.csv",
    "models/iris/v1/card.json",
]


@pytest.fixture
def populated(store: ObjectStore) -> ObjectStore:
    for n, key in enumerate(reversed(LAYOUT)):  # written out of order on purpose
        store.put(key, f"object {n}".encode())
    return store


def test_list_folder_prefix_is_recursive_and_exact(populated: ObjectStore) -> None:
    keys = [i.key for i in populated.list("datasets/iris/")]

    assert keys == ["datasets/iris/a.csv", "datasets/iris/sub/b.csv"]


def test_list_partial_prefix_matches_like_s3(populated: ObjectStore) -> None:
    keys = [i.key for i in populated.list("datasets/iris")]

    # Sorted by key: '-' < '/' < 'x'.
    assert keys == [
        "datasets/iris-2/x.csv",
        "datasets/iris/a.csv",
        "datasets/iris/sub/b.csv",
        "datasets/irisx.csv",
    ]


def test_list_partial_segment_prefix(populated: ObjectStore) -> None:
    assert [i.key for i in populated.list("models/ir")] == ["models/iris/v1/card.json"]


def test_list_empty_prefix_returns_everything_sorted(populated: ObjectStore) -> None:
    assert [i.key for i in populated.list("")] == sorted(LAYOUT)


def test_list_unknown_prefix_is_empty(populated: ObjectStore) -> None:
    assert populated.list("nothing/here/") == []
    assert populated.list("datasets/iris/a.csv/") == []
    assert populated.list("../") == []


def test_list_reports_what_head_reports(populated: ObjectStore) -> None:
    for info in populated.list(""):
        head = populated.head(info.key)
        assert head is not None
        assert (head.size, head.etag) == (info.size, info.etag)


# --------------------------------------------------------------------------- missing keys
def test_get_missing_key_names_the_key(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound, match=re.escape("datasets/iris/missing.csv")):
        store.get("datasets/iris/missing.csv")


def test_get_file_missing_key_names_the_key_and_writes_nothing(
    store: ObjectStore, tmp_path: Path
) -> None:
    dest = tmp_path / "out" / "missing.bin"

    with pytest.raises(ObjectNotFound, match=re.escape("models/iris/v9/model.onnx")):
        store.get_file("models/iris/v9/model.onnx", dest)

    assert not dest.exists()


def test_head_missing_key_is_none(store: ObjectStore) -> None:
    assert store.head("models/iris/v1/card.json") is None


def test_not_found_is_a_lookup_error(store: ObjectStore) -> None:
    with pytest.raises(LookupError):
        store.get("nothing")


def test_a_folder_is_not_an_object(populated: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound):
        populated.get("datasets/iris")
    assert populated.head("datasets/iris") is None


# --------------------------------------------------------------------------- invalid keys
@pytest.mark.parametrize("key", INVALID_KEYS)
def test_invalid_keys_are_rejected_naming_the_key(
    store: ObjectStore, key: str, tmp_path: Path
) -> None:
    source = tmp_path / "f"
    source.write_bytes(b"x")
    calls = [
        lambda: store.put(key, b"x"),
        lambda: store.put_file(key, source),
        lambda: store.get(key),
        lambda: store.get_file(key, tmp_path / "out"),
        lambda: store.head(key),
        lambda: store.delete(key),
        lambda: store.set_retired(key, True),
        lambda: store.is_retired(key),
    ]
    for call in calls:
        with pytest.raises(InvalidKey) as caught:
            call()
        assert repr(key) in str(caught.value)
    assert store.list("") == []


def test_invalid_key_is_a_value_error(store: ObjectStore) -> None:
    with pytest.raises(ValueError):
        store.put("/etc/passwd", b"x")


# --------------------------------------------------------------------------- delete
def test_delete_removes_the_object(populated: ObjectStore) -> None:
    populated.delete("datasets/iris/sub/b.csv")

    assert populated.head("datasets/iris/sub/b.csv") is None
    with pytest.raises(ObjectNotFound):
        populated.get("datasets/iris/sub/b.csv")
    assert [i.key for i in populated.list("datasets/iris/")] == ["datasets/iris/a.csv"]


def test_delete_missing_key_is_not_an_error(store: ObjectStore) -> None:
    store.delete("datasets/iris/never-written.csv")
    store.put("a/b", b"1")
    store.delete("a/b")
    store.delete("a/b")

    assert store.list("") == []


def test_delete_then_put_again_works(store: ObjectStore) -> None:
    store.put("jobs/iris/j1/heartbeat.json", b"1")
    store.delete("jobs/iris/j1/heartbeat.json")

    store.put("jobs/iris/j1/heartbeat.json", b"2")

    assert store.get("jobs/iris/j1/heartbeat.json") == b"2"


# --------------------------------------------------------------------------- retired mark
CARD = "models/iris/v1/card.json"


def test_a_new_object_is_not_retired(store: ObjectStore) -> None:
    store.put(CARD, b"{}")

    assert store.is_retired(CARD) is False


def test_set_retired_marks_and_unmarks_the_object(store: ObjectStore) -> None:
    store.put(CARD, b"{}")

    store.set_retired(CARD, True)
    marked = store.is_retired(CARD)
    store.set_retired(CARD, False)

    assert (marked, store.is_retired(CARD)) == (True, False)


def test_set_retired_twice_is_the_same_as_once(store: ObjectStore) -> None:
    store.put(CARD, b"{}")

    store.set_retired(CARD, True)
    store.set_retired(CARD, True)
    assert store.is_retired(CARD) is True
    store.set_retired(CARD, False)
    store.set_retired(CARD, False)
    assert store.is_retired(CARD) is False


def test_the_mark_leaves_content_and_listing_alone(store: ObjectStore) -> None:
    info = store.put(CARD, b'{"version": "v1"}')

    store.set_retired(CARD, True)

    head = store.head(CARD)
    assert store.get(CARD) == b'{"version": "v1"}'
    assert head is not None and (head.size, head.etag) == (info.size, info.etag)
    assert [i.key for i in store.list("")] == [CARD]


def test_the_mark_belongs_to_one_object_only(store: ObjectStore) -> None:
    store.put(CARD, b"{}")
    store.put("models/iris/v1/model.onnx", b"onnx")

    store.set_retired(CARD, True)

    assert store.is_retired("models/iris/v1/model.onnx") is False


def test_a_put_over_a_retired_object_clears_the_mark(store: ObjectStore) -> None:
    store.put(CARD, b"old")
    store.set_retired(CARD, True)

    store.put(CARD, b"new")

    assert store.is_retired(CARD) is False


def test_a_deleted_and_rewritten_object_is_not_retired(store: ObjectStore) -> None:
    store.put(CARD, b"old")
    store.set_retired(CARD, True)
    store.delete(CARD)

    store.put(CARD, b"new")

    assert store.is_retired(CARD) is False


def test_marking_a_missing_object_names_the_key(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound, match=re.escape(CARD)):
        store.set_retired(CARD, True)
    with pytest.raises(ObjectNotFound, match=re.escape(CARD)):
        store.is_retired(CARD)
    assert store.list("") == []


def test_unmarking_a_missing_object_names_the_key(store: ObjectStore) -> None:
    with ExitStack() as stack:
        if isinstance(store, S3Store):
            # moto 5.2 fails inside DeleteObjectTagging on a missing key; S3 answers NoSuchKey.
            stubber = stack.enter_context(Stubber(store.client))
            stubber.add_client_error("delete_object_tagging", "NoSuchKey", http_status_code=404)
        with pytest.raises(ObjectNotFound, match=re.escape(CARD)):
            store.set_retired(CARD, False)


# --------------------------------------------------------------------------- adapter specifics
def test_s3_store_marks_with_the_tag_the_lifecycle_rule_expires() -> None:
    from moto import mock_aws

    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="tagged")
        store = S3Store("tagged", prefix="pre", client=client)
        store.put(CARD, b"{}")

        store.set_retired(CARD, True)
        retired = client.get_object_tagging(Bucket="tagged", Key=f"pre/{CARD}")["TagSet"]
        store.set_retired(CARD, False)
        kept = client.get_object_tagging(Bucket="tagged", Key=f"pre/{CARD}")["TagSet"]

    # template.yaml's expire-retired-model-versions rule filters on exactly this tag.
    assert retired == [{"Key": "dropflow:retired", "Value": "true"}]
    assert kept == []


def test_directory_store_keeps_the_mark_in_a_hidden_sidecar(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "bucket")
    store.put(CARD, b"{}")

    store.set_retired(CARD, True)

    folder = tmp_path / "bucket" / "models" / "iris" / "v1"
    assert sorted(p.name for p in folder.iterdir()) == [".card.json.retired", "card.json"]
    assert (folder / "card.json").read_bytes() == b"{}"  # nothing deletes it locally


def test_directory_store_delete_removes_the_mark_and_the_empty_folders(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "bucket")
    store.put(CARD, b"{}")
    store.set_retired(CARD, True)

    store.delete(CARD)

    assert not (tmp_path / "bucket" / "models").exists()


def test_directory_store_lists_files_dropped_into_the_folder(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "bucket")
    drop = tmp_path / "bucket" / "datasets" / "iris"
    drop.mkdir(parents=True)
    (drop / "iris.csv").write_text("a,b\n1,2\n")
    (drop / ".DS_Store").write_bytes(b"finder litter")
    (drop / ".~lock.iris.csv#").write_text("editor lock")

    assert [i.key for i in store.list("datasets/")] == ["datasets/iris/iris.csv"]


def test_directory_store_never_lists_its_temp_folder(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "bucket")
    (tmp_path / "bucket" / ".tmp" / "leftover.part").write_bytes(b"half a put")

    store.put("a.txt", b"x")

    assert [i.key for i in store.list("")] == ["a.txt"]


def test_directory_store_etag_follows_a_file_rewritten_in_place(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "bucket")
    first = store.put("datasets/iris/a.csv", b"1,2\n")
    path = tmp_path / "bucket" / "datasets" / "iris" / "a.csv"

    path.write_bytes(b"3,4\n")  # same size, edited by hand

    head = store.head("datasets/iris/a.csv")
    assert head is not None and head.etag != first.etag


def test_directory_store_delete_removes_empty_folders_but_not_root(tmp_path: Path) -> None:
    root = tmp_path / "bucket"
    store = DirectoryStore(root)
    store.put("jobs/iris/j1/checkpoints/step-1.pt", b"w")
    store.put("jobs/iris/j2/log.txt", b"l")

    store.delete("jobs/iris/j1/checkpoints/step-1.pt")
    assert not (root / "jobs" / "iris" / "j1").exists()
    assert (root / "jobs" / "iris" / "j2").is_dir()

    store.delete("jobs/iris/j2/log.txt")
    assert sorted(p.name for p in root.iterdir()) == [".tmp"]


def test_directory_store_refuses_a_key_below_an_object(tmp_path: Path) -> None:
    store = DirectoryStore(tmp_path / "bucket")
    store.put("models/iris", b"an object")

    with pytest.raises(InvalidKey, match=re.escape("models/iris/card.json")):
        store.put("models/iris/card.json", b"{}")
    with pytest.raises(InvalidKey, match="'models'"):
        store.put("models", b"{}")
    assert store.get("models/iris") == b"an object"


def test_s3_store_keeps_keys_under_its_prefix() -> None:
    from moto import mock_aws

    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="prefixed")
        client.put_object(Bucket="prefixed", Key="outside.txt", Body=b"not ours")
        client.put_object(Bucket="prefixed", Key="pre/datasets/iris/.DS_Store", Body=b"litter")
        store = S3Store("prefixed", prefix="/pre/", client=client)

        store.put("datasets/iris/a.csv", b"1")

        raw = client.get_object(Bucket="prefixed", Key="pre/datasets/iris/a.csv")
        assert raw["Body"].read() == b"1"
        assert [i.key for i in store.list("")] == ["datasets/iris/a.csv"]
        with pytest.raises(ObjectNotFound, match=re.escape("outside.txt")):
            store.get("outside.txt")
