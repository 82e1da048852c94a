"""The `summarize` CLI on real reviews: row accounting, formats, stdio, chunking, workers, budgets."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
from cli_run import OUTPUT_COLUMNS, REVIEWS, read_csv, run_main, run_script, write_csv

from summarizer.split import split_sentences

STATUSES = {"ok", "passthrough", "empty"}


@pytest.fixture(scope="module")
def reviews() -> pd.DataFrame:
    return pd.read_csv(REVIEWS, dtype=str, keep_default_na=False)


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """The reference output: CSV in, CSV out, one chunk, one process."""
    out = tmp_path_factory.mktemp("baseline") / "out.csv"
    assert run_script(REVIEWS, "-o", out).returncode == 0
    return read_csv(out)


def test_every_row_once_in_input_order_with_sentences_from_its_own_text(
    baseline: pd.DataFrame, reviews: pd.DataFrame
) -> None:
    assert list(baseline.columns) == OUTPUT_COLUMNS
    assert baseline["id"].tolist() == reviews["Id"].tolist()
    assert set(baseline["status"]) <= STATUSES
    assert "ok" in set(baseline["status"])
    for text, row in zip(reviews["Text"], baseline.itertuples(), strict=True):
        sentences = split_sentences(text)
        assert int(row.n_sentences_in) == len(sentences)
        assert 1 <= int(row.n_sentences_out) <= len(sentences)
        if row.status == "ok":  # the default budget: a quarter, rounded up, at most ceil(sqrt(n))
            n = len(sentences)
            assert int(row.n_sentences_out) == min(math.ceil(n / 4), math.ceil(math.sqrt(n)))
        assert "<br" not in row.summary
        assert row.summary in " ".join(sentences) or all(
            piece in sentences for piece in _pieces(row.summary, sentences)
        )


def _pieces(summary: str, sentences: list[str]) -> list[str]:
    """The input sentences the summary is made of, found greedily from its start."""
    found, rest = [], summary
    while rest:
        match = next((s for s in sentences if rest.startswith(s)), None)
        if match is None:
            return [rest]  # not made of input sentences: the caller's assertion fails on it
        found.append(match)
        rest = rest[len(match) :].removeprefix(" ")
    return found


def test_stdin_to_stdout_with_dash_matches_file_output(baseline: pd.DataFrame, tmp_path: Path) -> None:
    result = run_script("-", stdin=REVIEWS.read_bytes())
    assert result.returncode == 0, result.stderr
    (tmp_path / "stdout.csv").write_bytes(result.stdout)
    pd.testing.assert_frame_equal(read_csv(tmp_path / "stdout.csv"), baseline)
    assert result.stderr.startswith(b"50 rows: ")  # the closing line, and only it
    assert result.stderr.count(b"\n") == 1


@pytest.mark.parametrize("fmt", ["jsonl", "parquet"])
def test_jsonl_and_parquet_inputs_give_the_csv_result(
    fmt: str,
    reviews: pd.DataFrame,
    baseline: pd.DataFrame,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = tmp_path / f"reviews.{fmt}"
    if fmt == "jsonl":
        reviews.to_json(source, orient="records", lines=True, force_ascii=False)
    else:
        reviews.to_parquet(source)
    code, err = run_main(capsys, source, "-o", tmp_path / "out.csv")
    assert (code, err) == (0, "")
    pd.testing.assert_frame_equal(read_csv(tmp_path / "out.csv"), baseline)


def test_jsonl_and_parquet_outputs_hold_the_same_rows(
    baseline: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_main(capsys, REVIEWS, "-o", tmp_path / "out.jsonl") == (0, "")
    assert run_main(capsys, REVIEWS, "-o", tmp_path / "out.parquet") == (0, "")
    lines = (tmp_path / "out.jsonl").read_text(encoding="utf-8").splitlines()
    records = [json.loads(line) for line in lines]
    table = pq.read_table(tmp_path / "out.parquet")
    assert table.column_names == OUTPUT_COLUMNS
    expected = baseline.to_dict("records")
    for row in expected:
        row["n_sentences_in"] = int(row["n_sentences_in"])
        row["n_sentences_out"] = int(row["n_sentences_out"])
    assert records == expected
    assert table.to_pylist() == expected


def test_parquet_to_stdout_through_a_pipe(reviews: pd.DataFrame, tmp_path: Path) -> None:
    result = run_script("-", "--output-format", "parquet", stdin=REVIEWS.read_bytes())
    assert result.returncode == 0, result.stderr
    (tmp_path / "out.parquet").write_bytes(result.stdout)
    assert pq.read_table(tmp_path / "out.parquet").column("id").to_pylist() == reviews["Id"].tolist()


def test_stdin_format_is_sniffed(reviews: pd.DataFrame, baseline: pd.DataFrame, tmp_path: Path) -> None:
    jsonl = reviews.to_json(orient="records", lines=True).encode()
    result = run_script("-", stdin=jsonl)
    assert result.returncode == 0, result.stderr
    (tmp_path / "out.csv").write_bytes(result.stdout)
    pd.testing.assert_frame_equal(read_csv(tmp_path / "out.csv"), baseline)


def test_many_small_chunks_give_the_single_chunk_output(
    baseline: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for fmt in ("csv", "jsonl"):
        out = tmp_path / f"chunked.{fmt}"
        assert run_main(capsys, REVIEWS, "--chunk-rows", "7", "-o", out) == (0, "")
    assert (tmp_path / "chunked.csv").read_bytes() == _baseline_bytes(tmp_path, capsys)
    assert len((tmp_path / "chunked.jsonl").read_text().splitlines()) == len(baseline)


def _baseline_bytes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> bytes:
    assert run_main(capsys, REVIEWS, "-o", tmp_path / "single.csv") == (0, "")
    return (tmp_path / "single.csv").read_bytes()


@pytest.mark.slow
def test_two_workers_give_the_one_worker_output(tmp_path: Path) -> None:
    one = run_script(REVIEWS, "--chunk-rows", "6", "-o", tmp_path / "one.csv")
    two = run_script(REVIEWS, "--chunk-rows", "6", "--workers", "2", "-o", tmp_path / "two.csv")
    assert one.returncode == two.returncode == 0, two.stderr
    assert (tmp_path / "two.csv").read_bytes() == (tmp_path / "one.csv").read_bytes()


def test_sentences_budget(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(capsys, REVIEWS, "--sentences", "1", "-o", tmp_path / "out.csv") == (0, "")
    out = read_csv(tmp_path / "out.csv")
    assert set(out["n_sentences_out"]) == {"1"}
    assert (out["status"] == "ok").sum() == (out["n_sentences_in"] != "1").sum()


def test_ratio_budget(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_main(capsys, REVIEWS, "--ratio", "0.5", "-o", tmp_path / "out.csv") == (0, "")
    out = read_csv(tmp_path / "out.csv")
    for n_in, n_out in zip(
        out["n_sentences_in"].astype(int), out["n_sentences_out"].astype(int), strict=True
    ):
        assert n_out == max(1, math.ceil(0.5 * n_in))


def test_sentences_and_ratio_are_exclusive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_main(capsys, REVIEWS, "--sentences", "2", "--ratio", "0.5")
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err


GROUP_COLUMNS = ["ProductId", "n_rows", "theme", "theme_rows", "share"]
STAR_COLUMNS = ["stars", "stars_1", "stars_2", "stars_3", "stars_4", "stars_5"]


def test_group_by_product_one_row_per_group_in_first_seen_order(
    reviews: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_main(
        capsys, REVIEWS, "--group-by", "ProductId", "--chunk-rows", "9", "-o", tmp_path / "g.csv"
    )
    assert (code, err) == (0, "")
    out = read_csv(tmp_path / "g.csv")
    # the input has a Score column: each group's star split comes with it
    assert list(out.columns) == ["ProductId", "n_rows", "themes", *STAR_COLUMNS, *OUTPUT_COLUMNS[1:]]
    assert out["ProductId"].tolist() == list(dict.fromkeys(reviews["ProductId"]))
    assert out["n_rows"].astype(int).tolist() == [
        (reviews["ProductId"] == product).sum() for product in out["ProductId"]
    ]
    for row in out.itertuples():
        scores = reviews["Score"][reviews["ProductId"] == row.ProductId].astype(int)
        assert [int(getattr(row, f"stars_{s}")) for s in range(1, 6)] == [
            (scores == s).sum() for s in range(1, 6)
        ]
    big = out[out["n_rows"] == "15"]
    assert len(big) == 2
    assert (big["status"] == "ok").all()
    # 15 reviews pooled: far more sentences in than any one review has, and the capped default
    # budget, min(10, ceil(sqrt(distinct sentences))), out: the themes' sentences, largest first
    n_in = big["n_sentences_in"].astype(int)
    assert (n_in > 40).all()
    assert big["n_sentences_out"].astype(int).tolist() == [min(10, math.ceil(math.sqrt(n))) for n in n_in]
    for row in big.itertuples():
        themes = re.findall(r"([^;(]+) \((\d+)\)", row.themes)
        assert themes, row.themes
        sizes = [int(n) for _, n in themes]
        assert sizes == sorted(sizes, reverse=True) and sizes[0] <= 15
        first = split_sentences(row.summary)[0].lower()
        assert any(word in first for word in themes[0][0].strip().split(", "))


def test_group_by_themes_gives_a_row_per_theme(
    reviews: pd.DataFrame, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, err = run_main(
        capsys, REVIEWS, "--group-by", "ProductId", "--themes", "--chunk-rows", "9", "-o", tmp_path / "g.csv"
    )
    assert (code, err) == (0, "")
    out = read_csv(tmp_path / "g.csv")
    # the input has a Score column: the star split comes with it
    assert list(out.columns) == GROUP_COLUMNS + STAR_COLUMNS + OUTPUT_COLUMNS[1:]
    assert out["ProductId"].drop_duplicates().tolist() == list(dict.fromkeys(reviews["ProductId"]))
    for product, rows in out.groupby("ProductId", sort=False):
        group = reviews[reviews["ProductId"] == product]
        assert (rows["n_rows"].astype(int) == len(group)).all()
        words = [set(re.findall(r"[a-z]+", text.lower())) for text in group["Text"]]
        for row in rows.itertuples():
            if not row.theme:  # a group without themes: one row, its best sentences
                assert len(rows) == 1 and int(row.theme_rows) == len(group)
                continue
            assert row.status == "ok"
            theme = row.theme.split(", ")
            # a theme's rows are the group's rows that use one of its words (or their plurals)
            users = [i for i, used in enumerate(words) if any(w in used or w + "s" in used for w in theme)]
            assert int(row.theme_rows) == len(users), row.theme
            assert float(row.share) == pytest.approx(len(users) / len(group), abs=1e-3)
            scores = group["Score"].astype(int).iloc[users]
            assert [int(getattr(row, f"stars_{s}")) for s in range(1, 6)] == [
                (scores == s).sum() for s in range(1, 6)
            ]
            assert float(row.stars) == pytest.approx(scores.mean(), abs=0.01)
            said = split_sentences(row.summary)
            assert int(row.n_sentences_out) == len(said) >= 1
            text = " ".join(" ".join(group["Text"]).split())
            assert all(sentence in text for sentence in said)
            assert any(w in sentence.lower() for w in theme for sentence in said)
    big = out[out["n_rows"] == "15"]
    assert set(big["ProductId"]) == {p for p, n in reviews["ProductId"].value_counts().items() if n == 15}
    assert (big["theme"] != "").all()
    # themes largest first
    for _, rows in big.groupby("ProductId"):
        assert rows["theme_rows"].astype(int).is_monotonic_decreasing


def test_group_by_takes_no_method(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run_main(capsys, REVIEWS, "--group-by", "ProductId", "--method", "kmeans")
    assert exit_info.value.code == 2
    assert "--method kmeans does not apply to --group-by" in capsys.readouterr().err


def test_group_summary_leaves_out_repeated_and_near_duplicate_sentences(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    great = "coffee is really great"
    reviews = [
        ("P1", f"This {great}. The beans arrived fresh and well sealed. Shipping took a week."),
        ("P2", "Nice tea. Too sweet for me."),
        ("P1", f"This {great}! My wife prefers green tea though. The price is fair."),
        ("P1", f"this {great}. I brew a pot every morning before work. The bag reseals."),
        ("P1", f"This {great.upper()}... We will order again. The aroma fills the kitchen."),
        # not the same words, but the same meaning: its embedding is a near-duplicate
        ("P1", f"The {great}. Our dog ignores it entirely. Decaf would be welcome."),
    ]
    rows = [{"ProductId": product, "Text": text} for product, text in reviews]
    source = write_csv(tmp_path / "in.csv", rows)
    code, err = run_main(capsys, source, "--group-by", "ProductId", "-o", tmp_path / "g.csv")
    assert (code, err) == (0, "")
    p1 = read_csv(tmp_path / "g.csv").iloc[0]
    assert (p1["ProductId"], p1["n_rows"], p1["status"]) == ("P1", "5", "ok")
    # 15 sentences, the four spellings of "This coffee is really great" counted once
    assert p1["n_sentences_in"] == "12"
    # what four of the five reviews say is the most typical sentence: picked, but only once
    # (pooling the reviews into one text picks "This coffee is really great." and "...great!")
    assert p1["summary"].lower().count(great) == 1
    assert int(p1["n_sentences_out"]) == len(split_sentences(p1["summary"])) == 4


def test_id_is_the_row_number_without_an_id_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_csv(tmp_path / "in.csv", [{"Text": "One. Two words here. Three more words here."}] * 3)
    assert run_main(capsys, source, "-o", tmp_path / "out.csv") == (0, "")
    assert read_csv(tmp_path / "out.csv")["id"].tolist() == ["0", "1", "2"]


def test_custom_text_and_id_columns_keep_ids_verbatim(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write_csv(
        tmp_path / "in.csv",
        [{"key": "007", "body": "Short one."}, {"key": "NA", "body": "Another short text."}],
    )
    code, _ = run_main(
        capsys, source, "--text-column", "body", "--id-column", "key", "-o", tmp_path / "out.csv"
    )
    assert code == 0
    out = read_csv(tmp_path / "out.csv")
    assert out["id"].tolist() == ["007", "NA"]
    assert out["summary"].tolist() == ["Short one.", "Another short text."]


def test_no_progress_bar_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    result = run_script(REVIEWS, "-o", tmp_path / "out.csv")
    assert result.returncode == 0
    [line] = result.stderr.decode().splitlines()  # the closing line, no bar
    assert line.startswith("50 rows: ")
