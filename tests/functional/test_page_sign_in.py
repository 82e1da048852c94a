"""The review page when reviewers sign in (the deployed API behind a JWT authorizer), in a real
browser: `sumpipe serve` with a stack in the local stack's emulator, whose Cognito user pool signs
the reviewers in, as an administrator made them (a temporary password, changed at first sign-in).

`sumpipe serve` checks no tokens (API Gateway does, deployed): what is checked here is the page's
side, that it signs in, keeps the access token in the tab only and sends it on every call. Who a
decision is recorded for behind the authorizer is tests/functional/test_feedback_export_deployed.py's.
"""

from __future__ import annotations

import csv
import io
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import urlsplit

import boto3
import httpx
import pytest
from api_server import serve
from browser import chromium, downloaded, requests_sent
from pipeline_aws import emulated_stack
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from test_page import REVIEW, button, status, unique, wait_for

from sumpipe import keys
from sumpipe.feedback import EXPORT_COLUMNS
from sumpipe.ledger import SUCCEEDED, DynamoLedger, Job
from sumpipe.local import motoserver

TEMPORARY_PASSWORD = "Temporary-Pass-1"  # pragma: allowlist secret (a test user's, in the emulator)
NEW_PASSWORD = "Chosen-Pass-22"  # pragma: allowlist secret
SESSION_KEY = "sumpipe-session"
# What a page load fetches before anyone signs in: the page and its own files, never data.
PAGE_FILES = {"/", "/static/page.js", "/static/page.css", "/favicon.ico"}


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """`sumpipe serve` of a stack in the emulator, whose user pool and app client (as the template's
    ReviewerPool and ReviewerPoolClient) sign the page's reviewers in."""
    with emulated_stack(tmp_path_factory.mktemp("moto") / "moto.log") as stack:
        cognito = boto3.client(
            "cognito-idp",
            endpoint_url=stack.endpoint,
            region_name=motoserver.REGION,
            aws_access_key_id=stack.env["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=stack.env["AWS_SECRET_ACCESS_KEY"],
        )
        pool = cognito.create_user_pool(PoolName="reviewers")["UserPool"]["Id"]
        client = cognito.create_user_pool_client(
            UserPoolId=pool,
            ClientName="page",
            ExplicitAuthFlows=["ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
        )["UserPoolClient"]["ClientId"]
        env = {
            **stack.env,
            "SUMPIPE_AUTH_ISSUER": f"https://cognito-idp.{motoserver.REGION}.amazonaws.com/{pool}",
            "SUMPIPE_AUTH_CLIENT_ID": client,
            "SUMPIPE_AUTH_ENDPOINT": stack.endpoint + "/",
        }
        with serve(env) as (url, _):
            yield SimpleNamespace(url=url, stack=stack, cognito=cognito, pool=pool, endpoint=stack.endpoint)


@pytest.fixture(scope="module")
def downloads(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("downloads")


@pytest.fixture(scope="module")
def browser(downloads: Path) -> Iterator[WebDriver]:
    with chromium(network_log=True, downloads=downloads) as driver:
        driver.implicitly_wait(0)
        yield driver


@pytest.fixture
def page(browser: WebDriver, site: SimpleNamespace) -> WebDriver:
    """The browser on a blank page of the site, signed out, its network log read."""
    browser.get(site.url + "/static/page.css")
    browser.execute_script("sessionStorage.clear()")
    requests_sent(browser)
    return browser


def new_reviewer(site: SimpleNamespace) -> str:
    """A reviewer as an administrator creates one: a temporary password, to change at first sign-in."""
    username = f"reviewer-{uuid.uuid4().hex[:8]}"
    site.cognito.admin_create_user(
        UserPoolId=site.pool,
        Username=username,
        TemporaryPassword=TEMPORARY_PASSWORD,
        MessageAction="SUPPRESS",
    )
    return username


def shown(browser: WebDriver, selector: str) -> bool:
    found = browser.find_elements(By.CSS_SELECTOR, selector)
    return bool(found) and found[0].is_displayed()


def auth_status(browser: WebDriver) -> str:
    return browser.find_element(By.CSS_SELECTOR, "[data-testid=auth-status]").text


def sign_in(browser: WebDriver, site: SimpleNamespace, username: str, password: str) -> None:
    browser.get(site.url + "/")
    form = browser.find_element(By.CSS_SELECTOR, "[data-testid=sign-in]")
    wait_for(browser, form.is_displayed, "the sign-in form")
    form.find_element(By.NAME, "username").send_keys(username)
    form.find_element(By.NAME, "password").send_keys(password)
    form.find_element(By.CSS_SELECTOR, "button[type=submit]").click()


def first_sign_in(browser: WebDriver, site: SimpleNamespace) -> str:
    """A new reviewer signs in with the temporary password and chooses theirs; their name."""
    username = new_reviewer(site)
    sign_in(browser, site, username, TEMPORARY_PASSWORD)
    step = browser.find_element(By.CSS_SELECTOR, "[data-testid=new-password]")
    wait_for(browser, step.is_displayed, "the new-password step")
    step.find_element(By.NAME, "new-password").send_keys(NEW_PASSWORD)
    step.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
    wait_for(browser, lambda: shown(browser, "[data-testid=signed-in-as]"), "signed in")
    return username


def session(browser: WebDriver) -> dict | None:
    return json.loads(browser.execute_script(f"return sessionStorage.getItem('{SESSION_KEY}')") or "null")


def data_calls(site: SimpleNamespace, sent: list[dict]) -> list[dict]:
    """The requests to the API that are not the page or its files."""
    return [r for r in sent if r["url"].startswith(site.url) and urlsplit(r["url"]).path not in PAGE_FILES]


def bearer(request: dict) -> str | None:
    headers = {name.lower(): value for name, value in request["headers"].items()}
    value = headers.get("authorization", "")
    return value.removeprefix("Bearer ") if value.startswith("Bearer ") else None


def test_signed_out_the_page_shows_only_the_sign_in_form_and_asks_for_no_data(
    page: WebDriver, site: SimpleNamespace
) -> None:
    page.get(site.url + "/")
    wait_for(page, lambda: shown(page, "[data-testid=sign-in]"), "the sign-in form")
    time.sleep(1)  # the page's start-up calls, had it made any, would have gone by now
    for hidden in ("#summarize-form", "#batch", "footer", "input[name=reviewer]", "[data-testid=sign-out]"):
        assert not shown(page, hidden), hidden
    assert not shown(page, "[data-testid=new-password]")
    sent = requests_sent(page)
    assert {urlsplit(r["url"]).path for r in sent if r["url"].startswith(site.url)} <= PAGE_FILES
    assert data_calls(site, sent) == []
    # The page learned where to sign in from itself, and may talk to that origin only.
    answer = httpx.get(site.url + "/")
    assert f"connect-src 'self' {site.endpoint};" in answer.headers["content-security-policy"]


def test_a_first_sign_in_chooses_a_password_and_every_call_then_carries_the_token(
    page: WebDriver, site: SimpleNamespace
) -> None:
    username = first_sign_in(page, site)

    assert page.find_element(By.CSS_SELECTOR, "[data-testid=signed-in-as]").text == f"Signed in as {username}"
    name = page.find_element(By.NAME, "reviewer")
    assert name.get_attribute("value") == username and name.get_attribute("readonly") is not None
    kept = session(page)
    assert kept and kept["username"] == username and kept["expiresAt"] > time.time() * 1000
    # The tab's only: not in localStorage, not a cookie.
    assert page.execute_script("return JSON.stringify(localStorage)").find(kept["token"]) == -1
    assert page.execute_script("return document.cookie") == ""

    text = unique(REVIEW)
    wait_for(page, lambda: shown(page, "#upload-form"), "the batch section")
    box = page.find_element(By.CSS_SELECTOR, "textarea[name=text]")
    page.execute_script("arguments[0].value = arguments[1]", box, text)
    button(page, "Summarize").click()
    wait_for(page, lambda: "kept" in status(page), "the summary")
    button(page, "Approve").click()
    wait_for(page, lambda: "Approved" in status(page), "the approval")

    calls = data_calls(site, requests_sent(page))
    paths = {urlsplit(r["url"]).path for r in calls}
    assert {"/batch", "/jobs", "/summarize", "/feedback"} <= paths, paths
    assert [bearer(r) for r in calls] == [kept["token"]] * len(calls), calls
    # Under `sumpipe serve` there are no claims: the name in the (read-only) box is the reviewer.
    rows = csv.DictReader(io.StringIO(httpx.get(site.url + "/feedback.csv", timeout=30).text))
    assert [row["reviewer"] for row in rows if row["text"] == text] == [username]


def test_a_wrong_password_shows_cognitos_error_as_text(page: WebDriver, site: SimpleNamespace) -> None:
    username = new_reviewer(site)
    sign_in(page, site, username, "<b>not-it</b>")
    wait_for(page, lambda: "Could not sign in" in auth_status(page), "the error")
    line = page.find_element(By.CSS_SELECTOR, "[data-testid=auth-status]")
    assert "Incorrect username or password" in line.text
    assert "error" in line.get_attribute("class")
    assert line.find_elements(By.XPATH, "./*") == []  # text, never markup
    assert session(page) is None and shown(page, "[data-testid=sign-in]")
    assert not shown(page, "#summarize-form")


def test_sign_out_forgets_the_token_and_shows_the_form_again(page: WebDriver, site: SimpleNamespace) -> None:
    first_sign_in(page, site)
    token = session(page)["token"]
    requests_sent(page)
    page.find_element(By.CSS_SELECTOR, "[data-testid=sign-out]").click()
    wait_for(page, lambda: shown(page, "[data-testid=sign-in]"), "the sign-in form")

    assert page.execute_script("return sessionStorage.length") == 0
    assert auth_status(page) == "Signed out."
    assert not shown(page, "#summarize-form") and not shown(page, "[data-testid=signed-in-as]")
    # Its tokens revoked at Cognito (best-effort: the page doesn't wait for it).
    wait_for(
        page,
        lambda: any(
            r["url"].startswith(site.endpoint)
            and r.get("postData", "").find(token) >= 0
            and {k.lower(): v for k, v in r["headers"].items()}.get("x-amz-target", "").endswith(
                "GlobalSignOut"
            )
            for r in requests_sent(page)
        ),
        "the GlobalSignOut call",
        timeout=5,
    )
    # After a reload too.
    page.refresh()
    wait_for(page, lambda: shown(page, "[data-testid=sign-in]"), "the sign-in form")


def test_a_session_lasts_the_tab_and_is_no_other_tabs(page: WebDriver, site: SimpleNamespace) -> None:
    username = first_sign_in(page, site)
    page.refresh()  # the same tab keeps it (as across the upload's round trip through S3)
    wait_for(page, lambda: shown(page, "[data-testid=signed-in-as]"), "still signed in")
    first = page.current_window_handle
    page.switch_to.new_window("tab")
    try:
        page.get(site.url + "/")
        wait_for(page, lambda: shown(page, "[data-testid=sign-in]"), "the sign-in form in a new tab")
        assert session(page) is None and not shown(page, "#summarize-form")
    finally:
        page.close()
        page.switch_to.window(first)
    assert session(page)["username"] == username


def test_an_expired_session_asks_to_sign_in_again(page: WebDriver, site: SimpleNamespace) -> None:
    first_sign_in(page, site)
    page.execute_script(
        f"const s = JSON.parse(sessionStorage.getItem('{SESSION_KEY}')); s.expiresAt = 0;"
        f"sessionStorage.setItem('{SESSION_KEY}', JSON.stringify(s))"
    )
    requests_sent(page)
    page.refresh()
    wait_for(page, lambda: shown(page, "[data-testid=sign-in]"), "the sign-in form")
    assert "sign in again" in auth_status(page)
    assert session(page) is None
    assert data_calls(site, requests_sent(page)) == []


def _succeeded_job(site: SimpleNamespace, summary: bytes) -> tuple[str, str]:
    """A job the ledger records as succeeded, its summary in the output bucket: (id, input name)."""
    name = f"reviews-{uuid.uuid4().hex[:8]}"
    input_key = f"uploads/{name}.csv"
    job_id = keys.job_id("in-bucket", input_key, "v1")
    now = time.time()
    job = Job(job_id, "in-bucket", input_key, "v1", state=SUCCEEDED, created_at=now, finished_at=now, rows=1)
    assert DynamoLedger(site.stack.dynamodb, "jobs").create_job(job)
    site.stack.s3.put_object(Bucket="out-bucket", Key=keys.output_key(job_id, keys.SUMMARY), Body=summary)
    return job_id, name


def test_downloads_are_fetched_with_the_token(
    page: WebDriver, site: SimpleNamespace, downloads: Path
) -> None:
    summary = b"id,summary\n1,Thick and crunchy.\n"
    job_id, name = _succeeded_job(site, summary)
    first_sign_in(page, site)
    row = f"[data-testid=jobs] tr[data-job-id='{job_id}']"
    wait_for(page, lambda: shown(page, row), "the job's row")
    requests_sent(page)

    # A job's summary: its presigned address, asked for with the token, then the file itself.
    page.find_element(By.CSS_SELECTOR, row).find_element(By.LINK_TEXT, "Download").click()
    assert downloaded(downloads, f"{name}.summary.csv") == summary
    # The decisions' export: `sumpipe serve` streams it, saved from the fetched body.
    page.find_element(By.LINK_TEXT, "Export the decisions (CSV)").click()
    exported = downloaded(downloads, "feedback.csv").decode()
    assert exported.splitlines()[0].split(",") == list(EXPORT_COLUMNS)

    token = session(page)["token"]
    calls = {urlsplit(r["url"]).path: r for r in data_calls(site, requests_sent(page))}
    for path in (f"/jobs/{job_id}/summary", "/feedback.csv"):
        assert bearer(calls[path]) == token, path
        assert {k.lower(): v for k, v in calls[path]["headers"].items()}["accept"] == "application/json"
