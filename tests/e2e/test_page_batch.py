"""The review page's batch section against the local stack, IAM enforced, in a real browser: a
table uploaded from the page (a presigned POST straight to the input bucket, with the job options
set on the page as its metadata) becomes a job with those options in the list, and its summary
downloads through a presigned GET."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import PurePosixPath

import httpx
import pandas as pd
import pytest
from api_server import serve
from browser import chromium, fill
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from summarizer import schema
from sumpipe import keys, options
from sumpipe.api.filenames import attachment
from sumpipe.aws import client
from sumpipe.ops.commands import jobs as operator

from .conftest import DATA, RunningStack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
SAMPLE = DATA / "reviews_sample.csv"


@pytest.fixture(scope="module")
def page(running_stack: RunningStack) -> Iterator[str]:
    # The stack's endpoint and administrator are in os.environ (as after `sumpipe local up`).
    with serve(dict(os.environ), "--stack", "sumpipe") as (url, _):
        yield url


@pytest.fixture(scope="module")
def browser() -> Iterator[WebDriver]:
    with chromium() as driver:
        yield driver


def _upload(browser: WebDriver, page: str, path: str, **job_options: str) -> None:
    browser.get(page + "/")
    form = browser.find_element(By.ID, "upload-form")
    WebDriverWait(browser, 20).until(lambda _: form.is_displayed(), "the upload form")
    form.find_element(By.NAME, "file").send_keys(path)
    for name, value in job_options.items():
        fill(form, name, value)
    form.find_element(By.XPATH, ".//button[normalize-space()='Upload']").click()
    # The browser goes to the bucket and is sent back: a new page.
    _wait(browser, 30).until(
        lambda d: "Uploaded" in d.find_element(By.CSS_SELECTOR, "[data-testid=batch-status]").text,
        "back from the bucket",
    )


def _job_row(browser: WebDriver, name: str, state: str) -> list[str]:
    def row() -> list[str] | None:
        for tr in browser.find_elements(By.CSS_SELECTOR, "[data-testid=jobs] tbody tr"):
            cells = [td.text for td in tr.find_elements(By.TAG_NAME, "td")]
            if cells and cells[0] == name and cells[1].startswith(state):
                return cells
        return None

    return _wait(browser, 90).until(lambda _: row(), f"{name} {state} in the job list")


def _wait(browser: WebDriver, timeout: float) -> WebDriverWait:
    # The page loads anew after the upload (an element read mid-navigation belongs to the old
    # document: chromedriver says so with a plain WebDriverException), and the job list is
    # redrawn while jobs run: any of these is retried until the timeout.
    return WebDriverWait(browser, timeout, ignored_exceptions=(WebDriverException,))


def test_a_table_uploaded_from_the_page_is_summarized_and_downloads(
    browser: WebDriver, page: str, running_stack: RunningStack, tmp_path
) -> None:
    upload = tmp_path / "page upload.csv"
    upload.write_bytes(SAMPLE.read_bytes())
    _upload(browser, page, str(upload), **{"text-column": "Text"})
    cells = _job_row(browser, "page upload.csv", "succeeded")
    assert cells[2] == "300"  # rows
    [job] = [j for j in running_stack.target.ledger().list_jobs() if j.input_key == "uploads/page upload.csv"]
    assert job.options == {"text-column": "Text"}  # the page's option reached the job
    link = browser.find_element(By.LINK_TEXT, "Download")
    download = httpx.get(link.get_attribute("href"), follow_redirects=True, timeout=30)
    assert download.status_code == 200, download.text
    assert download.headers["content-disposition"] == 'attachment; filename="page upload.summary.csv"'
    assert download.content == operator.output_object(running_stack.target, job.job_id, keys.SUMMARY)


@pytest.mark.parametrize(
    ("name", "job_options"),
    [
        (
            "page options.csv",
            {
                "text-column": "Text",
                "id-column": "Id",
                "sentences": "1",
                "method": "kmeans",
                "format": "jsonl",
            },
        ),
        (
            "page themes.csv",
            {
                "group-by": "ProductId",
                "stars": "Score",
                "themes": "true",
                "ratio": "0.5",
                "format": "parquet",
            },
        ),
    ],
    ids=["per-row", "group-by"],
)
def test_every_job_option_set_on_the_page_shapes_the_job(
    browser: WebDriver, page: str, running_stack: RunningStack, tmp_path, name: str, job_options: dict
) -> None:
    upload = tmp_path / name
    upload.write_bytes(SAMPLE.read_bytes())
    _upload(browser, page, str(upload), **job_options)
    _job_row(browser, name, "succeeded")
    [job] = [j for j in running_stack.target.ledger().list_jobs() if j.input_key == f"uploads/{name}"]
    assert job.options == job_options  # recorded in the ledger as the page set them
    summary_name = options.from_strings(job.options).summary_name
    download = httpx.get(f"{page}/jobs/{job.job_id}/summary", follow_redirects=True, timeout=30)
    assert download.status_code == 200, download.text
    assert download.headers["content-disposition"] == attachment(f"{PurePosixPath(name).stem}.{summary_name}")
    assert download.content == operator.output_object(running_stack.target, job.job_id, summary_name)
    source = pd.read_csv(SAMPLE, dtype=str, keep_default_na=False)
    if job_options["format"] == "jsonl":
        rows = [json.loads(line) for line in download.text.splitlines()]
        assert [row[schema.ID] for row in rows] == list(source["Id"])
        assert {row[schema.N_SENTENCES_OUT] for row in rows} <= {0, 1}  # one sentence each, at most
    else:
        themes = pd.read_parquet(io.BytesIO(download.content))
        assert {"ProductId", schema.THEME, schema.THEME_ROWS, schema.STARS} <= set(themes.columns)
        assert set(themes["ProductId"]) <= set(source["ProductId"])


def test_a_bad_job_option_is_refused_on_the_page_before_any_upload(
    browser: WebDriver, page: str, running_stack: RunningStack, tmp_path
) -> None:
    upload = tmp_path / "two budgets.csv"
    upload.write_bytes(SAMPLE.read_bytes())
    browser.get(page + "/")
    form = browser.find_element(By.ID, "upload-form")
    WebDriverWait(browser, 20).until(lambda _: form.is_displayed(), "the upload form")
    form.find_element(By.NAME, "file").send_keys(str(upload))
    fill(form, "sentences", "2")
    fill(form, "ratio", "0.5")
    form.find_element(By.XPATH, ".//button[normalize-space()='Upload']").click()
    line = browser.find_element(By.CSS_SELECTOR, "[data-testid=batch-status]")
    _wait(browser, 20).until(lambda _: line.text.startswith("Could not upload"), "the refusal")
    assert line.text == "Could not upload: job option sumpipe-ratio: give sentences or ratio, not both"
    assert "error" in line.get_attribute("class")
    listed = client("s3").list_objects_v2(
        Bucket=running_stack.target.input_bucket, Prefix="uploads/two budgets"
    )
    assert listed["KeyCount"] == 0  # nothing reached the bucket


def test_a_bad_job_option_from_the_page_fails_the_job_naming_it(
    browser: WebDriver, page: str, tmp_path
) -> None:
    upload = tmp_path / "wrong column.csv"
    upload.write_bytes(SAMPLE.read_bytes())
    _upload(browser, page, str(upload), **{"text-column": "Body"})
    cells = _job_row(browser, "wrong column.csv", "failed")
    assert "Body" in cells[1]


def test_an_upload_link_cannot_be_reused_for_another_file_or_place(page: str) -> None:
    signed = httpx.post(page + "/uploads", json={"filename": "reviews.csv"}).json()
    assert signed["key"] == "uploads/reviews.csv"
    elsewhere = {**signed["fields"], "key": "jobs/j-00000000000000000000/summary.csv"}
    answer = httpx.post(signed["url"], data=elsewhere, files={"file": ("x.csv", b"Id,Text\n1,x\n")})
    assert answer.status_code == 403, answer.text
    for bad in ("../etc/passwd.csv", "a\nb.csv", "reviews.exe", ""):
        refused = httpx.post(page + "/uploads", json={"filename": bad})
        assert refused.status_code == 400 and "filename" in refused.text, (bad, refused.text)
    refused = httpx.post(page + "/uploads", json={"filename": "r.csv", "options": {"sentences": "many"}})
    assert refused.status_code == 400 and "sumpipe-sentences" in refused.text


def test_a_jobs_rows_are_reviewed_one_by_one_on_the_page(
    browser: WebDriver, page: str, running_stack: RunningStack, tmp_path
) -> None:
    upload = tmp_path / "review me.csv"
    upload.write_bytes(SAMPLE.read_bytes())
    _upload(browser, page, str(upload))
    _job_row(browser, "review me.csv", "succeeded")
    [job] = [j for j in running_stack.target.ledger().list_jobs() if j.input_key == "uploads/review me.csv"]
    source = pd.read_csv(SAMPLE, dtype=str, keep_default_na=False)
    written = pd.read_csv(
        io.BytesIO(operator.output_object(running_stack.target, job.job_id, keys.SUMMARY)),
        dtype=str,
        keep_default_na=False,
    )

    def open_rows(driver: WebDriver) -> bool:
        # Found and clicked in one go: the list is redrawn now and then.
        for tr in driver.find_elements(By.CSS_SELECTOR, "[data-testid=jobs] tbody tr"):
            if tr.text.startswith("review me.csv"):
                tr.find_element(By.LINK_TEXT, "Open").click()
                return True
        return False

    _wait(browser, 20).until(open_rows, "the job's Open link")
    position = browser.find_element(By.CSS_SELECTOR, "[data-testid=row-position]")
    _wait(browser, 20).until(lambda _: "row 1 of" in position.text, "the first row")
    assert position.text == f"review me.csv: row 1 of {min(200, len(source))} (id {source['Id'][0]})"
    summary = browser.find_element(By.CSS_SELECTOR, "[data-testid=summary]").text
    assert summary == written["summary"][0]  # the job's own summary of that row
    spans = browser.find_elements(By.CSS_SELECTOR, "[data-testid=original] .sentence")
    assert " ".join(s.text for s in spans if "in-summary" in s.get_attribute("class")) == summary
    browser.find_element(By.XPATH, "//button[normalize-space()='Approve']").click()
    status = browser.find_element(By.CSS_SELECTOR, "[data-testid=status]")
    _wait(browser, 20).until(lambda _: "Approved" in status.text, "the approval")
    browser.find_element(By.ID, "next-row").click()
    _wait(browser, 20).until(lambda _: "row 2 of" in position.text, "the second row")
    assert browser.find_element(By.CSS_SELECTOR, "[data-testid=summary]").text == written["summary"][1]
    export = pd.read_csv(
        io.StringIO(httpx.get(page + "/feedback.csv").text), dtype=str, keep_default_na=False
    )
    [decided] = export[export["job_id"] == job.job_id].to_dict("records")
    assert (decided["text_id"], decided["decision"], decided["summary_shown"]) == (
        source["Id"][0],
        "approve",
        summary,
    )
    assert decided["text"] == source["Text"][0]


def test_the_page_shows_why_an_uploads_job_is_not_coming(
    browser: WebDriver, page: str, running_stack: RunningStack, tmp_path
) -> None:
    """The trigger may not read the input (s3:GetObject gone from its role): instead of waiting
    for a job that won't come, the page says which function fails on the upload, and why."""
    from .test_iam_enforced import role_without

    upload = tmp_path / "not coming.csv"
    upload.write_bytes(SAMPLE.read_bytes())
    status = "[data-testid=batch-status]"
    with role_without(running_stack, "TriggerRole", "trigger.json", "s3:GetObject"):
        _upload(browser, page, str(upload))
        line = _wait(browser, 150).until(
            lambda d: (
                (e := d.find_element(By.CSS_SELECTOR, status)).text.startswith("Its job is not coming") and e
            ),
            "the page to say why the job is not coming",
        )
    assert "trigger failed" in line.text and "uploads/not coming.csv" in line.text, line.text
    assert "HeadObject 403 Forbidden" in line.text, line.text
    assert "error" in line.get_attribute("class")
