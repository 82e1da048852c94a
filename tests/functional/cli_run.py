"""Helpers for the `summarize` CLI tests: run it as users do, read what it wrote."""

from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from summarizer.cli import main

DATA = Path(__file__).parents[1] / "data"
# 50 real Amazon fine food reviews (15 with <br /> tags), two products with 15 reviews each.
REVIEWS = DATA / "cli_reviews.csv"
SUMMARIZE = Path(sys.executable).with_name("summarize")  # the installed console script
OUTPUT_COLUMNS = ["id", "summary", "n_sentences_in", "n_sentences_out", "status"]


def run_main(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str]:
    """main([..., "--quiet"]) in this process: (exit code, stderr), which holds only errors."""
    code = main([*map(str, args), "--quiet"])
    return code, capsys.readouterr().err


def run_script(*args: str | Path, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    """The console script in a child process, stdout/stderr captured as bytes."""
    return subprocess.run(
        [str(SUMMARIZE), *map(str, args)], input=stdin, capture_output=True, timeout=120, check=False
    )


def read_csv(path: Path) -> pd.DataFrame:
    """An output CSV as strings, exactly as written (empty cells stay "")."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def write_csv(path: Path, rows: list[dict[str, object]]) -> Path:
    # Every field quoted: pandas leaves a bare "\r" unquoted otherwise, which no reader survives.
    pd.DataFrame(rows).to_csv(path, index=False, quoting=csv.QUOTE_ALL)
    return path
