"""The `summarize` CLI on hostile or broken input: one-line errors or per-row statuses, never a traceback."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from cli_run import OUTPUT_COLUMNS, REVIEWS, SUMMARIZE, read_csv, run_main, run_script, write_csv

from summarizer import Budget, Summarizer, Summary
from summarizer.batch import summarize_texts

THREE_SENTENCES = "The tea is fresh and fragrant. The tin keeps it dry. Shipping took only two days."


def _assert_one_line_error(stderr: str | bytes, *fragments: str) -> None:
    text = stderr.decode() if isinstance(stderr, bytes) else stderr
    assert "Traceback" not in text
    lines = text.strip().splitlines()
    assert len(lines) == 1, text
    assert lines[0].startswith("summarize: error: ")
    for fragment in fragments:
        assert fragment in lines[0]


def test_missing_text_column_names_it_and_lists_the_available_ones(tmp_path: Path) -> None:
    result = run_script(REVIEWS, "--text-column", "Body", "-o", tmp_path / "out.csv")
    assert result.returncode == 2
    _assert_one_line_error(result.stderr, "'Body'", "Id, ProductId, UserId", "Summary, Text")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("flag", ["--id-column", "--group-by"])
def test_missing_id_or_group_column(flag: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_main(capsys, REVIEWS, flag, "Nope", "-o", tmp_path / "out.csv")
    assert code == 2
    _assert_one_line_error(err, "'Nope'", "available columns: Id,")


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_empty_file_is_a_clear_error(suffix: str, tmp_path: Path) -> None:
    source = tmp_path / f"empty{suffix}"
    source.write_bytes(b"")
    result = run_script(source, "-o", tmp_path / "out.csv")
    assert result.returncode == 2
    _assert_one_line_error(result.stderr, "is empty")


def test_blank_lines_only_csv_is_a_clear_error(tmp_path: Path) -> None:
    source = tmp_path / "blank.csv"
    source.write_bytes(b"\n\n\n")
    result = run_script(source)
    assert result.returncode == 2
    _assert_one_line_error(result.stderr, "no header")


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_header_only_input_gives_an_empty_output_with_header(
    suffix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.csv"
    source.write_text("Id,Text\n")
    out = tmp_path / f"out{suffix}"
    assert run_main(capsys, source, "-o", out) == (0, "")
    if suffix == ".csv":
        assert out.read_text() == ",".join(OUTPUT_COLUMNS) + "\n"
    elif suffix == ".jsonl":
        assert out.read_bytes() == b""
    else:
        frame = pd.read_parquet(out)
        assert (list(frame.columns), len(frame)) == (OUTPUT_COLUMNS, 0)


def test_invalid_utf8_bytes_are_decoded_as_cp1252_and_the_row_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "mixed.csv"
    source.write_bytes(
        b"Id,Text\n"
        + "1,Caf\u00e9 au lait is great.\n".encode()  # valid UTF-8
        + b'2,"Caf\xe9 au lait, \x93smooth\x94 and sweet."\n'  # Windows-1252 bytes
        + b"3,Plain ASCII text.\n"
    )
    assert run_main(capsys, source, "-o", tmp_path / "out.csv") == (0, "")
    out = read_csv(tmp_path / "out.csv")
    assert out["id"].tolist() == ["1", "2", "3"]
    assert out["summary"].tolist() == [
        "Café au lait is great.",
        "Café au lait, “smooth” and sweet.",
        "Plain ASCII text.",
    ]


def test_utf8_bom_header_still_finds_the_id_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "bom.csv"
    source.write_bytes(b"\xef\xbb\xbfId,Text\n42,Hello there.\n")
    assert run_main(capsys, source, "-o", tmp_path / "out.csv") == (0, "")
    assert read_csv(tmp_path / "out.csv")["id"].tolist() == ["42"]


def test_megabyte_text_gets_a_too_long_status_and_the_run_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    huge = (THREE_SENTENCES + " ") * (1_000_000 // (len(THREE_SENTENCES) + 1))
    source = write_csv(tmp_path / "in.csv", [{"Id": "a", "Text": THREE_SENTENCES}, {"Id": "b", "Text": huge}])
    assert run_main(capsys, source, "-o", tmp_path / "out.csv") == (0, "")
    out = read_csv(tmp_path / "out.csv")
    assert out["status"].tolist() == ["ok", f"error: text too long ({len(huge)} chars > 200000)"]
    assert out.loc[1, "summary"] == ""


def test_over_long_row_fails_its_group_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rows = [
        {"ProductId": "P1", "Text": THREE_SENTENCES},
        {"ProductId": "P2", "Text": "x" * 101},
        {"ProductId": "P1", "Text": "The lid is sturdy."},
        {"ProductId": "P2", "Text": "Fine."},
    ]
    source = write_csv(tmp_path / "in.csv", rows)
    code, err = run_main(
        capsys, source, "--group-by", "ProductId", "--max-chars", "100", "-o", tmp_path / "g.csv"
    )
    assert (code, err) == (0, "")
    out = read_csv(tmp_path / "g.csv")
    assert out["ProductId"].tolist() == ["P1", "P2"]
    assert out["n_rows"].tolist() == ["2", "2"]
    assert out["status"].tolist() == ["ok", "error: text too long (101 chars > 100)"]
    assert out.loc[0, "n_sentences_in"] == "4"


def test_megabyte_text_is_summarized_when_the_limit_is_lifted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    huge = (THREE_SENTENCES + " ") * (1_000_000 // (len(THREE_SENTENCES) + 1))
    source = write_csv(tmp_path / "in.csv", [{"Id": "b", "Text": huge}])
    code, _ = run_main(capsys, source, "--max-chars", "0", "--sentences", "3", "-o", tmp_path / "out.csv")
    assert code == 0
    out = read_csv(tmp_path / "out.csv")
    assert out["status"].tolist() == ["ok"]
    assert out["n_sentences_out"].tolist() == ["3"]


def test_missing_text_is_empty_and_numbers_are_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.csv"
    source.write_text('Id,Text\n1,\n2,""\n3,42\n4,NaN\n')
    assert run_main(capsys, source, "-o", tmp_path / "out.csv") == (0, "")
    out = read_csv(tmp_path / "out.csv")
    assert out["status"].tolist() == ["empty", "empty", "passthrough", "passthrough"]
    assert out["summary"].tolist() == ["", "", "42", "NaN"]


def test_jsonl_nulls_and_numbers(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "in.jsonl"
    source.write_text('{"Id": 1, "Text": null}\n\n{"Id": 2, "Text": 3.5}\n{"Id": 3}\n')
    assert run_main(capsys, source, "-o", tmp_path / "out.csv") == (0, "")
    out = read_csv(tmp_path / "out.csv")
    assert out["id"].tolist() == ["1", "2", "3"]
    assert out["status"].tolist() == ["empty", "passthrough", "empty"]
    assert out["summary"].tolist() == ["", "3.5", ""]


def test_malformed_csv_row_is_an_error_with_its_line_and_no_partial_output(tmp_path: Path) -> None:
    lines = ["Id,Text"] + [f'{i},"Row {i} is fine."' for i in range(1, 40)] + ["40,too,many,fields"]
    source = tmp_path / "bad.csv"
    source.write_text("\n".join(lines) + "\n")
    result = run_script(source, "--chunk-rows", "10", "-o", tmp_path / "out.csv")
    assert result.returncode == 2
    _assert_one_line_error(result.stderr, "line 41", "Expected 2 fields", "saw 4")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["bad.csv"]


def test_invalid_jsonl_line_is_an_error_with_its_line(tmp_path: Path) -> None:
    source = tmp_path / "bad.jsonl"
    source.write_text('{"Id": 1, "Text": "Fine."}\n{"Id": 2, "Text": "unterminated}\n')
    result = run_script(source)
    assert result.returncode == 2
    _assert_one_line_error(result.stderr, "line 2", "invalid JSON")


def test_not_a_parquet_file(tmp_path: Path) -> None:
    source = tmp_path / "fake.parquet"
    source.write_bytes(b"Id,Text\n1,hello\n")
    result = run_script(source)
    assert result.returncode == 2
    _assert_one_line_error(result.stderr, "not a readable Parquet file")


def test_missing_input_file(tmp_path: Path) -> None:
    result = run_script(tmp_path / "nope.csv")
    assert result.returncode == 2
    _assert_one_line_error(result.stderr, "nope.csv", "No such file")


def test_unexpected_failure_is_one_line_with_nonzero_exit() -> None:
    """A full disk under standard output is nothing the input can fix: exit 1, one line."""
    with open("/dev/full", "wb") as full:
        result = subprocess.run(
            [SUMMARIZE, REVIEWS], stdout=full, stderr=subprocess.PIPE, timeout=120, check=False
        )
    assert result.returncode == 1
    _assert_one_line_error(result.stderr, "No space left on device")


class _FailsOnMarker(Summarizer):
    """A stand-in engine: the real one, except that it raises on texts containing BOOM.

    A mock because no real text is known to make the engine raise; this checks that one failing
    text costs only its own row.
    """

    def summarize_many(self, texts: list[str], budget: Budget | None = None) -> list[Summary]:  # type: ignore[override]
        if any("BOOM" in text for text in texts):
            raise RuntimeError("engine exploded\non BOOM")
        return super().summarize_many(texts, budget)


def test_a_row_that_makes_the_engine_raise_gets_an_error_status_and_the_rest_are_summarized() -> None:
    engine = _FailsOnMarker()
    results = summarize_texts(engine, [THREE_SENTENCES, "BOOM. It broke.", None, "Short."], max_chars=0)
    assert results["status"] == ["ok", "error: engine exploded on BOOM", "empty", "passthrough"]
    assert results["summary"][3] == "Short."
    assert results["summary"][0] != ""


def test_parquet_integer_ids_with_nulls_and_numeric_text(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.parquet"
    pd.DataFrame(
        {"Id": pd.array([7, None, 9], dtype="Int64"), "Text": [THREE_SENTENCES, None, "12"]}
    ).to_parquet(source)
    assert run_main(capsys, source, "-o", tmp_path / "out.csv") == (0, "")
    out = read_csv(tmp_path / "out.csv")
    assert out["id"].tolist() == ["7", "", "9"]
    assert out["status"].tolist() == ["ok", "empty", "passthrough"]


def test_a_csv_without_a_line_break_is_refused_after_a_bounded_peek(tmp_path: Path) -> None:
    """The header peek grows only to 1 MiB: a 64 MiB "line" is refused, not read whole."""
    source = tmp_path / "one-line.csv"
    with source.open("wb") as out:
        for _ in range(64):
            out.write(b"x," * (1 << 19))
    result = run_script(source, "-o", tmp_path / "out.csv")
    assert result.returncode == 2
    _assert_one_line_error(result.stderr, "no CSV header row in the first 1,048,576 bytes")
    assert not (tmp_path / "out.csv").exists()


def _rows_with_two_over_the_row_limit() -> list[tuple[str, str]]:
    """Rows of (id, text): a quoted multi-line text with quotes, a 5 MB text, one just over the
    2 MiB row limit, and ordinary rows between and after them."""
    return [
        ("a", 'A "quoted" word.\nA second line. ' + THREE_SENTENCES),
        ("b", "Far too long. " * 360_000),
        ("c", THREE_SENTENCES),
        ("d", "x" * (2 << 20)),
        ("e", THREE_SENTENCES),
    ]


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_row_over_the_row_limit_gets_an_error_naming_its_line_and_the_rows_after_it_are_summarized(
    suffix: str, tmp_path: Path
) -> None:
    rows = _rows_with_two_over_the_row_limit()
    source = tmp_path / f"in{suffix}"
    if suffix == ".csv":
        write_csv(source, [{"Id": row_id, "Text": text} for row_id, text in rows])
        lines = {"b": 4, "d": 6}  # the header, then "a" spans lines 2 and 3
    else:
        source.write_text("".join(json.dumps({"Id": row_id, "Text": text}) + "\n" for row_id, text in rows))
        lines = {"b": 2, "d": 4}
    result = run_script(source, "--chunk-rows", "2", "-o", tmp_path / "out.csv")
    assert result.returncode == 0, result.stderr
    out = read_csv(tmp_path / "out.csv")
    assert len(out) == len(rows)  # every input row accounted for
    assert out["status"].tolist()[::2] == ["ok", "ok", "ok"]
    assert out["n_sentences_in"][0] == "5"  # the quoted, two-line text was read whole
    sizes = {row_id: source.read_bytes().split(b"\n")[lines[row_id] - 1] for row_id in lines}
    for position, row_id in ((1, "b"), (3, "d")):
        status = out["status"][position]
        assert status.startswith(f"error: line {lines[row_id]} is "), status
        assert f"{len(sizes[row_id]):,} bytes, over the 2,097,152-byte limit" in status
        assert out["summary"][position] == "" and out["id"][position] == ""


def test_a_row_limit_overrun_in_unquoted_fields_and_at_the_end_of_input(tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    commas = ",".join(["w"] * 1_200_000)  # 2.4 MB of fields, no quotes, in a 2-column table
    source.write_text(f"Id,Text\n1,{THREE_SENTENCES}\n2,{commas}\n3,{THREE_SENTENCES}\n4,{'z' * (3 << 20)}")
    result = run_script(source, "-o", tmp_path / "out.csv")
    assert result.returncode == 0, result.stderr
    statuses = read_csv(tmp_path / "out.csv")["status"].tolist()
    assert statuses[0] == statuses[2] == "ok"
    assert (
        statuses[1]
        == f"error: line 3 is {len(commas) + 2:,} bytes, over the 2,097,152-byte limit for one row; not read"
    )
    assert statuses[3].startswith("error: line 5 is 3,145,730 bytes")


def test_an_over_long_row_fails_its_group_and_counts_in_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "in.jsonl"
    records = [{"ProductId": "P1", "Text": THREE_SENTENCES}, {"ProductId": "P1", "Text": "y" * (3 << 20)}]
    source.write_text("".join(json.dumps(record) + "\n" for record in records))
    assert run_main(capsys, source, "--group-by", "ProductId", "-o", tmp_path / "g.csv") == (0, "")
    out = read_csv(tmp_path / "g.csv")
    # The unread row's group is unknown: it is its own group, "", with the reason.
    assert out["ProductId"].tolist() == ["P1", ""]
    assert out["status"][0] == "ok" and out["status"][1].startswith("error: line 2 is ")


def test_a_parquet_row_over_the_row_limit_is_not_read_and_the_rest_are(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = tmp_path / "in.parquet"
    texts = [THREE_SENTENCES, "Dust. " * 600_000, THREE_SENTENCES]  # 3.6 MB in the middle row
    pq.write_table(pa.table({"Id": [1, 2, 3], "Text": texts}), source, compression="zstd")
    result = run_script(source, "-o", tmp_path / "out.csv")
    assert result.returncode == 0, result.stderr
    out = read_csv(tmp_path / "out.csv")
    assert out["status"].tolist()[::2] == ["ok", "ok"]
    assert (
        out["status"][1]
        == "error: row 2 is 3,600,000 bytes, over the 2,097,152-byte limit for one row; not read"
    )


def test_a_parquet_row_group_too_big_to_decode_is_refused_from_its_metadata(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = tmp_path / "in.parquet"
    megabyte = "A sentence of text. " * 52_429
    table = pa.table({"Id": list(range(260)), "Text": [megabyte] * 260})
    pq.write_table(table, source, compression="zstd", use_dictionary=False)  # 260 MB plain, tiny file
    assert source.stat().st_size < 5_000_000
    result = run_script(source, "-o", tmp_path / "out.csv")
    assert result.returncode == 2
    _assert_one_line_error(
        result.stderr, "row group 0 holds", "over the 268,435,456-byte limit", "smaller row groups"
    )
