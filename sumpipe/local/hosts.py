"""Local stand-ins for the worker EC2 instances: a real OpenSSH sshd per instance.

With root (the normal case, CI included) each host gets its own network namespace, joined to a
Linux bridge by a veth pair, at the private IP its EC2 instance has in the emulator
(bridge 10.200.0.1/16, hosts 10.200.1.10, .11, ...). Stopping a host kills every process in its
namespace, exactly like stopping the instance ends every session on it. Every name (bridge,
namespaces, veths) starts with a short prefix so two stacks never collide, and `teardown()` works
from the prefix alone: a later process (`sumpipe local down`) removes what an earlier one made.

Sessions run as a dedicated system user with /bin/sh as its shell (root's shell would source
~/.bashrc on every SSH command: measured 120 ms vs 76 ms per connect). Its key may run only the
forced command the caller gives (`restrict,command="..."`); the command the client asked for
reaches that program as SSH_ORIGINAL_COMMAND.

Without root, or when namespaces are unavailable (or when asked to: `use_namespaces=False`), the
network is a loopback range instead (default 127.77.0.0/16: Linux routes all of 127.0.0.0/8 to `lo`,
so any such address can be listened on without root). Host i still listens at <subnet>.1.(10 + i),
its instance's private IP, but on an unprivileged port (LOOPBACK_SSH_PORT or the next free one),
and sessions run as the current user when not root (a non-root sshd can only log in its own user;
its login shell then runs the forced command). There is no namespace to empty when such a host
stops, so it kills its sshd, that sshd's descendants, and every process still carrying the host's
mark in its environment (HOST_MARK_ENV, set by sshd for each session and inherited by what the
session starts, e.g. the job runner's detached job, which is no longer sshd's descendant). A process
that scrubs its environment AND detaches escapes that; in namespaces mode nothing escapes.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import logging
import os
import pwd
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sumpipe.local import boot

logger = logging.getLogger(__name__)

SSHD = "/usr/sbin/sshd"
SSH_USER = "sumpipe"
SSH_USER_HOME = Path("/var/lib/sumpipe")
DEFAULT_PREFIX = "sp"
DEFAULT_SUBNET = "10.200.0.0/16"
DEFAULT_LOOPBACK_SUBNET = "127.77.0.0/16"
LOOPBACK = ipaddress.IPv4Network("127.0.0.0/8")
# Loopback hosts listen here (or on the next free port): port 22 needs root and a machine's own
# sshd often listens on every address at 22.
LOOPBACK_SSH_PORT = 2222
# Set by sshd in each session of a loopback host (value: the host's state directory), so the
# processes a session leaves behind can be found when the host stops.
HOST_MARK_ENV = "SUMPIPE_LOCAL_HOST"
# Host i (0-based) is at <subnet>.1.(10 + i): 10.200.1.10, 10.200.1.11, ...
FIRST_HOST_OFFSET = 256 + 10
# Every host's sshd: keys only, no root, no forwarding of any kind.
SSHD_LOCKDOWN = (
    "PasswordAuthentication no",
    "KbdInteractiveAuthentication no",
    "PubkeyAuthentication yes",
    "PermitRootLogin no",
    "AllowTcpForwarding no",
    "AllowAgentForwarding no",
    "X11Forwarding no",
    "PermitTunnel no",
    "PrintMotd no",
    "UseDNS no",
    "LoginGraceTime 10",
)
_PREFIX_PATTERN = re.compile(r"[a-z][a-z0-9]{0,7}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ENV_VALUE = re.compile(r'[^"\\\x00-\x1f\x7f]*')


class HostError(RuntimeError):
    """A local host or its network could not be set up or torn down."""


def generate_ed25519_keypair(comment: str = "") -> tuple[str, str]:
    """A new key pair: (private key in OpenSSH format, public key line `ssh-ed25519 AAAA... comment`)."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode("ascii")
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, f"{public.decode('ascii')} {comment}".strip()


def namespaces_available() -> bool:
    """True when we can create network namespaces (root and a working `ip netns`)."""
    if os.geteuid() != 0:
        return False
    try:
        return subprocess.run(["ip", "netns", "list"], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def ensure_ssh_user(name: str = SSH_USER, home: Path = SSH_USER_HOME) -> None:
    """Create the unprivileged login user for the hosts' sessions if it does not exist (root only).

    Its shell is /bin/sh (nothing sourced per command). Its password is `*`, not the default `!`:
    without PAM, sshd refuses accounts whose password field marks them locked.
    """
    for _ in range(5):
        try:
            pwd.getpwnam(name)
            return
        except KeyError:
            pass
        done = subprocess.run(
            ["useradd", "--system", "--shell", "/bin/sh", "--home-dir", str(home), "--create-home",
             "--password", "*", name],
            capture_output=True, text=True,
        )
        if done.returncode == 0:
            return
        # Another stack may be creating it at the same moment (passwd lock busy / user exists).
        time.sleep(0.2)
    raise HostError(f"could not create user {name}: {done.stderr.strip()}")


def namespace_pids(namespace: str) -> list[int]:
    """Pids of the live processes in a named network namespace (what `ip netns pids` prints)."""
    try:
        target = os.stat(f"/run/netns/{namespace}")
    except FileNotFoundError:
        return []
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            ns = os.stat(f"/proc/{entry.name}/ns/net")
        except OSError:  # gone, or a zombie (no namespace any more)
            continue
        if (ns.st_dev, ns.st_ino) == (target.st_dev, target.st_ino):
            pids.append(int(entry.name))
    return pids


def _descendant_pids(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        # Field 4 (ppid) follows the command name, which is in parentheses and may hold spaces.
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def _marked_pids(marks: set[str]) -> list[int]:
    """Pids of the processes whose environment holds HOST_MARK_ENV=<one of marks> (those we may read:
    our own user's, or all as root)."""
    wanted = {f"{HOST_MARK_ENV}={mark}".encode() for mark in marks}
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry.name}/environ").read_bytes()
        except OSError:  # gone, or another user's
            continue
        if wanted.intersection(environ.split(b"\0")):
            pids.append(int(entry.name))
    return pids


def _is_sshd_of(pid: int, state_dir: Path) -> bool:
    """Whether `pid` is the sshd of this host (a pid file left by a crash may name a reused pid)."""
    try:
        return f"{state_dir}/".encode() in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def _loopback_host_pids(state_dir: Path, sshd_pid: int | None) -> list[int]:
    """The live processes of a loopback host: its sshd and descendants, and whatever a session left
    running with the host's mark (detached from sshd, e.g. the runner's job)."""
    pids = set(_marked_pids({str(state_dir)}))
    if sshd_pid is not None and _is_sshd_of(sshd_pid, state_dir):
        pids.update(_descendant_pids(sshd_pid))
    return [pid for pid in pids if pid_alive(pid)]


def _kill_until_gone(list_pids: Any, what: str, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while pids := list_pids():
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise HostError(f"processes {pids} of {what} survived SIGKILL for {timeout}s")
        time.sleep(0.01)


def _ip_batch(commands: list[str], *, namespace: str | None = None, force: bool = False) -> None:
    """Run several `ip` commands in one process (one fork instead of one per command)."""
    argv = ["ip"]
    if namespace:
        argv += ["-n", namespace]
    if force:
        argv.append("-force")
    done = subprocess.run([*argv, "-batch", "-"], input="\n".join(commands) + "\n",
                          capture_output=True, text=True)
    if done.returncode != 0 and not force:
        raise HostError(f"ip {' / '.join(commands)} failed: {done.stderr.strip()}")


def _ip_json(*args: str) -> list[dict[str, Any]]:
    done = subprocess.run(["ip", "-j", *args], capture_output=True, text=True, check=True)
    return json.loads(done.stdout or "[]")


def _free_port_at(ip: str, first: int, tries: int = 100) -> int:
    """The first port from `first` on that can be listened on at `ip`."""
    for port in range(first, first + tries):
        with socket.socket() as sock:
            try:
                sock.bind((ip, port))
            except OSError:
                continue
            return port
    raise HostError(f"no free port in {first}-{first + tries - 1} at {ip}")


def _check_traversable(path: Path, uid: int) -> None:
    """sshd reads authorized_keys as the login user: every directory on the way must let it in."""
    for directory in [path, *path.parents]:
        st = directory.stat()
        if st.st_uid != uid and not st.st_mode & 0o001:
            raise HostError(
                f"{directory} is not searchable by uid {uid}, so sshd cannot read {path}/authorized_keys "
                "as the login user; put the hosts' state under a world-searchable directory"
            )


class LocalHost:
    """One worker instance: an sshd listening at `address`, in network namespace `namespace`
    (or in ours when it is None). Files live in `state_dir`: host key, sshd_config,
    authorized_keys, sshd.pid, sshd.log. The host key is made once and kept across restarts."""

    def __init__(
        self,
        state_dir: Path,
        *,
        ip: str,
        port: int = 22,
        namespace: str | None = None,
        authorized_key: str,
        forced_command: str,
        environment: Mapping[str, str] | None = None,
        user: str = SSH_USER,
    ) -> None:
        if "\n" in forced_command or "\n" in authorized_key:
            raise ValueError("forced_command and authorized_key must be single lines")
        for name, value in {**(environment or {}), HOST_MARK_ENV: str(state_dir)}.items():
            if not _ENV_NAME.fullmatch(name) or not _ENV_VALUE.fullmatch(value):
                raise ValueError(f"environment variable {name!r} has a name or value sshd_config can't carry")
        self.state_dir = Path(state_dir)
        self.ip = ip
        self.port = port
        self.namespace = namespace
        self.user = user
        self.authorized_key = authorized_key.strip()
        self.forced_command = forced_command
        self.environment = {**(environment or {}), HOST_MARK_ENV: str(self.state_dir)}
        self._sshd: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir.chmod(0o755)
        self._ensure_host_key()

    @property
    def address(self) -> tuple[str, int]:
        return self.ip, self.port

    @property
    def host_key_path(self) -> Path:
        return self.state_dir / "ssh_host_ed25519_key"

    @property
    def log_path(self) -> Path:
        return self.state_dir / "sshd.log"

    @property
    def host_public_key(self) -> str:
        """`ssh-ed25519 AAAA...` (without comment)."""
        return " ".join(self.host_key_path.with_suffix(".pub").read_text().split()[:2])

    def known_hosts_line(self) -> str:
        name = self.ip if self.port == 22 else f"[{self.ip}]:{self.port}"
        return f"{name} {self.host_public_key}"

    @property
    def running(self) -> bool:
        return self._sshd is not None and self._sshd.poll() is None

    @property
    def powered_off(self) -> bool:
        """Whether the host shut itself down (only booted instance hosts can)."""
        return False

    def _ensure_host_key(self) -> None:
        if self.host_key_path.exists():
            return
        private, public = generate_ed25519_keypair()
        fd = os.open(self.host_key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(private)
        self.host_key_path.with_suffix(".pub").write_text(public + "\n")

    def _write_config(self) -> Path:
        quoted = " ".join(f'"{name}={value}"' for name, value in self.environment.items())
        command = self.forced_command.replace('"', '\\"')
        authorized_keys = self.state_dir / "authorized_keys"
        authorized_keys.write_text(f'restrict,command="{command}" {self.authorized_key}\n')
        authorized_keys.chmod(0o644)
        config = self.state_dir / "sshd_config"
        config.write_text(
            "\n".join(
                [
                    f"ListenAddress {self.ip}:{self.port}",
                    f"HostKey {self.host_key_path}",
                    f"PidFile {self.state_dir / 'sshd.pid'}",
                    f"AuthorizedKeysFile {self.state_dir / 'authorized_keys'}",
                    f"AllowUsers {self.user}",
                    "UsePAM no",
                    "StrictModes no",
                    *SSHD_LOCKDOWN,
                    # sshd obeys only the first SetEnv line, so every variable goes on one.
                    *([f"SetEnv {quoted}"] if quoted else []),
                    "",
                ]
            )
        )
        return config

    def _command(self) -> list[str]:
        argv = [SSHD, "-D", "-e", "-f", str(self._write_config())]
        return ["ip", "netns", "exec", self.namespace, *argv] if self.namespace else argv

    def start(self, timeout: float = 10.0) -> None:
        """Start sshd (no-op when running) and return once it accepts TCP connections."""
        with self._lock:
            if self.running:
                return
            if self.user != pwd.getpwuid(os.geteuid()).pw_name:
                _check_traversable(self.state_dir, pwd.getpwnam(self.user).pw_uid)
            if os.geteuid() == 0:
                Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
            argv = self._command()
            with self.log_path.open("ab") as log:
                # `ip netns exec` execs sshd, so this pid is sshd's own.
                sshd = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                        start_new_session=True)
            try:
                self._wait_listening(sshd, timeout)
            except BaseException:
                sshd.kill()
                sshd.wait()
                raise
            # Only now: `running` means accepting connections.
            self._sshd = sshd
        logger.info("host started", extra={"host": self.ip, "port": self.port, "namespace": self.namespace})

    def _wait_listening(self, sshd: subprocess.Popen[bytes], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if sshd.poll() is not None:
                tail = self.log_path.read_text(errors="replace")[-2000:]
                raise HostError(f"sshd for {self.ip}:{self.port} exited ({sshd.returncode}):\n{tail}")
            try:
                with socket.create_connection(self.address, timeout=0.5):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise HostError(f"sshd for {self.ip}:{self.port} not listening in {timeout}s") from None
            time.sleep(0.005)

    def stop(self) -> None:
        """Kill sshd and every session: all processes in the namespace (loopback: sshd's descendants
        and the processes carrying the host's mark)."""
        with self._lock:
            if self.namespace:
                _kill_until_gone(lambda: namespace_pids(self.namespace), f"namespace {self.namespace}")
            else:
                pid = self._sshd.pid if self._sshd else read_pid(self.state_dir / "sshd.pid")
                _kill_until_gone(lambda: _loopback_host_pids(self.state_dir, pid), f"host {self.ip}")
            if self._sshd is not None:
                self._sshd.wait()
                self._sshd = None
            (self.state_dir / "sshd.pid").unlink(missing_ok=True)
        logger.info("host stopped", extra={"host": self.ip, "port": self.port, "namespace": self.namespace})


class InstanceHost(LocalHost):
    """A worker host booted as its EC2 instance boots (sumpipe/local/boot.py, namespaces only): its
    sshd is the image's, its authorized key, settings and units come from the instance's own user
    data (deploy/bootstrap.sh), run by the host at its first boot, with the image bound at
    /opt/sumpipe/venv. Nothing is set up for it from outside but what an AMI and EC2 give an
    instance: sshd with a host key, the user `sumpipe`, and the machine's AWS endpoints (`environment`:
    the emulator's, and this host's instance metadata service)."""

    def __init__(
        self,
        state_dir: Path,
        *,
        ip: str,
        namespace: str,
        user_data: bytes,
        image: Path,
        environment: Mapping[str, str],
    ) -> None:
        self.state_dir = Path(state_dir)
        self.ip = ip
        self.port = 22
        self.namespace = namespace
        self.user = SSH_USER
        self.image = image
        self._sshd = None
        self._lock = threading.Lock()
        (self.state_dir / "root" / "etc" / "ssh").mkdir(parents=True, exist_ok=True)
        self.state_dir.chmod(0o755)
        self._ensure_host_key()
        user_data_path = self.state_dir / "user-data"
        user_data_path.write_bytes(user_data)
        user_data_path.chmod(0o700)
        (self.state_dir / "environment.json").write_text(json.dumps(dict(environment)))
        shim = self.state_dir / "bin" / "systemctl"
        shim.parent.mkdir(exist_ok=True)
        shim.write_text(f'#!/bin/sh\nexec {sys.executable} -m sumpipe.local.systemd "$@"\n')
        shim.chmod(0o755)
        # Never the machine's own: a local host's `shutdown -h` must stop its instance, not the machine.
        shutdown = self.state_dir / "root" / boot.SHUTDOWN_PROGRAM
        shutdown.parent.mkdir(parents=True, exist_ok=True)
        shutdown.write_text(
            f'#!/bin/sh\nexec {sys.executable} -m sumpipe.local.boot shutdown {self.state_dir} "$@"\n'
        )
        shutdown.chmod(0o755)
        (self.state_dir / "root" / "etc" / "ssh" / "sshd_config").write_text(
            "\n".join(
                [
                    f"ListenAddress {ip}:22",
                    "HostKey /etc/ssh/ssh_host_ed25519_key",
                    "PidFile none",
                    f"AllowUsers {SSH_USER}",
                    "UsePAM no",
                    *SSHD_LOCKDOWN,
                    "",
                ]
            )
        )

    @property
    def host_key_path(self) -> Path:
        return self.state_dir / "root" / "etc" / "ssh" / "ssh_host_ed25519_key"

    @property
    def log_path(self) -> Path:
        return self.state_dir / "boot.log"

    @property
    def booted(self) -> bool:
        """Whether the running boot got past the user data (first boot) or the boot units: HOST_DIR/booted,
        which init writes then and stopping the host removes."""
        return self.running and (self.state_dir / "booted").exists()

    @property
    def user_data_status(self) -> int | None:
        """The exit status of the user data, once it has run (at the instance's first boot)."""
        return read_pid(self.state_dir / "user-data-status")

    @property
    def powered_off(self) -> bool:
        """The host shut itself down (`shutdown -h`): its instance is to be stopped."""
        return (self.state_dir / boot.POWERED_OFF).exists()

    def stop(self) -> None:
        super().stop()
        for mark in (boot.BOOTED, boot.SHUTDOWN_AT, boot.POWERED_OFF):
            (self.state_dir / mark).unlink(missing_ok=True)

    def bootstrap_log(self, tail_chars: int = 3000) -> str:
        path = self.state_dir / "root" / "var" / "log" / "sumpipe-bootstrap.log"
        try:
            return path.read_text(errors="replace")[-tail_chars:]
        except FileNotFoundError:
            return ""

    def _init_command(self, action: str, image: Path) -> list[str]:
        return [
            "ip", "netns", "exec", self.namespace, "unshare", "--mount", "--propagation", "private", "--",
            sys.executable, "-m", "sumpipe.local.boot", action, str(self.state_dir), str(image),
        ]  # fmt: skip

    def _command(self) -> list[str]:
        return self._init_command("boot", self.image)

    def bake(self, image: Path, timeout_s: float = 1800) -> int:
        """Run the user data's bake step on this host, into `image` (bound writable at the venv's
        place); its exit status. The host must be stopped."""
        with self.log_path.open("ab") as log:
            return subprocess.run(
                self._init_command("bake", image), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                timeout=timeout_s, check=False,
            ).returncode  # fmt: skip


def read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def pid_alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


class HostNetwork:
    """The set of local hosts of one stack, and (with namespaces) the bridge that joins them.

    Names: bridge `<prefix>-br0`, namespace `<prefix>-h<i>`, veth `<prefix>-v<i>` (its peer is
    `eth0` inside the namespace). The bridge holds the subnet's first address, which is also each
    namespace's default route, so a process on a host reaches services bound to the bridge address.
    Loopback mode (the subnet must then lie in 127.0.0.0/8) has no bridge: hosts reach 127.0.0.1.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        prefix: str = DEFAULT_PREFIX,
        subnet: str = DEFAULT_SUBNET,
        use_namespaces: bool | None = None,
    ) -> None:
        if not _PREFIX_PATTERN.fullmatch(prefix):
            raise ValueError(f"prefix {prefix!r} must be 1-8 lowercase letters or digits, first a letter")
        self.state_dir = Path(state_dir)
        self.prefix = prefix
        self.subnet = ipaddress.IPv4Network(subnet)
        if self.subnet.prefixlen > 22:
            raise ValueError("subnet must be /22 or larger (hosts start at <subnet>.1.10)")
        self.use_namespaces = namespaces_available() if use_namespaces is None else use_namespaces
        if self.use_namespaces and self.subnet.subnet_of(LOOPBACK):
            raise ValueError(f"subnet {subnet}: hosts in namespaces need a subnet outside 127.0.0.0/8")
        if not self.use_namespaces and not self.subnet.subnet_of(LOOPBACK):
            raise ValueError(f"subnet {subnet}: loopback hosts need a subnet inside 127.0.0.0/8")
        self.hosts: list[LocalHost] = []
        self._ssh_port: int | None = None

    @property
    def bridge(self) -> str:
        return f"{self.prefix}-br0"

    @property
    def gateway_ip(self) -> str:
        """Where hosts reach the machine (e.g. the emulator): the bridge address from inside their
        namespaces, 127.0.0.1 for loopback hosts."""
        return str(self.subnet.network_address + 1) if self.use_namespaces else "127.0.0.1"

    @property
    def ssh_port(self) -> int:
        """The port every host's sshd listens on (one for all: the functions have one ssh_port)."""
        if self._ssh_port is None:
            self._ssh_port = 22 if self.use_namespaces else _free_port_at(self.host_ip(0), LOOPBACK_SSH_PORT)
        return self._ssh_port

    @property
    def login_user(self) -> str:
        """Who the hosts' sessions run as: the unprivileged SSH_USER when we are root, else ourselves
        (a non-root sshd can only log in the user it runs as)."""
        return SSH_USER if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name

    def host_ip(self, index: int) -> str:
        return str(self.subnet.network_address + FIRST_HOST_OFFSET + index)

    def __enter__(self) -> HostNetwork:
        self.create()
        return self

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    def create(self) -> None:
        """Create the bridge (namespaces mode; idempotent). Refuses a subnet another stack routes."""
        if not self.use_namespaces or any(link["ifname"] == self.bridge for link in _ip_json("link", "show")):
            return
        for route in _ip_json("route", "show"):
            dst = route.get("dst", "default")
            if dst != "default" and ipaddress.ip_network(dst, strict=False).overlaps(self.subnet):
                raise HostError(
                    f"{self.subnet} overlaps route {dst} on {route.get('dev')} (another stack running?); "
                    "choose another subnet"
                )
        _ip_batch(
            [
                f"link add {self.bridge} type bridge",
                f"addr add {self.gateway_ip}/{self.subnet.prefixlen} dev {self.bridge}",
                f"link set {self.bridge} up",
            ]
        )

    def add_host(
        self,
        *,
        authorized_key: str,
        forced_command: str,
        environment: Mapping[str, str] | None = None,
    ) -> LocalHost:
        """A new (not yet started) host at the next IP: in its own namespace, or on loopback."""
        index = len(self.hosts)
        if self.use_namespaces:
            namespace, ip = self._add_namespace(index)
            host = LocalHost(self.state_dir / namespace, ip=ip, namespace=namespace,
                             authorized_key=authorized_key, forced_command=forced_command,
                             environment=environment)
        else:
            user = self.login_user
            if user == SSH_USER:
                ensure_ssh_user()
            elif Path(pwd.getpwnam(user).pw_shell).name in {"nologin", "false"}:
                raise HostError(f"user {user} has no login shell, so sshd can't run commands as it")
            host = LocalHost(self.state_dir / f"{self.prefix}-h{index}", ip=self.host_ip(index),
                             port=self.ssh_port, authorized_key=authorized_key,
                             forced_command=forced_command, environment=environment, user=user)
        self.hosts.append(host)
        return host

    def add_instance_host(
        self, *, user_data: bytes, image: Path, environment: Mapping[str, str]
    ) -> InstanceHost:
        """A new (not yet started) host at the next IP, booted from its instance's user data."""
        if not self.use_namespaces:
            raise HostError("hosts booted from their user data need network and mount namespaces (root)")
        namespace, ip = self._add_namespace(len(self.hosts))
        host = InstanceHost(self.state_dir / namespace, ip=ip, namespace=namespace, user_data=user_data,
                            image=image, environment=environment)
        self.hosts.append(host)
        return host

    def _add_namespace(self, index: int) -> tuple[str, str]:
        """Host `index`'s network namespace, joined to the bridge: (its name, the host's IP)."""
        self.create()
        ensure_ssh_user()
        namespace, veth, ip = f"{self.prefix}-h{index}", f"{self.prefix}-v{index}", self.host_ip(index)
        _ip_batch(
            [
                f"netns add {namespace}",
                f"link add {veth} type veth peer name eth0 netns {namespace}",
                f"link set {veth} master {self.bridge} up",
            ]
        )
        _ip_batch(
            [
                "link set lo up",
                f"addr add {ip}/{self.subnet.prefixlen} dev eth0",
                "link set eth0 up",
                f"route add default via {self.gateway_ip}",
            ],
            namespace=namespace,
        )
        return namespace, ip

    def teardown(self) -> None:
        """Stop every host and delete every namespace, veth and bridge with our prefix.

        Works from names and pid files alone, so it also cleans up after a crashed or earlier process.
        """
        for host in self.hosts:
            host.stop()
        self.hosts = []
        if self.state_dir.is_dir():  # loopback hosts, possibly started by another process
            for host_dir in self.state_dir.glob(f"{self.prefix}-h*"):
                pid = read_pid(host_dir / "sshd.pid")
                _kill_until_gone(lambda d=host_dir, p=pid: _loopback_host_pids(d, p), f"host {host_dir.name}")
                (host_dir / "sshd.pid").unlink(missing_ok=True)
        if not self.use_namespaces:  # (a namespaces stack may share our prefix: leave its links alone)
            return
        mine = re.compile(rf"{re.escape(self.prefix)}-(h|v)\d+|{re.escape(self.bridge)}")
        namespaces = [ns["name"] for ns in _ip_json("netns", "list") if mine.fullmatch(ns["name"])]
        for namespace in namespaces:
            _kill_until_gone(lambda namespace=namespace: namespace_pids(namespace), f"namespace {namespace}")
        links = [link["ifname"] for link in _ip_json("link", "show") if mine.fullmatch(link["ifname"])]
        commands = [f"link del {link}" for link in links] + [f"netns del {ns}" for ns in namespaces]
        if commands:
            _ip_batch(commands, force=True)
        leftovers = [link["ifname"] for link in _ip_json("link", "show") if mine.fullmatch(link["ifname"])]
        leftovers += [ns["name"] for ns in _ip_json("netns", "list") if mine.fullmatch(ns["name"])]
        if leftovers:
            raise HostError(f"teardown left {leftovers} behind")


# EC2 states in which the instance's processes exist; pending is left as it is (on its way up).
_UP_STATES = {"running"}
_DOWN_STATES = {"stopping", "stopped", "shutting-down", "terminated"}


class Reconciler:
    """Mirrors EC2 instance states (as the emulator reports them) onto local hosts, in a thread.

    `hosts` maps instance id -> LocalHost. running -> sshd started; stopping/stopped/terminated
    (or the instance gone) -> everything on the host killed; a host that powered itself off ->
    its instance stopped, as EC2 stops an instance that shuts itself down.
    """

    def __init__(self, ec2: Any, hosts: Mapping[str, LocalHost], *, interval: float = 0.15) -> None:
        self.ec2 = ec2
        self.hosts = dict(hosts)
        self.interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Reconciler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reconcile_once(self) -> None:
        if not self.hosts:
            return
        states: dict[str, str] = {}
        pages = self.ec2.get_paginator("describe_instances").paginate(
            Filters=[{"Name": "instance-id", "Values": list(self.hosts)}]
        )
        for page in pages:
            for reservation in page["Reservations"]:
                for instance in reservation["Instances"]:
                    states[instance["InstanceId"]] = instance["State"]["Name"]
        for instance_id, host in self.hosts.items():
            state = states.get(instance_id, "terminated")
            if state in _UP_STATES and host.powered_off:
                # The instance shut itself down: EC2 stops it (the default shutdown behaviour).
                logger.info("host powered off", extra={"instance_id": instance_id})
                self.ec2.stop_instances(InstanceIds=[instance_id])
                host.stop()
            elif state in _UP_STATES and not host.running:
                host.start()
            elif state in _DOWN_STATES and host.running:
                host.stop()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.reconcile_once()
            except Exception:  # the emulator restarting must not end the mirror
                logger.exception("reconcile failed")
            self._stop.wait(self.interval)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name="host-reconciler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
