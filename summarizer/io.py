"""Streaming table readers and writers for the `summarize` CLI (CSV, JSON Lines, Parquet).

Every reader yields pandas DataFrames of at most `chunk_rows` rows, and of rows read from at most
SEGMENT_BYTES of input, holding only the columns asked for, so memory stays bounded whatever the
input. A CSV row or JSON line over MAX_ROW_BYTES is not read: it comes out as a row whose ROW_ERROR
column says so (with its line number and size), its other columns missing, and reading goes on. Every writer
appends chunks as they come; a file output is written under a temporary name and renamed into
place only when the whole run succeeded, so a failed run never leaves a half-written file.

Text decoding: input is read as UTF-8 (a leading BOM is ignored). Real exports mix encodings,
so a byte sequence that is not valid UTF-8 is decoded byte by byte as Windows-1252 (Latin-1 for
the five bytes cp1252 leaves undefined) instead of failing: the row is kept and the usual
culprits (é, ’, “ ” from legacy Windows text) come out right.
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
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

FORMATS = ("csv", "jsonl", "parquet")
EXTENSIONS = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".parquet": "parquet",
    ".pq": "parquet",
}
STDIO = "-"

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


def sniff_format(head: bytes) -> str:
    """Guess the format of a stream (stdin) from its first bytes; CSV unless it looks otherwise."""
    if head.startswith(b"PAR1"):
        return "parquet"
    if head.removeprefix(codecs.BOM_UTF8).lstrip().startswith(b"{"):
        return "jsonl"
    return "csv"


class _PeekableCountingStream(io.RawIOBase):
    """A read-only byte stream that can be peeked at its start and counts the bytes consumed.

    Peeked bytes are replayed to the real reader, which is what lets the CLI read the header of
    (or sniff the format of) stdin and then hand the whole stream to pandas.
    """

    def __init__(self, raw: BinaryIO) -> None:
        super().__init__()
        self._raw = raw
        self._head = b""
        self._offset = 0
        self.bytes_read = 0

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
        self.bytes_read += len(data)
        return len(data)


# (columns, chunk_rows) -> DataFrames of those columns, at most chunk_rows rows each
ChunkSource = Callable[[list[str], int], Iterator[pd.DataFrame]]


@dataclass
class TableReader:
    """An opened input table: its column names, and its rows as a stream of DataFrames."""

    format: str
    columns: list[str]
    # Progress accounting: `progress_total` in `progress_unit`s (None when unknown).
    progress_unit: str
    progress_total: int | None
    _chunk_source: ChunkSource = field(repr=False)
    _handles: list[IO[bytes]] = field(default_factory=list, repr=False)
    _stream: _PeekableCountingStream | None = field(default=None, repr=False)
    _rows_read: int = field(default=0, repr=False)

    def chunks(self, columns: list[str], chunk_rows: int) -> Iterator[pd.DataFrame]:
        """The rows, `chunk_rows` at a time, restricted to `columns` (which must exist)."""
        wanted = list(dict.fromkeys(columns))
        for chunk in self._chunk_source(wanted, chunk_rows):
            self._rows_read += len(chunk)
            yield chunk

    def progress_position(self) -> int:
        """How far the reader got, in `progress_unit`s."""
        return self._stream.bytes_read if self._stream is not None else self._rows_read

    def close(self) -> None:
        for handle in self._handles:
            handle.close()


def open_table(path: str, fmt: str | None = None, stdin: BinaryIO | None = None) -> TableReader:
    """Open `path` (or standard input when it is "-") for reading as `fmt` (guessed if None).

    Raises InputError for anything the user has to fix: unknown format, empty input, no header.
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
    stream = _PeekableCountingStream(raw)
    if not stream.peek_head(1):
        raw.close()
        raise InputError(f"{_display(path)} is empty")
    fmt = fmt or (format_for_path(path) if path != STDIO else None) or sniff_format(stream.peek_head(4096))
    try:
        if fmt == "csv":
            return _open_csv(stream, raw, size, path)
        if fmt == "jsonl":
            return _open_jsonl(stream, raw, size, path)
        if fmt == "parquet":
            return _open_parquet(stream, raw, path)
    except BaseException:
        raw.close()
        raise
    raw.close()
    raise InputError(f"unknown input format {fmt!r}; use one of {', '.join(FORMATS)}")


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


def _open_csv(stream: _PeekableCountingStream, raw: BinaryIO, size: int | None, path: str) -> TableReader:
    columns = _csv_header(stream, path)

    def chunks(wanted: list[str], chunk_rows: int) -> Iterator[pd.DataFrame]:
        # A row too long to read becomes a row holding only `marker` (and where it was), in its
        # first field: unforgeable by the input, and one row in for one row out.
        marker = f"unread-{secrets.token_hex(8)}:"
        rows = _CsvRows(io.BufferedReader(stream, buffer_size=1 << 20), marker.encode())
        for segment, first_line in rows.segments(rows.header()):
            # No `usecols`: with it pandas silently drops the extra fields of a malformed row, and
            # converting the other columns costs little next to summarizing.
            reader = pd.read_csv(io.BytesIO(segment), chunksize=chunk_rows, engine="c", **_CSV_OPTIONS)
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
                    yield _with_row_errors(chunk, wanted, marker)

    return TableReader("csv", columns, "B", size, chunks, [raw], stream)


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
    once per quote or line break, not per byte. A row over MAX_ROW_BYTES is replaced by one field,
    `marker` + "<line>:<size>", and the rest of it is skipped without being kept."""

    _STOPS = re.compile(rb'[\r\n"]')

    def __init__(self, stream: IO[bytes], marker: bytes) -> None:
        self._marker = marker
        self._blocks = iter(lambda: stream.read(1 << 20), b"")
        self._rows = self._split()

    def header(self) -> bytes:
        """The first row that is not blank (pandas skips blank lines before the header too)."""
        return next((row for row, _ in self._rows if row.strip()), b"")

    def segments(self, header: bytes) -> Iterator[tuple[bytearray, int]]:
        """(`header` and whole rows after it, the input line the first of those rows starts on)."""
        segment, first_line = bytearray(header), 0
        for row, line in self._rows:
            # Never cut between a bare \r and a delimiter: pandas reads "\r," as one line break.
            if len(segment) >= SEGMENT_BYTES and not (segment.endswith(b"\r") and row.startswith(b",")):
                yield segment, first_line
                segment = bytearray(header)
            if len(segment) == len(header):
                first_line = line
            segment += row
        if len(segment) > len(header):
            yield segment, first_line

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
                    quoted = stop == bom or before in (b",", b"\r", b"\n")
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


def _csv_header(stream: _PeekableCountingStream, path: str) -> list[str]:
    """The header's column names, read from a peek so the stream still starts at the top."""
    size = 64 * 1024
    while True:
        head = stream.peek_head(size)
        complete = len(head) < size  # the whole input fits in the peek
        header = _CsvRows(io.BytesIO(head), b"").header()
        if complete or header.endswith((b"\n", b"\r")):
            try:
                names = pd.read_csv(io.BytesIO(header), nrows=0, **_CSV_OPTIONS).columns
            except pd.errors.EmptyDataError as exc:
                raise InputError(f"{_display(path)} has no header row (no columns)") from exc
            except pd.errors.ParserError as exc:
                raise InputError(f"malformed CSV header in {_display(path)}: {exc}") from exc
            return [str(name) for name in names]
        if size >= MAX_HEADER_BYTES:
            raise InputError(
                f"{_display(path)}: no CSV header row in the first {MAX_HEADER_BYTES:,} bytes (no line "
                "break, or none that ends a header); is it a CSV file?"
            )
        size = min(size * 4, MAX_HEADER_BYTES)


# ---- JSON Lines --------------------------------------------------------------------------------


def _open_jsonl(stream: _PeekableCountingStream, raw: BinaryIO, size: int | None, path: str) -> TableReader:
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
                yield _jsonl_chunk(batch, wanted, errors)
                batch, errors, batch_bytes = [], [], 0
        if batch:
            yield _jsonl_chunk(batch, wanted, errors)

    return TableReader("jsonl", columns, "B", size, chunks, [raw], stream)


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


def _open_parquet(stream: _PeekableCountingStream, raw: BinaryIO, path: str) -> TableReader:
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
    return TableReader("parquet", columns, "rows", parquet.metadata.num_rows, chunks, handles)


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


def _spool(stream: _PeekableCountingStream) -> BinaryIO:
    spooled = tempfile.TemporaryFile()  # noqa: SIM115 - closed by TableReader.close
    while block := stream.read(1 << 20):
        spooled.write(block)
    spooled.seek(0)
    return spooled  # type: ignore[return-value]


# ---- Writers -----------------------------------------------------------------------------------

# OWASP CSV injection: a spreadsheet treats a cell starting with one of these as a formula.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")


def neutralize_formula(text: str) -> str:
    """Prefix a cell that a spreadsheet would run as a formula with a single quote.

    Only the first character matters; text that merely contains the characters is untouched.
    """
    return "'" + text if text.startswith(FORMULA_TRIGGERS) else text


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


# A chunk of output rows: column name -> that column's values, all columns the same length.
Columns = dict[str, list[object]]


class TableWriter:
    """Appends chunks of rows with fixed columns to a CSV, JSON Lines or Parquet output."""

    def __init__(self, path: str, fmt: str, schema: pa.Schema, stdout: BinaryIO | None = None) -> None:
        if fmt not in FORMATS:
            raise InputError(f"unknown output format {fmt!r}; use one of {', '.join(FORMATS)}")
        self.format = fmt
        self.schema = schema
        self._text_columns = [column.name for column in schema if pa.types.is_string(column.type)]
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
            self._out = os.fdopen(descriptor, "wb")
            self._temporary = temporary
            self._final_path = path
        self._parquet: pq.ParquetWriter | None = None
        if fmt == "csv":
            self._write_csv([[_csv_field(name, quote=False) for name in schema.names]])
        elif fmt == "parquet":
            self._parquet = pq.ParquetWriter(self._out, schema)

    def write(self, columns: Columns) -> None:
        """Append one chunk of rows, given as plain lists per column (no DataFrame: cheaper)."""
        names = self.schema.names
        if self.format == "csv":
            texts = [
                [neutralize_formula(str(value)) for value in columns[name]] for name in self._text_columns
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
