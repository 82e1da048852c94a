"""The issue's acceptance test: `sumpipe deploy` into the emulator, a submit through the deployed
resources produces a summary, `sumpipe destroy --force` leaves nothing behind.

The emulator runs alone first (`sumpipe local up --emulator-only`); the stack is deployed by the real
`sumpipe deploy` (artifacts built as for AWS: function zips, the Linux dependency layer from the package
registry, the wheel) with the emulator's parameters; then the worker hosts and the Lambda runtime attach
to it (`sumpipe local attach`), the hosts set up from the stack as the instance bootstrap does."""

from __future__ import annotations

import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pandas as pd
import pytest

from sumpipe.local import motoserver, stack
from sumpipe.local.hosts import namespaces_available
from sumpipe.ops import cli

from .conftest import DATA, _free_subnet

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
SAMPLE = DATA / "reviews_sample.csv"


@pytest.fixture
def emulator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[stack.StackConfig, dict[str, str]]]:
    if not namespaces_available():
        pytest.skip("the local stack needs root and network namespaces")
    seed = f"{__name__}-{os.getpid()}"
    prefix = "d" + hashlib.sha256(seed.encode()).hexdigest()[:6]
    config = stack.StackConfig(
        state_dir=tmp_path / "stack", stack_name=f"dep{prefix}", prefix=prefix, subnet=_free_subnet(seed),
        watchdog_interval_s=0.5,
    )
    try:
        parameters = stack.up_emulator(config)
        # What `set -a; . .sumpipe/local/env` does for a user: the CLI talks to the emulator.
        for name, value in stack.read_env_file(config.state_dir / "env").items():
            monkeypatch.setenv(name, value)
        monkeypatch.delenv("AWS_PROFILE", raising=False)
        yield config, parameters
    finally:
        stack.down(config.state_dir)
        assert prefix not in subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        assert prefix not in subprocess.run(["ip", "netns"], capture_output=True, text=True).stdout


def _remaining(session: Any, stack_name: str) -> dict[str, Any]:
    """Everything the stack could have left in the emulator."""
    cloudformation = session.client("cloudformation")
    live_stacks = [
        s["StackName"] for s in cloudformation.list_stacks()["StackSummaries"]
        if s["StackStatus"] != "DELETE_COMPLETE"
    ]
    reservations = session.client("ec2").describe_instances()["Reservations"]
    return {
        "stacks": live_stacks,
        "buckets": [b["Name"] for b in session.client("s3").list_buckets()["Buckets"]],
        "queues": session.client("sqs").list_queues().get("QueueUrls", []),
        "tables": session.client("dynamodb").list_tables()["TableNames"],
        "secrets": [s["Name"] for s in session.client("secretsmanager").list_secrets()["SecretList"]],
        "functions": [f["FunctionName"] for f in session.client("lambda").list_functions()["Functions"]],
        "instances": [
            i["InstanceId"]
            for r in reservations
            for i in r["Instances"]
            if i["State"]["Name"] != "terminated"
        ],
        "parameters": [
            p["Name"] for p in session.client("ssm").describe_parameters()["Parameters"]
            if p["Name"].startswith(f"/{stack_name}/")
        ],
    }


def test_deploy_submit_destroy_through_the_deployed_stack(
    emulator: tuple[stack.StackConfig, dict[str, str]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, parameters = emulator
    name = config.stack_name
    assert parameters["EnforceTls"] == "false" and parameters["EventSourcesEnabled"] == "false"

    deploy_args = [f"--param={key}={value}" for key, value in parameters.items()]
    assert cli.main(["deploy", "--stack", name, *deploy_args]) == 0, capsys.readouterr().err
    info = stack.attach(config.state_dir, name)
    assert info.outputs["InputBucketName"].startswith(f"{name}-")
    session = boto3.session.Session()
    artifacts = session.client("s3").list_objects_v2(Bucket=f"{name}-123456789012-us-east-1-artifacts")
    assert any(o["Key"].endswith(".whl") for o in artifacts["Contents"])  # built as for AWS

    summary_path = tmp_path / "summary.csv"
    submit = ["submit", str(SAMPLE), "--stack", name, "--wait", "-o", str(summary_path), "--timeout", "120"]
    assert cli.main(submit) == 0, capsys.readouterr().err
    summary = pd.read_csv(summary_path, keep_default_na=False)
    assert list(summary["id"]) == list(pd.read_csv(SAMPLE)["Id"])
    assert (summary["status"] == "ok").sum() > 100

    capsys.readouterr()
    assert cli.main(["destroy", "--stack", name]) == 1
    assert "still hold data" in capsys.readouterr().err
    assert cli.main(["destroy", "--stack", name, "--force"]) == 0
    # IAM enforcement off for the inspection: moto's signature check rejects every Lambda API
    # call once it is on (it recomputes their signatures differently), even the administrator's.
    motoserver.enforce_iam(os.environ["AWS_ENDPOINT_URL"], enforced=False)
    assert _remaining(session, name) == {
        "stacks": [], "buckets": [], "queues": [], "tables": [], "secrets": [], "functions": [],
        "instances": [], "parameters": [],
    }
