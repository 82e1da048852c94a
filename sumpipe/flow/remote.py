"""Running the job runner on a worker instance: over SSH (the default) or through SSM Run Command.

Both transports have the same shape, `run(command, stdin, timeout) -> CommandResult`, and raise
`RemoteError` subclasses. The command is a fixed verb chosen by the caller (`start j-0123...`); it
is checked against a strict allow-list before anything is sent, so user text can never reach a
command line on the instance; anything else the remote side needs it reads itself (the job runner
reads the job from the ledger).

SSH trusts only the host keys it is given (known_hosts text, published by the instance at boot):
an unknown or changed host key fails at once and is never retried, unlike connection errors, which
are retried a bounded number of times with backoff (an instance that has just reached `running`
may not be listening yet).
"""

from __future__ import annotations

import base64
import io
import logging
import re
import select
import socket
import time
from dataclasses import dataclass
from typing import Any, Protocol

import paramiko
from botocore.client import BaseClient

logger = logging.getLogger(__name__)

COMMAND_PATTERN = re.compile(r"[a-z]+( [A-Za-z0-9_.:-]+)*")  # whole string only: fullmatch


class RemoteError(Exception):
    """Base of every error raised while reaching or running something on a worker instance."""


class HostUnreachable(RemoteError):
    """No connection could be made (refused, timed out, no route, reset) after all attempts."""


class UnknownHostKey(RemoteError):
    """The host presented a key and we have no known_hosts entry for that host."""


class HostKeyMismatch(RemoteError):
    """The host presented a key different from its known_hosts entry."""


class RemoteCommandFailed(RemoteError):
    """The command ran but did not succeed: non-zero exit, killed, or out of time.

    `result` holds whatever was collected (exit_status -1 when the session ended without one).
    """

    def __init__(self, message: str, result: CommandResult) -> None:
        super().__init__(message)
        self.result = result


@dataclass(frozen=True)
class CommandResult:
    exit_status: int
    stdout: bytes
    stderr: bytes


class Transport(Protocol):
    """How the worker reaches a worker instance's job runner: SshTransport or SsmTransport (the
    flow's unit tests pass their own in-memory one to Services)."""

    def run(self, command: str, stdin: bytes = b"", timeout: float = 30.0) -> CommandResult: ...

    def close(self) -> None: ...


def check_command(command: str) -> str:
    """The command itself when it is a plain verb with safe arguments; ValueError otherwise."""
    if not COMMAND_PATTERN.fullmatch(command):
        raise ValueError(
            f"refusing remote command {command!r}: only a lowercase verb followed by "
            "space-separated [A-Za-z0-9_.:-] arguments is allowed"
        )
    return command


def load_private_key(text: str) -> paramiko.PKey:
    """Parse an unencrypted private key given as text (OpenSSH or PEM; ed25519, ECDSA or RSA)."""
    for key_class in (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey):
        try:
            return key_class.from_private_key(io.StringIO(text))
        except (paramiko.SSHException, ValueError):
            continue
    raise ValueError("private key text is not an unencrypted ed25519, ECDSA or RSA key")


def parse_known_hosts(text: str) -> paramiko.HostKeys:
    """known_hosts lines (plain or hashed host names; comments and blank lines ignored)."""
    host_keys = paramiko.HostKeys()
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        entry = paramiko.hostkeys.HostKeyEntry.from_line(line, lineno)
        if entry is None:
            raise ValueError(f"known_hosts line {lineno} is not a host key entry: {line[:60]!r}")
        for hostname in entry.hostnames:
            host_keys.add(hostname, entry.key.get_name(), entry.key)
    return host_keys


def known_hosts_name(host: str, port: int) -> str:
    """How known_hosts names host:port."""
    return host if port == 22 else f"[{host}]:{port}"


def has_published_key(known_hosts: str, host: str, port: int, instance_id: str) -> bool:
    """Whether `known_hosts` holds a key that instance published for host:port at boot: a line
    `<names> <key type> <key> <instance id>` whose names include host:port. The instance's line
    from an earlier boot names the addresses of that boot (a public IP changes at every start)."""
    name = known_hosts_name(host, port)
    for line in known_hosts.splitlines():
        fields = line.split()
        if len(fields) == 4 and fields[3] == instance_id and name in fields[0].split(","):
            return True
    return False


class _RejectUnknownHost(paramiko.RejectPolicy):
    """RejectPolicy that says which host was unknown with our own exception type."""

    def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
        raise UnknownHostKey(
            f"host {hostname} offered a {key.get_name()} key (SHA256:{key.fingerprint.split(':', 1)[-1]}) "
            "that is not in the known_hosts we were given; refusing to connect"
        )


# Errors after which a new connection attempt can succeed: the instance is still booting, sshd is
# restarting, or the network is briefly unavailable (OSError covers refused, reset, timed out and
# no route; SSHException a connection closed during the handshake). Authentication and host-key
# failures are subclasses of SSHException but are handled before these.
_TRANSIENT = (OSError, EOFError, paramiko.SSHException)


def _is_auth_timeout(exc: paramiko.AuthenticationException) -> bool:
    # paramiko.auth_handler raises AuthenticationException("Authentication timeout.") when no
    # answer to the authentication request arrives within auth_timeout.
    return "timeout" in str(exc).lower()


class SshTransport:
    """One SSH connection to one worker instance, opened on first use and reused until close().

    `private_key` and `known_hosts` are text (from Secrets Manager and an SSM parameter); nothing
    is read from ~/.ssh, no agent is asked, and a host not in `known_hosts` is rejected.
    """

    def __init__(
        self,
        host: str,
        *,
        user: str,
        private_key: str,
        known_hosts: str,
        port: int = 22,
        timeout: float = 5.0,
        attempts: int = 4,
        backoff: float = 0.25,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self.host = host
        self.port = port
        self.user = user
        self.timeout = timeout
        self.attempts = attempts
        self.backoff = backoff
        self._pkey = load_private_key(private_key)
        self._known_hosts = parse_known_hosts(known_hosts)
        self._client: paramiko.SSHClient | None = None

    def __enter__(self) -> SshTransport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        """Connect (if not connected), retrying connection errors with exponential backoff."""
        if self._client is not None:
            transport = self._client.get_transport()
            if transport is not None and transport.is_active():
                return
            self.close()
        last_error: BaseException | None = None
        for attempt in range(1, self.attempts + 1):
            try:
                self._client = self._connect_once()
                return
            except (UnknownHostKey, HostKeyMismatch):
                raise
            except paramiko.AuthenticationException as exc:
                # paramiko raises the same class when the host is merely slow to answer; that one
                # is worth another attempt, a refused key is not.
                if not _is_auth_timeout(exc):
                    raise RemoteError(f"{self.user}@{self.host}:{self.port} refused our key: {exc}") from exc
                last_error = exc
            except _TRANSIENT as exc:
                last_error = exc
            logger.info(
                "ssh connect failed",
                extra={"host": self.host, "port": self.port, "attempt": attempt, "error": repr(last_error)},
            )
            if attempt < self.attempts:
                time.sleep(self.backoff * 2 ** (attempt - 1))
        raise HostUnreachable(
            f"could not connect to {self.host}:{self.port} after {self.attempts} attempts: {last_error!r}"
        ) from last_error

    def _connect_once(self) -> paramiko.SSHClient:
        sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        client = paramiko.SSHClient()
        try:
            # Small request/response exchanges: don't let Nagle hold back the last packet.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            known = self._known_hosts.lookup(known_hosts_name(self.host, self.port))
            for key in (known or {}).values():
                client.get_host_keys().add(known_hosts_name(self.host, self.port), key.get_name(), key)
            client.set_missing_host_key_policy(_RejectUnknownHost())
            client.connect(
                self.host,
                port=self.port,
                username=self.user,
                pkey=self._pkey,
                sock=sock,
                timeout=self.timeout,
                banner_timeout=self.timeout,
                auth_timeout=self.timeout,
                channel_timeout=self.timeout,
                look_for_keys=False,
                allow_agent=False,
            )
        except paramiko.BadHostKeyException as exc:
            client.close()
            sock.close()
            raise HostKeyMismatch(
                f"host key of {self.host}:{self.port} changed: got {exc.key.get_name()} "
                f"SHA256:{exc.key.fingerprint.split(':', 1)[-1]}, known_hosts has "
                f"SHA256:{exc.expected_key.fingerprint.split(':', 1)[-1]}; refusing to connect"
            ) from None
        except BaseException:
            client.close()
            sock.close()
            raise
        return client

    def run(self, command: str, stdin: bytes = b"", timeout: float = 30.0) -> CommandResult:
        """Run `command` (checked against the allow-list first), feed it `stdin`, wait for it to exit.

        Returns the result when it exits 0; raises RemoteCommandFailed otherwise (non-zero exit,
        session killed, or `timeout` seconds passed, in which case the session is closed).
        `stdin` is meant to be small: it is sent before output is read.
        """
        check_command(command)
        deadline = time.monotonic() + timeout
        where = f"{self.host}:{self.port}"
        stdout, stderr = bytearray(), bytearray()
        channel = self._open_session(command)
        try:
            channel.exec_command(command)
            if stdin:
                channel.sendall(stdin)
            channel.shutdown_write()
            # The channel's fileno becomes readable on new data and stays readable after EOF/close.
            while not (channel.eof_received or channel.closed):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                select.select([channel], [], [], remaining)
                _drain(channel, stdout, stderr)
            channel.status_event.wait(max(0.0, deadline - time.monotonic()))
            _drain(channel, stdout, stderr)
            timed_out = not channel.status_event.is_set()
            exit_status = -1 if timed_out else channel.exit_status
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise RemoteCommandFailed(
                f"session for {command!r} on {where} failed: {exc!r}",
                CommandResult(-1, bytes(stdout), bytes(stderr)),
            ) from exc
        finally:
            channel.close()
        result = CommandResult(exit_status, bytes(stdout), bytes(stderr))
        if timed_out:
            raise RemoteCommandFailed(f"{command!r} on {where} did not finish within {timeout}s", result)
        if exit_status == -1:
            raise RemoteCommandFailed(f"{command!r} on {where} ended without an exit status", result)
        if exit_status != 0:
            raise RemoteCommandFailed(f"{command!r} on {where} exited with status {exit_status}", result)
        return result

    def _open_session(self, command: str) -> paramiko.Channel:
        """A session channel, on a new connection when opening one fails: nothing has run yet, so
        a busy host that doesn't answer in time is safely tried again, a bounded number of times."""
        last_error: BaseException | None = None
        for attempt in range(1, self.attempts + 1):
            self.connect()
            assert self._client is not None
            transport = self._client.get_transport()
            assert transport is not None
            try:
                return transport.open_session(timeout=self.timeout)
            except _TRANSIENT as exc:
                self.close()
                last_error = exc
            logger.info(
                "ssh session failed", extra={"host": self.host, "attempt": attempt, "error": repr(last_error)}
            )
            if attempt < self.attempts:
                time.sleep(self.backoff * 2 ** (attempt - 1))
        raise RemoteCommandFailed(
            f"no session for {command!r} on {self.host}:{self.port} after {self.attempts} attempts: "
            f"{last_error!r}",
            CommandResult(-1, b"", b""),
        ) from last_error

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def _drain(channel: paramiko.Channel, stdout: bytearray, stderr: bytearray) -> None:
    while channel.recv_ready():
        stdout += channel.recv(65536)
    while channel.recv_stderr_ready():
        stderr += channel.recv_stderr(65536)


# SSM reports these as final; anything else (Pending, InProgress, Delayed, Cancelling) is polled.
_SSM_FINAL = {"Success", "Failed", "Cancelled", "TimedOut"}


class SsmTransport:
    """The same `run` through SSM Run Command (AWS-RunShellScript) on one managed instance.

    The script sets SSH_ORIGINAL_COMMAND to the checked command (the runner reads it exactly as
    under SSH's forced command) and pipes stdin to the runner base64-encoded, so the script text
    only ever contains the allow-listed verb and base64 characters. SSM truncates captured output
    (24,000 characters), which is plenty for the runner's short replies.
    """

    def __init__(
        self,
        ssm: BaseClient,
        instance_id: str,
        *,
        runner: str = "/opt/sumpipe/job-runner",
        run_as: str = "sumpipe",
        poll_interval: float = 0.5,
    ) -> None:
        if not re.fullmatch(r"[A-Za-z0-9_./-]+", runner) or not re.fullmatch(r"[a-z_][a-z0-9_-]*", run_as):
            raise ValueError("runner must be a plain path and run_as a plain user name")
        self.ssm = ssm
        self.instance_id = instance_id
        self.runner = runner
        self.run_as = run_as
        self.poll_interval = poll_interval

    def script(self, command: str, stdin: bytes) -> list[str]:
        """The shell lines sent to the instance for `command` (checked) and `stdin`."""
        check_command(command)
        payload = base64.b64encode(stdin).decode("ascii")
        return [
            "set -eu",
            f"printf '%s' '{payload}' | base64 -d | "
            f"runuser -u {self.run_as} -- env SSH_ORIGINAL_COMMAND='{command}' {self.runner}",
        ]

    def run(self, command: str, stdin: bytes = b"", timeout: float = 30.0) -> CommandResult:
        lines = self.script(command, stdin)
        deadline = time.monotonic() + timeout
        response = self.ssm.send_command(
            InstanceIds=[self.instance_id],
            DocumentName="AWS-RunShellScript",
            Parameters={"commands": lines, "executionTimeout": [str(max(1, int(timeout)))]},
            TimeoutSeconds=max(30, int(timeout)),
        )
        command_id = response["Command"]["CommandId"]
        while True:
            invocation = self._invocation(command_id)
            status = invocation.get("Status", "Pending") if invocation else "Pending"
            if status in _SSM_FINAL:
                break
            if time.monotonic() >= deadline:
                self.ssm.cancel_command(CommandId=command_id, InstanceIds=[self.instance_id])
                raise RemoteCommandFailed(
                    f"{command!r} on {self.instance_id} (SSM {command_id}) did not finish within {timeout}s",
                    CommandResult(-1, b"", b""),
                )
            time.sleep(self.poll_interval)
        assert invocation is not None
        result = CommandResult(
            int(invocation.get("ResponseCode", -1)),
            invocation.get("StandardOutputContent", "").encode(),
            invocation.get("StandardErrorContent", "").encode(),
        )
        if status != "Success" or result.exit_status != 0:
            raise RemoteCommandFailed(
                f"{command!r} on {self.instance_id} (SSM {command_id}) ended {status} "
                f"with status {result.exit_status}",
                result,
            )
        return result

    def close(self) -> None:
        """Nothing is held open between commands."""

    def _invocation(self, command_id: str) -> dict[str, Any] | None:
        """The invocation, or None while SSM has not registered it yet (right after send_command)."""
        try:
            return dict(self.ssm.get_command_invocation(CommandId=command_id, InstanceId=self.instance_id))
        except self.ssm.exceptions.InvocationDoesNotExist:
            return None


def wait_port_open(host: str, port: int, timeout: float) -> None:
    """Return once a TCP connection to host:port succeeds; HostUnreachable after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        remaining = deadline - time.monotonic()
        try:
            with socket.create_connection((host, port), timeout=max(0.05, min(remaining, 1.0))):
                return
        except OSError as exc:
            if time.monotonic() + delay >= deadline:
                raise HostUnreachable(f"{host}:{port} not reachable within {timeout}s: {exc!r}") from exc
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
