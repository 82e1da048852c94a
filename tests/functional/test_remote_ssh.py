"""SshTransport against real OpenSSH sshd hosts (own network namespace, or loopback port)."""

from __future__ import annotations

import io
import socket
import subprocess
import threading
import time
from pathlib import Path

import paramiko
import pytest

from sumpipe.flow.remote import (
    HostKeyMismatch,
    HostUnreachable,
    RemoteCommandFailed,
    RemoteError,
    SshTransport,
    UnknownHostKey,
)
from sumpipe.local.hosts import HostNetwork, LocalHost, generate_ed25519_keypair

# The forced command: the only program the test key may run. It dispatches on the command the
# client asked for, exactly as the job runner does.
FORCED_COMMAND = r"""#!/bin/sh
case "$SSH_ORIGINAL_COMMAND" in
  echo*) printf 'command=%s\nuser=%s\nenv=%s\n' "$SSH_ORIGINAL_COMMAND" "$(id -un)" "$SUMPIPE_TEST_ENV"
         cat
         echo to-stderr >&2 ;;
  fail*) echo failing >&2; exit 3 ;;
  sleep*) exec sleep 60 ;;
  *) echo "unknown command" >&2; exit 64 ;;
esac
"""


@pytest.fixture
def host(host_network: HostNetwork, shared_tmp: Path, client_keypair: tuple[str, str]) -> LocalHost:
    script = shared_tmp / "forced-command.sh"
    script.write_text(FORCED_COMMAND)
    script.chmod(0o755)
    host = host_network.add_host(
        authorized_key=client_keypair[1],
        forced_command=str(script),
        environment={"SUMPIPE_TEST_ENV": "value with spaces"},
    )
    host.start()
    return host


def transport(host: LocalHost, private_key: str, known_hosts: str | None = None, **kwargs) -> SshTransport:
    ip, port = host.address
    return SshTransport(
        ip,
        port=port,
        user=host.user,
        private_key=private_key,
        known_hosts=host.known_hosts_line() if known_hosts is None else known_hosts,
        **kwargs,
    )


def test_run_reaches_forced_command_with_command_stdin_and_environment(host, client_keypair):
    with transport(host, client_keypair[0]) as ssh:
        started = time.perf_counter()
        ssh.connect()
        connect_s = time.perf_counter() - started
        result = ssh.run("echo j-0123abcd", stdin=b'{"job": "spec"}\n', timeout=10)
        second = ssh.run("echo again", timeout=10)  # the connection is reused
    print(f"connect (RejectPolicy, {host.namespace or 'loopback'}): {connect_s * 1000:.1f} ms")
    assert result.exit_status == 0
    assert result.stdout.decode().splitlines() == [
        "command=echo j-0123abcd",
        f"user={host.user}",
        "env=value with spaces",
        '{"job": "spec"}',
    ]
    assert result.stderr == b"to-stderr\n"
    assert second.stdout.startswith(b"command=echo again\n")


def test_non_zero_exit_raises_with_the_result(host, client_keypair):
    ssh = transport(host, client_keypair[0])
    with ssh, pytest.raises(RemoteCommandFailed, match="status 3") as info:
        ssh.run("fail now", timeout=10)
    assert info.value.result.exit_status == 3
    assert info.value.result.stderr == b"failing\n"


def test_command_over_time_is_ended(host, client_keypair):
    started = time.monotonic()
    with transport(host, client_keypair[0]) as ssh, pytest.raises(RemoteCommandFailed, match=r"within 0\.3s"):
        ssh.run("sleep", timeout=0.3)
    assert time.monotonic() - started < 3


def test_unknown_host_key_fails_at_once(host, client_keypair):
    other_host_line = f"10.9.9.9 {host.host_public_key}"
    started = time.monotonic()
    ssh = transport(host, client_keypair[0], known_hosts=other_host_line, attempts=5, backoff=5.0)
    with pytest.raises(UnknownHostKey, match="not in the known_hosts"):
        ssh.run("echo hi", timeout=5)
    # A retry would have slept at least `backoff` (5 s).
    assert time.monotonic() - started < 4.5


def test_changed_host_key_fails_at_once(host, client_keypair):
    _, impostor_public = generate_ed25519_keypair()
    name = host.known_hosts_line().split()[0]
    started = time.monotonic()
    ssh = transport(host, client_keypair[0], known_hosts=f"{name} {impostor_public}", attempts=5, backoff=5.0)
    with pytest.raises(HostKeyMismatch, match=r"host key of .* changed"):
        ssh.run("echo hi", timeout=5)
    assert time.monotonic() - started < 4.5


def test_stopped_host_is_unreachable_after_bounded_retries(host, client_keypair):
    host.stop()
    ip, port = host.address
    started = time.monotonic()
    ssh = transport(host, client_keypair[0], attempts=3, timeout=0.5, backoff=0.05)
    with pytest.raises(HostUnreachable, match=rf"{ip}:{port} after 3 attempts"):
        ssh.run("echo hi", timeout=5)
    elapsed = time.monotonic() - started
    assert 0.15 <= elapsed < 2.5  # slept 0.05 + 0.1 between the three attempts


def test_restarted_host_keeps_its_host_key(host, client_keypair):
    known_hosts = host.known_hosts_line()
    host.stop()
    host.start()
    with transport(host, client_keypair[0], known_hosts=known_hosts) as ssh:
        assert ssh.run("echo back", timeout=10).exit_status == 0


def test_stop_ends_a_session_in_flight(host, client_keypair):
    outcome: list[BaseException] = []

    def run_long() -> None:
        with transport(host, client_keypair[0]) as ssh:
            try:
                ssh.run("sleep", timeout=30)
            except BaseException as exc:
                outcome.append(exc)

    thread = threading.Thread(target=run_long)
    thread.start()
    deadline = time.monotonic() + 10
    while not _sleep_running(host):
        assert time.monotonic() < deadline, "the long command never started"
        time.sleep(0.02)
    stopped = time.monotonic()
    host.stop()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert time.monotonic() - stopped < 2
    assert len(outcome) == 1 and isinstance(outcome[0], RemoteCommandFailed)
    assert not _sleep_running(host)
    if host.namespace:
        pids = subprocess.run(["ip", "netns", "pids", host.namespace], capture_output=True, text=True)
        assert pids.returncode == 0 and pids.stdout.strip() == ""


def _sleep_running(host: LocalHost) -> bool:
    """Is the forced command's `sleep 60` of this host alive? (matched by its sshd's config path)"""
    done = subprocess.run(["ps", "-eo", "pid,user,args"], capture_output=True, text=True)
    sleeping = [line for line in done.stdout.splitlines() if line.split()[1:] == [host.user, "sleep", "60"]]
    if not sleeping:
        return False
    if host.namespace is None:
        return True
    in_namespace = subprocess.run(["ip", "netns", "pids", host.namespace], capture_output=True, text=True)
    return any(line.split()[0] in in_namespace.stdout.split() for line in sleeping)


@pytest.mark.parametrize(
    "command",
    [
        "start j-1; rm -rf /",
        "start $(id)",
        "start `id`",
        "start a|b",
        "start a&&b",
        "start >out",
        "start 'quoted'",
        'start "quoted"',
        "start j-1\nid",
        "start  double-space",
        "Start j-1",
        "",
    ],
)
def test_command_outside_the_allow_list_is_refused_before_connecting(command, client_keypair):
    # A listener that never accepts: any connection attempt would sit in its backlog.
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        _, host_public = generate_ed25519_keypair()
        ssh = SshTransport(
            "127.0.0.1",
            port=port,
            user="sumpipe",
            private_key=client_keypair[0],
            known_hosts=f"[127.0.0.1]:{port} {host_public}",
        )
        with pytest.raises(ValueError, match="refusing remote command"):
            ssh.run(command, timeout=1)
        listener.settimeout(0.05)
        with pytest.raises(TimeoutError):
            listener.accept()


def test_host_coming_up_during_the_retries_is_reached(host, client_keypair):
    host.stop()
    starter = threading.Timer(0.3, host.start)
    starter.start()
    try:
        ssh = transport(host, client_keypair[0], attempts=8, timeout=1, backoff=0.05)
        with ssh:
            assert ssh.run("echo up", timeout=10).stdout.startswith(b"command=echo up\n")
    finally:
        starter.join()


def test_key_the_host_does_not_accept_fails_at_once(host):
    stranger_private, _ = generate_ed25519_keypair()
    started = time.monotonic()
    ssh = transport(host, stranger_private, attempts=5, backoff=5.0)
    with pytest.raises(RemoteError, match="refused our key") as info:
        ssh.run("echo hi", timeout=5)
    assert type(info.value) is RemoteError
    assert time.monotonic() - started < 4.5


class _SlowHost(paramiko.ServerInterface):
    """An SSH server that answers the first authentication or session request (`slow`) only after
    `delay` seconds, like a host under load; accepts the one client key; answers any command by
    echoing it once its stdin ends."""

    def __init__(self, client_key: paramiko.PKey, slow: str, delay: float) -> None:
        self.client_key, self.slow, self.delay = client_key, slow, delay
        self.requests = {"auth": 0, "session": 0}

    def _answer_late_the_first_time(self, request: str) -> None:
        self.requests[request] += 1
        if request == self.slow and self.requests[request] == 1:
            time.sleep(self.delay)

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        self._answer_late_the_first_time("auth")
        return paramiko.AUTH_SUCCESSFUL if key == self.client_key else paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        self._answer_late_the_first_time("session")
        return paramiko.OPEN_SUCCEEDED

    def check_channel_exec_request(self, channel: paramiko.Channel, command: bytes) -> bool:
        # paramiko sends the exec request's success reply only after this method returns, so
        # output sent from here could overtake it, and a close that overtakes it makes the client
        # take the exec for refused ("Channel closed."): that ordering is the test server's, not a
        # real host's. OpenSSH replies before the command starts. So the command here reads its
        # stdin to the end first, as `cat` would: the client sends that EOF only once it has the
        # reply. Then it ends as sshd does: output, exit status, EOF, close.
        def reply() -> None:
            while channel.recv(1024):
                pass
            channel.sendall(command)
            channel.send_exit_status(0)
            channel.shutdown_write()
            channel.close()

        threading.Thread(target=reply, daemon=True).start()
        return True


@pytest.mark.parametrize("slow", ["auth", "session"])
def test_a_host_slow_to_answer_is_tried_again_not_taken_for_a_refusal(slow, client_keypair):
    """Not OpenSSH: sshd can't be made to answer late on cue, so this peer is paramiko's own server
    implementation, over a real socket on loopback."""
    host_private, host_public = generate_ed25519_keypair()
    host_key = paramiko.Ed25519Key.from_private_key(io.StringIO(host_private))
    server = _SlowHost(paramiko.Ed25519Key.from_private_key(io.StringIO(client_keypair[0])), slow, delay=6.0)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    sessions: list[paramiko.Transport] = []

    def serve() -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except OSError:
                return
            session = paramiko.Transport(sock)
            session.add_server_key(host_key)
            session.start_server(server=server)
            sessions.append(session)

    threading.Thread(target=serve, daemon=True).start()
    try:
        ssh = SshTransport(
            "127.0.0.1", port=port, user="sumpipe", private_key=client_keypair[0],
            known_hosts=f"[127.0.0.1]:{port} {host_public}", timeout=2.0, attempts=3, backoff=0.05,
        )  # fmt: skip
        with ssh:
            assert ssh.run("echo hi", timeout=5).stdout == b"echo hi"
        assert server.requests[slow] == 2  # the late answer timed out; the second try got through
    finally:
        listener.close()
        for session in sessions:
            session.close()
