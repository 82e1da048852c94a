"""The default method's learned sentence scorer: weights given to a Summarizer change what it
keeps, bad weights are refused when it is made, and on the BBC dev half (the shared data set) the
shipped weights are what `scripts/evaluate.py --fit` learns and, cross-validated, beat the best
sumy peer by at least one ROUGE-2 point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from summarizer import Budget, Summarizer, scorer

ROOT = Path(__file__).resolve().parents[2]
EVALUATE = ROOT / "scripts" / "evaluate.py"
SAMPLE = ROOT / "tests" / "data" / "bbc_sample"
DEV = ROOT.parent / "shared" / "data" / "bbc-news-summary-dev"
needs_dev = pytest.mark.skipif(not DEV.is_dir(), reason=f"{DEV} not present (the shared data set)")

TEXT = (
    "Good morning to everyone reading this short note today. "
    "It rained a little while I was walking the dog outside. "
    "The kettle chips are thick, crunchy and salty. "
    "These kettle chips stay crunchy and thick to the last bag. "
    "I also bought a new hat."
)


def evaluate(*args: str, data: Path = SAMPLE) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EVALUATE), "--data", str(data), *args],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )


def test_weights_decide_what_is_kept() -> None:
    lead_only = Summarizer(budget=Budget(sentences=2), weights=[0, 1, 0, 0, 0]).summarize(TEXT)
    assert lead_only.positions == [0, 1]
    # Weighting only what the text repeats picks the two sentences about the chips.
    salient = Summarizer(budget=Budget(sentences=2), weights=[0, 0, 0, 1, 0]).summarize(TEXT)
    assert salient.positions == [2, 3]
    shipped = Summarizer(budget=Budget(sentences=2)).summarize(TEXT)
    assert (
        shipped.positions
        == Summarizer(budget=Budget(sentences=2), weights=scorer.WEIGHTS).summarize(TEXT).positions
    )


@pytest.mark.parametrize(
    ("weights", "error", "message"),
    [
        ([1, 2], ValueError, "weights must be 5 finite numbers (centrality, lead, length, salience, topic)"),
        ([0, 0, float("nan"), 0, 0], ValueError, "weights must be 5 finite numbers"),
        ("heavy", TypeError, "weights must be 5 numbers"),
    ],
)
def test_bad_weights_are_refused_when_made(weights: object, error: type, message: str) -> None:
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        Summarizer(weights=weights)


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
