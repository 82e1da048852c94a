"""The versions uv.lock pins, for an environment other than this one.

uv.lock is the one record of every third-party version the project runs (scripts/setup installs
it exactly; scripts/upgrade-deps moves it). The artifacts built for other machines (the Lambda
layers, for CPython 3.12 on Amazon Linux; the workers' wheelhouse, for their Python) take their
versions from it as pip constraints, so a deploy ships what the tests ran, not what PyPI has
today. The lock is universal: where it holds two versions of a package (numpy for Python 3.11 and
for 3.12+, say), each carries the environments it is for, and the target's markers choose.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.markers import Marker
from packaging.utils import canonicalize_name

LOCK_FILE = "uv.lock"


class LockError(Exception):
    """uv.lock is missing, or pins nothing for a package an artifact needs."""


def target_environment(python_version: str, machine: str = "x86_64") -> dict[str, str]:
    """The marker variables of CPython `python_version` (X.Y) on Linux (Lambda, the workers)."""
    return {
        "implementation_name": "cpython",
        "implementation_version": f"{python_version}.0",
        "os_name": "posix",
        "platform_machine": machine,
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": "Linux",
        "platform_version": "",
        "python_full_version": f"{python_version}.0",
        "python_version": python_version,
        "sys_platform": "linux",
    }


def locked_versions(root: Path, python_version: str, machine: str = "x86_64") -> dict[str, str]:
    """Each locked package's version for that target: {canonical name: version}. The project itself
    (an editable source, not a release) is left out."""
    path = root / LOCK_FILE
    try:
        lock = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LockError(f"{path} not found: the artifacts take their versions from the lock") from None
    environment = target_environment(python_version, machine)
    versions: dict[str, str] = {}
    for package in lock.get("package", []):
        if "editable" in package.get("source", {}) or "version" not in package:
            continue
        markers = package.get("resolution-markers")
        if markers and not any(Marker(m).evaluate(environment) for m in markers):
            continue
        versions[canonicalize_name(package["name"])] = package["version"]
    return versions

