"""The IMDS emulator speaks IMDSv2, and ProcessCompute children find their identity in it."""

from __future__ import annotations

import json
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from dropflow import wiring
from dropflow.adapters.local import instance_state
from dropflow.adapters.local.process_compute import ProcessCompute
from dropflow.ports import InstanceState, LaunchRequest
from dropflow_dev.local.imds import ImdsEmulator
from tests.net import wait_until
from training.interruption import instance_identity

INSTANCE = "proc-0123456789ab"
JOB_ID = "iris-20261123T101500Z-3f9a0c"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[ImdsEmulator]:
    with ImdsEmulator(tmp_path / "compute") as emu:
        yield emu


def _call(url: str, method: str = "GET", **headers: str) -> tuple[int, str]:
    request = urllib.request.Request(url, method=method, headers=headers)
    try:
        with _NO_PROXY.open(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read().decode()


def _token(base: str, ttl: str = "60") -> str:
    status, token = _call(
        f"{base}/latest/api/token", "PUT", **{"X-aws-ec2-metadata-token-ttl-seconds": ttl}
    )
    assert status == 200 and token
    return token


def _get(base: str, path: str, token: str | None) -> tuple[int, str]:
    headers = {"X-aws-ec2-metadata-token": token} if token is not None else {}
    return _call(f"{base}/latest/meta-data/{path}", **headers)


# --------------------------------------------------------------------------- IMDSv2 rules
def test_a_get_without_a_token_is_401(emulator: ImdsEmulator) -> None:
    base = emulator.endpoint(INSTANCE)

    assert _get(base, "instance-id", None)[0] == 401
    assert _get(base, "instance-id", "made-up")[0] == 401
    assert _get(base, "instance-id", _token(base)) == (200, INSTANCE)


@pytest.mark.parametrize("ttl", [None, "0", "21601", "soon"])
def test_a_token_request_needs_a_valid_ttl(emulator: ImdsEmulator, ttl: str | None) -> None:
    headers = {"X-aws-ec2-metadata-token-ttl-seconds": ttl} if ttl is not None else {}

    status, _ = _call(f"{emulator.endpoint(INSTANCE)}/latest/api/token", "PUT", **headers)

    assert status == 400


def test_a_token_request_through_a_proxy_is_refused(emulator: ImdsEmulator) -> None:
    status, _ = _call(
        f"{emulator.endpoint(INSTANCE)}/latest/api/token",
        "PUT",
        **{"X-aws-ec2-metadata-token-ttl-seconds": "60", "X-Forwarded-For": "10.0.0.1"},
    )

    assert status == 403


def test_a_token_is_only_good_for_its_instance_and_its_ttl(emulator: ImdsEmulator) -> None:
    base = emulator.endpoint(INSTANCE)
    short = _token(base, ttl="1")

    assert _get(emulator.endpoint("proc-ffffffffffff"), "instance-id", short)[0] == 401
    assert _get(base, "instance-id", short)[0] == 200
    time.sleep(1.1)
    assert _get(base, "instance-id", short)[0] == 401


def test_notices_are_404_until_announced_then_json(emulator: ImdsEmulator) -> None:
    base = emulator.endpoint(INSTANCE)
    token = _token(base)
    assert _get(base, "spot/instance-action", token)[0] == 404
    assert _get(base, "events/recommendations/rebalance", token)[0] == 404

    instance_state.announce_interruption(
        emulator.state_dir, INSTANCE, in_seconds=120, action="stop"
    )
    instance_state.announce_rebalance(emulator.state_dir, INSTANCE)

    status, body = _get(base, "spot/instance-action", token)
    assert status == 200
    notice = json.loads(body)
    assert notice["action"] == "stop"
    assert notice["time"].endswith("Z") and set(notice) == {"action", "time"}
    status, body = _get(base, "events/recommendations/rebalance", token)
    assert status == 200 and set(json.loads(body)) == {"noticeTime"}

    instance_state.clear(emulator.state_dir, INSTANCE)
    assert _get(base, "spot/instance-action", token)[0] == 404


def test_tags_are_served_when_recorded(emulator: ImdsEmulator) -> None:
    base = emulator.endpoint(INSTANCE)
    token = _token(base)
    assert _get(base, "tags/instance", token)[0] == 404  # no tags: as EC2 with tags off

    instance_state.write_tags(
        emulator.state_dir, INSTANCE, {"DROPFLOW_JOB_ID": JOB_ID, "Name": "x"}
    )

    assert _get(base, "tags/instance", token) == (200, "DROPFLOW_JOB_ID\nName")
    assert _get(base, "tags/instance/DROPFLOW_JOB_ID", token) == (200, JOB_ID)
    assert _get(base, "tags/instance/DROPFLOW_MODEL", token)[0] == 404
    assert _get(base, "no/such/path", token)[0] == 404


def test_stop_is_bounded_and_frees_the_port(tmp_path: Path) -> None:
    emulator = ImdsEmulator(tmp_path).start()
    url = emulator.url

    started = time.monotonic()
    emulator.stop()
    emulator.stop()  # twice is fine

    assert time.monotonic() - started < 2.0
    with pytest.raises(urllib.error.URLError):
        _NO_PROXY.open(urllib.request.Request(f"{url}/{INSTANCE}/latest/api/token"), timeout=2)


# --------------------------------------------------------------------------- identity
def test_instance_identity_reads_the_id_and_the_dropflow_tags(emulator: ImdsEmulator) -> None:
    instance_state.write_tags(
        emulator.state_dir,
        INSTANCE,
        {"DROPFLOW_JOB_ID": JOB_ID, "DROPFLOW_MODEL": "iris", "DROPFLOW_ATTEMPT": "2"},
    )

    assert instance_identity(emulator.endpoint(INSTANCE)) == {
        "instance_id": INSTANCE,
        "job_id": JOB_ID,
        "model": "iris",
        "attempt": 2,
    }
    # Tags off (no tags recorded): the id alone.
    assert instance_identity(emulator.endpoint("proc-ffffffffffff")) == {
        "instance_id": "proc-ffffffffffff",
        "job_id": None,
        "model": None,
        "attempt": None,
    }


def test_instance_identity_is_none_without_a_metadata_service(tmp_path: Path) -> None:
    emulator = ImdsEmulator(tmp_path).start()
    endpoint = emulator.endpoint(INSTANCE)
    emulator.stop()

    assert instance_identity(endpoint, timeout=0.5) is None


# --------------------------------------------------------------------------- ProcessCompute
_CHILD = textwrap.dedent(
    """
    import json, os, sys
    from training.interruption import instance_identity

    seen = {
        "endpoint": os.environ.get("AWS_EC2_METADATA_SERVICE_ENDPOINT"),
        "identity": instance_identity(),  # the endpoint from the environment, as on EC2
    }
    out = sys.argv[1]
    with open(out + ".tmp", "w") as f:
        json.dump(seen, f)
    os.replace(out + ".tmp", out)
    """
)


def test_a_child_process_reads_its_identity_through_the_emulator(
    tmp_path: Path, emulator: ImdsEmulator
) -> None:
    script, out = tmp_path / "child.py", tmp_path / "seen.json"
    script.write_text(_CHILD)
    compute = ProcessCompute(
        emulator.state_dir, (sys.executable, str(script), str(out)), metadata_url=emulator.url
    )
    try:
        inst = compute.launch(LaunchRequest(job_id=JOB_ID, model="iris", attempt=3))
        wait_until(
            lambda: (
                (i := compute.describe(inst.instance_id)) is None
                or i.state == InstanceState.TERMINATED
            ),
            120,  # a Python child's start and end, on a loaded machine
            interval=0.02,
            what="the child process to end",
        )
        ended = compute.describe(inst.instance_id)
    finally:
        compute.stop_all(grace=1.0)

    assert ended is not None and ended.exit_code == 0, compute.state_dir

    seen = json.loads(out.read_text())
    assert seen["endpoint"] == f"{emulator.url}/{inst.instance_id}"
    assert seen["identity"] == {
        "instance_id": inst.instance_id,
        "job_id": JOB_ID,
        "model": "iris",
        "attempt": 3,
    }


def test_open_compute_takes_the_emulator_url_from_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wiring.open_compute.cache_clear()
    monkeypatch.setenv("DROPFLOW_LOCAL_IMDS_URL", "http://127.0.0.1:1234/")
    try:
        compute = wiring.open_compute(f"process://{tmp_path / 'compute'}")
        assert isinstance(compute, ProcessCompute)
        assert compute.metadata_url == "http://127.0.0.1:1234"
        monkeypatch.delenv("DROPFLOW_LOCAL_IMDS_URL")
        wiring.open_compute.cache_clear()
        assert wiring.open_compute(f"process://{tmp_path / 'other'}").metadata_url is None  # type: ignore[attr-defined]
    finally:
        wiring.open_compute.cache_clear()
