"""`sumpipe` against AWS misconfigured as operators find it: no region, no credentials, an unknown
profile, rejected credentials, an endpoint nobody answers, access denied, a stack that isn't
there. Each ends with one line saying what to do and exit status 1, never a botocore traceback.
Run as the installed console script, against moto in server mode with IAM enforced."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from sumpipe.local import motoserver

SUMPIPE = Path(sys.executable).with_name("sumpipe")


class Emulator:
    def __init__(self, endpoint: str, admin: dict[str, str], nobody: dict[str, str]) -> None:
        self.endpoint = endpoint
        self.admin = admin  # allowed everything
        self.nobody = nobody  # a user with no policy at all


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Emulator]:
    port = motoserver.free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    server = motoserver.start(port, ["127.0.0.1"], log)
    try:
        endpoint = f"http://127.0.0.1:{port}"
        admin = motoserver.create_administrator(endpoint)
        iam = boto3.client(
            "iam",
            endpoint_url=endpoint,
            region_name=motoserver.REGION,
            aws_access_key_id=admin["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=admin["AWS_SECRET_ACCESS_KEY"],
        )
        iam.create_user(UserName="nobody")
        key = iam.create_access_key(UserName="nobody")["AccessKey"]
        nobody = {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}
        motoserver.enforce_iam(endpoint)
        yield Emulator(endpoint, admin, nobody)
    finally:
        server.kill()
        server.wait()


def _sumpipe(tmp_path: Path, *args: str, **environment: str) -> str:
    """Runs `sumpipe args` with a clean environment (no AWS variables but `environment`, an empty
    ~/.aws, no instance metadata lookups) in an empty directory; asserts exit status 1 and one line
    on stderr, and returns that line."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(home),
        # The metadata service's link-local address is not ours to call.
        "AWS_EC2_METADATA_DISABLED": "true",
        **environment,
    }
    result = subprocess.run(
        [SUMPIPE, *args], cwd=home, env=env, capture_output=True, timeout=120, check=False
    )
    assert result.returncode == 1, result.stderr
    [line] = result.stderr.decode().splitlines()
    assert line.startswith("sumpipe: error: ")
    return line.removeprefix("sumpipe: error: ")


def test_no_region(tmp_path: Path) -> None:
    line = _sumpipe(tmp_path, "jobs")
    assert line.startswith("no AWS region is set: pass --region REGION, or set AWS_DEFAULT_REGION")


@pytest.mark.parametrize("where", ["before", "after"])
def test_region_flag_before_or_after_the_command(where: str, tmp_path: Path) -> None:
    """With --region the region is no longer what's missing: the credentials are."""
    args = ["--region", "eu-west-1", "jobs"] if where == "before" else ["jobs", "--region", "eu-west-1"]
    assert _sumpipe(tmp_path, *args).startswith("no AWS credentials: pass --profile NAME")


def test_no_credentials_on_submit(tmp_path: Path) -> None:
    sample = tmp_path / "in.csv"
    sample.write_text("Id,Text\n1,Hello.\n")
    line = _sumpipe(tmp_path, "submit", str(sample), AWS_DEFAULT_REGION="eu-west-1")
    assert line.startswith("no AWS credentials")


def test_unknown_profile(tmp_path: Path) -> None:
    line = _sumpipe(tmp_path, "jobs", "--profile", "nope")
    assert line.startswith("AWS profile 'nope' not found in ~/.aws/config or ~/.aws/credentials")


def test_endpoint_nobody_answers(tmp_path: Path) -> None:
    closed = f"http://127.0.0.1:{motoserver.free_port()}"
    line = _sumpipe(
        tmp_path,
        "jobs",
        AWS_ENDPOINT_URL=closed,
        AWS_DEFAULT_REGION="us-east-1",
        **motoserver.BOOTSTRAP_CREDENTIALS,  # any key: nothing answers
    )
    assert line.startswith(f"cannot reach AWS at {closed} (")
    assert line.endswith("check AWS_ENDPOINT_URL; for the local stack run `sumpipe local up`")


def test_rejected_credentials(emulator: Emulator, tmp_path: Path) -> None:
    line = _sumpipe(
        tmp_path,
        "jobs",
        AWS_ENDPOINT_URL=emulator.endpoint,
        AWS_DEFAULT_REGION="us-east-1",
        **{**motoserver.BOOTSTRAP_CREDENTIALS, "AWS_ACCESS_KEY_ID": "no-such-key"},  # unknown key
    )
    assert line.startswith("AWS rejected the credentials (InvalidClientTokenId)")


def test_access_denied_names_the_action(emulator: Emulator, tmp_path: Path) -> None:
    endpoint = {"AWS_ENDPOINT_URL": emulator.endpoint, "AWS_DEFAULT_REGION": "us-east-1"}
    line = _sumpipe(tmp_path, "jobs", **endpoint, **emulator.nobody)
    assert line.startswith("access denied to DescribeStacks: ")
    assert "user/nobody is not authorized to perform: cloudformation:DescribeStacks" in line
    assert line.endswith(
        "use --profile with an identity allowed to do this, or ask your AWS administrator for the permission"
    )


def test_stack_not_found_through_a_named_profile(emulator: Emulator, tmp_path: Path) -> None:
    """The profile's own region and keys are used (IAM is enforced: a wrong key would be rejected)."""
    aws = tmp_path / "aws"
    aws.mkdir()
    (aws / "config").write_text("[profile ops]\nregion = us-east-1\n")
    (aws / "credentials").write_text(
        "[ops]\n"
        f"aws_access_key_id = {emulator.admin['AWS_ACCESS_KEY_ID']}\n"
        f"aws_secret_access_key = {emulator.admin['AWS_SECRET_ACCESS_KEY']}\n"
    )
    line = _sumpipe(
        tmp_path,
        "--profile",
        "ops",
        "jobs",
        "--stack",
        "nope",
        AWS_ENDPOINT_URL=emulator.endpoint,
        AWS_CONFIG_FILE=str(aws / "config"),
        AWS_SHARED_CREDENTIALS_FILE=str(aws / "credentials"),
    )
    assert line == (
        "stack 'nope' not found in us-east-1: deploy it (sumpipe deploy --stack nope), or name the one "
        "you have with --stack and --region; for the local stack run `sumpipe local up`"
    )
