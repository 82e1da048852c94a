"""SsmTransport against moto's SSM and a real shell.

moto's SSM records send_command and reports Success without executing anything, so the request and
the happy path run against moto, and the script it would run is executed here by a real shell.
Failure, pending and timeout replies are covered in tests/unit/test_ssm_replies.py."""

from __future__ import annotations

import base64
import os
import subprocess

import boto3
import pytest
from moto import mock_aws

from sumpipe.flow.remote import SsmTransport
from sumpipe.local.hosts import ensure_ssh_user

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


def test_ssm_script_runs_the_runner_as_the_login_user_with_command_and_stdin(shared_tmp):
    """The lines SsmTransport sends (moto's SSM executes nothing), run here by a real shell."""
    if os.geteuid() != 0:
        pytest.skip("runuser needs root")
    ensure_ssh_user()
    runner = shared_tmp / "runner.sh"
    runner.write_text('#!/bin/sh\nprintf \'%s|%s|\' "$SSH_ORIGINAL_COMMAND" "$(id -un)"\ncat\n')
    runner.chmod(0o755)
    stdin = b'{"text": "it\'s $(reboot) `id`"}'
    script = SsmTransport(None, "i-1", runner=str(runner)).script("start j-0123", stdin)
    done = subprocess.run(["sh", "-c", "\n".join(script)], capture_output=True, timeout=10)
    assert done.returncode == 0, done.stderr
    assert done.stdout == b"start j-0123|sumpipe|" + stdin
