"""The CSV reader parses its input a segment of whole rows at a time (so memory is bounded by bytes,
whatever the rows): cut anywhere between rows, the rows it reads are exactly pandas' rows of the
whole file. Property-tested on generated tables full of quotes, commas and line breaks, with
segments of a few bytes so nearly every row boundary is a cut."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from summarizer import io as table_io

FIELD = st.text(alphabet='ab ,"\n\r.é', max_size=12)
ROWS = st.lists(st.lists(FIELD, min_size=3, max_size=3), min_size=1, max_size=25)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=ROWS,
    terminator=st.sampled_from(["\n", "\r\n", "\r"]),
    quoting=st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]),
    blank_every=st.integers(min_value=0, max_value=4),
    segment_bytes=st.integers(min_value=1, max_value=64),
)
def test_segments_cut_between_rows_read_exactly_the_rows_of_the_whole_file(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    rows: list[list[str]],
    terminator: str,
    quoting: int,
    blank_every: int,
    segment_bytes: int,
) -> None:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator=terminator, quoting=quoting)
    writer.writerow(["Id", "Text", "Other"])
    for number, row in enumerate(rows):
        writer.writerow(row)
        if blank_every and number % blank_every == 0:
            text.write(terminator)  # a blank line between rows: pandas skips it
    path = tmp_path / "in.csv"
    path.write_bytes(text.getvalue().encode())
    try:
        expected = pd.read_csv(path, **table_io._CSV_OPTIONS)
    except pd.errors.ParserError:
        return  # not something pandas reads whole either
    monkeypatch.setattr(table_io, "SEGMENT_BYTES", segment_bytes)
    reader = table_io.open_table(str(path))
    try:
        chunks = list(reader.chunks(["Id", "Text", "Other"], 7))
    finally:
        reader.close()
    got = pd.concat(chunks, ignore_index=True) if chunks else expected.iloc[:0]
    assert table_io.ROW_ERROR not in got.columns
    pd.testing.assert_frame_equal(got.reset_index(drop=True), expected, check_dtype=False)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=ROWS,
    terminator=st.sampled_from(["\n", "\r\n"]),
    max_row_bytes=st.integers(min_value=24, max_value=60),
)
def test_a_row_over_the_limit_comes_out_in_its_place_as_an_error_and_every_other_row_as_it_was(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    rows: list[list[str]],
    terminator: str,
    max_row_bytes: int,
) -> None:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator=terminator, quoting=csv.QUOTE_ALL)
    writer.writerow(["Id", "Text", "Other"])
    writer.writerows(rows)
    path = tmp_path / "in.csv"
    path.write_bytes(text.getvalue().encode())
    expected = pd.read_csv(path, **table_io._CSV_OPTIONS)
    sizes = [len(line) for line in text.getvalue().encode().split(terminator.encode())[1:-1]]
    assume_one_line_rows = all("\n" not in field and "\r" not in field for row in rows for field in row)
    monkeypatch.setattr(table_io, "MAX_ROW_BYTES", max_row_bytes)
    monkeypatch.setattr(table_io, "SEGMENT_BYTES", 16)
    reader = table_io.open_table(str(path))
    try:
        got = pd.concat(list(reader.chunks(["Id", "Text", "Other"], 5)), ignore_index=True)
    finally:
        reader.close()
    assert len(got) == len(expected)  # every row accounted for, in its place
    errors = got[table_io.ROW_ERROR].tolist() if table_io.ROW_ERROR in got.columns else [None] * len(got)
    for position, error in enumerate(errors):
        if isinstance(error, str):
            assert got.iloc[position][["Id", "Text", "Other"]].isna().all()
            assert f"over the {max_row_bytes:,}-byte limit" in error
            if assume_one_line_rows:
                assert error.startswith(f"line {position + 2} is {sizes[position]:,} bytes")
        else:
            pd.testing.assert_series_equal(
                got.iloc[position][["Id", "Text", "Other"]], expected.iloc[position], check_names=False
            )


def test_rows_matched_whole_are_those_the_quote_tracking_loop_finds(monkeypatch: pytest.MonkeyPatch) -> None:
    # A row within one block is matched whole by one regex; the loop that tracks quotes must agree
    # on every input, malformed quoting, byte-order marks, long rows and tiny blocks included.
    import random

    monkeypatch.setattr(table_io, "MAX_ROW_BYTES", 40)
    pieces = [b"a", b",", b";", b'"', b'""', b"\n", b"\r", b"\r\n", b" ", b"\t", b"\xef\xbb\xbf"]
    rng = random.Random(0)
    for _ in range(3000):
        data = b"".join(rng.choices(pieces, k=rng.randint(0, 60)))
        delimiter = rng.choice([b",", b";", b"\t"])
        monkeypatch.setattr(table_io._CsvRows, "_BLOCK_BYTES", rng.randint(1, 80))
        matched = list(table_io._CsvRows(io.BytesIO(data), b"m:", delimiter)._rows)
        looped = table_io._CsvRows(io.BytesIO(data), b"m:", delimiter)
        looped._whole_row = re.compile(b"(?!)")  # matches nothing: every row goes through the loop
        assert matched == list(looped._split()), (data, delimiter)
