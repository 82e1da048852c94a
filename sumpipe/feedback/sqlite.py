"""The feedback store in one SQLite file: the default for `sumpipe serve` (no AWS needed).

Each decision is one INSERT keyed by its id, in WAL mode with a busy timeout, so reviewers served
by several threads or worker processes at once all get their rows in and readers never block them.
The quota and reused-id checks run in the same transaction as the INSERT, under the write lock
(BEGIN IMMEDIATE), so writers at once can't both pass a check only one of them should.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import astuple
from pathlib import Path

from sumpipe.feedback.base import EXPORT_COLUMNS, Decision, DecisionIdReused, is_retry
from sumpipe.feedback.quota import FeedbackLimits, minute_of

_COLUMNS = ", ".join(EXPORT_COLUMNS)
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS decisions (
    {", ".join(f"{name} {'REAL' if name == 'time' else 'TEXT'} NOT NULL" for name in EXPORT_COLUMNS)},
    PRIMARY KEY (decision_id)
);
CREATE INDEX IF NOT EXISTS decisions_by_reviewer ON decisions (reviewer, time);
"""


class SqliteFeedbackStore:
    def __init__(self, path: str | Path, limits: FeedbackLimits) -> None:
        self.path = Path(path)
        self.limits = limits
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()  # sqlite3 connections belong to the thread that made them
        with self._connection() as db:
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)

    def _connection(self) -> sqlite3.Connection:
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = sqlite3.connect(self.path, timeout=30)
        return db

    def record(self, decision: Decision) -> bool:
        self.limits.check_size(decision)
        placeholders = ", ".join("?" * len(EXPORT_COLUMNS))
        with self._connection() as db:  # one transaction: committed, or rolled back on error
            db.execute("BEGIN IMMEDIATE")
            found = db.execute(
                f"SELECT {_COLUMNS} FROM decisions WHERE decision_id = ?",  # noqa: S608 (column names are ours)
                (decision.decision_id,),
            ).fetchone()
            if found is not None:
                if is_retry(Decision(*found), decision):
                    return False
                raise DecisionIdReused(decision.decision_id)
            start = minute_of(decision) * 60
            (this_minute,) = db.execute(
                "SELECT count(*) FROM decisions WHERE reviewer = ? AND time >= ? AND time < ?",
                (decision.reviewer, start, start + 60),
            ).fetchone()
            if this_minute >= self.limits.decisions_per_minute:
                raise self.limits.rate_exceeded(decision)
            db.execute(
                f"INSERT INTO decisions ({_COLUMNS}) VALUES ({placeholders})",  # noqa: S608
                astuple(decision),
            )
        return True

    def decisions(self) -> Iterator[Decision]:
        # A connection of its own: a streamed export is resumed on whichever thread the server
        # picks, one at a time, and the rows are read as they are sent, not all at once.
        db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        try:
            for row in db.execute(f"SELECT {_COLUMNS} FROM decisions ORDER BY time, decision_id"):  # noqa: S608
                yield Decision(*row)
        finally:
            db.close()
