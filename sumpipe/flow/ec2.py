"""EC2 control for the worker instances: find by tag, start (waiting out a stop in progress), wait
until running, stop."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# Polls start fast (state changes can be near-instant) and back off to what suits real EC2.
_FIRST_POLL_S = 0.05
_MAX_POLL_S = 2.0


class InstanceError(RuntimeError):
    pass


@dataclass(frozen=True)
class Instance:
    instance_id: str
    state: str
    private_ip: str | None
    public_ip: str | None = None


def _instance(raw: dict[str, Any]) -> Instance:
    return Instance(
        raw["InstanceId"], raw["State"]["Name"], raw.get("PrivateIpAddress"), raw.get("PublicIpAddress")
    )


# CloudFormation tags every instance it creates with its stack's name.
STACK_NAME_TAG = "aws:cloudformation:stack-name"


def find_workers(ec2: Any, tag_key: str, tag_value: str, stack_name: str) -> list[Instance]:
    """Worker instances of this stack carrying the role tag, lowest id first (terminated ones
    excluded). Another stack's workers in the same region carry the same role tag; the stack's
    IAM policies only let it start and stop its own."""
    resp = ec2.describe_instances(
        Filters=[
            {"Name": f"tag:{tag_key}", "Values": [tag_value]},
            {"Name": f"tag:{STACK_NAME_TAG}", "Values": [stack_name]},
            {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
        ]
    )
    found = [_instance(i) for r in resp["Reservations"] for i in r["Instances"]]
    return sorted(found, key=lambda i: i.instance_id)


def describe(ec2: Any, instance_id: str) -> Instance:
    resp = ec2.describe_instances(InstanceIds=[instance_id])
    return _instance(resp["Reservations"][0]["Instances"][0])


def poll(check: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    interval = _FIRST_POLL_S
    while not check():
        if time.monotonic() >= deadline:
            raise InstanceError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval)
        interval = min(interval * 2, _MAX_POLL_S)


def ensure_running(ec2: Any, instance_id: str, timeout_s: float) -> tuple[Instance, bool]:
    """Starts the instance unless it already runs; returns it running and whether we started it.
    A stop in progress is waited out first (EC2 refuses to start a stopping instance). All of it
    within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    current = describe(ec2, instance_id)
    started = False
    if current.state == "stopping":
        poll(
            lambda: describe(ec2, instance_id).state == "stopped",
            remaining(deadline),
            f"{instance_id} to stop",
        )
        current = describe(ec2, instance_id)
    if current.state == "stopped":
        ec2.start_instances(InstanceIds=[instance_id])
        started = True
    elif current.state not in ("pending", "running"):
        raise InstanceError(f"instance {instance_id} is {current.state}")
    poll(lambda: describe(ec2, instance_id).state == "running", remaining(deadline), f"{instance_id} to run")
    return describe(ec2, instance_id), started


def remaining(deadline: float) -> float:
    """Seconds left until a time.monotonic() deadline (never negative)."""
    return max(0.0, deadline - time.monotonic())


def stop(ec2: Any, instance_id: str) -> str:
    """Stops the instance; returns the state it was in before."""
    resp = ec2.stop_instances(InstanceIds=[instance_id])
    return str(resp["StoppingInstances"][0]["PreviousState"]["Name"])
