"""Fixtures that hand each contract test every adapter of its port.

A contract test asks for `store`, `registry` or `compute_backend` and runs once per adapter:
the local one and the AWS one under moto. `process_backend` is ProcessCompute alone, for
what only a child process has (exit codes, signals, its environment). Adding an adapter
means adding a parameter here, not touching the tests.
"""

from __future__ import annotations

import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from dropflow.adapters.aws.dynamodb_registry import DynamoRegistry
from dropflow.adapters.aws.ec2_compute import Ec2Compute
from dropflow.adapters.aws.s3_store import S3Store
from dropflow.adapters.local.directory_store import DirectoryStore
from dropflow.adapters.local.process_compute import ProcessCompute
from dropflow.adapters.local.sqlite_registry import SqliteRegistry
from dropflow.ports import Compute, ObjectStore, Registry
from tests.moto_stack import create_registry_table, holding

REGION = "us-east-1"
BUCKET = "dropflow-contract"
TABLE = "dropflow-contract"
# Short, so the "ignores SIGTERM" test stays fast; long enough for a clean exit on SIGTERM.
COMPUTE_GRACE = 2.0


@pytest.fixture(autouse=True)
def fake_aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fake credentials and region, so nothing here can ever reach a real AWS account."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SECURITY_TOKEN"):
        monkeypatch.setenv(name, "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_DYNAMODB", raising=False)


# --------------------------------------------------------------------------- ObjectStore
@pytest.fixture(params=["directory", "s3"])
def store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[ObjectStore]:
    """Each ObjectStore adapter, empty."""
    if request.param == "directory":
        yield DirectoryStore(tmp_path / "bucket")
        return
    request.getfixturevalue("thread_safe_moto_s3")  # the atomicity test reads from threads
    with mock_aws():
        _serialize_moto_s3_object_requests(monkeypatch)
        client = boto3.client("s3", region_name=REGION)
        client.create_bucket(Bucket=BUCKET)
        # A prefix, so the suite also proves keys are translated both ways.
        yield S3Store(BUCKET, prefix="tenant/dropflow", client=client)


def _serialize_moto_s3_object_requests(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make moto's object requests atomic, as S3's are.

    An overwrite in moto closes the old object's buffer while another thread may still be
    building a GetObject answer from it ("I/O operation on closed file"). S3 has no such
    window; without this the atomicity test would measure moto instead of the adapter.
    """
    from moto.s3.responses import S3Response

    lock = threading.RLock()
    monkeypatch.setattr(S3Response, "key_response", holding(lock, S3Response.key_response))


# --------------------------------------------------------------------------- Registry
@pytest.fixture(params=["sqlite", "dynamodb"])
def registry(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Registry]:
    """Each Registry adapter, empty."""
    if request.param == "sqlite":
        reg = SqliteRegistry(tmp_path / "state" / "registry.db")
        yield reg
        reg.close()
        return
    request.getfixturevalue("atomic_moto_dynamodb")
    with mock_aws():
        client = boto3.client("dynamodb", region_name=REGION)
        create_registry_table(client, TABLE)
        yield DynamoRegistry(TABLE, client=client)


# --------------------------------------------------------------------------- Compute
# The stand-in for the training entrypoint. What it does is chosen by TEST_MODE in the
# launch request's environment; TEST_OUT, if set, receives its argv and DROPFLOW_* variables
# once it is ready (signal handlers installed), which is what the tests wait on.
ENTRYPOINT = textwrap.dedent(
    """
    import json, os, signal, sys, time

    mode = os.environ.get("TEST_MODE", "exit")
    if mode == "graceful":  # a trainer that checkpoints and exits 75 on SIGTERM
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(75))
    elif mode == "stubborn":  # a process that ignores SIGTERM
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    out = os.environ.get("TEST_OUT")
    if out:
        seen = {
            "argv": sys.argv[1:],
            "env": {k: v for k, v in os.environ.items() if k.startswith(("DROPFLOW_", "TEST_"))},
        }
        with open(out + ".tmp", "w") as f:
            json.dump(seen, f)
        os.replace(out + ".tmp", out)

    code = int(os.environ.get("TEST_EXIT_CODE", "0"))
    if mode == "exit":
        sys.exit(code)
    if mode == "release":  # run until the test creates TEST_RELEASE (bounded)
        deadline = time.monotonic() + 60
        while not os.path.exists(os.environ["TEST_RELEASE"]) and time.monotonic() < deadline:
            time.sleep(0.02)
        sys.exit(code)
    deadline = time.monotonic() + 120  # sleep "forever", but never outlive a broken test
    while time.monotonic() < deadline:
        time.sleep(0.05)
    sys.exit(99)
    """
)


@dataclass
class ComputeBackend:
    """One Compute adapter kind, with what the suite needs to drive it.

    `new_adapter()` opens another adapter object on the same backing state (another process
    of the local runtime, another Lambda), which must see the same instances.
    """

    kind: str
    new_adapter: Callable[[], Compute]
    workdir: Path
    grace: float  # how long terminate() may wait for a clean exit before it kills

    def __post_init__(self) -> None:
        self.adapter = self.new_adapter()


@pytest.fixture
def entrypoint(tmp_path: Path) -> tuple[str, ...]:
    """The command line of the stand-in training entrypoint."""
    script = tmp_path / "entrypoint.py"
    script.write_text(ENTRYPOINT)
    return (sys.executable, str(script))


@pytest.fixture(params=["process", "ec2"])
def compute_backend(
    request: pytest.FixtureRequest, tmp_path: Path, entrypoint: tuple[str, ...]
) -> Iterator[ComputeBackend]:
    """Each Compute adapter: child processes, and EC2 under moto."""
    if request.param == "process":
        yield from _process_backend(tmp_path, entrypoint)
        return
    with mock_aws():
        client = boto3.client("ec2", region_name=REGION)
        template_id, subnet_ids = make_training_network(client)

        def new_ec2_adapter() -> Ec2Compute:
            return Ec2Compute(
                template_id,
                subnet_ids=subnet_ids,
                client=boto3.client("ec2", region_name=REGION),
                sleep=lambda _: None,
                # moto has no Price List API: the stack owner's price of the contract's type
                # (DROPFLOW_ON_DEMAND_PRICES) stands in, since an unpriced type is refused.
                on_demand_prices={"g5.xlarge": 1.006},
            )

        # EC2 terminates at once (under moto, instantly): no grace period to wait out.
        yield ComputeBackend("ec2", new_ec2_adapter, tmp_path, COMPUTE_GRACE)


@pytest.fixture
def process_backend(tmp_path: Path, entrypoint: tuple[str, ...]) -> Iterator[ComputeBackend]:
    """ProcessCompute alone, for the tests of what only a child process has (exit codes...)."""
    yield from _process_backend(tmp_path, entrypoint)


def _process_backend(tmp_path: Path, entrypoint: tuple[str, ...]) -> Iterator[ComputeBackend]:
    state_dir = tmp_path / "compute"

    def new_adapter() -> ProcessCompute:
        return ProcessCompute(state_dir, entrypoint, grace=COMPUTE_GRACE)

    backend = ComputeBackend("process", new_adapter, tmp_path, COMPUTE_GRACE)
    yield backend
    # Never leave a child process behind, whatever the test did.
    backend.adapter.stop_all(grace=1.0)  # type: ignore[attr-defined]


def make_training_network(client: Any) -> tuple[str, list[str]]:
    """Under moto: a VPC with two subnets in two zones and a training launch template."""
    vpc_id = client.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnet_ids = [
        client.create_subnet(VpcId=vpc_id, CidrBlock=cidr, AvailabilityZone=zone)["Subnet"][
            "SubnetId"
        ]
        for cidr, zone in (("10.20.1.0/24", f"{REGION}a"), ("10.20.2.0/24", f"{REGION}b"))
    ]
    image_id = client.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    template = client.create_launch_template(
        LaunchTemplateName="dropflow-contract-training",
        LaunchTemplateData={
            "ImageId": image_id,
            "InstanceInitiatedShutdownBehavior": "terminate",
            "MetadataOptions": {"HttpTokens": "required", "InstanceMetadataTags": "enabled"},
            "TagSpecifications": [
                {"ResourceType": "instance", "Tags": [{"Key": "dropflow:stack", "Value": "t"}]}
            ],
        },
    )
    return template["LaunchTemplate"]["LaunchTemplateId"], subnet_ids
