"""The feedback store in one SQLite file: the default for `sumpipe serve` (no AWS needed).

Each decision is one INSERT keyed by its id, in WAL mode with a busy timeout, so reviewers served
by several threads or worker processes at once all get their rows in and readers never block them.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import astuple
from pathlib import Path

from sumpipe.feedback.base import EXPORT_COLUMNS, Decision

_COLUMNS = ", ".join(EXPORT_COLUMNS)
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS decisions (
    {", ".join(f"{name} {'REAL' if name == 'time' else 'TEXT'} NOT NULL" for name in EXPORT_COLUMNS)},
    PRIMARY KEY (decision_id)
)
"""


class SqliteFeedbackStore:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()  # sqlite3 connections belong to the thread that made them
        with self._connection() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(_SCHEMA)

    def _connection(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = sqlite3.connect(self.path, timeout=30)
        return db

    def record(self, decision: Decision) -> bool:
        placeholders = ", ".join("?" * len(EXPORT_COLUMNS))
        with self._connection() as db:  # one transaction: committed, or rolled back on error
            cursor = db.execute(
                f"INSERT OR IGNORE INTO decisions ({_COLUMNS}) VALUES ({placeholders})",  # noqa: S608 (column names are ours)
                astuple(decision),
            )
        return cursor.rowcount == 1

    def decisions(self) -> Iterator[Decision]:
        # A connection of its own: a streamed export is resumed on whichever thread the server
        # picks, one at a time, and the rows are read as they are sent, not all at once.
        db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        try:
            for row in db.execute(f"SELECT {_COLUMNS} FROM decisions ORDER BY time, decision_id"):  # noqa: S608
                yield Decision(*row)
        finally:
            db.close()
