"""scripts/evaluate_reviews.py, run as a user runs it, on real reviews kept in tests/data: the
weak-reference checks (review titles) give a score in [0, 1] with an interval for every method,
and the paired differences; a file without titles is refused in one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).parents[2]
SCRIPT = ROOT / "scripts" / "evaluate_reviews.py"
DATA = ROOT / "tests" / "data"


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_every_method_scored_on_review_and_product_titles(tmp_path: Path) -> None:
    # the kettle chips (one product, 217 reviews) and the 50 CLI reviews (no product with 20)
    both = pd.concat([pd.read_csv(DATA / "kettle_chips.csv"), pd.read_csv(DATA / "cli_reviews.csv")])
    source = tmp_path / "reviews.csv"
    both.to_csv(source, index=False)
    result = run("--reviews", source, "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    methods = {(row["check"].split()[0], row["method"]) for row in rows}
    assert {("review", m) for m in ("default", "kmeans", "lead", "default - lead")} <= methods
    assert {("product", m) for m in ("themes", "pooled", "lead", "themes - pooled")} <= methods
    for row in rows:
        low, high = row["ci"]
        assert low <= row["mean"] <= high
        if " - " not in row["method"]:
            assert low >= 0 and high <= 1
    assert next(r for r in rows if r["method"] == "themes")["n"] == 1


def test_a_file_without_titles_is_refused(tmp_path: Path) -> None:
    source = tmp_path / "untitled.csv"
    pd.read_csv(DATA / "cli_reviews.csv").drop(columns="Summary").to_csv(source, index=False)
    result = run("--reviews", source)
    assert result.returncode == 2
    assert result.stderr.strip() == f"{source}: no column Summary"
