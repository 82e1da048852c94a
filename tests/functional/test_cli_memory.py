"""The `summarize` CLI streams: peak memory does not grow with the input's size."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from cli_run import SUMMARIZE, read_csv

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
    # What it does add is a step, not a slope: the CSV is parsed 4 MiB at a time (120 MB of input
    # peaks within 1 MB of 40 MB's, both about 14 MB above 4 MB's).
    assert large_mb - small_mb < 25, (small_mb, large_mb)
    assert len((tmp_path / "large_out.csv").read_text().splitlines()) == 20_001


@pytest.mark.slow
@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_row_too_long_to_read_is_skipped_without_being_held(suffix: str, tmp_path: Path) -> None:
    """200 MB in one field: read past in bounded memory (pandas would hold it, and a copy of it)."""
    small = _write_input(tmp_path / "small.csv", 100)
    big = tmp_path / f"one_huge_row{suffix}"
    with big.open("w") as out:
        if suffix == ".csv":
            out.write('Id,Text\n1,"')
            quote_free = "Dust. " * (1 << 20)
            out.writelines(quote_free for _ in range(32))
            out.write('"\n2,Good tea. Fast shipping.\n')
        else:
            out.write('{"Id": 1, "Text": "')
            out.writelines("Dust. " * (1 << 20) for _ in range(32))
            out.write('"}\n{"Id": 2, "Text": "Good tea. Fast shipping."}\n')
    assert big.stat().st_size > 200_000_000
    small_mb = _peak_rss_mb(small, "-o", tmp_path / "small_out.csv")
    big_mb = _peak_rss_mb(big, "-o", tmp_path / "big_out.csv")
    assert big_mb - small_mb < 60, (small_mb, big_mb)
    statuses = read_csv(tmp_path / "big_out.csv")["status"].tolist()
    assert statuses[1] == "ok" and "over the 2,097,152-byte limit" in statuses[0]


@pytest.mark.slow
def test_a_parquet_dictionary_bomb_is_read_in_bounded_memory(tmp_path: Path) -> None:
    """3.5 KB on disk: one 1 MB text on each of 1,000 rows, stored once (a dictionary). Read 10,000
    rows at a time, as rows, that is 1 GB of Python strings (2.9 GB peak, measured)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    bomb = tmp_path / "bomb.parquet"
    megabyte = "A sentence here. " * 60_000
    pq.write_table(pa.table({"Id": list(range(1000)), "Text": [megabyte] * 1000}), bomb, compression="zstd")
    assert bomb.stat().st_size < 10_000
    small = tmp_path / "small.parquet"
    pq.write_table(pa.table({"Id": [1], "Text": ["Good tea. Fast shipping."]}), small)
    small_mb = _peak_rss_mb(small, "-o", tmp_path / "small_out.csv")
    bomb_mb = _peak_rss_mb(bomb, "-o", tmp_path / "bomb_out.csv")
    assert bomb_mb - small_mb < 100, (small_mb, bomb_mb)
    assert read_csv(tmp_path / "bomb_out.csv")["status"].str.startswith("error: text too long").all()
