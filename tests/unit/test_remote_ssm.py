"""SsmTransport. moto's SSM records send_command and reports Success without executing anything, so
only the request shape and the happy path run against moto; failure, pending and timeout replies
come from botocore's Stubber (canned responses: nothing else can produce them offline). The script
itself is executed for real in tests/functional/test_remote_ssh.py."""

from __future__ import annotations

import base64

import boto3
import pytest
from botocore.stub import Stubber
from moto import mock_aws

from sumpipe.remote import RemoteCommandFailed, SsmTransport

COMMAND_ID = "0b3a3f5e-3c1d-4c3e-9a57-6f2d0c1e2a4b"
CREDENTIALS = {"region_name": "us-east-1", "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


def test_run_sends_the_checked_command_and_base64_stdin_through_moto():
    with mock_aws():
        ssm = boto3.client("ssm", **CREDENTIALS)
        ec2 = boto3.client("ec2", **CREDENTIALS)
        instance_id = ec2.run_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1)["Instances"][0][
            "InstanceId"
        ]
        result = SsmTransport(ssm, instance_id, poll_interval=0.01).run(
            "start j-0123", stdin=b'{"key": "it\'s $(user) text"}', timeout=5
        )
        [command] = ssm.list_commands()["Commands"]
    assert result.exit_status == 0
    assert command["DocumentName"] == "AWS-RunShellScript"
    assert command["InstanceIds"] == [instance_id]
    script = "\n".join(command["Parameters"]["commands"])
    assert "SSH_ORIGINAL_COMMAND='start j-0123'" in script
    assert "$(user)" not in script  # user text travels base64-encoded only
    assert base64.b64encode(b'{"key": "it\'s $(user) text"}').decode() in script


@pytest.mark.parametrize("command", ["start j-1; reboot", "start $(id)", "start 'x'"])
def test_command_outside_the_allow_list_is_refused_before_sending(command):
    ssm = boto3.client("ssm", **CREDENTIALS)
    # No responses queued: any AWS call would fail the test.
    with Stubber(ssm), pytest.raises(ValueError, match="refusing remote command"):
        SsmTransport(ssm, "i-0123456789abcdef0").run(command)


def _invocation(status: str, code: int = -1, out: str = "", err: str = "") -> dict:
    return {"CommandId": COMMAND_ID, "InstanceId": "i-1", "Status": status, "ResponseCode": code,
            "StandardOutputContent": out, "StandardErrorContent": err}


def _stubbed(responses: list[tuple[str, dict]]) -> tuple[SsmTransport, Stubber]:
    ssm = boto3.client("ssm", **CREDENTIALS)
    stubber = Stubber(ssm)
    stubber.add_response("send_command", {"Command": {"CommandId": COMMAND_ID}})
    for method, response in responses:
        if method == "not-yet":
            stubber.add_client_error("get_command_invocation", "InvocationDoesNotExist")
        else:
            stubber.add_response(method, response)
    stubber.activate()
    return SsmTransport(ssm, "i-1", poll_interval=0.01), stubber


def test_run_polls_until_done_and_returns_output():
    transport, stubber = _stubbed([
        ("not-yet", {}),
        ("get_command_invocation", _invocation("InProgress")),
        ("get_command_invocation", _invocation("Success", 0, out="started j-1\n")),
    ])
    result = transport.run("start j-1", timeout=5)
    assert (result.exit_status, result.stdout) == (0, b"started j-1\n")
    stubber.assert_no_pending_responses()


def test_failed_command_raises_with_its_output():
    transport, _ = _stubbed([("get_command_invocation", _invocation("Failed", 3, err="bad spec\n"))])
    with pytest.raises(RemoteCommandFailed, match="ended Failed with status 3") as info:
        transport.run("start j-1", timeout=5)
    assert info.value.result.stderr == b"bad spec\n"


def test_command_past_its_deadline_is_cancelled():
    transport, stubber = _stubbed(
        [("get_command_invocation", _invocation("InProgress")), ("cancel_command", {})]
    )
    with pytest.raises(RemoteCommandFailed, match="did not finish within 0s"):
        transport.run("start j-1", timeout=0)
    stubber.assert_no_pending_responses()
