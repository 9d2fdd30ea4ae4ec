"""The container tier's boot (ServingLaunchTemplate's user data) keeps its promises: its
stdlib AWS client signs as botocore does and speaks to ECR, CloudWatch Logs and Auto Scaling
as they answer (moto_server here), and the script pulls a pinned image, runs it, and on any
failed step says which in CloudWatch Logs, leaves its group and shuts down exactly once.

The script is rendered as CloudFormation renders its Fn::Sub and run by bash in a sandbox with
fakes on PATH (`run_user_data` of test_template); the client is the text bash writes to
/usr/local/bin/dropflow-aws, imported as a module.
"""

from __future__ import annotations

import ast
import base64
import datetime
import importlib.util
import json
import re
import textwrap
import urllib.parse
from pathlib import Path
from types import ModuleType
from typing import Any
from unittest import mock

import boto3
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from dropflow_dev.invoke import load_template
from tests.unit.test_template import TEMPLATE, run_user_data, substituted

REGION = "us-east-1"
ACCOUNT = "123456789012"
REGISTRY = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com"
REPOSITORY = f"{REGISTRY}/stack-serving"
LOG_GROUP = "stack-serving"
DIGEST = "sha256:" + "0123456789abcdef" * 4
SERVING_SUB = {
    "AWS::Region": REGION,
    "AWS::URLSuffix": "amazonaws.com",
    "AWS::AccountId": ACCOUNT,
    "ServingLogGroup": LOG_GROUP,
    "ServingImageTag": "v1",
    "ServingRepository.RepositoryUri": REPOSITORY,
    "DataBucket": "dropflow-data",
    "RegistryTable": "dropflow-registry",
    "ChampionTtlSeconds": "60",
}
CLIENT_PATH = "/usr/local/bin/dropflow-aws"
BOOT_LOG = "/var/log/dropflow-serving-boot.log"
FAILED = "dropflow serving boot failed"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template(TEMPLATE)


def launch_data(template: dict[str, Any]) -> dict[str, Any]:
    return template["Resources"]["ServingLaunchTemplate"]["Properties"]["LaunchTemplateData"]


def boot_script(template: dict[str, Any], **values: str) -> str:
    """The user data as an instance receives it, with SERVING_SUB's values (or `values`)."""
    return substituted(
        launch_data(template)["UserData"]["Fn::Base64"]["Fn::Sub"], {**SERVING_SUB, **values}
    )


def client_source(script: str) -> str:
    """What bash writes to /usr/local/bin/dropflow-aws: the quoted heredoc, verbatim."""
    found = re.search(r"<<'CLIENT'\n(.*?\n)CLIENT\n", script, re.DOTALL)
    assert found, "the script no longer writes its client with a <<'CLIENT' heredoc"
    return textwrap.dedent(found.group(1))


def bash_part(script: str) -> str:
    """The script without its client's text: what bash itself runs."""
    return script.replace(client_source(script), "")


@pytest.fixture(scope="module")
def client(template, tmp_path_factory) -> ModuleType:
    path = tmp_path_factory.mktemp("client") / "dropflow_aws.py"
    path.write_text(client_source(boot_script(template)))
    spec = importlib.util.spec_from_file_location("dropflow_aws", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_client_is_python_the_amis_python_3_9_reads(template):
    # Amazon Linux 2023's python3 is 3.9: no match statements, no `X | Y` annotations.
    ast.parse(client_source(boot_script(template)), feature_version=(3, 9))


# --------------------------------------------------------------------------- signing
NOW = datetime.datetime(2026, 12, 2, 6, 35, 20, tzinfo=datetime.UTC)
SIGNING_KEYS = ("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "IQoJb3JpZ2luX2VjE")
QUERY = urllib.parse.urlencode(
    {
        "Action": "DetachInstances",
        "Version": "2011-01-01",
        "AutoScalingGroupName": "stack-serving",
        "ShouldDecrementDesiredCapacity": "true",
        "InstanceIds.member.1": "i-0123456789abcdef0",
    }
).encode()


@pytest.mark.parametrize(
    ("service", "url", "headers", "body"),
    [
        (
            "ecr",
            "https://api.ecr.us-east-1.amazonaws.com/",
            {
                "Content-Type": "application/x-amz-json-1.1",
                "X-Amz-Target": "AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken",
            },
            b"{}",
        ),
        (
            "autoscaling",
            "https://autoscaling.us-east-1.amazonaws.com/",
            {"Content-Type": "application/x-www-form-urlencoded; charset=utf-8"},
            QUERY,
        ),
        (
            # A local endpoint (AWS_ENDPOINT_URL): the port is part of the signed host.
            "logs",
            "http://127.0.0.1:4566/",
            {"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "Logs_20140328.X"},
            json.dumps({"logGroupName": LOG_GROUP, "logStreamName": "boot/i-1"}).encode(),
        ),
    ],
    ids=["json-ecr", "query-autoscaling", "json-logs-local-endpoint"],
)
def test_the_client_signs_a_post_exactly_as_botocore_does(client, service, url, headers, body):
    signed = client.sign("POST", url, headers, body, service, REGION, SIGNING_KEYS, NOW)

    request = AWSRequest(method="POST", url=url, headers=dict(headers), data=body)
    # botocore reads the time once per signature; give it the client's.
    with mock.patch("botocore.auth.get_current_datetime", return_value=NOW.replace(tzinfo=None)):
        SigV4Auth(Credentials(*SIGNING_KEYS), service, REGION).add_auth(request)

    assert request.headers["X-Amz-Date"] == signed["x-amz-date"] == "20261202T063520Z"
    assert signed["x-amz-security-token"] == request.headers["X-Amz-Security-Token"]
    assert signed["authorization"] == request.headers["Authorization"]


# --------------------------------------------------------------------------- against moto
INSTANCE_KEYS = ("testing", "testing", "testing")


@pytest.fixture
def aws(client, moto_server, monkeypatch) -> dict[str, Any]:
    """moto_server as every endpoint of the client, and boto3 clients to set it up and read
    it back."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server)
    monkeypatch.setenv("AWS_REGION", REGION)

    def boto(service: str) -> Any:
        return boto3.client(service, endpoint_url=moto_server, region_name=REGION)

    return {name: boto(name) for name in ("ec2", "autoscaling", "logs", "ecr")}


def as_instance(client: ModuleType, monkeypatch, instance_id: str) -> None:
    """The client runs on `instance_id`, with INSTANCE_KEYS (no metadata service here)."""
    monkeypatch.setattr(client, "instance", lambda: (INSTANCE_KEYS, instance_id))


def test_ecr_password_is_the_password_of_ecrs_authorization_token(client, aws, monkeypatch, capsys):
    as_instance(client, monkeypatch, "i-0123456789abcdef0")
    token = aws["ecr"].get_authorization_token()["authorizationData"][0]["authorizationToken"]
    user, password = base64.b64decode(token).decode().split(":", 1)

    client.main(["ecr-password"])

    assert user == "AWS"
    assert capsys.readouterr().out == password + "\n"


def test_log_writes_one_event_to_a_stream_named_for_the_instance(client, aws, monkeypatch):
    aws["logs"].create_log_group(logGroupName=LOG_GROUP)
    as_instance(client, monkeypatch, "i-0123456789abcdef0")
    message = f"{FAILED}: pulling {REPOSITORY}:v1 (exit code 1)"

    client.main(["log", LOG_GROUP, "boot", message])

    events = aws["logs"].get_log_events(
        logGroupName=LOG_GROUP, logStreamName="boot/i-0123456789abcdef0"
    )["events"]
    assert [event["message"] for event in events] == [message]


def test_log_adds_to_a_stream_that_already_exists(client, aws, monkeypatch):
    # A rebooted instance that fails again finds its stream there.
    aws["logs"].create_log_group(logGroupName=LOG_GROUP)
    aws["logs"].create_log_stream(logGroupName=LOG_GROUP, logStreamName="boot/i-1")
    as_instance(client, monkeypatch, "i-1")

    client.main(["log", LOG_GROUP, "boot", "second"])

    events = aws["logs"].get_log_events(logGroupName=LOG_GROUP, logStreamName="boot/i-1")
    assert [event["message"] for event in events["events"]] == ["second"]


def serving_group(aws: dict[str, Any]) -> str:
    """A moto Auto Scaling group of one instance, as promotion leaves the serving group."""
    image = aws["ec2"].describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    aws["ec2"].create_launch_template(
        LaunchTemplateName="stack-serving",
        LaunchTemplateData={"ImageId": image, "InstanceType": "t3.micro"},
    )
    aws["autoscaling"].create_auto_scaling_group(
        AutoScalingGroupName="stack-serving-group",
        LaunchTemplate={"LaunchTemplateName": "stack-serving", "Version": "$Latest"},
        MinSize=0,
        MaxSize=2,
        DesiredCapacity=1,
        AvailabilityZones=[f"{REGION}a"],
    )
    return "stack-serving-group"


def describe(aws: dict[str, Any], group: str) -> dict[str, Any]:
    (found,) = aws["autoscaling"].describe_auto_scaling_groups(AutoScalingGroupNames=[group])[
        "AutoScalingGroups"
    ]
    return found


def test_leave_group_detaches_the_instance_and_lowers_the_desired_capacity(
    client, aws, monkeypatch, capsys
):
    group = serving_group(aws)
    (member,) = describe(aws, group)["Instances"]
    as_instance(client, monkeypatch, member["InstanceId"])

    client.main(["leave-group"])

    after = describe(aws, group)
    assert capsys.readouterr().out == f"left {group}\n"
    assert after["DesiredCapacity"] == 0
    assert after["Instances"] == []  # and no replacement was launched


def test_leave_group_of_an_instance_in_no_group_changes_nothing(client, aws, monkeypatch, capsys):
    group = serving_group(aws)
    as_instance(client, monkeypatch, "i-0000000000000000f")

    client.main(["leave-group"])

    assert capsys.readouterr().out == "in no Auto Scaling group\n"
    assert describe(aws, group)["DesiredCapacity"] == 1


def test_a_refusal_stops_the_client_naming_the_service_and_status(client, aws, monkeypatch):
    as_instance(client, monkeypatch, "i-1")

    # No such log group: CloudWatch Logs answers 400 ResourceNotFoundException.
    with pytest.raises(SystemExit, match=r"^logs answered 400: .*ResourceNotFoundException"):
        client.main(["log", "no-such-group", "boot", "lost"])


# --------------------------------------------------------------------------- the boot, run
PASSWORD = "password-from-ecr"
BOOT_FAKES = {
    # python3 runs only the client: record its command line, answer ecr-password.
    "python3": r"""
[ -f "$1" ] || { echo "python3: can't open file '$1'" >&2; exit 2; }
echo "$(basename "$1") ${*:2}" >> "$SANDBOX_CALLS"
if [ "$2" = ecr-password ]; then
  if [ -n "${ECR_EXIT:-}" ]; then echo "ecr answered 403: AccessDenied" >&2; exit "$ECR_EXIT"; fi
  echo "$ECR_PASSWORD"
fi
""",
    "docker": r"""
echo "docker $*" >> "$SANDBOX_CALLS"
case "$1" in
  login) cat > "$SANDBOX_PASSWORD"; exit "${LOGIN_EXIT:-0}" ;;
  pull) exit "${PULL_EXIT:-0}" ;;
  run) exit "${RUN_EXIT:-0}" ;;
esac
""",
    "systemctl": 'echo "systemctl $*" >> "$SANDBOX_CALLS"\n',
}


def run_boot(
    template: dict[str, Any], sandbox: Path, tag: str = "v1", **env: str
) -> tuple[Any, list[str]]:
    return run_user_data(
        boot_script(template, ServingImageTag=tag),
        sandbox,
        [CLIENT_PATH, BOOT_LOG],
        fakes=BOOT_FAKES,
        ECR_PASSWORD=PASSWORD,
        SANDBOX_PASSWORD=str(sandbox / "docker-password"),
        **env,
    )


def docker_calls(calls: list[str], command: str) -> list[str]:
    return [call for call in calls if call.startswith(f"docker {command} ")]


def test_a_good_boot_logs_in_pulls_and_runs_the_tagged_image_and_stays(template, tmp_path):
    done, calls = run_boot(template, tmp_path)

    assert done.returncode == 0, done.stdout + done.stderr
    assert "systemctl disable --now ecs" in calls
    assert docker_calls(calls, "login") == [
        f"docker login --username AWS --password-stdin {REGISTRY}"
    ]
    assert (tmp_path / "docker-password").read_text() == PASSWORD + "\n"
    assert docker_calls(calls, "pull") == [f"docker pull --quiet {REPOSITORY}:v1"]
    (run,) = docker_calls(calls, "run")
    assert run.endswith(f" {REPOSITORY}:v1")
    assert "--gpus" not in run
    assert f"--log-opt awslogs-group={LOG_GROUP}" in run
    assert "-e DROPFLOW_STORE_URL=s3://dropflow-data" in run
    assert calls.index(docker_calls(calls, "login")[0]) < calls.index(run)
    assert not any(call.startswith(("shutdown", "poweroff", "dropflow-aws log")) for call in calls)
    assert "dropflow-aws leave-group" not in calls
    assert f"dropflow serving: {REPOSITORY}:v1 started" in (tmp_path / BOOT_LOG[1:]).read_text()


def test_the_boot_writes_the_client_these_tests_import(template, tmp_path):
    done, _ = run_boot(template, tmp_path)

    assert done.returncode == 0, done.stdout + done.stderr
    written = (tmp_path / CLIENT_PATH[1:]).read_text()
    assert written == client_source(boot_script(template))


def test_an_image_digest_is_pulled_and_run_by_digest(template, tmp_path):
    done, calls = run_boot(template, tmp_path, tag=DIGEST)

    assert done.returncode == 0, done.stdout + done.stderr
    assert docker_calls(calls, "pull") == [f"docker pull --quiet {REPOSITORY}@{DIGEST}"]
    (run,) = docker_calls(calls, "run")
    assert run.endswith(f" {REPOSITORY}@{DIGEST}")


def test_an_instance_with_a_gpu_gives_it_to_the_container(template, tmp_path):
    done, calls = run_boot(template, tmp_path, GPU_COUNT="1")

    assert done.returncode == 0, done.stdout + done.stderr
    (run,) = docker_calls(calls, "run")
    assert " --network host --gpus all --stop-timeout 35 " in run


@pytest.mark.parametrize(
    ("env", "step", "code"),
    [
        ({"ECR_EXIT": "1"}, f"logging in to {REGISTRY}", 1),
        ({"LOGIN_EXIT": "1"}, f"logging in to {REGISTRY}", 1),
        ({"PULL_EXIT": "1"}, f"pulling {REPOSITORY}:v1", 1),
        ({"RUN_EXIT": "125"}, f"starting {REPOSITORY}:v1", 125),
    ],
    ids=["no-ecr-password", "login-refused", "pull-fails", "run-fails"],
)
def test_a_failed_step_is_logged_then_the_instance_leaves_its_group_and_shuts_down(
    template, tmp_path, env, step, code
):
    done, calls = run_boot(template, tmp_path, **env)
    message = f"{FAILED}: {step} (exit code {code})"

    assert done.returncode == code, done.stdout + done.stderr
    assert calls[-3:] == [
        f"dropflow-aws log {LOG_GROUP} boot {message}",
        "dropflow-aws leave-group",
        "shutdown -h now",
    ], calls
    assert calls.count("shutdown -h now") == 1
    assert "poweroff" not in " ".join(calls)
    assert message in (tmp_path / BOOT_LOG[1:]).read_text()


def test_a_failed_login_pulls_and_runs_nothing(template, tmp_path):
    _, calls = run_boot(template, tmp_path, LOGIN_EXIT="1")

    assert docker_calls(calls, "pull") == docker_calls(calls, "run") == []


@pytest.mark.parametrize("env", [{}, {"PULL_EXIT": "1"}], ids=["good", "failed"])
def test_the_boot_calls_no_aws_cli(template, tmp_path, env):
    # test_template's fake aws records every call; the AMI has none to answer it.
    _, calls = run_boot(template, tmp_path, **env)

    assert not any(call.startswith("aws ") for call in calls), calls


def test_the_script_has_no_aws_cli_command(template):
    commands = [
        line
        for line in bash_part(boot_script(template)).splitlines()
        if not line.lstrip().startswith("#")
    ]

    assert not [line for line in commands if re.search(r"(^|[\s;|&(`])aws\s", line)]


# --------------------------------------------------------------------------- the template
def test_the_serving_repository_tags_are_immutable(template):
    props = template["Resources"]["ServingRepository"]["Properties"]

    assert props["ImageTagMutability"] == "IMMUTABLE"


@pytest.fixture(scope="module")
def image_tag_pattern(template) -> re.Pattern[str]:
    # CloudFormation's Java regular expressions and Python's agree on this look-ahead.
    return re.compile(template["Parameters"]["ServingImageTag"]["AllowedPattern"])


@pytest.mark.parametrize("tag", ["v1", "2026.12.02-abc", DIGEST, "latest-2"])
def test_the_image_tag_parameter_accepts_versions_and_digests(image_tag_pattern, tag):
    assert image_tag_pattern.fullmatch(tag)


@pytest.mark.parametrize(
    "tag",
    ["latest", "", "-v1", ".v1", "sha256:" + "0" * 63, "sha256:" + "A" * 64, "v1:latest"],
)
def test_the_image_tag_parameter_refuses_latest_and_malformed_tags(image_tag_pattern, tag):
    assert not image_tag_pattern.fullmatch(tag)


def test_the_default_image_tag_is_one_the_parameter_accepts(template, image_tag_pattern):
    assert image_tag_pattern.fullmatch(template["Parameters"]["ServingImageTag"]["Default"])


def test_a_serving_instance_that_shuts_itself_down_is_terminated(template):
    assert launch_data(template)["InstanceInitiatedShutdownBehavior"] == "terminate"


def test_the_boot_failure_metric_counts_the_message_the_script_logs(template, tmp_path):
    resources = template["Resources"]
    metric_filter = resources["ServingBootFailures"]["Properties"]
    pattern = metric_filter["FilterPattern"]
    _, calls = run_boot(template, tmp_path, PULL_EXIT="1")
    (logged,) = [call for call in calls if call.startswith(f"dropflow-aws log {LOG_GROUP} boot ")]
    message = logged.removeprefix(f"dropflow-aws log {LOG_GROUP} boot ")

    # One quoted phrase: CloudWatch Logs counts each event that contains it.
    assert re.fullmatch(r'"[^"]+"', pattern), pattern
    assert message.startswith(pattern.strip('"') + ": ")
    assert metric_filter["LogGroupName"] == {"Ref": "ServingLogGroup"}


def test_a_boot_failure_alarms_to_the_alarm_topic(template):
    resources = template["Resources"]
    (metric,) = resources["ServingBootFailures"]["Properties"]["MetricTransformations"]
    alarm = resources["ServingBootFailedAlarm"]["Properties"]

    assert (alarm["Namespace"], alarm["MetricName"]) == (
        metric["MetricNamespace"],
        metric["MetricName"],
    )
    assert metric["MetricValue"] == "1"
    assert alarm["Statistic"] == "Sum"
    assert alarm["Threshold"] == 1
    assert alarm["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert alarm["AlarmActions"] == [{"Ref": "AlarmTopic"}]
