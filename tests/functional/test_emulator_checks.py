"""The local stack's start-up checks of its emulator: moto's private methods the emulator replaces are
the ones its hooks were written for (or the server exits at once with one line naming moto's version
and the method), and, once IAM is enforced, S3 authorization behaves as AWS's (or `local up` fails
with one line naming moto's version).

moto 5.2.6 broke the second: it asked IAM for the S3 operation's name (s3:HeadObject) instead of the
action S3 authorizes it as (s3:GetObject), so every HeadObject by a role allowed s3:GetObject was
refused, and the demo hung. Installing 5.2.6 here would need the network, so the tests below give
the locked moto that release's behaviour instead (a sitecustomize in the server's PYTHONPATH).

Run against the local stack's own moto server process (sumpipe.local.motoserver)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import boto3
import moto
import pytest

from sumpipe.local import emulator_probe, motoserver
from sumpipe.local.hosts import SSHD

# moto 5.2.6's S3 authorization, on the locked moto: BaseResponse._get_action became the request
# router's operation name (5.2.6: `return self._get_action_from_request(self.normalized_request)`),
# so the action moto's IAM check asks for is no longer the one S3Response set from its ACTION_MAP.
MOTO_5_2_6_S3_AUTHORIZATION = """
    from moto.s3.responses import S3Response

    def _get_action(self):
        return self._get_action_from_method_and_request_uri(self.normalized_request)

    S3Response._get_action = _get_action
"""
# Stock moto, without the project's check of presigned URLs (marked as installed, it is skipped).
STOCK_PRESIGNED_URLS = """
    from moto.core.authorization import ActionAuthenticatorMixin

    ActionAuthenticatorMixin._authenticate_and_authorize_s3_action.presigned = True
"""


def _with_sitecustomize(monkeypatch: pytest.MonkeyPatch, directory: Path, code: str) -> None:
    """Python processes started from now on (the moto server) run `code` first."""
    (directory / "sitecustomize.py").write_text(textwrap.dedent(code))
    path = [str(directory), *filter(None, [os.environ.get("PYTHONPATH")])]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(path))


@contextlib.contextmanager
def _emulator(log: Path, *, enforced: bool = True) -> Iterator[SimpleNamespace]:
    port = motoserver.free_port()
    server = motoserver.start(port, ["127.0.0.1"], log)
    endpoint = f"http://127.0.0.1:{port}"
    try:
        admin = motoserver.create_administrator(endpoint)
        if enforced:
            motoserver.enforce_iam(endpoint)
        yield SimpleNamespace(endpoint=endpoint, admin=admin)
    finally:
        server.kill()
        server.wait()


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[SimpleNamespace]:
    with _emulator(tmp_path / "moto.log") as started:
        yield started


def _leftovers(emulator: SimpleNamespace) -> list[str]:
    """Buckets and roles the probe left behind."""
    credentials = {name.lower(): value for name, value in emulator.admin.items()}
    s3, iam = (
        boto3.client(api, endpoint_url=emulator.endpoint, region_name=motoserver.REGION, **credentials)
        for api in ("s3", "iam")
    )
    buckets = [bucket["Name"] for bucket in s3.list_buckets()["Buckets"]]
    roles = [role["RoleName"] for role in iam.list_roles()["Roles"]]
    return [name for name in buckets + roles if name.startswith("sumpipe-probe-")]


def _probe_failure(emulator: SimpleNamespace) -> str:
    with pytest.raises(motoserver.EmulatorError) as failure:
        emulator_probe.check_s3_authorization(emulator.endpoint, emulator.admin)
    message = str(failure.value)
    assert "\n" not in message and f"(moto {moto.__version__})" in message, message
    assert not _leftovers(emulator)
    return message


def test_the_probe_passes_on_the_locked_moto_with_the_project_hooks(emulator: SimpleNamespace) -> None:
    started = time.monotonic()
    emulator_probe.check_s3_authorization(emulator.endpoint, emulator.admin)
    assert time.monotonic() - started < 3
    assert not _leftovers(emulator)


def test_the_probe_fails_on_moto_5_2_6_s3_authorization(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _with_sitecustomize(monkeypatch, tmp_path, MOTO_5_2_6_S3_AUTHORIZATION)
    with _emulator(tmp_path / "moto.log") as emulator:
        message = _probe_failure(emulator)
    assert message == (
        f"the emulator (moto {moto.__version__}) refuses HeadObject to a role allowed s3:GetObject "
        "(403 Forbidden): its S3 authorization is broken; run scripts/setup to install the locked version"
    )


def test_the_probe_fails_on_stock_moto_presigned_urls(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _with_sitecustomize(monkeypatch, tmp_path, STOCK_PRESIGNED_URLS)
    with _emulator(tmp_path / "moto.log") as emulator:
        message = _probe_failure(emulator)
    assert "refuses a presigned GET by a role allowed s3:GetObject (HTTP 500)" in message


def test_the_probe_fails_when_s3_authorization_is_not_enforced(tmp_path: Path) -> None:
    # What makes the probe able to fail at all: the object the role is not granted must be refused.
    with _emulator(tmp_path / "moto.log", enforced=False) as emulator:
        message = _probe_failure(emulator)
    assert "lets a role HeadObject an object it is not granted" in message


@pytest.mark.parametrize(
    ("change", "method", "found"),
    [
        (
            "ActionAuthenticatorMixin._authenticate_and_authorize_s3_action = "
            "lambda self, bucket=None, key=None: None",
            "moto.core.authorization.ActionAuthenticatorMixin._authenticate_and_authorize_s3_action"
            "(self, bucket_name, key_name)",
            "it has _authenticate_and_authorize_s3_action(self, bucket=None, key=None)",
        ),
        (
            "del ActionAuthenticatorMixin._authenticate_and_authorize_s3_action",
            "moto.core.authorization.ActionAuthenticatorMixin._authenticate_and_authorize_s3_action"
            "(self, bucket_name, key_name)",
            "it has no such method",
        ),
        (
            "DynamoHandler.call_action = lambda self, request: None",
            "moto.dynamodb.responses.DynamoHandler.call_action(self)",
            "it has call_action(self, request)",
        ),
    ],
    ids=["s3 parameters renamed", "s3 method removed", "dynamodb parameter added"],
)
def test_the_server_exits_at_once_naming_a_hooked_method_moto_changed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str, method: str, found: str
) -> None:
    # A moto release that renamed or changed a method the emulator replaces, simulated on the locked one.
    _with_sitecustomize(
        monkeypatch,
        tmp_path,
        "from moto.core.authorization import ActionAuthenticatorMixin\n"
        f"from moto.dynamodb.responses import DynamoHandler\n{change}\n",
    )
    started = time.monotonic()
    with pytest.raises(motoserver.EmulatorError) as failure:
        motoserver.start(motoserver.free_port(), ["127.0.0.1"], tmp_path / "moto.log", timeout_s=60)
    assert time.monotonic() - started < 20
    log = tmp_path / "moto.log"
    assert str(failure.value) == (
        f"moto server exited (1): moto {moto.__version__}: the local stack's emulator replaces {method}, "
        f"but {found}; run scripts/setup to install the locked moto (log: {log})"
    )


def test_local_up_fails_with_the_servers_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`sumpipe local up` reports the emulator's one line itself, not the end of the daemon's log."""
    if not Path(SSHD).exists():
        pytest.skip("the local stack needs sshd (scripts/setup installs openssh-server)")
    _with_sitecustomize(
        monkeypatch,
        tmp_path,
        "from moto.dynamodb.responses import DynamoHandler\n"
        "DynamoHandler.call_action = lambda self, request: None\n",
    )
    state = tmp_path / "state"
    done = subprocess.run(
        [sys.executable, "-m", "sumpipe.ops.cli", "local", "up", "--hosts", "loopback", "--dir", str(state)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr
    lines = done.stderr.strip().splitlines()
    assert lines[-1].startswith(f"sumpipe local up: moto server exited (1): moto {moto.__version__}: "), lines
    assert "DynamoHandler.call_action(self)" in lines[-1]
    assert not (state / "stack.pid").exists() and not (state / "failed").exists()
