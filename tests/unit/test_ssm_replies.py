"""SsmTransport's handling of SSM's replies. moto's SSM always reports Success and executes nothing,
so pending, failed and timed-out invocations come from botocore's Stubber (canned responses: nothing
else can produce them offline). The request and the script run for real in
tests/functional/test_remote_ssm.py."""

from __future__ import annotations

import boto3
import pytest
from botocore.stub import Stubber

from sumpipe.flow.remote import RemoteCommandFailed, SsmTransport

COMMAND_ID = "0b3a3f5e-3c1d-4c3e-9a57-6f2d0c1e2a4b"
CREDENTIALS = {"region_name": "us-east-1", "aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


@pytest.mark.parametrize("command", ["start j-1; reboot", "start $(id)", "start 'x'"])
def test_command_outside_the_allow_list_is_refused_before_sending(command):
    ssm = boto3.client("ssm", **CREDENTIALS)
    # No responses queued: any AWS call would fail the test.
    with Stubber(ssm), pytest.raises(ValueError, match="refusing remote command"):
        SsmTransport(ssm, "i-0123456789abcdef0").run(command)


def _invocation(status: str, code: int = -1, out: str = "", err: str = "") -> dict:
    return {
        "CommandId": COMMAND_ID,
        "InstanceId": "i-1",
        "Status": status,
        "ResponseCode": code,
        "StandardOutputContent": out,
        "StandardErrorContent": err,
    }


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
    transport, stubber = _stubbed(
        [
            ("not-yet", {}),
            ("get_command_invocation", _invocation("InProgress")),
            ("get_command_invocation", _invocation("Success", 0, out="started j-1\n")),
        ]
    )
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
