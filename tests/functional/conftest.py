"""Shared fixtures for functional tests: real sshd hosts (network namespaces or loopback) and keys."""

from __future__ import annotations

import ipaddress
import json
import random
import secrets
import shutil
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto.server import ThreadedMotoServer

from sumpipe.local.hosts import SSHD, HostError, HostNetwork, generate_ed25519_keypair, namespaces_available

NEEDS_NAMESPACES = "network namespaces need root and a working `ip netns` (CI runs as root)"


@pytest.fixture
def shared_tmp() -> Iterator[Path]:
    """A temporary directory every user may enter: sshd reads authorized_keys as the login user,
    and pytest's own tmp_path sits under a 0700 directory."""
    path = Path(tempfile.mkdtemp(prefix="sumpipe-test-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture(scope="session")
def client_keypair() -> tuple[str, str]:
    """(private key text, public key line) the tests log in with."""
    return generate_ed25519_keypair("sumpipe-test")


def _routed_networks() -> list[ipaddress.IPv4Network]:
    routes = json.loads(subprocess.run(["ip", "-j", "route"], capture_output=True, text=True).stdout or "[]")
    destinations = [route.get("dst", "default") for route in routes]
    return [ipaddress.ip_network(dst, strict=False) for dst in destinations if dst != "default"]


@pytest.fixture(params=["namespace", "loopback"])
def host_network(request: pytest.FixtureRequest, shared_tmp: Path) -> Iterator[HostNetwork]:
    """A HostNetwork in each mode, with a unique prefix and (namespaces) a /16 no one else routes,
    so tests can run while other stacks (including the default 10.200.0.0/16 one) are up."""
    if not Path(SSHD).exists():
        pytest.skip(f"{SSHD} not installed (scripts/setup installs openssh-server)")
    use_namespaces = request.param == "namespace"
    if use_namespaces and not namespaces_available():
        pytest.skip(NEEDS_NAMESPACES)
    prefix = "t" + secrets.token_hex(3)
    # Loopback hosts live in 127.0.0.0/8 (at the instance's private IP, as namespace hosts do).
    first_octet = 10 if use_namespaces else 127
    for second_octet in random.sample(range(201, 255), 8):
        subnet = ipaddress.IPv4Network(f"{first_octet}.{second_octet}.0.0/16")
        if any(subnet.overlaps(routed) for routed in _routed_networks()):
            continue
        network = HostNetwork(
            shared_tmp / "hosts", prefix=prefix, subnet=str(subnet), use_namespaces=use_namespaces
        )
        try:
            network.create()
        except HostError:  # another test run took this subnet between our check and create
            continue
        break
    else:
        pytest.fail("no free 10.x.0.0/16 subnet for a test host network")
    yield network
    network.teardown()


MOTO_REGION = "us-east-1"


@pytest.fixture
def moto_session(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """A moto server on loopback, named by the standard variables (any credentials: IAM not enforced),
    and a boto3 session for it."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    for name, value in {
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",  # pragma: allowlist secret
        "AWS_DEFAULT_REGION": MOTO_REGION,
        "AWS_REGION": MOTO_REGION,
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    try:
        yield boto3.session.Session(region_name=MOTO_REGION)
    finally:
        # moto's backends are per process, not per server: reset them so tests don't share state.
        urllib.request.urlopen(
            urllib.request.Request(f"http://{host}:{port}/moto-api/reset", method="POST"), timeout=10
        ).close()
        server.stop()
