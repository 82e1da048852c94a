"""Product summaries through the `summarize` CLI answer "what do buyers say about this?": themes
with how many reviews say them and their stars, on real reviews of one product."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from cli_run import DATA, read_csv, run_main, run_script

from summarizer.split import split_sentences

# The 217 real reviews of Kettle Brand chips (B000G6RYNE) in the Amazon Fine Food Reviews.
KETTLE_CHIPS = DATA / "kettle_chips.csv"


@pytest.fixture
def kettle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> pd.DataFrame:
    code, err = run_main(
        capsys, KETTLE_CHIPS, "--group-by", "ProductId", "--themes", "-o", tmp_path / "products.csv"
    )
    assert (code, err) == (0, "")
    return read_csv(tmp_path / "products.csv")


def test_kettle_chips_themes_are_what_the_reviews_are_about(kettle: pd.DataFrame) -> None:
    assert (kettle["ProductId"] == "B000G6RYNE").all() and (kettle["n_rows"] == "217").all()
    assert 5 <= len(kettle) <= 10
    themes = [set(theme.split(", ")) for theme in kettle["theme"]]
    summary = " ".join(kettle["summary"]).lower()
    # crunch and thickness, what buyers of kettle chips talk about
    assert any(theme & {"crunchy", "crunch", "crispy"} for theme in themes), themes
    assert "thick" in summary
    assert any(theme & {"salt", "vinegar", "salty"} for theme in themes), themes
    # not a reviewer's story or aside (what the summary of pooled sentences used to pick)
    for aside in ("oregonian", "microbrews", "janet jackson", "white wine", "kosher"):
        assert aside not in summary
    # largest first, each a real share of the 217 reviews
    sizes = kettle["theme_rows"].astype(int)
    assert sizes.is_monotonic_decreasing and sizes.iloc[0] >= 40 and (sizes >= 3).all()


def test_kettle_chips_complaints_are_heard(kettle: pd.DataFrame) -> None:
    """39 of the 217 reviews give 1-2 stars: a theme they share is kept, with a complaint taken
    from one of them, and the star split says how the theme's reviews rated it."""
    reviews = pd.read_csv(KETTLE_CHIPS)
    low = reviews[reviews["Score"] <= 2]
    stars = kettle[[f"stars_{s}" for s in range(1, 6)]].astype(int)
    complained = kettle[(stars["stars_1"] + stars["stars_2"]) / stars.sum(axis=1) >= 0.25]
    assert len(complained) >= 1
    complaint_texts = " ".join(" ".join(low["Text"]).split())
    two_sided = complained[complained["n_sentences_out"] == "2"]
    assert len(two_sided) >= 1
    for summary in two_sided["summary"]:
        assert split_sentences(summary)[-1] in complaint_texts
    # mean stars are sortable numbers between the extremes
    assert kettle["stars"].astype(float).between(1, 5).all()


def test_no_stars_column_means_no_star_columns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reviews = pd.read_csv(KETTLE_CHIPS).drop(columns="Score")
    source = tmp_path / "no_stars.csv"
    reviews.to_csv(source, index=False)
    assert run_main(capsys, source, "--group-by", "ProductId", "--themes", "-o", tmp_path / "out.csv") == (
        0,
        "",
    )
    out = read_csv(tmp_path / "out.csv")
    assert not {"stars", "stars_1"} & set(out.columns)
    assert len(out) >= 5 and (out["n_sentences_out"] == "1").all()


def test_a_named_stars_column_and_a_missing_one(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    reviews = pd.read_csv(KETTLE_CHIPS).rename(columns={"Score": "rating"})
    source = tmp_path / "rated.csv"
    reviews.to_csv(source, index=False)
    args = (source, "--group-by", "ProductId", "--themes", "-o", tmp_path / "out.csv")
    assert run_main(capsys, *args, "--stars", "rating") == (0, "")
    assert read_csv(tmp_path / "out.csv")["stars_5"].astype(int).sum() > 0
    code, err = run_main(capsys, *args, "--stars", "Score")
    assert code == 2 and "stars column 'Score' not found" in err
    code, err = run_main(capsys, KETTLE_CHIPS, "--stars", "Score", "-o", tmp_path / "rows.csv")
    assert code == 2 and "--stars and --themes are for --group-by summaries" in err


def test_the_closing_line_counts_groups_and_their_theme_rows(tmp_path: Path) -> None:
    result = run_script(KETTLE_CHIPS, "--group-by", "ProductId", "--themes", "-o", tmp_path / "out.csv")
    assert result.returncode == 0
    rows = len(read_csv(tmp_path / "out.csv"))
    line = result.stderr.decode().strip().splitlines()[-1]
    assert line.startswith(f"1 group of ProductId ({rows} rows of themes) from 217 rows: 1 ok in ")


def test_one_row_per_product_says_the_themes_and_their_sentences(
    kettle: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Without --themes the product is one row: its themes with their sizes, its star split, and
    its summary made of the themes' sentences, largest theme first, 10 in all."""
    assert run_main(capsys, KETTLE_CHIPS, "--group-by", "ProductId", "-o", tmp_path / "one.csv") == (0, "")
    [row] = read_csv(tmp_path / "one.csv").to_dict("records")
    assert row["themes"] == "; ".join(f"{t.theme} ({t.theme_rows})" for t in kettle.itertuples())
    scores = pd.read_csv(KETTLE_CHIPS)["Score"]
    assert [int(row[f"stars_{s}"]) for s in range(1, 6)] == [(scores == s).sum() for s in range(1, 6)]
    said = split_sentences(row["summary"])
    assert len(said) == int(row["n_sentences_out"]) == 10
    by_theme = [s for summary in kettle["summary"] for s in split_sentences(summary)]
    assert said == by_theme[:10]
