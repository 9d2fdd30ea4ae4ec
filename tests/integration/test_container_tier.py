"""The container tier's two sides: the HTTP client the predict function forwards with (against
a small server on 127.0.0.1), and the scaling adapters (moto's Auto Scaling, the local one)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from dropflow.adapters.aws.autoscaling_tier import AutoScalingTier, ScalingFailed
from dropflow.adapters.local.process_tier import ProcessTier, scale_out_requested_at
from dropflow.errors import ConfigError
from dropflow.serving.forwarding import ContainerAnswered, ContainerClient, ContainerUnavailable
from dropflow.wiring import NoContainerTier, open_tier
from tests.net import free_port


class Scripted(BaseHTTPRequestHandler):
    """Answers each request with the server's next scripted (status, body, delay)."""

    def do_POST(self) -> None:
        self._answer()

    do_GET = do_POST

    def _answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.server.requests.append((self.command, self.path, self.rfile.read(length)))
        status, body, delay = self.server.script
        time.sleep(delay)
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        if status == HTTPStatus.SERVICE_UNAVAILABLE:
            self.send_header("Retry-After", "7")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def tier_server() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Scripted)
    server.daemon_threads = True
    server.requests = []
    server.script = (200, {}, 0.0)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def client_for(server: ThreadingHTTPServer, timeout: float = 5.0) -> ContainerClient:
    host, port = server.server_address[:2]
    return ContainerClient(f"http://{host}:{port}", timeout=timeout, retry_after=42)


# ---------------------------------------------------------------------- forwarding
def test_a_prediction_is_forwarded_pinned_to_the_version(tier_server):
    tier_server.script = (200, {"model": "big", "served_by": "container"}, 0.0)

    answer = client_for(tier_server).predict("big", "v1", [[1.0, 2.0]])

    assert answer == {"model": "big", "served_by": "container"}
    ((method, path, body),) = tier_server.requests
    assert (method, path) == ("POST", "/models/big/predict")
    assert json.loads(body) == {"instances": [[1.0, 2.0]], "version": "v1"}


def test_an_inference_request_is_forwarded_as_it_came(tier_server):
    tier_server.script = (200, {"model_name": "big", "outputs": []}, 0.0)

    client_for(tier_server).infer("big", "v1", '{"inputs": []}')

    ((method, path, body),) = tier_server.requests
    assert (method, path, body) == ("POST", "/v2/models/big/versions/v1/infer", b'{"inputs": []}')


def test_a_client_error_of_the_tier_is_passed_on_unchanged(tier_server):
    refusal = {"error": {"code": 422, "message": "invalid instances: row 0 ..."}}
    tier_server.script = (422, refusal, 0.0)

    with pytest.raises(ContainerAnswered) as answered:
        client_for(tier_server).predict("big", "v1", [["x"]])

    assert answered.value.status == HTTPStatus.UNPROCESSABLE_ENTITY
    assert json.loads(answered.value.body) == refusal


def test_no_server_listening_is_unavailable_with_retry_after():
    client = ContainerClient(f"http://127.0.0.1:{free_port()}", retry_after=42)

    with pytest.raises(ContainerUnavailable, match="no server is listening") as raised:
        client.predict("big", "v1", [[1.0]])

    assert raised.value.retry_after == 42


@pytest.mark.parametrize("status", [500, 502, 503, 504])
def test_a_server_error_of_the_tier_is_unavailable_not_a_500(tier_server, status):
    tier_server.script = (status, {"message": "no healthy targets"}, 0.0)

    with pytest.raises(ContainerUnavailable, match=f"it answered {status}"):
        client_for(tier_server).predict("big", "v1", [[1.0]])


def test_a_slow_tier_is_unavailable_after_the_timeout(tier_server):
    tier_server.script = (200, {}, 1.0)

    with pytest.raises(ContainerUnavailable, match=r"no answer within 0\.2 s"):
        client_for(tier_server, timeout=0.2).predict("big", "v1", [[1.0]])


def test_an_answer_that_is_not_json_is_unavailable(tier_server):
    tier_server.script = (200, "just text", 0.0)

    with pytest.raises(ContainerUnavailable, match="not a JSON object"):
        client_for(tier_server).predict("big", "v1", [[1.0]])


def test_model_ready_follows_the_tier(tier_server):
    client = client_for(tier_server)
    tier_server.script = (200, {"name": "big", "ready": True}, 0.0)
    assert client.model_ready("big", "v1") == (True, "")

    tier_server.script = (503, {"error": "loading"}, 0.0)
    ready, why = client.model_ready("big", "v1")
    assert ready is False
    assert "loading on the tier" in why


# ---------------------------------------------------------------------- scaling
@pytest.fixture
def group():
    with mock_aws():
        ec2 = boto3.client("ec2", region_name="us-east-1")
        template = ec2.create_launch_template(
            LaunchTemplateName="serving",
            LaunchTemplateData={"ImageId": "ami-12c6146b", "InstanceType": "m6i.large"},
        )["LaunchTemplate"]["LaunchTemplateId"]
        autoscaling = boto3.client("autoscaling", region_name="us-east-1")
        autoscaling.create_auto_scaling_group(
            AutoScalingGroupName="stack-serving",
            LaunchTemplate={"LaunchTemplateId": template, "Version": "$Latest"},
            MinSize=0,
            MaxSize=2,
            DesiredCapacity=0,
            AvailabilityZones=["us-east-1a"],
        )
        yield autoscaling


def desired(autoscaling) -> int:
    groups = autoscaling.describe_auto_scaling_groups(AutoScalingGroupNames=["stack-serving"])
    return groups["AutoScalingGroups"][0]["DesiredCapacity"]


def test_scale_out_raises_the_groups_desired_capacity_to_one(group):
    done = AutoScalingTier("stack-serving", client=group).scale_out(1)

    assert desired(group) == 1
    assert "desired capacity 0 -> 1" in done


def test_scale_out_never_lowers_the_desired_capacity(group):
    group.set_desired_capacity(AutoScalingGroupName="stack-serving", DesiredCapacity=2)

    AutoScalingTier("stack-serving", client=group).scale_out(1)

    assert desired(group) == 2


def test_scale_in_sets_the_desired_capacity_back_to_zero(group):
    AutoScalingTier("stack-serving", client=group).scale_out(1)

    done = AutoScalingTier("stack-serving", client=group).scale_in()
    again = AutoScalingTier("stack-serving", client=group).scale_in()

    assert desired(group) == 0
    assert "desired capacity 1 -> 0" in done
    assert "already has no instance wanted" in again


def test_scale_out_of_a_missing_group_says_so(group):
    with pytest.raises(ScalingFailed, match="does not exist"):
        AutoScalingTier("no-such-group", client=group).scale_out(1)


@pytest.mark.parametrize(("verb", "scale"), [("scale out", "scale_out"), ("scale in", "scale_in")])
def test_a_refused_call_is_a_scaling_failure_naming_the_group(group, verb, scale):
    stubber = Stubber(group)
    stubber.add_client_error(
        "describe_auto_scaling_groups", "AccessDenied", "not authorized to describe"
    )
    with (
        stubber,
        pytest.raises(ScalingFailed, match=f"cannot {verb} stack-serving: .*AccessDenied"),
    ):
        getattr(AutoScalingTier("stack-serving", client=group), scale)()


def test_the_local_tier_records_the_request_for_the_runtime(tmp_path):
    assert scale_out_requested_at(tmp_path / "serving") is None

    ProcessTier(tmp_path / "serving").scale_out(1)

    assert scale_out_requested_at(tmp_path / "serving") == pytest.approx(time.time(), abs=60)


def test_the_tier_is_chosen_by_url(tmp_path):
    assert isinstance(open_tier(""), NoContainerTier)
    assert isinstance(open_tier(f"process://{tmp_path}"), ProcessTier)
    with pytest.raises(ConfigError, match="asg:// or process://"):
        open_tier("k8s://cluster")
