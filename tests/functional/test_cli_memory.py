"""The `summarize` CLI streams: peak memory does not grow with the input's size."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from cli_run import SUMMARIZE

ROW = "{id},{blob},Good tea. Fast shipping. Would buy again from this seller.\n"
BLOB = "x" * 2000  # a wide column the CLI must read past but never keep


def _peak_rss_mb(*args: str | Path) -> float:
    """Run the console script and return its own peak resident set size (not its siblings')."""
    process = subprocess.Popen([str(SUMMARIZE), *map(str, args)], stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    assert process.returncode == 0, process.stderr.read() if process.stderr else ""
    return usage.ru_maxrss / 1024


def _write_input(path: Path, rows: int) -> Path:
    with path.open("w") as out:
        out.write("Id,Blob,Text\n")
        out.writelines(ROW.format(id=i, blob=BLOB) for i in range(rows))
    return path


@pytest.mark.slow
def test_peak_memory_stays_flat_from_4_to_40_megabytes_of_input(tmp_path: Path) -> None:
    small = _write_input(tmp_path / "small.csv", 2_000)
    large = _write_input(tmp_path / "large.csv", 20_000)
    assert large.stat().st_size > 40_000_000
    small_mb = _peak_rss_mb(small, "--chunk-rows", "1000", "-o", tmp_path / "small_out.csv")
    large_mb = _peak_rss_mb(large, "--chunk-rows", "1000", "-o", tmp_path / "large_out.csv")
    # Loading the 40 MB input whole would add well over 40 MB (pandas holds it as Python objects).
    assert large_mb - small_mb < 15, (small_mb, large_mb)
    assert len((tmp_path / "large_out.csv").read_text().splitlines()) == 20_001
