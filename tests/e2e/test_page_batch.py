"""The review page as deployed, in a real browser: served by the API function run from its zip,
with its own role, IAM enforced, behind the local stack's HTTP API front, which applies the
template's JWT authorizer with the stack's Cognito user pool as issuer. A reviewer added with
`sumpipe reviewers add` signs in (choosing a password at the first sign-in), and then: summarizes
and approves, exports the decisions, uploads a table with job options (a presigned POST straight to
the input bucket, the options as its metadata), watches its job, reviews its rows and downloads the
summary (a presigned GET). Without a token, every data route is refused."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import httpx
import pandas as pd
import pytest
from browser import chromium, downloaded, fill
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
REVIEWER = "page-reviewer"
NEW_PASSWORD = "Chosen-at-first-sign-in-7"  # pragma: allowlist secret (a test user's, in the emulator)
SESSION_KEY = "sumpipe-session"


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads: Path) -> Iterator[WebDriver]:
    with chromium(downloads=downloads) as driver:
        yield driver


@pytest.fixture(scope="module")
def page(running_stack: RunningStack, browser: WebDriver) -> str:
    """The deployed page's address, with a reviewer signed in in the browser's tab."""
    url = running_stack.target.outputs["ApiUrl"].rstrip("/")
    # As an operator adds one: the stack's endpoint and administrator are in os.environ.
    added = subprocess.run(
        [sys.executable, "-m", "sumpipe.ops.cli", "reviewers", "add", REVIEWER],
        capture_output=True, text=True, env=dict(os.environ), timeout=60, check=False,
    )  # fmt: skip
    assert added.returncode == 0, added.stderr
    [temporary] = [
        line.split(": ", 1)[1]
        for line in added.stdout.splitlines()
        if line.startswith("temporary password: ")
    ]
    browser.get(url + "/")
    form = browser.find_element(By.CSS_SELECTOR, "[data-testid=sign-in]")
    _wait(browser, 20).until(lambda _: form.is_displayed(), "the sign-in form")
    form.find_element(By.NAME, "username").send_keys(REVIEWER)
    form.find_element(By.NAME, "password").send_keys(temporary)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    step = browser.find_element(By.CSS_SELECTOR, "[data-testid=new-password]")
    said = browser.find_element(By.CSS_SELECTOR, "[data-testid=auth-status]")
    _wait(browser, 20).until(lambda _: step.is_displayed() or said.text, "the new-password step")
    assert step.is_displayed(), f"the page said: {said.text}"
    step.find_element(By.NAME, "new-password").send_keys(NEW_PASSWORD)
    step.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    signed_in = browser.find_element(By.CSS_SELECTOR, "[data-testid=signed-in-as]")
    _wait(browser, 20).until(lambda _: REVIEWER in signed_in.text, "signed in")
    return url


def _token(browser: WebDriver) -> dict[str, str]:
    """The signed-in tab's bearer token, as the page sends it (for calls made outside the page)."""
    session = json.loads(browser.execute_script(f"return sessionStorage.getItem('{SESSION_KEY}')"))
    return {"Authorization": f"Bearer {session['token']}"}


def test_without_a_token_every_data_route_is_refused_and_the_page_itself_is_open(page: str) -> None:
    for method, path in [
        ("GET", "/health"), ("POST", "/summarize"), ("GET", "/jobs"), ("GET", "/batch"),
        ("GET", "/feedback.csv"), ("POST", "/feedback"), ("POST", "/uploads"), ("GET", "/openapi.json"),
        ("GET", "/jobs/j-00000000000000000000/summary"), ("GET", "/uploads/status"),
    ]:  # fmt: skip
        refused = httpx.request(method, page + path, json={} if method == "POST" else None, timeout=30)
        assert refused.status_code == 401, (method, path, refused.status_code, refused.text)
        forged = httpx.request(method, page + path, headers={"Authorization": "Bearer a.b.c"}, timeout=30)
        assert forged.status_code == 401, (method, path, forged.status_code)
    assert httpx.get(page + "/", timeout=30).status_code == 200
    assert httpx.get(page + "/static/page.js", timeout=30).status_code == 200


def test_a_signed_in_reviewer_summarizes_approves_and_exports(
    browser: WebDriver, page: str, downloads: Path
) -> None:
    text = (
        "The kettle chips were thick and crunchy. The bag arrived crushed, sadly. "
        "Still, the salt and vinegar flavour is the best we have tried. We will buy them again."
    )
    browser.get(page + "/")
    form = browser.find_element(By.ID, "summarize-form")
    _wait(browser, 20).until(lambda _: form.is_displayed(), "the summarize form")
    fill(form, "text", text)
    fill(form, "sentences", "1")
    form.find_element(By.XPATH, ".//button[normalize-space()='Summarize']").click()
    status = browser.find_element(By.CSS_SELECTOR, "[data-testid=status]")
    # The first call starts the API function's environment (a cold start loads the vectors).
    _wait(browser, 90).until(lambda _: "sentences kept" in status.text, "the summary")
    summary = browser.find_element(By.CSS_SELECTOR, "[data-testid=summary]").text
    assert summary and summary in text
    reviewer = browser.find_element(By.NAME, "reviewer")
    assert reviewer.get_attribute("value") == REVIEWER and reviewer.get_attribute("readonly")
    browser.find_element(By.XPATH, "//button[normalize-space()='Approve']").click()
    _wait(browser, 30).until(lambda _: "Approved" in status.text, "the approval")
    (downloads / "feedback.csv").unlink(missing_ok=True)
    browser.find_element(By.LINK_TEXT, "Export the decisions (CSV)").click()
    export = pd.read_csv(io.BytesIO(downloaded(downloads, "feedback.csv")), dtype=str, keep_default_na=False)
    [decided] = export[export["text"] == text].to_dict("records")
    assert (decided["decision"], decided["summary_shown"], decided["reviewer"]) == (
        "approve",
        summary,
        REVIEWER,
    )


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
    browser: WebDriver, page: str, running_stack: RunningStack, tmp_path, downloads: Path
) -> None:
    upload = tmp_path / "page upload.csv"
    upload.write_bytes(SAMPLE.read_bytes())
    _upload(browser, page, str(upload), **{"text-column": "Text"})
    cells = _job_row(browser, "page upload.csv", "succeeded")
    assert cells[2] == "300"  # rows
    [job] = [j for j in running_stack.target.ledger().list_jobs() if j.input_key == "uploads/page upload.csv"]
    assert job.options == {"text-column": "Text"}  # the page's option reached the job
    # The page asks for the presigned address with the token, then the browser saves the file,
    # named after the upload.
    row = browser.find_element(By.CSS_SELECTOR, f"[data-testid=jobs] tr[data-job-id='{job.job_id}']")
    row.find_element(By.LINK_TEXT, "Download").click()
    saved = downloaded(downloads, "page upload.summary.csv")
    assert saved == operator.output_object(running_stack.target, job.job_id, keys.SUMMARY)


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
    download = httpx.get(
        f"{page}/jobs/{job.job_id}/summary", headers=_token(browser), follow_redirects=True, timeout=30
    )
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


def test_an_upload_link_cannot_be_reused_for_another_file_or_place(browser: WebDriver, page: str) -> None:
    token = _token(browser)
    signed = httpx.post(page + "/uploads", json={"filename": "reviews.csv"}, headers=token, timeout=30).json()
    assert signed["key"] == "uploads/reviews.csv"
    elsewhere = {**signed["fields"], "key": "jobs/j-00000000000000000000/summary.csv"}
    answer = httpx.post(signed["url"], data=elsewhere, files={"file": ("x.csv", b"Id,Text\n1,x\n")})
    assert answer.status_code == 403, answer.text
    for bad in ("../etc/passwd.csv", "a\nb.csv", "reviews.exe", ""):
        refused = httpx.post(page + "/uploads", json={"filename": bad}, headers=token, timeout=30)
        assert refused.status_code == 400 and "filename" in refused.text, (bad, refused.text)
    refused = httpx.post(
        page + "/uploads",
        json={"filename": "r.csv", "options": {"sentences": "many"}},
        headers=token,
        timeout=30,
    )
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
        io.StringIO(
            httpx.get(page + "/feedback.csv", headers=_token(browser), follow_redirects=True, timeout=30).text
        ),
        dtype=str,
        keep_default_na=False,
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
