"""Summarize a whole table, chunk by chunk: the engine behind the `summarize` CLI.

Rows stream from a `TableReader` to a `TableWriter` in input order, one output row per input row
(or one per theme of each group with `group_by`, by `summarizer.group.summarize_group`). Each chunk
goes through the engine's batched `summarize_many`; a chunk that makes it raise is redone row by
row so one bad row costs only its own `error: ...` status, never the run.

With `workers > 1` chunks are summarized in a pool of forked processes, at most two chunks per
worker in flight (so memory stays bounded), and written back in input order.
"""

from __future__ import annotations

import gc
import math
import multiprocessing
import os
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from itertools import chain, islice

import pandas as pd
import pyarrow as pa

from summarizer import Budget, Summarizer, Summary, schema
from summarizer.group import GroupSummary, star_rating, summarize_group
from summarizer.io import DELIMITERS, ROW_ERROR, InputError, TableReader, TableWriter, decode_text

DEFAULT_CHUNK_ROWS = 2_000
# Longest real review is ~20k characters, a long news article ~30k; a cell far beyond that is
# almost always a broken export (a whole file in one field), and costs seconds to summarize.
DEFAULT_MAX_CHARS = 200_000
DEFAULT_ID_COLUMN = "Id"

SUMMARY_FIELDS = [
    (schema.SUMMARY, pa.string()),
    (schema.N_SENTENCES_IN, pa.int64()),
    (schema.N_SENTENCES_OUT, pa.int64()),
    (schema.STATUS, pa.string()),
]
ROW_SCHEMA = pa.schema([(schema.ID, pa.string()), *SUMMARY_FIELDS])
# Score in Amazon's reviews: used for the star split of group summaries when the input has it.
DEFAULT_STARS_COLUMN = "Score"
THEMES_FIELDS = [(schema.THEMES, pa.string())]
THEME_FIELDS = [(schema.THEME, pa.string()), (schema.THEME_ROWS, pa.int64()), (schema.SHARE, pa.float64())]
STAR_FIELDS = [(schema.STARS, pa.float64()), *((name, pa.int64()) for name in schema.STAR_COLUMNS)]


def group_schema(group_by: str, stars: bool = False, per_theme: bool = False) -> pa.Schema:
    """Output columns with `group_by`: the group key (named as in the input) and its row count;
    then either, one row per group, its themes ("kettle, brand (109); bag, bags (93)": each
    theme's words and rows) or, `per_theme`, one row per theme, its words ("" for a group without
    themes), rows and their share of the group's; with `stars` the mean star rating and star split
    of the group's (the theme's) rows; then the summary columns."""
    return pa.schema(
        [
            (group_by, pa.string()),
            (schema.N_ROWS, pa.int64()),
            *(THEME_FIELDS if per_theme else THEMES_FIELDS),
            *(STAR_FIELDS if stars else ()),
            *SUMMARY_FIELDS,
        ]
    )


@dataclass(frozen=True)
class SummarizerSpec:
    """How to build a Summarizer, and the budget to call it with, from the CLI's options."""

    method: str = "default"
    sentences: int | None = None
    ratio: float | None = None
    sqrt: bool = False
    vectors_path: str | None = None

    def build(self) -> Summarizer:
        vectors = None
        if self.vectors_path is not None:
            import glove

            vectors = glove.load(self.vectors_path)
        return Summarizer(method=self.method, vectors=vectors)

    def budget(self) -> Budget | None:
        """The budget asked for, or None for the method's default."""
        if self.sentences is None and self.ratio is None and not self.sqrt:
            return None
        return Budget(sentences=self.sentences, ratio=self.ratio, sqrt=self.sqrt)


@dataclass(frozen=True)
class TableOptions:
    text_column: str = "Text"
    # None: the input's "Id" column when it has one, else the 0-based row number.
    id_column: str | None = None
    group_by: str | None = None
    # With group_by: each row's star rating (1-5), for the themes' star split.
    stars_column: str | None = None
    # With group_by: a row per theme of each group instead of one per group.
    per_theme: bool = False
    chunk_rows: int = DEFAULT_CHUNK_ROWS
    # Texts longer than this get status "error: text too long ..."; 0 means no limit.
    max_chars: int = DEFAULT_MAX_CHARS
    # None: every core this process may use (usable_cores()).
    workers: int | None = None


def usable_cores(cgroup_root: str = "/sys/fs/cgroup") -> int:
    """The cores this process can keep busy: those its CPU affinity allows, fewer when a cgroup
    CPU quota (a container's --cpus, systemd's CPUQuota) caps it lower. os.cpu_count() counts the
    machine's cores, which in a container can be many times what the quota lets run."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = _cgroup_cpu_quota(cgroup_root)
    return max(1, min(cores, math.ceil(quota))) if quota is not None else max(1, cores)


def _cgroup_cpu_quota(root: str) -> float | None:
    """The tightest CPU quota, in cores, on this process's cgroup and its ancestors (v2 cpu.max,
    v1 cpu.cfs_quota_us / cpu.cfs_period_us); None when there is none or it can't be read."""
    try:
        with open("/proc/self/cgroup", encoding="utf-8") as listing:
            entries = [line.rstrip("\n").split(":", 2) for line in listing]
    except OSError:
        entries = []
    quotas: list[float] = []
    for _, controllers, path in (entry for entry in entries if len(entry) == 3):
        if controllers == "":  # v2: one unified hierarchy
            base, read = root, _cpu_max
        elif "cpu" in controllers.split(","):
            base, read = os.path.join(root, controllers), _cfs_quota
        else:
            continue
        # A container sees its own cgroup as the root of the mount; the listed path may not exist.
        parts = [part for part in path.split("/") if part]
        for depth in range(len(parts), -1, -1):
            quota = read(os.path.join(base, *parts[:depth]))
            if quota is not None:
                quotas.append(quota)
    return min(quotas) if quotas else None


def _cpu_max(directory: str) -> float | None:
    try:
        with open(os.path.join(directory, "cpu.max"), encoding="ascii") as limit:
            quota, period = limit.read().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else int(quota) / int(period)


def _cfs_quota(directory: str) -> float | None:
    try:
        with open(os.path.join(directory, "cpu.cfs_quota_us"), encoding="ascii") as quota_file:
            quota = int(quota_file.read())
        with open(os.path.join(directory, "cpu.cfs_period_us"), encoding="ascii") as period_file:
            period = int(period_file.read())
    except (OSError, ValueError):
        return None
    return None if quota <= 0 or period <= 0 else quota / period


@dataclass
class TableReport:
    """What a run did: rows in, rows out (one per group with group_by), each status's count
    ("error: ..." statuses counted together as "error"), the sentences in and out, and the
    processes that summarized."""

    rows_in: int = 0
    rows_out: int = 0
    groups: int = 0  # with group_by
    statuses: Counter[str] = field(default_factory=Counter)
    sentences_in: int = 0
    sentences_out: int = 0
    workers: int = 1

    def count(self, results: Results, groups: list[int] | None = None) -> None:
        """Adds one chunk's output rows; with group summaries, `groups` are the rows that start a
        group (their status is the group's)."""
        statuses = results[schema.STATUS]
        self.rows_out += len(statuses)
        if groups is not None:
            statuses = [statuses[row] for row in groups]
        self.groups += 0 if groups is None else len(groups)
        for status, n in Counter(statuses).items():
            self.statuses[schema.ERROR if str(status).startswith(schema.ERROR) else str(status)] += n
        self.sentences_in += sum(results[schema.N_SENTENCES_IN])  # type: ignore[arg-type]
        self.sentences_out += sum(results[schema.N_SENTENCES_OUT])  # type: ignore[arg-type]


def check_columns(available: list[str], options: TableOptions) -> None:
    """Raise InputError naming a missing column (and listing the ones there are) before any work."""
    wanted = {
        "text column": options.text_column,
        "id column": options.id_column,
        "group-by column": options.group_by,
        "stars column": options.stars_column,
    }
    for role, name in wanted.items():
        if name is not None and name not in available:
            # A name holding a tab or line break is shown quoted: the message is one line, and a
            # tab in a name is the sign of a delimiter the reader wasn't told.
            listing = ", ".join(n if n.isprintable() else repr(n) for n in available) or "(none)"
            hint = ""
            if len(available) == 1:
                held = [d for d in DELIMITERS if d in available[0]]
                if held:
                    hint = f"; the header is one column holding {held[0]!r}: is that the delimiter? (--sep)"
            raise InputError(f"{role} {name!r} not found; available columns: {listing}{hint}")
    if options.group_by is None and (options.stars_column is not None or options.per_theme):
        raise InputError("--stars and --themes are for --group-by summaries")
    if options.group_by is not None and options.group_by in output_schema(options).names[1:]:
        raise InputError(f"group-by column {options.group_by!r} clashes with an output column name")


def output_schema(options: TableOptions) -> pa.Schema:
    if options.group_by is None:
        return ROW_SCHEMA
    return group_schema(options.group_by, stars=options.stars_column is not None, per_theme=options.per_theme)


def summarize_table(
    reader: TableReader,
    writer: TableWriter,
    spec: SummarizerSpec,
    options: TableOptions,
    on_progress: Callable[[int], None] | None = None,
    on_rows: Callable[[list[str], list[object], Results], bool] | None = None,
) -> TableReport:
    """Summarize every row of `reader` into `writer`; returns what was done.

    `on_progress` is called after each chunk with the number of input rows done so far. Unless
    grouping, `on_rows` is called with each chunk's ids, texts and results, in input order, until
    it answers False (the review sample: it is then no longer given the texts).
    """
    check_columns(reader.columns, options)
    report = TableReport()
    if options.group_by is not None:
        _summarize_groups(reader, writer, spec, options, on_progress, report)
        return report
    id_column = options.id_column
    if id_column is None and DEFAULT_ID_COLUMN in reader.columns:
        id_column = DEFAULT_ID_COLUMN
    columns = [options.text_column] + ([id_column] if id_column is not None else [])
    chunks = reader.chunks(columns, options.chunk_rows)

    # The texts of the chunks in flight, for `on_rows` (held only while it wants them).
    in_flight: deque[list[object]] = deque()

    def jobs() -> Iterator[tuple[list[str], list[object]]]:
        first_row = 0
        for chunk in chunks:
            if id_column is None:
                ids = [str(row) for row in range(first_row, first_row + len(chunk))]
            else:
                # CSV ids are already str (the usual case): convert only the others
                ids = [value if type(value) is str else _as_key(value) for value in chunk[id_column].tolist()]
            first_row += len(chunk)
            texts = _texts_or_row_errors(chunk, options.text_column)
            if on_rows is not None:
                in_flight.append(texts)
            yield ids, texts

    task = partial(summarize_texts, max_chars=options.max_chars, budget=spec.budget())
    for ids, results in _summarize_in_order(jobs(), spec, options.workers, task, report):
        if on_rows is not None and not on_rows(ids, in_flight.popleft(), results):
            on_rows = None
            in_flight.clear()
        writer.write({schema.ID: ids, **results})
        report.rows_in += len(ids)
        report.count(results)
        if on_progress is not None:
            on_progress(report.rows_in)
    return report


def _summarize_groups(
    reader: TableReader,
    writer: TableWriter,
    spec: SummarizerSpec,
    options: TableOptions,
    on_progress: Callable[[int], None] | None,
    report: TableReport,
) -> None:
    """One row per theme of each distinct `group_by` value, groups in order of first appearance.

    A group's rows can be anywhere in the input, so the text column (and the stars column) is
    collected for the whole input before summarizing (only those: memory is about the size of the
    texts). `max_chars` applies to each row's text, not to the group: a group with an over-long
    row gets that row's error status, as the row would on its own.
    """
    group_by = options.group_by
    assert group_by is not None
    stars_column = options.stars_column
    texts_by_group: dict[str, list[str]] = {}
    stars_by_group: dict[str, list[int | None]] = {}
    row_counts: dict[str, int] = {}
    errors: dict[str, str] = {}
    columns = [options.text_column, group_by] + ([stars_column] if stars_column else [])
    for chunk in reader.chunks(columns, options.chunk_rows):
        values = _texts_or_row_errors(chunk, options.text_column)
        stars = chunk[stars_column].tolist() if stars_column else [None] * len(chunk)
        for key_value, text_value, star in zip(chunk[group_by], values, stars, strict=True):
            key = _as_key(key_value)
            row_counts[key] = row_counts.get(key, 0) + 1
            texts = texts_by_group.setdefault(key, [])
            group_stars = stars_by_group.setdefault(key, [])
            if isinstance(text_value, RowError):  # (its group key is unknown: it counts under "")
                errors.setdefault(key, schema.error_status(text_value))
                continue
            text = _as_text(text_value)
            if text is None:
                continue
            if options.max_chars and len(text) > options.max_chars:
                errors.setdefault(key, _too_long_status(text, options.max_chars))
            elif key not in errors:
                texts.append(text)
                group_stars.append(star_rating(star))
        report.rows_in += len(chunk)
        if on_progress is not None:
            on_progress(report.rows_in)

    def group_rows(key: str) -> tuple[list[str], list[int | None]] | None:
        texts, stars = texts_by_group.pop(key), stars_by_group.pop(key)  # freed once handed over
        return None if key in errors else (texts, stars)

    def jobs() -> Iterator[tuple[list[str], list[object]]]:
        keys = list(row_counts)
        for start in range(0, len(keys), options.chunk_rows):
            batch = keys[start : start + options.chunk_rows]
            yield batch, [group_rows(key) for key in batch]

    task = partial(
        summarize_group_texts,
        budget=spec.budget(),
        stars=stars_column is not None,
        per_theme=options.per_theme,
    )
    for keys, results in _summarize_in_order(jobs(), spec, options.workers, task, report):
        positions = results.pop(GROUP_POSITION)
        for row, position in enumerate(positions):
            if keys[position] in errors:  # type: ignore[index]
                results[schema.STATUS][row] = errors[keys[position]]  # type: ignore[index]
        writer.write(
            {
                group_by: [keys[p] for p in positions],  # type: ignore[index]
                schema.N_ROWS: [row_counts[keys[p]] for p in positions],  # type: ignore[index]
                **results,
            }
        )
        report.count(results, groups=_firsts(positions))


def _firsts(positions: list[object]) -> list[int]:
    """The rows that start a group: the first of each run of equal positions."""
    return [row for row, position in enumerate(positions) if row == 0 or positions[row - 1] != position]


# ---- per chunk ---------------------------------------------------------------------------------


class RowError(str):
    """In place of a text: why the reader could not read its row (the row's status says so)."""


def _texts_or_row_errors(chunk: pd.DataFrame, text_column: str) -> list[object]:
    texts = chunk[text_column].tolist()
    if ROW_ERROR not in chunk.columns:
        return texts
    errors = chunk[ROW_ERROR].tolist()
    pairs = zip(texts, errors, strict=True)
    return [RowError(error) if isinstance(error, str) else text for text, error in pairs]


Results = dict[str, list[object]]
# Summary columns for one chunk of values (a partial of summarize_texts or summarize_group_texts).
ChunkTask = Callable[[Summarizer, list[object]], Results]


def summarize_texts(
    summarizer: Summarizer, values: Sequence[object], max_chars: int, budget: Budget | None = None
) -> Results:
    """Summary columns (summary, n_sentences_in, n_sentences_out, status) for a chunk of cells,
    each summary `budget` long (None: the summarizer's default).

    Missing cells (None, NaN) are `empty`; numbers and other non-strings are summarized as their
    text; a text over `max_chars`, or a row the reader could not read, gets an error status without
    reaching the engine.
    """
    n = len(values)
    summaries: list[object] = [""] * n
    n_in: list[object] = [0] * n
    n_out: list[object] = [0] * n
    statuses: list[object] = [schema.EMPTY] * n
    positions: list[int] = []
    texts: list[str] = []
    for position, value in enumerate(values):
        if isinstance(value, RowError):
            statuses[position] = schema.error_status(value)
            continue
        text = _as_text(value)
        if text is None:
            continue
        if max_chars and len(text) > max_chars:
            statuses[position] = _too_long_status(text, max_chars)
            continue
        positions.append(position)
        texts.append(text)
    for position, outcome in zip(positions, _summarize_batch(summarizer, texts, budget), strict=True):
        if isinstance(outcome, Exception):
            statuses[position] = _error_status(outcome)
            continue
        summaries[position] = outcome.text
        n_in[position] = outcome.n_input
        n_out[position] = len(outcome.sentences)
        statuses[position] = outcome.status
    return {
        schema.SUMMARY: summaries,
        schema.N_SENTENCES_IN: n_in,
        schema.N_SENTENCES_OUT: n_out,
        schema.STATUS: statuses,
    }


# In summarize_group_texts' results: the position in its chunk of each row's group.
GROUP_POSITION = "group"


def summarize_group_texts(
    summarizer: Summarizer,
    groups: Sequence[object],
    budget: Budget | None,
    stars: bool = False,
    per_theme: bool = False,
) -> Results:
    """Output columns for a chunk of groups, each given as (its texts, their star ratings), by
    `summarize_group`: a row per group or, `per_theme`, per theme (one for a group without
    themes, theme ""). `GROUP_POSITION` says which group each row is of. A group given as None
    gets one row and is left to the caller (its status); one that makes the engine raise gets
    `error: ...`. The star columns are there when `stars`."""
    fields = (THEME_FIELDS if per_theme else THEMES_FIELDS) + (STAR_FIELDS if stars else []) + SUMMARY_FIELDS
    columns = [name for name, _ in fields]
    results: Results = {GROUP_POSITION: [], **{name: [] for name in columns}}

    def add(position: int, row: dict[str, object]) -> None:
        results[GROUP_POSITION].append(position)
        for name in columns:
            results[name].append(row[name])

    for position, group in enumerate(groups):
        if not group:
            add(position, _output_row({}, [], 0, schema.EMPTY, _NO_THEME))
            continue
        texts, ratings = group  # type: ignore[misc]
        try:
            summary = summarize_group(position, texts, summarizer, budget, ratings)
        except Exception as exc:
            status = _error_status(exc)
            add(position, _output_row({}, [], 0, status, _NO_THEME))
            continue
        for row in _theme_rows(summary) if per_theme else [_group_row(summary)]:
            add(position, row)
    return results


# The theme columns of a group without a summary (either layout's).
_NO_THEME = {schema.THEMES: "", schema.THEME: "", schema.THEME_ROWS: 0, schema.SHARE: None}


def _group_row(summary: GroupSummary) -> dict[str, object]:
    themes = "; ".join(f"{', '.join(theme.words)} ({theme.texts})" for theme in summary.themes)
    return _output_row(
        summary.stars, summary.sentences, summary.n_sentences, summary.status, {schema.THEMES: themes}
    )


def _theme_rows(summary: GroupSummary) -> Iterator[dict[str, object]]:
    if not summary.themes:
        yield _output_row(
            summary.stars,
            summary.sentences,
            summary.n_sentences,
            summary.status,
            {schema.THEME: "", schema.THEME_ROWS: summary.n_texts, schema.SHARE: 1.0},
        )
    for theme in summary.themes:
        yield _output_row(
            theme.stars,
            theme.sentences,
            theme.mentions,
            summary.status,
            {
                schema.THEME: ", ".join(theme.words),
                schema.THEME_ROWS: theme.texts,
                schema.SHARE: round(theme.texts / summary.n_texts, 3),
            },
        )


def _output_row(
    star_split: dict[int, int],
    sentences: list[str],
    n_sentences_in: int,
    status: str,
    theme: dict[str, object],
) -> dict[str, object]:
    """A row of group output: the `theme` columns given, the stars of `star_split`, the summary."""
    starred = sum(star_split.values())
    mean_stars = round(sum(star * n for star, n in star_split.items()) / starred, 2) if starred else None
    return {
        **theme,
        schema.STARS: mean_stars,
        **{
            name: star_split.get(star, 0)
            for name, star in zip(schema.STAR_COLUMNS, schema.STAR_RATINGS, strict=True)
        },
        schema.SUMMARY: " ".join(sentences),
        schema.N_SENTENCES_IN: n_sentences_in,
        schema.N_SENTENCES_OUT: len(sentences),
        schema.STATUS: status,
    }


def _too_long_status(text: str, max_chars: int) -> str:
    return schema.error_status(f"text too long ({len(text)} chars > {max_chars})")


def _summarize_batch(
    summarizer: Summarizer, texts: list[str], budget: Budget | None
) -> list[Summary | Exception]:
    try:
        return list(summarizer.summarize_many(texts, budget))
    except Exception:
        # Find the culprit(s): redo the chunk one text at a time.
        outcomes: list[Summary | Exception] = []
        for text in texts:
            try:
                outcomes.append(summarizer.summarize(text, budget))
            except Exception as exc:
                outcomes.append(exc)
        return outcomes


def _error_status(exc: Exception) -> str:
    detail = " ".join(str(exc).split()) or type(exc).__name__
    return schema.error_status(detail[:200])


def _as_text(value: object) -> str | None:
    if value is None or value is pd.NA:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, bytes):
        return decode_text(value)
    return str(value)


def _as_key(value: object) -> str:
    text = _as_text(value)
    return "" if text is None else text


# ---- ordered, bounded, optionally parallel -----------------------------------------------------

_worker_summarizer: Summarizer | None = None
# Long enough to be clustered and scored: every stage runs.
_WARM_UP_TEXT = "The tea is good. The tea is strong and dark. The box came late. The box was torn open."


def _start_worker(summarizer: Summarizer) -> None:
    # Two workers on two cores: one BLAS/OpenMP thread each, or they fight over the cores.
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    global _worker_summarizer
    _worker_summarizer = summarizer


def _summarize_in_worker(task: ChunkTask, values: list[object]) -> Results:
    assert _worker_summarizer is not None
    return task(_worker_summarizer, values)


def _summarize_in_order(
    jobs: Iterator[tuple[list[str], list[object]]],
    spec: SummarizerSpec,
    workers: int | None,
    task: ChunkTask,
    report: TableReport,
) -> Iterator[tuple[list[str], Results]]:
    """(keys, task's results) for each (keys, values) job, in job order; `report.workers` says how
    many processes summarized."""
    summarizer = spec.build()
    head = list(islice(jobs, 2))
    workers = usable_cores() if workers is None else workers
    report.workers = workers if workers > 1 and len(head) >= 2 else 1
    # A chunk allocates some 10^5 containers and frees them at its end; at the default threshold
    # (700) the collector ran ~15 times a chunk, 5-15% of the run, for cycles the engine never makes.
    # (Not in the library: the threshold is the process's, and the API's threads share it.)
    thresholds = gc.get_threshold()
    gc.set_threshold(_GC_THRESHOLD, *thresholds[1:])
    try:
        yield from _summarize_chunks(chain(head, jobs), summarizer, report.workers, task)
    finally:
        gc.set_threshold(*thresholds)


# Allocations between young-generation collections while summarizing (Python's default: 700).
_GC_THRESHOLD = 50_000


def _summarize_chunks(
    jobs: Iterator[tuple[list[str], list[object]]], summarizer: Summarizer, workers: int, task: ChunkTask
) -> Iterator[tuple[list[str], Results]]:
    if workers == 1:
        for keys, values in jobs:
            yield keys, task(summarizer, values)
        return
    # Its lazy imports and tables loaded once here, not once in every worker.
    summarizer.summarize(_WARM_UP_TEXT)
    # fork: the workers inherit the summarizer built once here (initargs are not pickled with
    # fork), so its vocabulary index and the memory-mapped vectors are shared pages, not copies,
    # and no worker pays to build them again.
    context = multiprocessing.get_context("fork")
    # Frozen, the objects the workers inherit (the summarizer, every imported module's) are left
    # out of garbage collections, in the workers and here: walking them cost ~5% of the run and
    # wrote to every page holding one, copying pages the workers would otherwise share.
    gc.freeze()
    try:
        with ProcessPoolExecutor(
            workers, mp_context=context, initializer=_start_worker, initargs=(summarizer,)
        ) as pool:
            pending: deque[tuple[list[str], Future[Results]]] = deque()
            for keys, values in jobs:
                pending.append((keys, pool.submit(_summarize_in_worker, task, values)))
                if len(pending) >= 2 * workers:
                    done_keys, future = pending.popleft()
                    yield done_keys, future.result()
            while pending:
                done_keys, future = pending.popleft()
                yield done_keys, future.result()
    finally:
        gc.unfreeze()
