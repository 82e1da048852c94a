"""`summarize`: extractive summaries for every row of a CSV, JSON Lines or Parquet table.

Reads INPUT in chunks (memory stays bounded whatever its size), summarizes the text column of
each row, and writes one output row per input row, in input order:
id, summary, n_sentences_in, n_sentences_out, status (ok | passthrough | empty | error: ...).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, BinaryIO, TextIO

from glove import GloveError
from summarizer import schema
from summarizer.batch import (
    DEFAULT_CHUNK_ROWS,
    DEFAULT_ID_COLUMN,
    DEFAULT_MAX_CHARS,
    DEFAULT_STARS_COLUMN,
    SummarizerSpec,
    TableOptions,
    TableReport,
    check_columns,
    output_schema,
    summarize_table,
)
from summarizer.io import (
    EXTENSIONS,
    FORMATS,
    STDIO,
    InputError,
    TableReader,
    TableWriter,
    check_delimiter,
    check_encoding,
    format_for_path,
    open_table,
)
from sumpipe import version

if TYPE_CHECKING:
    from tqdm import tqdm

SAMPLE_ROWS = 200
SAMPLE_MAX_BYTES = 4 << 20
# Read as CSV with their delimiter; output CSV is always comma-separated, so not these names.
INPUT_ONLY_EXTENSIONS = (".tsv", ".tab")

EPILOG = """\
examples:
  summarize reviews.csv -o summaries.csv
  summarize reviews.csv --sentences 2 --workers 2 -o summaries.parquet
  summarize reviews.jsonl --text-column body --id-column review_id
  summarize reviews.csv --group-by ProductId -o products.csv
  summarize export.tsv --encoding cp1252 -o summaries.csv
  cat reviews.csv | summarize - | head

exit status: 0 success, 1 unexpected failure, 2 bad usage or unreadable input
"""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _encoding(text: str) -> str:
    try:
        return check_encoding(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _delimiter(text: str) -> str:
    try:
        return check_delimiter(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _ratio(text: str) -> float:
    value = float(text)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="summarize",
        description=__doc__.split("\n\n")[0].removeprefix("`summarize`: "),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    parser.add_argument(
        "input", metavar="INPUT", help="input table (.csv, .tsv, .jsonl, .parquet); - for stdin"
    )
    parser.add_argument(
        "-o",
        "--output",
        default=STDIO,
        metavar="OUTPUT",
        help="output table, format from its extension (default: CSV on stdout)",
    )
    parser.add_argument("--input-format", choices=FORMATS, help="override the format guessed for INPUT")
    parser.add_argument("--output-format", choices=FORMATS, help="override the format guessed for OUTPUT")
    parser.add_argument(
        "--raw-csv",
        action="store_true",
        help="CSV output cells exactly as they are, for programs: no ' before text a spreadsheet would "
        "run as a formula (default: neutralized; ids and group keys only when they could execute)",
    )
    parser.add_argument(
        "--sep",
        type=_delimiter,
        metavar="CHAR",
        help="CSV delimiter of INPUT, e.g. ';' or '\\t' (default: the one its header row uses: , tab ; |)",
    )
    parser.add_argument(
        "--encoding",
        type=_encoding,
        metavar="NAME",
        help="text encoding of INPUT, e.g. cp1252 or utf-16 (default: UTF-8, or UTF-16/32 when its "
        "first bytes say so)",
    )
    columns = parser.add_argument_group("columns")
    columns.add_argument(
        "--text-column", default="Text", metavar="NAME", help="column to summarize (default: Text)"
    )
    columns.add_argument(
        "--id-column",
        metavar="NAME",
        help=f"column copied to the output id (default: {DEFAULT_ID_COLUMN} if present, else row number)",
    )
    columns.add_argument(
        "--group-by",
        metavar="NAME",
        help="summarize each distinct value of this column (e.g. ProductId) instead of each row: the "
        "themes its rows share, each with how many rows use it, and what they say",
    )
    columns.add_argument(
        "--themes",
        action="store_true",
        help="with --group-by: a row per theme of each group (sortable by its rows and stars) instead "
        "of one per group",
    )
    columns.add_argument(
        "--stars",
        metavar="NAME",
        help=f"with --group-by: each row's star rating (1-5), for each theme's star split and balanced "
        f"praise and complaints (default: {DEFAULT_STARS_COLUMN} if present)",
    )
    summary = parser.add_argument_group("summary")
    summary.add_argument("--method", choices=("default", "kmeans"), default="default")
    budget = summary.add_mutually_exclusive_group()
    budget.add_argument("--sentences", type=_positive_int, metavar="K", help="sentences per summary")
    budget.add_argument("--ratio", type=_ratio, metavar="R", help="fraction of the sentences to keep")
    budget.add_argument(
        "--sqrt",
        action="store_true",
        help="keep ceil(sqrt(n)) sentences, as the original algorithm did (default: a quarter of the "
        "sentences, rounded up, at most ceil(sqrt(n)); kmeans: ceil(sqrt(n)))",
    )
    summary.add_argument(
        "--vectors",
        metavar="PATH",
        help="GloVe vectors: Stanford .txt/.zip or a cache directory (default: bundled 6B 50d)",
    )
    summary.add_argument(
        "--max-chars",
        type=_non_negative_int,
        default=DEFAULT_MAX_CHARS,
        metavar="N",
        help=f"longer texts get status 'error: text too long' (default: {DEFAULT_MAX_CHARS}; 0 = no limit)",
    )
    run = parser.add_argument_group("run")
    run.add_argument(
        "--workers",
        type=_positive_int,
        metavar="N",
        help="processes summarizing in parallel (default: the cores this process may use, by its CPU "
        "affinity and cgroup quota; the output is the same for any N)",
    )
    run.add_argument(
        "--chunk-rows",
        type=_positive_int,
        default=DEFAULT_CHUNK_ROWS,
        metavar="N",
        help=f"rows read, summarized and written at a time (default: {DEFAULT_CHUNK_ROWS})",
    )
    progress = run.add_mutually_exclusive_group()
    progress.add_argument(
        "--progress",
        dest="progress",
        action="store_true",
        default=None,
        help="show a progress bar, in rows, on stderr (default: when stderr is a terminal)",
    )
    progress.add_argument(
        "--no-progress", dest="progress", action="store_false", help="never show a progress bar"
    )
    run.add_argument(
        "--report",
        metavar="PATH",
        help="also write what became of the rows as JSON: rows_in, rows_out, statuses, sentences_in, "
        "sentences_out, workers, seconds",
    )
    run.add_argument(
        "--sample",
        metavar="PATH",
        help=f"also write the first rows (up to --sample-rows, {SAMPLE_MAX_BYTES >> 20} MiB in all) as JSON "
        "Lines of id, text, summary and status: what the review page shows a job's reviewers",
    )
    run.add_argument(
        "--sample-rows",
        type=int,
        default=SAMPLE_ROWS,
        metavar="N",
        help="rows in --sample (default: %(default)s)",
    )
    progress.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress bar and no closing line; only errors go to stderr",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.group_by is not None and args.method != "default":
        # group summaries rank the pooled sentences with the default method's score
        parser.error(f"--method {args.method} does not apply to --group-by summaries")
    try:
        return run(args, stdin=sys.stdin.buffer, stdout=sys.stdout.buffer, stderr=sys.stderr)
    except (InputError, GloveError) as exc:
        _fail(str(exc))
        return schema.EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`summarize big.csv | head`): not an error worth a message. Point
        # stdout at /dev/null so the interpreter's final flush doesn't raise again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return schema.EXIT_FAILURE
    except Exception as exc:
        _fail(f"{type(exc).__name__}: {exc}")
        return schema.EXIT_FAILURE


def _fail(message: str) -> None:
    print(f"summarize: error: {' '.join(message.split())}", file=sys.stderr)


def run(args: argparse.Namespace, stdin: BinaryIO, stdout: BinaryIO, stderr: TextIO) -> int:
    started = time.monotonic()
    output_format = args.output_format or _output_format(args.output)
    if output_format == "parquet" and args.output == STDIO and stdout.isatty():
        raise InputError("refusing to write binary Parquet to a terminal; use -o FILE.parquet or a pipe")
    if (
        args.output != STDIO
        and args.input != STDIO
        and os.path.exists(args.output)
        and os.path.samefile(args.input, args.output)
    ):
        raise InputError("OUTPUT is the same file as INPUT")
    options = TableOptions(
        text_column=args.text_column,
        id_column=args.id_column,
        group_by=args.group_by,
        stars_column=args.stars,
        per_theme=args.themes,
        chunk_rows=args.chunk_rows,
        max_chars=args.max_chars,
        workers=args.workers,
    )
    spec = SummarizerSpec(
        method=args.method,
        sentences=args.sentences,
        ratio=args.ratio,
        sqrt=args.sqrt,
        vectors_path=args.vectors,
    )
    reader = open_table(
        args.input, args.input_format, stdin=stdin, encoding=args.encoding, delimiter=args.sep
    )
    if args.sample and args.group_by is not None:
        raise InputError("--sample is a sample of rows; with --group-by there are none")
    if args.sample_rows < 1:
        raise InputError(f"--sample-rows must be at least 1, got {args.sample_rows}")
    if args.group_by is not None and args.stars is None and DEFAULT_STARS_COLUMN in reader.columns:
        options = replace(options, stars_column=DEFAULT_STARS_COLUMN)
    try:
        check_columns(reader.columns, options)
        writer = TableWriter(
            args.output,
            output_format,
            output_schema(options),
            stdout=stdout,
            identifier_columns=[options.group_by if options.group_by is not None else schema.ID],
            spreadsheet_safe=not args.raw_csv,
        )
        bar = None if args.quiet else _progress_bar(reader, args.progress, stderr)
        sample = open(args.sample, "w", encoding="utf-8") if args.sample else None  # noqa: SIM115
        try:
            report = summarize_table(
                reader,
                writer,
                spec,
                options,
                on_progress=_updater(bar, reader) if bar is not None else None,
                on_rows=_sampler(sample, args.sample_rows) if sample is not None else None,
            )
            if bar is not None:
                bar.total = report.rows_in  # an estimate until now
                bar.refresh()
        except BaseException:
            writer.abort()
            raise
        finally:
            if bar is not None:
                bar.close()
            if sample is not None:
                sample.close()
        writer.close()
    finally:
        reader.close()
    seconds = time.monotonic() - started
    if args.report:
        document = {
            "rows_in": report.rows_in,
            "rows_out": report.rows_out,
            "statuses": dict(report.statuses),
            "sentences_in": report.sentences_in,
            "sentences_out": report.sentences_out,
            "workers": report.workers,
            "seconds": round(seconds, 3),
        }
        with open(args.report, "w", encoding="utf-8") as out:
            json.dump(document, out)
    if not args.quiet:
        print(closing_line(report, args.group_by, seconds, args.themes), file=stderr)
    return schema.EXIT_OK


def _output_format(path: str) -> str:
    """The format OUTPUT's extension names (CSV on stdout); InputError for any other extension,
    rather than writing CSV into a file named for something else."""
    if path == STDIO:
        return "csv"
    fmt = format_for_path(path)
    if fmt is None or os.path.splitext(path)[1].lower() in INPUT_ONLY_EXTENSIONS:
        extensions = ", ".join(name for name in EXTENSIONS if name not in INPUT_ONLY_EXTENSIONS)
        raise InputError(
            f"cannot tell the output format from {path!r}; name it {extensions}, or give --output-format"
        )
    return fmt


def _sampler(out: TextIO, rows: int) -> Callable[[list[str], list[object], dict[str, list[object]]], bool]:
    """Writes the rows it is given to `out` as JSON Lines (rows with a text only) until it has
    `rows` of them or SAMPLE_MAX_BYTES; then answers False."""
    rows_left, bytes_left = rows, SAMPLE_MAX_BYTES

    def take(ids: list[str], texts: list[object], results: dict[str, list[object]]) -> bool:
        nonlocal rows_left, bytes_left
        for row_id, text, summary, status in zip(
            ids, texts, results[schema.SUMMARY], results[schema.STATUS], strict=True
        ):
            if not isinstance(text, str) or not text.strip():
                continue
            line = json.dumps({"id": row_id, "text": text, "summary": summary, "status": status}) + "\n"
            if len(line) > bytes_left:
                return False
            out.write(line)
            rows_left -= 1
            bytes_left -= len(line)
            if not rows_left:
                return False
        return True

    return take


def closing_line(report: TableReport, group_by: str | None, seconds: float, per_theme: bool = False) -> str:
    """ "7,567 rows: 6,346 ok, 1,221 passthrough in 3.1 s (2 workers)": what happened to the rows."""
    counts = ", ".join(
        _count(report.statuses[status], status, plural=status == schema.ERROR)
        for status in schema.STATUSES
        if report.statuses[status]
    )
    rows = _count(report.rows_in, "row")
    if group_by is not None:
        themes = f" ({_count(report.rows_out, 'row')} of themes)" if per_theme else ""
        rows = f"{_count(report.groups, 'group')} of {group_by}{themes} from {rows}"
    workers = _count(report.workers, "worker")
    return f"{rows}: {counts or 'nothing to summarize'} in {seconds:.1f} s ({workers})"


def _count(n: int, noun: str, plural: bool = True) -> str:
    return f"{n:,} {noun}{'s' if plural and n != 1 else ''}"


def _progress_bar(reader: TableReader, wanted: bool | None, stderr: TextIO) -> tqdm | None:
    """A bar counted in rows when asked (--progress), or by default when stderr is a terminal and
    the run is long: `delay` keeps a run that finishes within a second from ever drawing one. Its
    total is the reader's estimate (exact for Parquet), refined as the rows come."""
    if wanted is False or (wanted is None and not stderr.isatty()):
        return None
    from tqdm import tqdm  # here, not at the top: most runs draw no bar and needn't import it

    return tqdm(
        total=reader.estimated_rows(),
        unit=" rows",
        file=stderr,
        delay=0 if wanted else 1.0,
        dynamic_ncols=True,
        desc="summarize",
    )


def _updater(bar: tqdm, reader: TableReader) -> Callable[[int], None]:
    def update(rows_done: int) -> None:
        total = reader.estimated_rows()
        if total is not None:
            bar.total = total
        bar.update(rows_done - bar.n)

    return update


if __name__ == "__main__":
    sys.exit(main())
