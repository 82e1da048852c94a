"""scripts/evaluate.py run as a user runs it, on five real BBC articles in tests/data/bbc_sample."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "evaluate.py"
SAMPLE = ROOT / "tests" / "data" / "bbc_sample"
METHODS = ["default", "kmeans", "lead", "lexrank"]


def evaluate(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--data", str(SAMPLE), *args],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=ROOT,
    )


def test_markdown_table_has_every_method_with_scores() -> None:
    run = evaluate("--limit", "3")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert lines[0] == "| method | ROUGE-1 F1 | ROUGE-2 F1 | ROUGE-L F1 | articles | seconds |"
    rows = [line.strip("|").split("|") for line in lines[2:]]
    assert [row[0].strip() for row in rows] == METHODS
    for row in rows:
        scores = [float(cell) for cell in row[1:4]]
        assert all(0 < value <= 1 for value in scores), row
        assert int(row[4]) == 3


def test_json_covers_all_articles_including_latin1() -> None:
    # politics/001 in the sample is Latin-1 encoded: reading it must fall back, not crash.
    run = evaluate("--json", "--methods", "lead,lexrank")
    assert run.returncode == 0, run.stderr
    rows = json.loads(run.stdout)
    assert [row["method"] for row in rows] == ["lead", "lexrank"]
    for row in rows:
        assert row["articles"] == 5
        assert 0 < row["rouge2"] <= row["rouge1"] <= 1
        assert 0 < row["rougeL"] <= 1


def test_by_category_scores_each_category_after_the_totals() -> None:
    run = evaluate("--json", "--methods", "lead,default", "--by-category")
    assert run.returncode == 0, run.stderr
    rows = json.loads(run.stdout)
    categories = ["business", "entertainment", "politics", "sport", "tech"]  # one article each
    expected = ["lead", "default"] + [f"{m} ({c})" for c in categories for m in ("lead", "default")]
    assert [row["method"] for row in rows] == expected
    assert all(row["articles"] == 1 for row in rows[2:])
    for method, total in zip(("lead", "default"), rows[:2], strict=True):
        per_category = [row["rouge1"] for row in rows[2:] if row["method"].startswith(f"{method} ")]
        assert total["rouge1"] == pytest.approx(sum(per_category) / len(per_category))


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--methods", "lead,textrank"], "unknown method(s) textrank"),
        (["--limit", "0"], "--limit must be at least 1"),
    ],
)
def test_bad_options_are_refused(args: list[str], message: str) -> None:
    run = evaluate(*args)
    assert run.returncode == 2
    assert message in run.stderr


def test_missing_dataset_says_where_it_looked(tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, str(SCRIPT), "--data", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1
    assert f"{tmp_path / 'nope'}: expected 'News Articles/' and 'Summaries/' folders" in run.stderr
