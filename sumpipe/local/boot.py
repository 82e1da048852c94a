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
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sumpipe.local import systemd

PRIVATE_PATHS = ("etc/sumpipe", "etc/ssh", "etc/systemd/system", "opt/sumpipe", "var/lib/sumpipe", "var/log")
IMAGE_MOUNT = Path("/opt/sumpipe/venv")
MACHINE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SSHD = "/usr/sbin/sshd"
# Files init leaves in HOST_DIR for the stack.
USER_DATA_STATUS = "user-data-status"  # the first boot's user data exit status: it runs once per instance
BOOTED = "booted"
SSHD_PID = "sshd.pid"
BOOTSTRAP_LOG = "var/log/sumpipe-bootstrap.log"  # under root/: where the user data logs


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
    (host_dir / BOOTED).unlink(missing_ok=True)
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
    return sshd.wait()


def bake(host_dir: Path, image: Path) -> int:
    enter_private_root(host_dir, image, image_writable=True)
    os.environ.clear()
    os.environ.update({**machine_environment(host_dir), "SUMPIPE_BAKE_ONLY": "1"})
    return run_user_data(host_dir)


def main() -> None:
    action, host_dir, image = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    sys.exit({"boot": boot, "bake": bake}[action](host_dir, image))


if __name__ == "__main__":
    main()
