"""The local worker image: the venv that deploy/bootstrap.sh bakes (Python and the project's
dependencies), made once and cached, as an AMI is baked once.

Baked by running the instance's own user data up to its bake step (SUMPIPE_BAKE_ONLY=1) on a local
host, from the wheelhouse the stack put in the artifacts bucket, with the instance role's
credentials. Cached in $SUMPIPE_IMAGE_CACHE (default ~/.cache/sumpipe/images), one directory per
image id: a hash of what the bake installs (the project's declared dependencies, the worker Python)
and how (the bake step's text). A change to either bakes a new image; a code change does not (each
instance installs the project itself at its first boot). Concurrent stacks bake one image once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sumpipe.local.boot import MACHINE_PATH
from sumpipe.ops import package

CACHE_ENV = "SUMPIPE_IMAGE_CACHE"
BOOTSTRAP = package.REPO_ROOT / "deploy" / "bootstrap.sh"
BAKED_MARK = ".sumpipe-baked"  # written by the bake step into the venv
_BAKE_STEP = re.compile(r"^(fetch|bake)\(\) \{\n.*?^\}\n", re.MULTILINE | re.DOTALL)


class ImageError(RuntimeError):
    pass


def machine_python() -> str:
    """X.Y of the machine's python3 (the one the hosts' boot scripts find on their PATH)."""
    done = subprocess.run(
        ["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True, text=True, env={"PATH": MACHINE_PATH}, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise ImageError(f"no python3 on {MACHINE_PATH} for the worker hosts: {done.stderr.strip()}")
    return done.stdout.strip()


def image_id(worker_python: str) -> str:
    bake_step = "".join(m.group(0) for m in _BAKE_STEP.finditer(BOOTSTRAP.read_text(encoding="utf-8")))
    if "bake()" not in bake_step:
        raise ImageError(f"{BOOTSTRAP} has no bake() step")
    identity = json.dumps([package.project_requirements(), worker_python, bake_step])
    return hashlib.sha256(identity.encode()).hexdigest()[:16]


def image_path(worker_python: str) -> Path:
    root = Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "sumpipe" / "images")
    return root / f"py{worker_python}-{image_id(worker_python)}"


def is_baked(path: Path) -> bool:
    return (path / BAKED_MARK).is_file()


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure_baked(path: Path, host: Any, progress: Callable[[str], None]) -> None:
    """Bake the image at `path` on `host` (a stopped InstanceHost) unless it is baked already."""
    if is_baked(path):
        return
    with _exclusive(path):
        if is_baked(path):  # another stack baked it while we waited
            return
        staging = path.with_name(f"{path.name}.partial-{os.getpid()}")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(mode=0o755)
        progress(f"baking the worker image {path.name} (once; about a minute)")
        started = time.monotonic()
        status = host.bake(staging)
        if status != 0 or not is_baked(staging):
            shutil.rmtree(staging, ignore_errors=True)
            raise ImageError(f"baking the worker image failed (exit {status}):\n{host.bootstrap_log()}")
        staging.rename(path)
        progress(f"baked the worker image in {time.monotonic() - started:.0f} s")
