"""scripts/evaluate.py run as a user runs it, on five real BBC articles in tests/data/bbc_sample;
and, where the shared data set is present, on the BBC dev half: the default scorer's shipped
weights are what `--fit` learns there and, cross-validated, beat the best sumy peer by at least
one ROUGE-2 point. With --feedback, on a feedback export built here from real review texts."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from summarizer import scorer, split_sentences
from sumpipe.feedback import APPROVE, CORRECT, EXPORT_COLUMNS, REJECT, Decision, export_rows

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "evaluate.py"
SAMPLE = ROOT / "tests" / "data" / "bbc_sample"
METHODS = ["default", "kmeans", "lead", "lexrank"]
# The BBC dev half, in the shared data set (not in a fresh clone).
DEV = ROOT.parent / "shared" / "data" / "bbc-news-summary-dev"
needs_dev = pytest.mark.skipif(not DEV.is_dir(), reason=f"{DEV} not present (the shared data set)")


def evaluate(*args: str, data: Path | None = SAMPLE) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *(["--data", str(data)] if data else []), *args],
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
    blank = lines.index("")  # then the comparison of default with lexrank
    rows = [line.strip("|").split("|") for line in lines[2:blank]]
    assert lines[blank + 1] == "| comparison | ROUGE-2 difference | 95% CI | articles |"
    assert lines[blank + 3].startswith("| default vs lexrank | ")
    assert [row[0].strip() for row in rows] == METHODS
    for row in rows:
        for cell in row[1:4]:  # "0.6912 [0.6801, 0.7020]": the mean, then its 95% interval
            mean, low, high = map(float, re.fullmatch(r" (\S+) \[(\S+), (\S+)\] ", cell).groups())
            assert 0 < low <= mean <= high <= 1, row
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
        (["--methods", "lead,bogus"], "unknown method(s) bogus"),
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


def test_every_peer_both_ways_with_intervals_and_default_against_each_best() -> None:
    run = evaluate("--json", "--methods", "default", "--peers")
    assert run.returncode == 0, run.stderr
    rows = json.loads(run.stdout)
    scored = {row["method"]: row for row in rows if "rouge1" in row}
    peers = ["lexrank", "textrank", "lsa", "luhn"]
    assert set(scored) == {"default", "lead", *peers, *(f"{peer}-stop" for peer in peers)}
    for row in scored.values():
        for kind in ("rouge1", "rouge2", "rougeL"):
            low, high = row[f"{kind}_ci"]
            assert 0 <= low <= row[kind] <= high <= 1
    comparisons = [row for row in rows if "rouge2_difference" in row]
    assert len(comparisons) == len(peers)
    for peer, row in zip(peers, comparisons, strict=True):
        best = row["method"].removeprefix("default vs ")
        assert best in (peer, f"{peer}-stop")
        assert scored[best]["rouge2"] == max(scored[peer]["rouge2"], scored[f"{peer}-stop"]["rouge2"])
        assert row["rouge2_difference"] == pytest.approx(scored["default"]["rouge2"] - scored[best]["rouge2"])
        low, high = row["rouge2_difference_ci"]
        assert low <= row["rouge2_difference"] <= high


def test_cross_validation_and_fit_run_on_any_dataset_folder() -> None:
    run = evaluate("--json", "--methods", "default-cv,default", "--peers")
    assert run.returncode == 0, run.stderr
    rows = json.loads(run.stdout)
    assert {row["method"] for row in rows if "rouge2" in row} >= {"default-cv", "default", "textrank-stop"}
    comparisons = [row["method"] for row in rows if "rouge2_difference" in row]
    assert comparisons and all(method.startswith("default-cv vs ") for method in comparisons)
    fit = evaluate("--fit")
    assert fit.returncode == 0, fit.stderr
    assert fit.stdout.startswith("WEIGHTS = np.array([") and fit.stdout.count(",") == 5  # 5 weights, dtype


@needs_dev
def test_the_shipped_weights_are_what_fit_learns_on_the_dev_half() -> None:
    run = evaluate("--fit", data=DEV)
    assert run.returncode == 0, run.stderr
    learned = [float(w) for w in run.stdout.split("[", 1)[1].split("]", 1)[0].split(",")]
    np.testing.assert_allclose(learned, scorer.WEIGHTS, atol=1e-3)


@needs_dev
def test_cross_validated_default_beats_the_best_peer_by_a_rouge2_point() -> None:
    # TextRank with stop words is the best sumy peer on the dev half (README: every peer both ways).
    run = evaluate("--json", "--methods", "default-cv,textrank-stop", data=DEV)
    assert run.returncode == 0, run.stderr
    rows = json.loads(run.stdout)
    (comparison,) = [row for row in rows if "rouge2_difference" in row]
    assert comparison["method"] == "default-cv vs textrank-stop"
    assert comparison["rouge2_difference"] >= 0.01, comparison
    assert comparison["rouge2_difference_ci"][0] > 0, comparison


REVIEWS = ROOT / "tests" / "data" / "cli_reviews.csv"
T0 = 1_800_000_000.0


def review_texts(count: int) -> list[str]:
    """The first `count` real review texts of at least five sentences."""
    with REVIEWS.open(newline="", encoding="utf-8") as file:
        texts = [row["Text"] for row in csv.DictReader(file) if len(split_sentences(row["Text"])) >= 5]
    return texts[:count]


def decision(text: str, what: str, shown: str, corrected: str = "", at: float = 0.0) -> Decision:
    return Decision(
        text_id=f"row-{len(text)}",  # distinct for these texts; the page uses a batch row's id or a hash
        text=text,
        method="default",
        summary_shown=shown,
        decision=what,
        corrected_summary=corrected,
        reviewer="rita",
        time=T0 + at,
        reason="off topic" if what == REJECT else "",
    )


def write_export(path: Path, decisions: list[Decision]) -> Path:
    path.write_text("".join(export_rows(decisions)), encoding="utf-8")
    return path


def lead(text: str, k: int) -> str:
    return " ".join(split_sentences(text)[:k])


def last(text: str, k: int) -> str:
    return " ".join(split_sentences(text)[-k:])


def feedback_export(path: Path) -> Path:
    """Six texts. Every reference a text ends up with is its first k sentences (what `lead`
    picks), so lead scores 1.0 only if the right decisions are taken and the budget is k; the
    summaries that must not be used are the last sentences instead."""
    a, b, c, d, e, f = review_texts(6)
    b = b.replace(". ", '.\n"Quoted", with commas. ', 1)  # a newline, quotes and commas round-trip
    return write_export(
        path,
        [
            decision(a, APPROVE, lead(a, 2)),
            decision(b, APPROVE, lead(b, 3), at=1),
            decision(c, CORRECT, last(c, 2), corrected=lead(c, 1), at=2),
            decision(d, APPROVE, last(d, 2), at=3),  # then rejected: left out
            decision(d, REJECT, last(d, 2), at=10),
            decision(e, CORRECT, last(e, 2), corrected=lead(e, 2), at=20),  # later than the next row
            decision(e, REJECT, last(e, 2), at=5),
            decision(f, APPROVE, last(f, 2), at=4),  # then corrected
            decision(f, CORRECT, last(f, 2), corrected=lead(f, 4), at=30),
        ],
    )


def test_feedback_export_is_the_reference_and_every_row_is_accounted_for(tmp_path: Path) -> None:
    export = feedback_export(tmp_path / "feedback.csv")
    run = evaluate(
        "--feedback", str(export), "--json", "--methods", "default,kmeans,lead", "--peers", data=None
    )
    assert run.returncode == 0, run.stderr
    assert (
        f"{export}: 9 decisions on 6 texts: 5 texts used (2 approved, 3 corrected), 1 rejected (its latest "
        "decision), 0 without reference sentences; 3 decisions superseded by a later one on the same text"
    ) in run.stderr.splitlines()
    rows = json.loads(run.stdout)
    scored = {row["method"]: row for row in rows if "rouge1" in row}
    peers = ["lexrank", "textrank", "lsa", "luhn"]
    assert set(scored) == {"default", "kmeans", "lead", *peers, *(f"{peer}-stop" for peer in peers)}
    assert all(row["articles"] == 5 for row in rows)
    for kind in ("rouge1", "rouge2", "rougeL"):
        assert scored["lead"][kind] == pytest.approx(1.0), kind
        assert scored["lead"][f"{kind}_ci"] == pytest.approx([1.0, 1.0])
    assert scored["default"]["rouge2"] <= scored["lead"]["rouge2"]
    assert [row["method"].split(" vs ")[0] for row in rows if "rouge2_difference" in row] == ["default"] * 4


def test_feedback_limit_takes_the_first_texts(tmp_path: Path) -> None:
    export = feedback_export(tmp_path / "feedback.csv")
    run = evaluate("--feedback", str(export), "--json", "--methods", "lead", "--limit", "2", data=None)
    assert run.returncode == 0, run.stderr
    assert run.stderr.rstrip().endswith("; evaluating the first 2")
    (row,) = json.loads(run.stdout)
    assert row["articles"] == 2 and row["rouge2"] == pytest.approx(1.0)


def bad_export(kind: str, path: Path) -> Path:
    text = review_texts(1)[0]
    if kind == "reviews":  # some other CSV
        return REVIEWS
    if kind == "columns":
        with path.open("w", newline="", encoding="utf-8") as file:
            writer = csv.writer(file)
            writer.writerow([c for c in EXPORT_COLUMNS if c not in ("decision", "corrected_summary")])
            writer.writerow(["x"] * (len(EXPORT_COLUMNS) - 2))
        return path
    if kind == "empty":
        return write_export(path, [])
    if kind == "rejected":
        return write_export(path, [decision(text, APPROVE, lead(text, 2)), decision(text, REJECT, "", at=1)])
    raise AssertionError(kind)


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("reviews", "not a feedback export, missing column(s) text_id, text, method, summary_shown, "),
        ("columns", "not a feedback export, missing column(s) decision, corrected_summary"),
        ("empty", "no decisions in the export"),
        (
            "rejected",
            "1 rejected (its latest decision), 0 without reference sentences; 1 decisions superseded",
        ),
    ],
)
def test_feedback_that_cannot_be_evaluated_is_refused_in_one_line(
    tmp_path: Path, kind: str, message: str
) -> None:
    export = bad_export(kind, tmp_path / "feedback.csv")
    run = evaluate("--feedback", str(export), "--methods", "lead", data=None)
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and message in run.stderr, run.stderr
    assert run.stderr.startswith(f"{export}: ")
    if kind == "rejected":
        assert run.stderr.rstrip().endswith(": no text has a reference to evaluate against")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fit"], "--fit: not with --feedback"),
        (["--by-category"], "--by-category: not with --feedback"),
        (["--methods", "lead,default-cv"], "--methods default-cv: not with --feedback"),
        (["--data", str(SAMPLE)], "argument --data: not allowed with argument --feedback"),
    ],
)
def test_options_that_need_the_bbc_articles_are_refused_with_feedback(
    tmp_path: Path, args: list[str], message: str
) -> None:
    export = feedback_export(tmp_path / "feedback.csv")
    run = evaluate("--feedback", str(export), *args, data=None)
    assert run.returncode == 2
    assert message in run.stderr
