"""Streaming table readers and writers for the `summarize` CLI (CSV, JSON Lines, Parquet).

Every reader yields pandas DataFrames of at most `chunk_rows` rows holding only the columns
asked for, so memory stays bounded by the chunk size whatever the input size. Every writer
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
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, BinaryIO

import pandas as pd
import pyarrow as pa
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
        # No `usecols`: with it pandas silently drops the extra fields of a malformed row, and
        # converting the other columns costs little next to summarizing.
        reader = pd.read_csv(
            io.BufferedReader(stream, buffer_size=1 << 20),
            chunksize=chunk_rows,
            engine="c",
            **_CSV_OPTIONS,
        )
        with reader:
            while True:
                try:
                    chunk = next(reader)
                except StopIteration:
                    return
                except pd.errors.ParserError as exc:
                    message = str(exc).removeprefix("Error tokenizing data. C error: ").strip()
                    raise InputError(f"malformed CSV in {_display(path)}: {message}") from exc
                yield chunk[wanted]

    return TableReader("csv", columns, "B", size, chunks, [raw], stream)


def _csv_header(stream: _PeekableCountingStream, path: str) -> list[str]:
    """The header's column names, read from a peek so the stream still starts at the top."""
    size = 64 * 1024
    while True:
        head = stream.peek_head(size)
        complete = len(head) < size  # the whole input fits in the peek
        if complete or b"\n" in head:
            try:
                header = pd.read_csv(io.BytesIO(head), nrows=0, **_CSV_OPTIONS)
            except pd.errors.EmptyDataError as exc:
                raise InputError(f"{_display(path)} has no header row (no columns)") from exc
            except pd.errors.ParserError as exc:
                if complete:
                    raise InputError(f"malformed CSV header in {_display(path)}: {exc}") from exc
            else:
                if complete or len(header.columns) > 0:
                    return [str(name) for name in header.columns]
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
    first = next(records, None)
    if first is None:
        raise InputError(f"{_display(path)} has no JSON records")
    # The first record names the columns; a later record without one of them has it missing.
    columns = list(first)

    def chunks(wanted: list[str], chunk_rows: int) -> Iterator[pd.DataFrame]:
        batch: list[list[object]] = []
        for record in itertools.chain([first], records):
            batch.append([record.get(name) for name in wanted])
            if len(batch) == chunk_rows:
                yield pd.DataFrame(batch, columns=wanted, dtype=object)
                batch = []
        if batch:
            yield pd.DataFrame(batch, columns=wanted, dtype=object)

    return TableReader("jsonl", columns, "B", size, chunks, [raw], stream)


def _jsonl_records(lines: IO[bytes], path: str) -> Iterator[dict[str, object]]:
    """The objects of a JSON Lines stream; blank lines are skipped, anything else is an error."""
    for line_number, line in enumerate(lines, start=1):
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
        yield record


# ---- Parquet -----------------------------------------------------------------------------------


def _open_parquet(stream: _PeekableCountingStream, raw: BinaryIO, path: str) -> TableReader:
    # Parquet keeps its schema at the end of the file, so it needs a seekable file: a pipe is
    # spooled to a temporary file first.
    source: BinaryIO = raw if raw.seekable() else _spool(stream)
    try:
        parquet = pq.ParquetFile(source)
    except (pa.ArrowException, OSError) as exc:
        raise InputError(f"{_display(path)} is not a readable Parquet file: {exc}") from exc
    columns = list(parquet.schema_arrow.names)

    def chunks(wanted: list[str], chunk_rows: int) -> Iterator[pd.DataFrame]:
        for batch in parquet.iter_batches(batch_size=chunk_rows, columns=wanted):
            # Python values, not pandas dtypes: an integer id with nulls stays 7, not 7.0.
            yield pd.DataFrame({name: batch.column(name).to_pylist() for name in wanted}, dtype=object)

    handles = [raw] if source is raw else [raw, source]
    return TableReader("parquet", columns, "rows", parquet.metadata.num_rows, chunks, handles)


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
