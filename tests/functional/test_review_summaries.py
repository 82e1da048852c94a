"""Per-review summaries through the `summarize` CLI, as a reader judges them: they compress, and
they keep the sentence a review turns on rather than one that leans on it."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from cli_run import REVIEWS, read_csv, run_main, write_csv

from summarizer.split import split_sentences

# Amazon Fine Food Reviews, Id 1236, verbatim (title: "What?  No ingredient list?").
INGREDIENT_LIST = (
    "Where's the ingredient list for this product?  Thought all foods were supposed to have it.  "
    "Would never buy any food without first knowing what's in it!"
)


def test_the_question_a_review_turns_on_is_kept(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The other two sentences only make sense after it: "it" is the ingredient list."""
    source = write_csv(tmp_path / "in.csv", [{"Id": "1236", "Text": INGREDIENT_LIST}])
    assert run_main(capsys, source, "-o", tmp_path / "out.csv") == (0, "")
    [row] = read_csv(tmp_path / "out.csv").to_dict("records")
    assert row["summary"] == "Where's the ingredient list for this product?"
    assert (row["n_sentences_in"], row["n_sentences_out"], row["status"]) == ("3", "1", "ok")


def test_the_default_summary_compresses_and_sqrt_gives_the_original_length(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    default, original = tmp_path / "default.csv", tmp_path / "sqrt.csv"
    assert run_main(capsys, REVIEWS, "-o", default) == (0, "")
    assert run_main(capsys, REVIEWS, "--sqrt", "-o", original) == (0, "")
    texts = read_csv(REVIEWS)["Text"]
    n = [len(split_sentences(text)) for text in texts]
    short, long = read_csv(default), read_csv(original)
    assert short["n_sentences_out"].astype(int).tolist() == [
        min(math.ceil(k / 4), math.ceil(math.sqrt(k))) for k in n
    ]
    assert long["n_sentences_out"].astype(int).tolist() == [
        math.ceil(math.sqrt(k)) if k > 1 else k for k in n
    ]
    kept = short["summary"].str.len().sum() / texts.map(lambda t: len(" ".join(t.split()))).sum()
    was = long["summary"].str.len().sum() / texts.map(lambda t: len(" ".join(t.split()))).sum()
    assert kept < 0.45 < was, (kept, was)


def test_sqrt_is_one_budget_among_the_others(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_main(capsys, REVIEWS, "--sqrt", "--sentences", "2")
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
