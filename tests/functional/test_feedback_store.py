"""The feedback store's contract: every test runs against each backend, the SQLite file `sumpipe
serve` uses and the DynamoDB table the stack deploys (moto, in-process, with the table as the
template declares it)."""

from __future__ import annotations

import csv
import io
import multiprocessing
import threading
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest
from moto import mock_aws
from pipeline_aws import REGION, create_table

from sumpipe.feedback import EXPORT_COLUMNS, Decision, FeedbackStore, SqliteFeedbackStore, export_rows
from sumpipe.feedback.dynamodb import DynamoFeedbackStore


def decision(n: int = 0, **fields: object) -> Decision:
    values: dict = {
        "text_id": f"t-{n}",
        "text": f"Text {n}. It is long.",
        "method": "default",
        "summary_shown": f"Text {n}.",
        "decision": "approve",
        "corrected_summary": "",
        "reviewer": "ana",
        "time": 1_800_000_000.0 + n,
    }
    return Decision(**{**values, **fields})


@pytest.fixture(params=["sqlite", "dynamodb"])
def store(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[FeedbackStore]:
    if request.param == "sqlite":
        yield SqliteFeedbackStore(tmp_path / "feedback.sqlite3")
        return
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    with mock_aws():
        db = boto3.client("dynamodb", region_name=REGION)
        create_table(db, "FeedbackTable", "feedback")
        yield DynamoFeedbackStore(db, "feedback")


def test_a_decision_is_kept_as_recorded(store: FeedbackStore) -> None:
    kept = decision(text='Ünïcode, "quotes",\nnew lines and =formulas', reason="too short", decision="reject")
    assert store.record(kept)
    assert list(store.decisions()) == [kept]


def test_a_retried_decision_is_recorded_once_and_never_overwritten(store: FeedbackStore) -> None:
    first = decision()
    assert store.record(first)
    assert not store.record(first)
    assert not store.record(decision(decision_id=first.decision_id, reviewer="someone else"))
    assert list(store.decisions()) == [first]


def test_decisions_come_oldest_first(store: FeedbackStore) -> None:
    made = [decision(n) for n in (3, 1, 2)]
    for each in made:
        store.record(each)
    assert [d.text_id for d in store.decisions()] == ["t-1", "t-2", "t-3"]


def test_reviewers_deciding_at_once_lose_nothing(store: FeedbackStore) -> None:
    """Eight reviewers decide on the same text at the same moment, 25 times each: every decision
    is kept (no read-modify-write of a shared row, so no lost update)."""
    start = threading.Barrier(8)

    def review(reviewer: int) -> None:
        start.wait()
        for n in range(25):
            assert store.record(decision(0, reviewer=f"r{reviewer}", reason=str(n), decision="reject"))

    threads = [threading.Thread(target=review, args=(r,)) for r in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    kept = list(store.decisions())
    assert len(kept) == 200
    assert {(d.reviewer, d.reason) for d in kept} == {(f"r{r}", str(n)) for r in range(8) for n in range(25)}


def _record_many(path: str, reviewer: str, start: multiprocessing.synchronize.Barrier) -> None:
    store = SqliteFeedbackStore(path)
    start.wait()
    for n in range(50):
        store.record(decision(n, reviewer=reviewer))


def test_sqlite_store_shared_by_server_processes_loses_nothing(tmp_path: Path) -> None:
    """`sumpipe serve --workers 2`: two processes write the one file at once."""
    path = str(tmp_path / "feedback.sqlite3")
    SqliteFeedbackStore(path)
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    workers = [context.Process(target=_record_many, args=(path, f"w{i}", start)) for i in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert len(list(SqliteFeedbackStore(path).decisions())) == 100


def test_export_is_csv_with_the_documented_columns(store: FeedbackStore) -> None:
    tricky = decision(
        1, text='A "quoted", comma\nand a new line.', decision="correct", corrected_summary="A."
    )
    store.record(decision(0))
    store.record(tricky)
    rows = list(csv.DictReader(io.StringIO("".join(export_rows(store.decisions())))))
    assert tuple(rows[0]) == EXPORT_COLUMNS
    assert EXPORT_COLUMNS[:8] == (
        "text_id", "text", "method", "summary_shown", "decision", "corrected_summary", "reviewer", "time"
    )  # fmt: skip
    assert rows[1]["text"] == tricky.text and rows[1]["corrected_summary"] == "A."
    assert rows[0]["time"] == "2027-01-15T08:00:00.000+00:00"
