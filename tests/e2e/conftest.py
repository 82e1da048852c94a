"""One local stack (moto server + real sshd hosts in network namespaces + the Lambda runtime) per
test module, built by the same code as `sumpipe local up`, always torn down.

A module asks for its settings with `STACK_SETTINGS = {...}` at module level (and for more worker
instances with `WORKERS = 2`, a watchdog period with `WATCHDOG_INTERVAL_S`)."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

from sumpipe.local import stack
from sumpipe.local.hosts import namespaces_available
from sumpipe.ops.commands import jobs as operator

DATA = Path(__file__).resolve().parents[1] / "data"


def _free_subnet(seed: str) -> str:
    """A /16 in 10.200-10.254 that no route on this machine touches (other stacks run in parallel)."""
    routes = json.loads(subprocess.run(["ip", "-j", "route"], capture_output=True, text=True).stdout or "[]")
    used = [
        ipaddress.ip_network(r["dst"], strict=False) for r in routes if r.get("dst", "default") != "default"
    ]
    start = int(hashlib.sha256(seed.encode()).hexdigest(), 16) % 54
    for n in range(54):
        candidate = ipaddress.ip_network(f"10.{201 + (start + n) % 54}.0.0/16")
        if not any(candidate.overlaps(u) for u in used):
            return str(candidate)
    raise RuntimeError("no free 10.x/16 for a test stack")


def _free_loopback_subnet(seed: str) -> str:
    """A /16 in 127.100-127.199 on which nothing listens (loopback stacks of other runs are up)."""
    listening = subprocess.run(["ss", "-Htln4"], capture_output=True, text=True).stdout.splitlines()
    # Local address column: `127.0.0.53%lo:53`, `0.0.0.0:22`, ...
    local = [line.split()[3].rsplit(":", 1)[0].split("%")[0] for line in listening if line.strip()]
    addresses = [ipaddress.ip_address(address) for address in local]
    start = int(hashlib.sha256(seed.encode()).hexdigest(), 16) % 100
    for n in range(100):
        candidate = ipaddress.ip_network(f"127.{100 + (start + n) % 100}.0.0/16")
        if not any(address in candidate for address in addresses):
            return str(candidate)
    raise RuntimeError("no free 127.x/16 for a test stack")


@dataclass(frozen=True)
class RunningStack:
    target: operator.Stack
    config: stack.StackConfig

    @property
    def host_namespace(self) -> str:
        return f"{self.config.prefix}-h0"

    @property
    def hosts_dir(self) -> Path:
        return Path((self.config.state_dir / "hosts-dir").read_text().strip())


@contextmanager
def stack_up(config: stack.StackConfig) -> Iterator[tuple[RunningStack, stack.StackInfo]]:
    """The stack up, its endpoint in os.environ (the CLI's and boto3's view); always taken down and
    the environment restored, whatever the test did."""
    saved = dict(os.environ)
    try:
        info = stack.up(config)
        os.environ.update(info.env)
        yield RunningStack(operator.Stack(info.outputs), config), info
    finally:
        stack.down(config.state_dir)
        os.environ.clear()
        os.environ.update(saved)


@pytest.fixture(scope="module")
def local_stack(running_stack: RunningStack) -> operator.Stack:
    return running_stack.target


@pytest.fixture(scope="module")
def running_stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningStack]:
    if not namespaces_available():
        pytest.skip("the local stack needs root and network namespaces")
    settings = getattr(request.module, "STACK_SETTINGS", {})
    seed = f"{request.module.__name__}-{os.getpid()}"
    config = stack.StackConfig(
        state_dir=tmp_path_factory.mktemp("stack"),
        prefix="t" + hashlib.sha256(seed.encode()).hexdigest()[:6],
        subnet=_free_subnet(seed),
        settings=settings,
        workers=int(getattr(request.module, "WORKERS", 1)),
        watchdog_interval_s=float(getattr(request.module, "WATCHDOG_INTERVAL_S", 0.5)),
    )
    with stack_up(config) as (running, _):
        yield running
    leftovers = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert config.prefix not in leftovers, "the stack left links behind"
    assert config.prefix not in subprocess.run(["ip", "netns"], capture_output=True, text=True).stdout


def ec2_state(target: operator.Stack) -> str:
    from sumpipe.aws import client

    instance_id = target.outputs["WorkerInstanceIds"].split(",")[0]
    reservations = client("ec2").describe_instances(InstanceIds=[instance_id])["Reservations"]
    return str(reservations[0]["Instances"][0]["State"]["Name"])


def wait_until(check, timeout_s: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.05)


def stop_lines(target: operator.Stack) -> list[dict]:
    """The pipeline's audit lines for every instance stop (stop_ec2's CloudWatch log group)."""
    from sumpipe.aws import client

    group = f"/aws/lambda/{target.outputs['StopFunctionName']}"
    events = client("logs").filter_log_events(logGroupName=group).get("events", [])
    lines = [json.loads(e["message"]) for e in events]
    return [line for line in lines if line.get("event") == "instance_stopped"]


def run_job(target: operator.Stack, path: Path, key: str | None = None, timeout_s: float = 60.0):
    submitted = operator.submit_file(target, path, key)
    return operator.wait_for_job(target, submitted.job_id, timeout_s)
