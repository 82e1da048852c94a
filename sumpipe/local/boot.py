"""The init of a local worker host: what EC2 and the AMI do around the instance's user data.

Run as root inside the host's network namespace and a mount namespace of its own
(sumpipe/local/hosts.py InstanceHost starts it):

    python -m sumpipe.local.boot boot HOST_DIR IMAGE   at every start of the instance
    python -m sumpipe.local.boot bake HOST_DIR IMAGE   bake the image: the user data up to its bake step,
                                                       with IMAGE writable at /opt/sumpipe/venv

HOST_DIR holds the host's files: `root/` (its private view of every path the bootstrap writes, bound
over PRIVATE_PATHS, since the local hosts share one filesystem where each instance has its own),
`user-data` (the instance's, as EC2 reports it), `environment.json` (the machine's AWS endpoint
overrides: the emulator, and this host's instance metadata service) and `bin/systemctl` (the shim
in sumpipe/local/systemd.py). The image (a venv baked once and cached, like an AMI) is bound at
/opt/sumpipe/venv read-only.

A boot: sshd starts (the AMI's, with the host key made for this instance, as cloud-init makes one);
at the instance's first boot the user data runs, once, as cloud-init runs it; at later boots, the
units it enabled for multi-user.target run. Then HOST_DIR/booted appears, and init waits on sshd.

    python -m sumpipe.local.boot shutdown HOST_DIR ARGS...   the host's `shutdown` (first on its PATH,
                                                             sudo's included, at /usr/local/sbin)

A `shutdown -h` schedules a power-off in HOST_DIR/shutdown-at; when it is due, init ends sshd, leaves
HOST_DIR/powered-off and exits: the stack's mirror then stops the instance, as EC2 stops an instance
that shut itself down, and kills what was left running on the host.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from sumpipe.local import systemd

PRIVATE_PATHS = (
    "etc/sumpipe", "etc/ssh", "etc/systemd/system", "etc/sudoers.d",
    "opt/sumpipe", "var/lib/sumpipe", "var/log",
    "usr/local/sbin",  # where the host's `shutdown` is found first, by PATH and by sudo's secure_path
)  # fmt: skip
IMAGE_MOUNT = Path("/opt/sumpipe/venv")
MACHINE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SSHD = "/usr/sbin/sshd"
# Files init leaves in HOST_DIR for the stack.
USER_DATA_STATUS = "user-data-status"  # the first boot's user data exit status: it runs once per instance
BOOTED = "booted"
SSHD_PID = "sshd.pid"
BOOTSTRAP_LOG = "var/log/sumpipe-bootstrap.log"  # under root/: where the user data logs
SHUTDOWN_AT = "shutdown-at"  # the power-off `shutdown` scheduled: {"at": epoch s, ...}
SHUTDOWN_LOG = "shutdown.log"  # every `shutdown` request, one JSON line each (kept across boots)
POWERED_OFF = "powered-off"  # the host shut itself down: the stack stops its instance, as EC2 does
SHUTDOWN_PROGRAM = "usr/local/sbin/shutdown"  # under root/: the host's `shutdown`
INIT_POLL_S = 0.5


def _mount(*args: str) -> None:
    subprocess.run(["mount", *args], check=True)


def enter_private_root(host_dir: Path, image: Path, *, image_writable: bool) -> None:
    root = host_dir / "root"
    for relative in PRIVATE_PATHS:
        private, target = root / relative, Path("/") / relative
        private.mkdir(parents=True, exist_ok=True)
        target.mkdir(parents=True, exist_ok=True)  # an empty mount point on the machine
        _mount("--bind", str(private), str(target))
    IMAGE_MOUNT.mkdir(exist_ok=True)
    _mount("--bind", *([] if image_writable else ["-o", "ro"]), str(image), str(IMAGE_MOUNT))


def machine_environment(host_dir: Path) -> dict[str, str]:
    """What init's children get: a clean environment (nothing of the stack's process leaks in)."""
    overrides = json.loads((host_dir / "environment.json").read_text())
    return {
        "PATH": f"{host_dir / 'bin'}:{MACHINE_PATH}",
        "HOME": "/root",
        "USER": "root",
        "LOGNAME": "root",
        "LANG": "C.UTF-8",
        **overrides,
    }


def run_user_data(host_dir: Path) -> int:
    return subprocess.run(["/bin/bash", str(host_dir / "user-data")], stdin=subprocess.DEVNULL).returncode


def boot(host_dir: Path, image: Path) -> int:
    enter_private_root(host_dir, image, image_writable=False)
    os.environ.clear()
    os.environ.update(machine_environment(host_dir))
    for leftover in (BOOTED, SHUTDOWN_AT, POWERED_OFF):  # a boot starts with none scheduled
        (host_dir / leftover).unlink(missing_ok=True)
    with (host_dir / "sshd.log").open("ab") as log:
        sshd = subprocess.Popen(
            [SSHD, "-D", "-e", "-f", "/etc/ssh/sshd_config"], stdin=subprocess.DEVNULL, stdout=log, stderr=log
        )
    (host_dir / SSHD_PID).write_text(str(sshd.pid))
    status = host_dir / USER_DATA_STATUS
    if status.exists():
        systemd.start_wanted("multi-user.target")
    else:
        status.write_text(str(run_user_data(host_dir)))
    (host_dir / BOOTED).write_text("")
    while True:
        try:
            return sshd.wait(timeout=INIT_POLL_S)
        except subprocess.TimeoutExpired:
            if _power_off_due(host_dir):
                # What a poweroff is to the stack: init gone, and the mark saying it went by itself.
                (host_dir / POWERED_OFF).write_text(str(time.time()))
                sshd.terminate()
                sshd.wait()
                return 0


def _power_off_due(host_dir: Path) -> bool:
    try:
        return float(json.loads((host_dir / SHUTDOWN_AT).read_text())["at"]) <= time.time()
    except (FileNotFoundError, ValueError, KeyError):
        return False


def shutdown(host_dir: Path, args: list[str]) -> int:
    """The host's `shutdown` (systemd's syntax, the forms the bootstrap uses): `-h|-P [TIME] [WALL...]`
    schedules the power-off (TIME: now, +MINUTES or HH:MM; +1 when left out), replacing any earlier
    schedule; `-c` cancels it. Init powers the host off when the time comes."""
    now = time.time()
    options = [a for a in args if a.startswith("-")]
    words = [a for a in args if not a.startswith("-")]
    with (host_dir / SHUTDOWN_LOG).open("a") as log:
        log.write(json.dumps({"requested_at": now, "args": args}) + "\n")
    if "-c" in options:
        (host_dir / SHUTDOWN_AT).unlink(missing_ok=True)
        return 0
    if set(options) - {"-h", "-P", "--poweroff", "-H", "--halt", "--no-wall"}:
        print(f"shutdown: unsupported on a local host: {' '.join(options)}", file=sys.stderr)
        return 1
    when = words[0] if words else "+1"
    if when == "now":
        at = now
    elif when.startswith("+") and when[1:].isdigit():
        at = now + 60 * int(when[1:])
    elif len(when.split(":")) == 2 and all(part.isdigit() for part in when.split(":")):
        hour, minute = map(int, when.split(":"))
        today = time.localtime(now)
        at = time.mktime((*today[:3], hour, minute, 0, 0, 0, -1))
        at += 86400 if at <= now else 0
    else:
        print(f"shutdown: failed to parse time specification: {when}", file=sys.stderr)
        return 1
    staging = host_dir / (SHUTDOWN_AT + ".tmp")
    staging.write_text(json.dumps({"at": at, "requested_at": now, "args": args}))
    staging.rename(host_dir / SHUTDOWN_AT)
    print(f"Shutdown scheduled for {time.strftime('%a %Y-%m-%d %H:%M:%S %Z', time.localtime(at))}")
    return 0


def bake(host_dir: Path, image: Path) -> int:
    enter_private_root(host_dir, image, image_writable=True)
    os.environ.clear()
    os.environ.update({**machine_environment(host_dir), "SUMPIPE_BAKE_ONLY": "1"})
    return run_user_data(host_dir)


def main() -> None:
    action, host_dir = sys.argv[1], Path(sys.argv[2])
    if action == "shutdown":
        sys.exit(shutdown(host_dir, sys.argv[3:]))
    sys.exit({"boot": boot, "bake": bake}[action](host_dir, Path(sys.argv[3])))


if __name__ == "__main__":
    main()
