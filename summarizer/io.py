"""Streaming table readers and writers for the `summarize` CLI (CSV, JSON Lines, Parquet).

Every reader yields pandas DataFrames of at most `chunk_rows` rows, and of rows read from at most
SEGMENT_BYTES of input, holding only the columns asked for, so memory stays bounded whatever the
input. A CSV row or JSON line over MAX_ROW_BYTES is not read: it comes out as a row whose ROW_ERROR
column says so (with its line number and size), its other columns missing, and reading goes on. Every writer
appends chunks as they come; a file output is written under a temporary name and renamed into
place only when the whole run succeeded, so a failed run never leaves a half-written file.

Text decoding: input is read as UTF-8 (a leading BOM is ignored) unless it says otherwise (a
UTF-16 or UTF-32 byte-order mark, or UTF-16 without one) or the caller names its encoding; input
in another encoding is transcoded to UTF-8 as it streams, so the readers only ever see UTF-8. Real
exports mix encodings, so a byte sequence that is not valid UTF-8 is decoded byte by byte as
Windows-1252 (Latin-1 for the five bytes cp1252 leaves undefined) instead of failing: the row is
kept and the usual culprits (é, ’, “ ” from legacy Windows text) come out right.

CSV delimiter: a comma, unless the caller names one or the header row holds more tabs,
semicolons or pipes (outside quotes) than commas.
"""

from __future__ import annotations

import codecs
import io
import itertools
import json
import os
import re
import secrets
import sys
import tempfile
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from summarizer.csv_safety import neutralize_formula

FORMATS = ("csv", "jsonl", "parquet")
EXTENSIONS = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".tsv": "csv",
    ".tab": "csv",
}
STDIO = "-"
# The delimiters recognised in a CSV header when none is given; the first wins a tie.
DELIMITERS = (",", "\t", ";", "|")
UTF8 = "utf-8"

# cp1252 has no characters at these five bytes; Latin-1 maps them to the C1 controls.
_CP1252_UNDEFINED = frozenset({0x81, 0x8D, 0x8F, 0x90, 0x9D})
DECODE_ERRORS = "summarize-cp1252-fallback"


def _cp1252_fallback(error: UnicodeError) -> tuple[str, int]:
    if not isinstance(error, UnicodeDecodeError):
        raise error
    bad = error.object[error.start : error.end]
    text = "".join(chr(byte) if byte in _CP1252_UNDEFINED else bytes([byte]).decode("cp1252") for byte in bad)
    return text, error.end


codecs.register_error(DECODE_ERRORS, _cp1252_fallback)


def decode_text(data: bytes) -> str:
    """UTF-8 with the per-byte cp1252 fallback described in the module docstring."""
    return data.decode("utf-8", errors=DECODE_ERRORS)


# A CSV row or JSON line longer than this is not read (the longest real review is ~20k characters;
# the summarizer refuses texts over 200,000 characters anyway, at most 800 KB of UTF-8).
MAX_ROW_BYTES = 2 << 20
# Rows are parsed from at most this much input at a time: a chunk of `chunk_rows` long rows could
# otherwise hold gigabytes.
SEGMENT_BYTES = 4 << 20
# The column a reader adds to a chunk when one of its rows could not be read: the reason, else None.
ROW_ERROR = "\0row_error"


class InputError(Exception):
    """The input can't be read as asked (missing column, empty file, malformed row...).

    The message is one line meant for the user; the CLI prints it and exits with status 2.
    """


def format_for_path(path: str) -> str | None:
    """The format implied by a file name's extension, or None when it implies none."""
    return EXTENSIONS.get(Path(path).suffix.lower())


def check_encoding(name: str) -> str:
    """`name` as Python's codec name; InputError for an encoding Python doesn't know."""
    try:
        return codecs.lookup(name).name
    except LookupError as exc:
        raise InputError(f"unknown encoding {name!r}") from exc


def check_delimiter(text: str) -> str:
    """A one-character delimiter; `\\t` and `tab` mean a tab. InputError otherwise."""
    delimiter = {"\\t": "\t", "tab": "\t"}.get(text.lower(), text)
    if len(delimiter) != 1 or not delimiter.isascii() or delimiter in '"\r\n' or delimiter.isalnum():
        raise InputError(f"delimiter must be one ASCII punctuation character, tab or space; got {text!r}")
    return delimiter


def detect_encoding(head: bytes) -> str:
    """UTF-8 unless the first bytes say otherwise: a UTF-32 or UTF-16 byte-order mark, or UTF-16
    without one (text that is mostly ASCII has a NUL in every other byte; UTF-8 text has none)."""
    if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return "utf-32"
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16"
    sample = head[: len(head) // 2 * 2]
    pairs = len(sample) // 2
    if pairs >= 2:
        even, odd = sample[0::2].count(0), sample[1::2].count(0)
        if odd >= pairs * 0.4 and even == 0:
            return "utf-16-le"
        if even >= pairs * 0.4 and odd == 0:
            return "utf-16-be"
    return UTF8


# Magic numbers of files that are often handed over for a table, and what to do about them.
_NOT_A_TABLE = (
    (b"PK\x03\x04", "a zip archive (an Excel .xlsx workbook?); export the sheet as CSV"),
    (b"\xd0\xcf\x11\xe0", "an old Excel .xls workbook; export the sheet as CSV"),
    (b"\x1f\x8b", "gzip-compressed; decompress it first (gunzip -c FILE | summarize -)"),
)


def sniff_format(head: bytes) -> str:
    """Guess the format of a stream (stdin) from its first bytes; CSV unless it looks otherwise."""
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.removeprefix(codecs.BOM_UTF8).lstrip().startswith(b"{"):
        return "jsonl"
    return "csv"


class _PeekableStream(io.RawIOBase):
    """A read-only byte stream that can be peeked at its start.

    Peeked bytes are replayed to the real reader, which is what lets the CLI read the header of
    (or sniff the format of) stdin and then hand the whole stream to pandas.
    """

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self._raw = raw
        self._head = b""
        self._offset = 0

    def readable(self) -> bool:
        return True

    def peek_head(self, size: int) -> bytes:
        """At least `size` bytes from the start of the stream (fewer only at end of stream)."""
        while len(self._head) < size:
            more = self._raw.read(size - len(self._head))
            if not more:
                break
            self._head += more
        return self._head

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        if self._offset < len(self._head):
            data = self._head[self._offset : self._offset + len(buffer)]
            self._offset += len(data)
        else:
            data = self._raw.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class _Utf8Transcoder(io.RawIOBase):
    """A byte stream in `encoding`, read as UTF-8: decoded and re-encoded as it streams, so memory
    holds one block of it. A byte sequence invalid in `encoding` is an InputError naming where."""

    def __init__(self, raw: io.RawIOBase, encoding: str, where: str) -> None:
        super().__init__()
        self._raw = raw
        self._encoding = encoding
        self._where = where
        self._decoder = codecs.getincrementaldecoder(encoding)("strict")
        self._pending = memoryview(b"")
        self._finished = False
        self.bytes_in = 0  # of the input, decoded so far
        self.bytes_out = 0  # of UTF-8, produced so far

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        while not self._pending and not self._finished:
            block = self._raw.read(1 << 20)
            held = len(self._decoder.getstate()[0])  # bytes of a character split by the last block
            try:
                text = self._decoder.decode(block, final=not block)
            except UnicodeDecodeError as exc:
                offset = self.bytes_in - held + exc.start
                raise InputError(
                    f"{self._where} is not valid {self._encoding} at byte {offset:,} ({exc.reason}); "
                    "give its encoding with --encoding"
                ) from exc
            self.bytes_in += len(block)
            self._finished = not block
            self._pending = memoryview(text.encode(UTF8))
            self.bytes_out += len(self._pending)
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        return size


# (columns, chunk_rows) -> DataFrames of those columns, at most chunk_rows rows each
ChunkSource = Callable[[list[str], int], Iterator[pd.DataFrame]]


@dataclass
class TableReader:
    """An opened input table: its column names, and its rows as a stream of DataFrames."""

    format: str
    columns: list[str]
    _chunk_source: ChunkSource = field(repr=False)
    _handles: list[IO[bytes]] = field(default_factory=list, repr=False)
    # The input's row count when the format records it (Parquet), else None.
    _known_rows: int | None = field(default=None, repr=False)
    # For estimating the rows of a file that doesn't record them: its size, and the share of the
    # bytes the readers saw (UTF-8) per byte of it (2 bytes of UTF-16 ASCII are 1 of UTF-8).
    _size: int | None = field(default=None, repr=False)
    _transcoder: _Utf8Transcoder | None = field(default=None, repr=False)
    rows_read: int = field(default=0, repr=False)
    # Of the rows read so far, in the bytes the chunk source parsed (updated by the source).
    bytes_of_rows_read: float = field(default=0.0, repr=False)

    def chunks(self, columns: list[str], chunk_rows: int) -> Iterator[pd.DataFrame]:
        """The rows, `chunk_rows` at a time, restricted to `columns` (which must exist)."""
        wanted = list(dict.fromkeys(columns))
        for chunk in self._chunk_source(wanted, chunk_rows):
            self.rows_read += len(chunk)
            yield chunk

    def estimated_rows(self) -> int | None:
        """The input's row count: exact when the format records it, else extrapolated from the
        share of the file read so far; None for a stream of unknown size before its end."""
        if self._known_rows is not None:
            return self._known_rows
        if self._size is None or not self.bytes_of_rows_read:
            return None
        size = self._size
        if self._transcoder is not None and self._transcoder.bytes_in:
            size = size * self._transcoder.bytes_out / self._transcoder.bytes_in
        return max(self.rows_read, round(self.rows_read * size / self.bytes_of_rows_read))

    def close(self) -> None:
        for handle in self._handles:
            handle.close()


def open_table(
    path: str,
    fmt: str | None = None,
    stdin: BinaryIO | None = None,
    encoding: str | None = None,
    delimiter: str | None = None,
) -> TableReader:
    """Open `path` (or standard input when it is "-") for reading as `fmt` (guessed if None).

    `encoding` (of CSV and JSON Lines; detected if None) and `delimiter` (of CSV; detected if None)
    are as the module docstring says. Raises InputError for anything the user has to fix: unknown
    format or encoding, empty input, no header, a file that is not a table.
    """
    if path == STDIO:
        raw: BinaryIO = stdin if stdin is not None else sys.stdin.buffer
        size = None
    else:
        try:
            raw = open(path, "rb")  # noqa: SIM115 - closed by TableReader.close
        except OSError as exc:
            raise InputError(f"cannot open {path}: {exc.strerror}") from exc
        size = os.fstat(raw.fileno()).st_size
    try:
        return _open_stream(raw, size, path, fmt, encoding, delimiter)
    except BaseException:
        raw.close()
        raise


def _open_stream(
    raw: BinaryIO, size: int | None, path: str, fmt: str | None, encoding: str | None, delimiter: str | None
) -> TableReader:
    stream = _PeekableStream(raw)
    head = stream.peek_head(4096)
    if not head:
        raise InputError(f"{_display(path)} is empty")
    if fmt is None and path != STDIO:
        fmt = format_for_path(path)
    if fmt != "parquet" and not head.startswith(b"PAR1"):
        for magic, what in _NOT_A_TABLE:
            if head.startswith(magic):
                raise InputError(f"{_display(path)} is {what}")
    encoding = check_encoding(encoding) if encoding is not None else None
    transcoder = None
    if fmt != "parquet" and not (fmt is None and head.startswith(b"PAR1")):
        encoding = encoding or detect_encoding(head)
        if encoding not in (UTF8, "utf-8-sig"):
            transcoder = _Utf8Transcoder(stream, encoding, _display(path))
            stream = _PeekableStream(transcoder)  # type: ignore[arg-type]
            head = stream.peek_head(4096)
    fmt = fmt or sniff_format(head)
    if fmt == "parquet" and encoding is not None:
        raise InputError(f"{_display(path)} is Parquet, which has no text encoding to choose")
    if fmt != "csv" and delimiter is not None:
        raise InputError(f"{_display(path)} is {fmt}, not CSV: a delimiter does not apply")
    if fmt == "csv":
        reader = _open_csv(stream, raw, path, delimiter)
    elif fmt == "jsonl":
        reader = _open_jsonl(stream, raw, path)
    elif fmt == "parquet":
        return _open_parquet(stream, raw, path)
    else:
        raise InputError(f"unknown input format {fmt!r}; use one of {', '.join(FORMATS)}")
    reader._size, reader._transcoder = size, transcoder
    return reader


def _display(path: str) -> str:
    return "standard input" if path == STDIO else path


# ---- CSV ---------------------------------------------------------------------------------------

# The header is read from a peek at the start of the input; a "header" with no line break in this
# many bytes is not one (a binary file, or one enormous line), and reading on would hold it all.
MAX_HEADER_BYTES = 1 << 20

_CSV_OPTIONS = {
    "encoding": "utf-8",
    "encoding_errors": DECODE_ERRORS,
    # Every value stays the string it was ("NA", "null" or "007" are text and ids, not NaN or 7);
    # only an empty field is missing.
    "dtype": object,
    "keep_default_na": False,
    "na_values": [""],
}


def _open_csv(stream: _PeekableStream, raw: BinaryIO, path: str, delimiter: str | None) -> TableReader:
    columns, delimiter = _csv_header(stream, path, delimiter)
    table: TableReader

    def chunks(wanted: list[str], chunk_rows: int) -> Iterator[pd.DataFrame]:
        # A row too long to read becomes a row holding only `marker` (and where it was), in its
        # first field: unforgeable by the input, and one row in for one row out.
        marker = f"unread-{secrets.token_hex(8)}:"
        rows = _CsvRows(io.BufferedReader(stream, buffer_size=1 << 20), marker.encode(), delimiter.encode())
        for segment, first_line, row_count in rows.segments(rows.header()):
            bytes_per_row = len(segment) / max(row_count, 1)
            # No `usecols`: with it pandas silently drops the extra fields of a malformed row, and
            # converting the other columns costs little next to summarizing.
            reader = pd.read_csv(
                io.BytesIO(segment), chunksize=chunk_rows, engine="c", sep=delimiter, **_CSV_OPTIONS
            )
            with reader:
                while True:
                    try:
                        chunk = next(reader)
                    except StopIteration:
                        break
                    except pd.errors.ParserError as exc:
                        raise InputError(
                            f"malformed CSV in {_display(path)}: {_csv_parser_message(exc, first_line)}"
                        ) from exc
                    table.bytes_of_rows_read += len(chunk) * bytes_per_row
                    yield _with_row_errors(chunk, wanted, marker)

    table = TableReader("csv", columns, chunks, [raw])
    return table


def _csv_parser_message(exc: Exception, first_line: int) -> str:
    """pandas' message, its line number counted from the input's first line, not the segment's."""
    message = str(exc).removeprefix("Error tokenizing data. C error: ").strip()
    return re.sub(r"\bline (\d+)", lambda m: f"line {int(m.group(1)) + first_line - 2}", message)


def _with_row_errors(chunk: pd.DataFrame, wanted: list[str], marker: str) -> pd.DataFrame:
    first = chunk.iloc[:, 0].tolist()
    errors = [
        _unread_reason(value[len(marker) :]) if isinstance(value, str) and value.startswith(marker) else None
        for value in first
    ]
    out = chunk[wanted]
    if any(errors):
        out = out.copy()
        for position, error in enumerate(errors):
            if error is not None:
                out.iloc[position] = None
        out[ROW_ERROR] = errors
    return out


def _unread_reason(where: str) -> str:
    line, size = where.split(":")
    return unread_row_message(f"line {line}", int(size))


def unread_row_message(where: str, size: int) -> str:
    """Why a row ("line 7", "row 7") was not read: the status its output row gets (after "error: ")."""
    return f"{where} is {size:,} bytes, over the {MAX_ROW_BYTES:,}-byte limit for one row; not read"


class _CsvRows:
    """Splits a CSV byte stream into its header row and segments of whole rows (about SEGMENT_BYTES
    each), in linear time: a row's end is found by tracking quotes as pandas' parser does (a quote
    opens a quoted field only at a field's start; "" inside one is a quote). The Python loop turns
    once per quote or line break, not per byte; a row that starts and ends within one block (most
    do) is matched whole by one regex (`_whole_row`: the same rules), so the loop turns once for it.
    A row over MAX_ROW_BYTES is replaced by one field, `marker` + "<line>:<size>", and the rest of
    it is skipped without being kept."""

    _STOPS = re.compile(rb'[\r\n"]')
    _BLOCK_BYTES = 1 << 20

    def __init__(self, stream: IO[bytes], marker: bytes, delimiter: bytes = b",") -> None:
        self._marker = marker
        self._delimiter = delimiter
        self._field_starts = (delimiter, b"\r", b"\n")  # a quote right after one opens a quoted field
        # From a row's start to its terminator: a quoted field first or no quote; then unquoted
        # bytes, quoted fields (a quote after the delimiter opens one; "" inside it is a quote) and
        # quotes elsewhere, which are text. No match where the block ends first.
        field_starts = b"[" + re.escape(delimiter) + rb"\r\n]"
        quoted_field = rb'"(?:[^"]++|"")*+"'
        self._whole_row = re.compile(
            rb'(?:%s|(?!"))(?:[^"\r\n]++|(?<=%s)%s|(?<!%s)")*+[\r\n]'
            % (quoted_field, field_starts, quoted_field, field_starts)
        )
        self._blocks = iter(lambda: stream.read(self._BLOCK_BYTES), b"")
        self._rows = self._split()

    def header(self) -> bytes:
        """The first row that is not blank (pandas skips blank lines before the header too)."""
        return next((row for row, _ in self._rows if row.strip()), b"")

    def segments(self, header: bytes) -> Iterator[tuple[bytearray, int, int]]:
        """(`header` and whole rows after it, the input line the first of those rows starts on, how
        many rows)."""
        segment, first_line, count = bytearray(header), 0, 0
        for row, line in self._rows:
            # Never cut between a bare \r and a delimiter: pandas reads "\r," as one line break.
            if len(segment) >= SEGMENT_BYTES and not (
                segment.endswith(b"\r") and row.startswith(self._delimiter)
            ):
                yield segment, first_line, count
                segment, count = bytearray(header), 0
            if len(segment) == len(header):
                first_line = line
            segment += row
            count += 1
        if len(segment) > len(header):
            yield segment, first_line, count

    def _split(self) -> Iterator[tuple[bytes, int]]:
        """Each row with its terminator (verbatim, or the marker row), and the line it starts on."""
        row = bytearray()  # what is kept of the row: all of it, or nothing once it is over the limit
        size = 0  # the row's real size so far
        line = 1  # the line the row starts on
        newlines = 0  # in the row so far
        quoted = False
        quote_seen = False  # a quote inside a quoted field: it closes the field unless another follows
        previous = b"\n"  # the byte before a block: a quote after , \r \n (or at the start) opens a field
        for index, block in enumerate(self._blocks):
            # A byte-order mark doesn't count: the quote after it starts the first field.
            bom = 3 if index == 0 and block.startswith(codecs.BOM_UTF8) else -1
            start = position = 0
            end = len(block)
            while position < end:
                # (Not for a first row after a byte-order mark: there the quote rule differs.)
                if position == start and not size and not (quoted or quote_seen or start < bom):
                    whole = self._whole_row.match(block, start)
                    if whole is not None and whole.end() - start <= MAX_ROW_BYTES:
                        piece = block[start : whole.end()]
                        yield piece, line
                        line += piece.count(b"\n")
                        start = position = whole.end()
                        continue
                if quote_seen:
                    quote_seen = False
                    if block[position] == 0x22:  # "" inside a quoted field: a quote, still quoted
                        position += 1
                        continue
                    quoted = False
                if quoted:
                    found = block.find(b'"', position)
                    if found < 0:
                        break
                    position, quote_seen = found + 1, True
                    continue
                match = self._STOPS.search(block, position)
                if match is None:
                    break
                stop = match.start()
                if block[stop] == 0x22:
                    before = block[stop - 1 : stop] if stop > 0 else previous
                    quoted = stop == bom or before in self._field_starts
                    position = stop + 1
                    continue
                # A line break outside quotes ends the row.
                piece = block[start : stop + 1]
                size += len(piece)
                newlines += piece.count(b"\n")
                if size <= MAX_ROW_BYTES:
                    row += piece
                    yield bytes(row), line
                else:
                    yield self._unread(line, size - 1, piece[-1:]), line
                line += newlines
                row, size, newlines = bytearray(), 0, 0
                start = position = stop + 1
            piece = block[start:]
            size += len(piece)
            newlines += piece.count(b"\n")
            if size <= MAX_ROW_BYTES:
                row += piece
            else:
                row = bytearray()
            previous = block[-1:]
        if size:
            yield (bytes(row) if size <= MAX_ROW_BYTES else self._unread(line, size, b"\n")), line

    def _unread(self, line: int, size: int, terminator: bytes) -> bytes:
        return b'"' + self._marker + f"{line}:{size}".encode() + b'"' + terminator


def _csv_header(stream: _PeekableStream, path: str, delimiter: str | None) -> tuple[list[str], str]:
    """The header's column names and the delimiter (`delimiter`, or the one the header uses), read
    from a peek so the stream still starts at the top."""
    size = 64 * 1024
    while True:
        head = stream.peek_head(size)
        complete = len(head) < size  # the whole input fits in the peek
        # (Where a header row ends doesn't depend on the delimiter: only quotes and line breaks.)
        header = _CsvRows(io.BytesIO(head), b"").header()
        if complete or header.endswith((b"\n", b"\r")):
            delimiter = delimiter or _header_delimiter(header)
            try:
                names = pd.read_csv(io.BytesIO(header), nrows=0, sep=delimiter, **_CSV_OPTIONS).columns
            except pd.errors.EmptyDataError as exc:
                raise InputError(f"{_display(path)} has no header row (no columns)") from exc
            except pd.errors.ParserError as exc:
                raise InputError(f"malformed CSV header in {_display(path)}: {exc}") from exc
            return [str(name) for name in names], delimiter
        if size >= MAX_HEADER_BYTES:
            raise InputError(
                f"{_display(path)}: no CSV header row in the first {MAX_HEADER_BYTES:,} bytes (no line "
                "break, or none that ends a header); is it a CSV file?"
            )
        size = min(size * 4, MAX_HEADER_BYTES)


def _header_delimiter(header: bytes) -> str:
    """The candidate delimiter the header row holds most of, outside quoted names; a comma when
    it holds none (a one-column file)."""
    unquoted = re.sub(rb'"[^"]*"', b"", header)
    counts = [unquoted.count(candidate.encode()) for candidate in DELIMITERS]
    best = max(range(len(DELIMITERS)), key=lambda i: (counts[i], -i))
    return DELIMITERS[best] if counts[best] else ","


# ---- JSON Lines --------------------------------------------------------------------------------


def _open_jsonl(stream: _PeekableStream, raw: BinaryIO, path: str) -> TableReader:
    lines = io.BufferedReader(stream, buffer_size=1 << 20)
    records = _jsonl_records(lines, path)
    # The first readable record names the columns; a later record without one of them has it
    # missing. Lines too long to read before it are kept (as their reasons) to come out first.
    unread_first: list[_UnreadLine] = []
    for first in records:
        if not isinstance(first, _UnreadLine):
            break
        unread_first.append(first)
    else:
        if unread_first:
            raise InputError(f"{_display(path)}: no JSON record short enough to read ({unread_first[0]})")
        raise InputError(f"{_display(path)} has no JSON records")
    columns = list(first)

    def chunks(wanted: list[str], chunk_rows: int) -> Iterator[pd.DataFrame]:
        batch: list[list[object]] = []
        errors: list[str | None] = []
        batch_bytes = 0
        for record in itertools.chain(unread_first, [first], records):
            if isinstance(record, _UnreadLine):
                batch.append([None] * len(wanted))
                errors.append(str(record))
            else:
                batch.append([record.get(name) for name in wanted])
                errors.append(None)
            batch_bytes += record.size
            if len(batch) == chunk_rows or batch_bytes >= SEGMENT_BYTES:
                table.bytes_of_rows_read += batch_bytes
                yield _jsonl_chunk(batch, wanted, errors)
                batch, errors, batch_bytes = [], [], 0
        if batch:
            table.bytes_of_rows_read += batch_bytes
            yield _jsonl_chunk(batch, wanted, errors)

    table = TableReader("jsonl", columns, chunks, [raw])
    return table


def _jsonl_chunk(batch: list[list[object]], wanted: list[str], errors: list[str | None]) -> pd.DataFrame:
    frame = pd.DataFrame(batch, columns=wanted, dtype=object)
    if any(errors):
        frame[ROW_ERROR] = errors
    return frame


class _Record(dict[str, object]):
    """A JSON Lines object, and the size of its line."""

    size: int = 0


class _UnreadLine(str):
    """A line too long to read: why (its line number and size)."""

    size: int = 0


def _jsonl_records(lines: IO[bytes], path: str) -> Iterator[_Record | _UnreadLine]:
    """The objects of a JSON Lines stream; blank lines are skipped, a line over MAX_ROW_BYTES is
    skipped without being kept (an _UnreadLine says so), anything else is an error."""
    for line_number in itertools.count(1):
        line = lines.readline(MAX_ROW_BYTES + 1)
        if not line:
            return
        if len(line) > MAX_ROW_BYTES and not line.endswith(b"\n"):
            size = len(line)
            while not line.endswith(b"\n") and (line := lines.readline(1 << 20)):
                size += len(line)
            size -= line.endswith(b"\n")  # its size without the line break, as for CSV rows
            unread = _UnreadLine(unread_row_message(f"line {line_number}", size))
            unread.size = size
            yield unread
            continue
        text = decode_text(line).lstrip("\ufeff").strip()
        if not text:
            continue
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"invalid JSON in {_display(path)} line {line_number}: {exc.msg}") from exc
        if not isinstance(record, dict):
            raise InputError(
                f"{_display(path)} line {line_number}: expected a JSON object, got {type(record).__name__}"
            )
        sized = _Record(record)
        sized.size = len(line)
        yield sized


# ---- Parquet -----------------------------------------------------------------------------------


# A row group whose asked-for columns hold more than this, uncompressed (by the file's own metadata),
# is refused before any of it is read: pyarrow decodes a column chunk's pages whole.
MAX_ROW_GROUP_BYTES = 256 << 20


def _open_parquet(stream: _PeekableStream, raw: BinaryIO, path: str) -> TableReader:
    # Parquet keeps its schema at the end of the file, so it needs a seekable file: a pipe is
    # spooled to a temporary file first.
    source: BinaryIO = raw if raw.seekable() else _spool(stream)
    try:
        parquet = pq.ParquetFile(source)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{_display(path)} is not a readable Parquet file: {exc}") from exc
    schema = parquet.schema_arrow
    columns = list(schema.names)

    def chunks(wanted: list[str], chunk_rows: int) -> Iterator[pd.DataFrame]:
        # Text columns are read as dictionaries where the file has them so: a value repeated on
        # every row is held once, and each row's size is known before any value is copied out.
        texts = [name for name in wanted if _is_text(schema.field(name).type)]
        reader = pq.ParquetFile(source, read_dictionary=texts)
        metadata = reader.metadata
        positions = [metadata.schema.names.index(name) for name in wanted if name in metadata.schema.names]
        first_row = 0
        for group in range(metadata.num_row_groups):
            row_group = metadata.row_group(group)
            size = sum(row_group.column(i).total_uncompressed_size for i in positions)
            if size > MAX_ROW_GROUP_BYTES:
                raise InputError(
                    f"{_display(path)}: row group {group} holds {size:,} bytes of the columns read, "
                    f"uncompressed, over the {MAX_ROW_GROUP_BYTES:,}-byte limit; write it with smaller "
                    "row groups"
                )
            rows = max(1, min(chunk_rows, row_group.num_rows * SEGMENT_BYTES // max(size, 1)))
            for batch in reader.iter_batches(batch_size=rows, row_groups=[group], columns=wanted):
                yield from _parquet_frames(batch, wanted, texts, first_row)
                first_row += batch.num_rows

    handles = [raw] if source is raw else [raw, source]
    return TableReader("parquet", columns, chunks, handles, _known_rows=parquet.metadata.num_rows)


def _is_text(arrow_type: pa.DataType) -> bool:
    return any(
        check(arrow_type)
        for check in (
            pa.types.is_string,
            pa.types.is_large_string,
            pa.types.is_binary,
            pa.types.is_large_binary,
        )
    )


def _parquet_frames(
    batch: pa.RecordBatch, wanted: list[str], texts: list[str], first_row: int
) -> Iterator[pd.DataFrame]:
    """A batch as frames holding at most SEGMENT_BYTES of text each (at least one row); a row with over
    MAX_ROW_BYTES of text is not read (ROW_ERROR says so). The sizes come from the value lengths,
    so nothing is copied out to measure it."""
    sizes = np.zeros(batch.num_rows, dtype=np.int64)
    for name in texts:
        column = batch.column(name)
        if pa.types.is_dictionary(column.type):
            lengths = pc.binary_length(column.dictionary).take(column.indices)
        else:
            lengths = pc.binary_length(column)
        sizes += lengths.fill_null(0).to_numpy(zero_copy_only=False)
    unread = sizes > MAX_ROW_BYTES
    ends = np.cumsum(np.where(unread, 0, sizes))
    start = 0
    while start < batch.num_rows:
        before = int(ends[start - 1]) if start else 0
        stop = max(start + 1, int(np.searchsorted(ends, before + SEGMENT_BYTES, side="right")))
        yield _parquet_frame(batch.slice(start, stop - start), wanted, sizes[start:stop], first_row + start)
        start = stop


def _parquet_frame(
    batch: pa.RecordBatch, wanted: list[str], sizes: np.ndarray, first_row: int
) -> pd.DataFrame:
    # Python values, not pandas dtypes: an integer id with nulls stays 7, not 7.0.
    unread = sizes > MAX_ROW_BYTES
    if not unread.any():
        return pd.DataFrame({name: batch.column(name).to_pylist() for name in wanted}, dtype=object)
    kept = np.flatnonzero(~unread)
    columns: dict[str, list[object]] = {}
    for name in wanted:
        values: list[object] = [None] * batch.num_rows
        for position, value in zip(kept, batch.column(name).take(pa.array(kept)).to_pylist(), strict=True):
            values[position] = value
        columns[name] = values
    frame = pd.DataFrame(columns, dtype=object)
    frame[ROW_ERROR] = [
        unread_row_message(f"row {first_row + position + 1}", int(size)) if over else None
        for position, (size, over) in enumerate(zip(sizes, unread, strict=True))
    ]
    return frame


def _spool(stream: _PeekableStream) -> BinaryIO:
    spooled = tempfile.TemporaryFile()  # noqa: SIM115 - closed by TableReader.close
    while block := stream.read(1 << 20):
        spooled.write(block)
    spooled.seek(0)
    return spooled  # type: ignore[return-value]


# ---- Writers -----------------------------------------------------------------------------------


def _csv_field(text: str, quote: bool) -> str:
    """`text` as one CSV field, exactly as the csv module writes it with "\\n" line ends:
    QUOTE_NONNUMERIC when `quote`, else QUOTE_MINIMAL (quoted only for a comma, quote or
    newline). Written out by hand: the csv module's per-character loop cost ~0.35 s per 100k
    summaries, over twice what this costs."""
    if '"' in text:
        return '"' + text.replace('"', '""') + '"'
    if quote or "," in text or "\n" in text:
        return '"' + text + '"'
    return text


def _umask() -> int:
    """The process's umask, read without changing it (Linux /proc), else by setting it back."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


# A chunk of output rows: column name -> that column's values, all columns the same length.
Columns = dict[str, list[object]]


class TableWriter:
    """Appends chunks of rows with fixed columns to a CSV, JSON Lines or Parquet output.

    CSV cells a spreadsheet would run are neutralized (summarizer.csv_safety), the
    `identifier_columns` only when they could execute, so ids join back to the input; with
    `spreadsheet_safe` False CSV cells are written as they are. JSON Lines and Parquet never change.
    """

    def __init__(
        self,
        path: str,
        fmt: str,
        schema: pa.Schema,
        stdout: BinaryIO | None = None,
        identifier_columns: Collection[str] = (),
        spreadsheet_safe: bool = True,
    ) -> None:
        if fmt not in FORMATS:
            raise InputError(f"unknown output format {fmt!r}; use one of {', '.join(FORMATS)}")
        self.format = fmt
        self.schema = schema
        self._text_columns = [column.name for column in schema if pa.types.is_string(column.type)]
        self._spreadsheet_safe = spreadsheet_safe
        self._identifier_columns = frozenset(identifier_columns)
        self._final_path: str | None = None
        if path == STDIO:
            self._out: BinaryIO = stdout if stdout is not None else sys.stdout.buffer
        else:
            directory = os.path.dirname(os.path.abspath(path))
            try:
                descriptor, temporary = tempfile.mkstemp(
                    prefix=f".{os.path.basename(path)}.", suffix=".partial", dir=directory
                )
            except OSError as exc:
                raise InputError(f"cannot write {path}: {exc.strerror}") from exc
            # mkstemp creates the file private (0600); the output is an ordinary new file, so it
            # gets the mode any other program would give it: 0666 less the user's umask.
            os.fchmod(descriptor, 0o666 & ~_umask())
            self._out = os.fdopen(descriptor, "wb")
            self._temporary = temporary
            self._final_path = path
        self._parquet: pq.ParquetWriter | None = None
        if fmt == "csv":
            # Column names are identifiers too: the group key's is the input's own.
            header = self._cells(schema.names, identifier=True)
            self._write_csv([[_csv_field(name, quote="\r" in name) for name in header]])
        elif fmt == "parquet":
            self._parquet = pq.ParquetWriter(self._out, schema)

    def write(self, columns: Columns) -> None:
        """Append one chunk of rows, given as plain lists per column (no DataFrame: cheaper)."""
        names = self.schema.names
        if self.format == "csv":
            texts = [
                self._cells(columns[name], identifier=name in self._identifier_columns)
                for name in self._text_columns
            ]
            # A bare "\r" (possible in ids and group keys) is not a line break to the csv module
            # and would go out unquoted, splitting the row for many readers. The rare chunk
            # holding one gets all its text fields quoted.
            quote_all = any("\r" in "".join(column) for column in texts)
            formatted = iter([[_csv_field(text, quote_all) for text in column] for column in texts])
            fields = [next(formatted) if name in self._text_columns else columns[name] for name in names]
            self._write_csv(zip(*fields, strict=True))
        elif self.format == "jsonl":
            lines = "".join(
                json.dumps(dict(zip(names, row, strict=True)), ensure_ascii=False) + "\n"
                for row in zip(*(columns[name] for name in names), strict=True)
            )
            self._out.write(lines.encode("utf-8"))
        else:
            assert self._parquet is not None
            table = pa.Table.from_pydict({name: columns[name] for name in names}, schema=self.schema)
            self._parquet.write_table(table)

    def _cells(self, values: Iterable[object], identifier: bool) -> list[str]:
        if not self._spreadsheet_safe:
            return [str(value) for value in values]
        return [neutralize_formula(str(value), identifier=identifier) for value in values]

    def _write_csv(self, rows: Iterable[Iterable[object]]) -> None:
        text = "".join([",".join(map(str, row)) + "\n" for row in rows])
        self._out.write(text.encode("utf-8"))

    def close(self) -> None:
        """Finish the output; a file output appears under its name only now."""
        if self._parquet is not None:
            self._parquet.close()
        self._out.flush()
        if self._final_path is not None:
            self._out.close()
            os.replace(self._temporary, self._final_path)

    def abort(self) -> None:
        """Drop a file output that won't be completed (standard output can't be taken back)."""
        if self._final_path is None:
            return
        self._out.close()
        Path(self._temporary).unlink(missing_ok=True)
