"""Local worker hosts: lifecycle, teardown, and the reconciler following moto's EC2 instance states."""

from __future__ import annotations

import contextlib
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from sumpipe.flow.remote import HostUnreachable, RemoteCommandFailed, SshTransport, wait_port_open
from sumpipe.local.hosts import HostNetwork, LocalHost, Reconciler

ECHO = r"""#!/bin/sh
printf '%s\n' "$SSH_ORIGINAL_COMMAND"
"""


@pytest.fixture
def forced_command(shared_tmp: Path) -> str:
    script = shared_tmp / "echo-command.sh"
    script.write_text(ECHO)
    script.chmod(0o755)
    return str(script)


def _our_names(prefix: str) -> list[str]:
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, check=True).stdout
    names = [line.split()[0] for line in netns.splitlines()]
    names += [line.split(":")[1].strip().split("@")[0] for line in links.splitlines()]
    return [name for name in names if name.startswith(f"{prefix}-")]


def _processes_using(path: Path) -> list[str]:
    ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    return [line for line in ps.splitlines() if str(path) in line]


def _sessions_sleeping(user: str) -> list[str]:
    ps = subprocess.run(["ps", "-eo", "user,args"], capture_output=True, text=True, check=True).stdout
    return [line for line in ps.splitlines() if line.split() == [user, "sleep", "60"]]


def _sleep_session(host: LocalHost, private_key: str) -> threading.Thread:
    """Start a session that stays open (the forced command is `sleep 60` for these hosts)."""
    ip, port = host.address

    def run() -> None:
        ssh = SshTransport(
            ip, port=port, user=host.user, private_key=private_key, known_hosts=host.known_hosts_line()
        )
        # Ended by the teardown under test.
        with ssh, contextlib.suppress(RemoteCommandFailed):
            ssh.run("sleep", timeout=30)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_teardown_from_a_fresh_object_leaves_nothing_behind(host_network, shared_tmp, client_keypair):
    hosts = [
        host_network.add_host(authorized_key=client_keypair[1], forced_command="sleep 60") for _ in range(2)
    ]
    for host in hosts:
        host.start()
    sessions = [_sleep_session(host, client_keypair[0]) for host in hosts]
    _wait_for(lambda: len(_sessions_sleeping(hosts[0].user)) == 2, "both sessions to start")
    if host_network.use_namespaces:
        assert len(_our_names(host_network.prefix)) == 5  # bridge, 2 namespaces, 2 veths

    # What `sumpipe local down` does: a new process knows only the state dir and the prefix.
    HostNetwork(
        host_network.state_dir,
        prefix=host_network.prefix,
        subnet=str(host_network.subnet),
        use_namespaces=host_network.use_namespaces,
    ).teardown()

    for session in sessions:
        session.join(timeout=5)
        assert not session.is_alive()
    assert _our_names(host_network.prefix) == []
    assert _processes_using(host_network.state_dir) == []
    assert _sessions_sleeping(hosts[0].user) == []
    if not host_network.use_namespaces:
        # (Namespace addresses are not probed: without the bridge they would route off the machine.)
        for host in hosts:
            with pytest.raises(HostUnreachable):
                wait_port_open(*host.address, timeout=0.2)


def test_environment_that_sshd_config_cannot_carry_is_refused(shared_tmp):
    with pytest.raises(ValueError, match="EVIL"):
        LocalHost(
            shared_tmp / "h",
            ip="127.0.0.1",
            port=2222,
            authorized_key="ssh-ed25519 AAAA",
            forced_command="true",
            environment={"EVIL": 'x"\nForceCommand none'},
        )


@pytest.fixture
def moto_ec2() -> Iterator[object]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield boto3.client(
        "ec2",
        region_name="us-east-1",
        endpoint_url=f"http://{host}:{port}",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",  # pragma: allowlist secret
    )
    # moto's backends are per process, not per server: reset them so later tests don't see our instances.
    urllib.request.urlopen(
        urllib.request.Request(f"http://{host}:{port}/moto-api/reset", method="POST"), timeout=10
    ).close()
    server.stop()


def _wait_for(condition, what: str, timeout: float = 10.0) -> float:
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < timeout, f"timed out waiting for {what}"
        time.sleep(0.02)
    return time.monotonic() - started


def test_reconciler_mirrors_instance_state(host_network, moto_ec2, forced_command, client_keypair):
    ec2 = moto_ec2
    host = host_network.add_host(authorized_key=client_keypair[1], forced_command=forced_command)
    # The instance's private IP is the host's address (in namespaces and on loopback alike).
    vpc = ec2.create_vpc(CidrBlock=str(host_network.subnet))["Vpc"]["VpcId"]
    subnet_cidr = f"{host.ip.rsplit('.', 1)[0]}.0/24"
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock=subnet_cidr)["Subnet"]["SubnetId"]
    instance = ec2.run_instances(
        ImageId="ami-12c6146b", InstanceType="t3.micro", MinCount=1, MaxCount=1,
        SubnetId=subnet, PrivateIpAddress=host.ip,
    )["Instances"][0]
    instance_id = instance["InstanceId"]
    assert instance["PrivateIpAddress"] == host.ip

    def state() -> str:
        reservations = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        return reservations[0]["Instances"][0]["State"]["Name"]

    def answers() -> bool:
        ip, port = host.address
        with SshTransport(
            ip,
            port=port,
            user=host.user,
            private_key=client_keypair[0],
            known_hosts=host.known_hosts_line(),
            attempts=1,
            timeout=1,
        ) as ssh:
            return ssh.run("hello from reconciler", timeout=5).stdout == b"hello from reconciler\n"

    with Reconciler(ec2, {instance_id: host}, interval=0.1):
        up_s = _wait_for(lambda: host.running, "the host to start for a running instance")
        assert answers()

        ec2.stop_instances(InstanceIds=[instance_id])
        down_s = _wait_for(lambda: not host.running, "the host to stop with its instance")
        assert state() in {"stopping", "stopped"}
        with pytest.raises(HostUnreachable):
            wait_port_open(*host.address, timeout=0.2)
        if host.namespace:
            pids = subprocess.run(["ip", "netns", "pids", host.namespace], capture_output=True, text=True)
            assert pids.stdout.strip() == ""

        ec2.start_instances(InstanceIds=[instance_id])
        _wait_for(lambda: host.running, "the host to come back with its instance")
        assert answers()
    print(f"reconciler: up after {up_s * 1000:.0f} ms, down after {down_s * 1000:.0f} ms")
    assert not any(thread.name == "host-reconciler" for thread in threading.enumerate())
