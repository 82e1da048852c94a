"""No credentials in the tracked tree: detect-secrets over every file git knows about (untracked but
not ignored files included, so a secret is caught before it is committed).

Reviewed false positives live in tests/functional/secrets.baseline (made with
`detect-secrets scan <file> > tests/functional/secrets.baseline`); in Python, prefer an inline
`# pragma: allowlist secret` on the line.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BASELINE = Path(__file__).with_name("secrets.baseline")


def _findings(results: dict[str, list[dict[str, object]]]) -> set[tuple[str, object, object]]:
    return {(path, f["type"], f["hashed_secret"]) for path, found in results.items() for f in found}


def test_tracked_tree_has_no_secrets() -> None:
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout")
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    # The baseline holds the reviewed findings' hashes, which look like secrets themselves.
    files = [f for f in listed if (ROOT / f).is_file() and ROOT / f != BASELINE]
    result = subprocess.run(
        # The tool installed beside this interpreter (the venv), whatever PATH says.
        [str(Path(sys.executable).with_name("detect-secrets")), "scan", *files],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    found = _findings(json.loads(result.stdout)["results"])
    reviewed = _findings(json.loads(BASELINE.read_text())["results"])
    assert found - reviewed == set(), "possible secrets:\n" + "\n".join(map(str, sorted(found - reviewed)))
