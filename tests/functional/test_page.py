"""The review page (`/` of `sumpipe serve`) in a real browser: summarize a text, see its summary
highlighted in place, approve, correct or reject it, and export the decisions as CSV; with a stack
(the local stack's emulator), upload a table with its job options."""

from __future__ import annotations

import csv
import io
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from api_server import serve
from browser import chromium, fill
from pipeline_aws import emulated_stack
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from sumpipe import options
from sumpipe.feedback import EXPORT_COLUMNS

REVIEW = (
    "I bought these kettle chips for a party. They are thick and very crunchy. "
    "The salt and vinegar flavour is sharp but not overpowering. My brother said they taste like "
    "the ones from his childhood in Oregon. The bag arrived with half of the chips broken though. "
    "Still, the crunch and the thickness make them the best chips I have had in years."
)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with serve() as (url, _):
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    with chromium() as driver:
        driver.implicitly_wait(0)
        yield driver


def wait_for(browser: WebDriver, condition, what: str, timeout: float = 20):
    return WebDriverWait(browser, timeout).until(lambda _: condition(), message=f"waiting for {what}")


def status(browser: WebDriver) -> str:
    return browser.find_element(By.CSS_SELECTOR, "[data-testid=status]").text


def button(browser: WebDriver, label: str):
    return browser.find_element(By.XPATH, f"//button[normalize-space()='{label}']")


def summarize_on_page(browser: WebDriver, server: str, text: str, reviewer: str = "Ana") -> str:
    """Open the page, paste `text`, press Summarize; the summary shown."""
    browser.get(server + "/")
    name = browser.find_element(By.NAME, "reviewer")
    name.clear()
    name.send_keys(reviewer)
    box = browser.find_element(By.CSS_SELECTOR, "textarea[name=text]")
    box.clear()
    # Typed through the clipboard's way in, not key by key: send_keys of a long text is slow.
    browser.execute_script("arguments[0].value = arguments[1]", box, text)
    button(browser, "Summarize").click()
    summary = browser.find_element(By.CSS_SELECTOR, "[data-testid=summary]")
    wait_for(browser, lambda: summary.text.strip() and "kept" in status(browser), "the summary")
    return summary.text


def exported(server: str, text: str) -> list[dict[str, str]]:
    answer = httpx.get(server + "/feedback.csv", timeout=30)
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(answer.text)))
    return [row for row in rows if row["text"] == text]


def unique(text: str) -> str:
    """The review with a marker sentence, so each test finds its own rows in the shared export."""
    return f"{text} Reference {uuid.uuid4().hex[:8]} is here."


def test_the_summary_is_the_apis_and_is_highlighted_in_the_text(browser: WebDriver, server: str) -> None:
    shown = summarize_on_page(browser, server, REVIEW)
    api = httpx.post(server + "/summarize", json={"text": REVIEW, "with_input_sentences": True}).json()
    assert shown == api["summary"]
    spans = browser.find_elements(By.CSS_SELECTOR, "[data-testid=original] .sentence")
    assert [s.text for s in spans] == api["input_sentences"]
    highlighted = [s.text for s in spans if "in-summary" in s.get_attribute("class")]
    assert highlighted == api["sentences"] and 0 < len(highlighted) < len(spans)


def test_approve_is_recorded_with_the_reviewer(browser: WebDriver, server: str) -> None:
    text = unique(REVIEW)
    shown = summarize_on_page(browser, server, text, reviewer="Ana Lima")
    button(browser, "Approve").click()
    wait_for(browser, lambda: "Approved" in status(browser), "the approval")
    [row] = exported(server, text)
    assert (row["decision"], row["reviewer"], row["summary_shown"], row["method"]) == (
        "approve", "Ana Lima", shown, "default"
    )  # fmt: skip
    assert row["corrected_summary"] == "" and row["text_id"].startswith("sha256:")


def test_correct_by_picking_other_sentences(browser: WebDriver, server: str) -> None:
    text = unique(REVIEW)
    shown = summarize_on_page(browser, server, text)
    spans = browser.find_elements(By.CSS_SELECTOR, "[data-testid=original] .sentence")
    picked = [s for s in spans if "in-summary" in s.get_attribute("class")]
    other = next(s for s in spans if "in-summary" not in s.get_attribute("class"))
    picked[0].click()  # out of the correction
    other.click()  # into it
    want = [s.text for s in spans if "in-correction" in s.get_attribute("class")]
    assert picked[0].text not in want and other.text in want
    corrected = browser.find_element(By.NAME, "corrected")
    assert corrected.get_attribute("value") == " ".join(want)
    button(browser, "Correct").click()
    wait_for(browser, lambda: "Correction saved" in status(browser), "the correction")
    [row] = exported(server, text)
    assert (row["decision"], row["summary_shown"], row["corrected_summary"]) == (
        "correct",
        shown,
        " ".join(want),
    )


def test_correct_by_editing_the_words(browser: WebDriver, server: str) -> None:
    text = unique(REVIEW)
    summarize_on_page(browser, server, text)
    button(browser, "Correct").click()  # nothing changed yet: refused on the page, nothing sent
    wait_for(browser, lambda: "pick other sentences or edit the words" in status(browser), "the refusal")
    assert exported(server, text) == []
    corrected = browser.find_element(By.NAME, "corrected")
    corrected.clear()
    corrected.send_keys("Thick, crunchy chips; half the bag arrived broken.")
    button(browser, "Correct").click()
    wait_for(browser, lambda: "Correction saved" in status(browser), "the correction")
    [row] = exported(server, text)
    assert row["corrected_summary"] == "Thick, crunchy chips; half the bag arrived broken."


def test_reject_with_a_reason(browser: WebDriver, server: str) -> None:
    text = unique(REVIEW)
    summarize_on_page(browser, server, text, reviewer="Bo")
    browser.find_element(By.NAME, "reason").send_keys("It leaves out the broken chips.")
    button(browser, "Reject").click()
    wait_for(browser, lambda: "Rejected" in status(browser), "the rejection")
    assert not button(browser, "Approve").is_enabled()  # one decision per summary shown
    [row] = exported(server, text)
    assert (row["decision"], row["reason"], row["reviewer"]) == (
        "reject",
        "It leaves out the broken chips.",
        "Bo",
    )


def test_the_reviewer_name_is_remembered(browser: WebDriver, server: str) -> None:
    summarize_on_page(browser, server, REVIEW, reviewer="Carla")
    button(browser, "Approve").click()
    wait_for(browser, lambda: "Approved" in status(browser), "the approval")
    browser.refresh()
    assert browser.find_element(By.NAME, "reviewer").get_attribute("value") == "Carla"


def test_a_refused_text_says_why_on_the_page(browser: WebDriver, server: str) -> None:
    browser.get(server + "/")
    box = browser.find_element(By.CSS_SELECTOR, "textarea[name=text]")
    browser.execute_script("arguments[0].value = arguments[1]", box, "x" * 100_001)
    button(browser, "Summarize").click()
    wait_for(browser, lambda: "Could not summarize" in status(browser), "the error")
    assert "100000" in status(browser)
    assert not browser.find_element(By.ID, "result").is_displayed()


def test_the_export_link_downloads_the_csv(browser: WebDriver, server: str) -> None:
    browser.get(server + "/")
    link = browser.find_element(By.LINK_TEXT, "Export the decisions (CSV)")
    assert link.get_attribute("href") == server + "/feedback.csv"
    header = httpx.get(link.get_attribute("href")).text.splitlines()[0]
    assert header.split(",") == list(EXPORT_COLUMNS)


def test_the_page_is_small_and_loads_nothing_from_elsewhere(server: str) -> None:
    page = httpx.get(server + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assets = [httpx.get(f"{server}/static/{name}") for name in ("page.js", "page.css")]
    assert all(asset.status_code == 200 for asset in assets)
    total = len(page.content) + sum(len(asset.content) for asset in assets)
    assert total < 100 * 1024, f"first load is {total} bytes"
    assert "http" not in page.text.replace("http-equiv", ""), "the page loads only its own files"


def test_two_reviewers_deciding_at_once_lose_nothing(server: str) -> None:
    text = unique(REVIEW)
    start = threading.Barrier(2)

    def review(reviewer: str) -> None:
        with httpx.Client(base_url=server, timeout=30) as client:
            start.wait()
            for n in range(30):
                body = {"text": text, "method": "default", "summary_shown": "x", "decision": "reject"}
                answer = client.post("/feedback", json={**body, "reviewer": reviewer, "reason": str(n)})
                assert answer.status_code == 201, answer.text

    threads = [threading.Thread(target=review, args=(name,)) for name in ("Ana", "Bo")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    rows = exported(server, text)
    assert sorted((r["reviewer"], int(r["reason"])) for r in rows) == sorted(
        (name, n) for name in ("Ana", "Bo") for n in range(30)
    )


def test_a_retried_decision_is_recorded_once(server: str) -> None:
    text = unique(REVIEW)
    body = {"decision_id": uuid.uuid4().hex, "text": text, "method": "kmeans", "summary_shown": "x"}
    first = httpx.post(server + "/feedback", json={**body, "decision": "approve"})
    again = httpx.post(server + "/feedback", json={**body, "decision": "approve"})
    assert (first.status_code, first.json()["recorded"]) == (201, True)
    assert (again.status_code, again.json()["recorded"]) == (200, False)
    assert len(exported(server, text)) == 1


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"decision": "correct"}, "needs a corrected_summary"),
        ({"corrected_summary": "y"}, 'only for decision "correct"'),
        ({"decision": "maybe"}, "decision"),
        ({"method": "gpt"}, "method"),
        ({"text": ""}, "text"),
        ({"reviewer": "r" * 201}, "reviewer"),
        ({"decision_id": "../../x"}, "decision_id"),
        ({"votes": 3}, "votes"),
    ],
)
def test_a_bad_decision_is_refused_naming_the_field(server: str, change: dict, words: str) -> None:
    body = {"text": "A text.", "method": "default", "summary_shown": "x", "decision": "approve", **change}
    answer = httpx.post(server + "/feedback", json=body)
    assert answer.status_code in (400, 413) and words in answer.json()["detail"], answer.text


def test_without_a_stack_the_page_says_how_to_get_batch_jobs(browser: WebDriver, server: str) -> None:
    browser.get(server + "/")
    note = browser.find_element(By.CSS_SELECTOR, "[data-testid=batch-off]")
    wait_for(browser, lambda: note.is_displayed(), "the note")
    assert "sumpipe serve --stack" in note.text
    assert not browser.find_element(By.ID, "upload-form").is_displayed()
    answer = httpx.post(server + "/uploads", json={"filename": "reviews.csv"})
    assert answer.status_code == 503 and "needs a stack" not in answer.text and "need a stack" in answer.text


# --- the batch section, with a stack -----------------------------------------------------------

TABLE = b"Id,ProductId,Score,Text\n1,B01,5,Thick and crunchy. Would buy again.\n"


@pytest.fixture(scope="module")
def stack_page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """`sumpipe serve` with a stack in the local stack's emulator (which checks the upload's POST
    policy as S3 does): its buckets and job table, no functions. What an upload asks of its job is
    the object's metadata, read here as the trigger reads it."""
    with emulated_stack(tmp_path_factory.mktemp("moto") / "moto.log") as stack, serve(stack.env) as (url, _):
        yield SimpleNamespace(url=url, s3=stack.s3)


def upload_on_page(browser: WebDriver, url: str, table: Path, job_options: dict[str, str]) -> str:
    """Open the page, pick `table`, set the job options, press Upload; the batch status line once
    it says how the upload went."""
    browser.get(url + "/")
    form = browser.find_element(By.ID, "upload-form")
    wait_for(browser, form.is_displayed, "the upload form")
    form.find_element(By.NAME, "file").send_keys(str(table))
    for name, value in job_options.items():
        fill(form, name, value)
    form.find_element(By.XPATH, ".//button[normalize-space()='Upload']").click()

    def outcome() -> str | None:
        # After a good upload the browser comes back from the bucket: a new page, read when loaded.
        try:
            line = browser.find_element(By.CSS_SELECTOR, "[data-testid=batch-status]")
            return line.text if line.text.startswith(("Uploaded", "Could not")) else None
        except WebDriverException:
            return None

    return wait_for(browser, outcome, "the upload's outcome", timeout=30)


@pytest.mark.parametrize(
    "job_options",
    [
        {"text-column": "Text", "id-column": "Id", "ratio": "0.5", "method": "kmeans", "format": "jsonl"},
        # Any column name fits (percent-encoded in the metadata).
        {
            "group-by": "ProductId",
            "stars": "Sterne (1–5)",
            "themes": "true",
            "sentences": "2",
            "format": "parquet",
        },
    ],
    ids=["per-row", "group-by"],
)
def test_every_job_option_set_on_the_page_goes_with_the_upload(
    browser: WebDriver, stack_page: SimpleNamespace, tmp_path: Path, job_options: dict[str, str]
) -> None:
    table = tmp_path / f"options {uuid.uuid4().hex[:8]}.csv"
    table.write_bytes(TABLE)
    assert upload_on_page(browser, stack_page.url, table, job_options).startswith("Uploaded")
    stored = stack_page.s3.head_object(Bucket="in-bucket", Key=f"uploads/{table.name}")
    # What the trigger reads of it (sumpipe.options, the one contract) is what was set on the page.
    assert options.from_metadata(stored["Metadata"]).as_strings() == job_options


@pytest.mark.parametrize(
    ("job_options", "message"),
    [
        ({"sentences": "2", "ratio": "0.5"}, "job option sumpipe-ratio: give sentences or ratio, not both"),
        (
            {"themes": "true"},
            "job option sumpipe-themes: is for group-by summaries; give sumpipe-group-by too",
        ),
        ({"group-by": "ProductId", "method": "kmeans"}, "job option sumpipe-method: kmeans does not apply"),
        ({"ratio": "0"}, "job option sumpipe-ratio: must be a fraction in (0, 1], got 0.0"),
    ],
)
def test_a_bad_job_option_is_refused_on_the_page_naming_it(
    browser: WebDriver, stack_page: SimpleNamespace, tmp_path: Path, job_options: dict[str, str], message: str
) -> None:
    table = tmp_path / f"refused {uuid.uuid4().hex[:8]}.csv"
    table.write_bytes(TABLE)
    said = upload_on_page(browser, stack_page.url, table, job_options)
    assert said.startswith(f"Could not upload: {message}"), said
    line = browser.find_element(By.CSS_SELECTOR, "[data-testid=batch-status]")
    assert "error" in line.get_attribute("class")
    listed = stack_page.s3.list_objects_v2(Bucket="in-bucket", Prefix=f"uploads/{table.name}")
    assert listed["KeyCount"] == 0  # nothing reached the bucket
