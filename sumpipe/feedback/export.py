"""The feedback export (GET /feedback.csv): every decision as CSV, for spreadsheets and programs.

Line ends are CRLF (RFC 4180), so the csv module quotes any field holding a CR or LF: a bare CR
in a text stays inside its field for Python's csv, pandas and scripts/evaluate.py. Cells a
spreadsheet would run are neutralized by the CLI's own rule (summarizer.csv_safety); the id
columns keep their exact value unless it could execute, so the export joins back to the jobs."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator
from dataclasses import astuple
from datetime import UTC, datetime

from summarizer.csv_safety import neutralize_formula
from sumpipe.feedback.base import EXPORT_COLUMNS, Decision

IDENTIFIER_COLUMNS = frozenset({"text_id", "job_id", "decision_id"})
_TIME = EXPORT_COLUMNS.index("time")


def export_rows(decisions: Iterable[Decision]) -> Iterator[str]:
    """The CSV export, a line at a time (header first), so a large store streams."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")

    def take() -> str:
        line = buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
        return line

    writer.writerow(EXPORT_COLUMNS)
    yield take()
    for decision in decisions:
        row = [
            neutralize_formula(value, identifier=name in IDENTIFIER_COLUMNS)
            if isinstance(value, str)
            else value
            for name, value in zip(EXPORT_COLUMNS, astuple(decision), strict=True)
        ]
        row[_TIME] = datetime.fromtimestamp(decision.time, UTC).isoformat(timespec="milliseconds")
        writer.writerow(row)
        yield take()
