"""uv.lock is the project's one record of third-party versions: in step with pyproject.toml, and
what the environment running these tests has installed (scripts/setup syncs it exactly)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from packaging.utils import canonicalize_name

from sumpipe.ops import lock

ROOT = Path(__file__).resolve().parents[2]
UV = Path(sys.executable).with_name("uv")


def _lock_check(project: Path) -> subprocess.CompletedProcess[str]:
    # --offline: the check compares the lock with pyproject.toml and needs no index.
    return subprocess.run(
        [str(UV), "lock", "--check", "--offline", "--directory", str(project), "--python", sys.executable],
        capture_output=True, text=True, check=False,
        env={"PATH": "/usr/bin:/bin", "UV_PYTHON_DOWNLOADS": "never", "UV_NO_CACHE": "1"},
    )  # fmt: skip


def _project_copy(target: Path) -> Path:
    for name in ("pyproject.toml", "uv.lock", "setup.py", "README.md"):
        shutil.copy(ROOT / name, target / name)
    return target


def test_the_lock_is_in_step_with_pyproject(tmp_path: Path) -> None:
    result = _lock_check(_project_copy(tmp_path))
    assert result.returncode == 0, result.stderr


def test_a_dependency_added_without_locking_is_caught(tmp_path: Path) -> None:
    project = _project_copy(tmp_path)
    pyproject = project / "pyproject.toml"
    text = pyproject.read_text()
    pyproject.write_text(text.replace('"pyyaml>=6,<7",', '"pyyaml>=6,<7",\n    "left-pad-unlocked>=1",', 1))
    assert pyproject.read_text() != text
    # uv finds the lock out of step and tries to resolve again, which --offline refuses.
    result = _lock_check(project)
    assert result.returncode != 0, result.stderr


def test_the_environment_is_exactly_the_lock() -> None:
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    pinned = lock.locked_versions(ROOT, python)
    installed = {
        canonicalize_name(dist.metadata["Name"]): dist.version
        for dist in metadata.distributions()
        if canonicalize_name(dist.metadata["Name"]) != "sumpipe"
    }
    assert installed, "no distributions found"
    differing = {name: (have, pinned.get(name)) for name, have in installed.items()
                 if pinned.get(name) != have}
    assert not differing, f"installed (version, locked): {differing}"

