"""Web security of `sumpipe serve`, one test (or a few) per finding of issue 28, each through HTTP
against the real server on loopback: real sockets for what the server itself must bound (slow
clients, huge heads), headless Chromium on a second loopback origin for cross-site requests, and a
moto server standing in for the stack where a finding needs one (uploads, downloads).

No speed is asserted: bounds are generous, for a busy 2-core machine."""

from __future__ import annotations

import email.message
import json
import resource
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from urllib.parse import unquote, urlsplit

import httpx
import jsonschema_rs
import pytest
from api_server import serve
from browser import chromium
from pipeline_aws import emulated_stack
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from sumpipe import keys
from sumpipe.api import server_limits
from sumpipe.api.filenames import attachment, safe_download_name
from sumpipe.ledger import DynamoLedger, Job

DECISION = {"method": "default", "summary_shown": "x", "decision": "approve"}


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with serve() as (url, _):
        yield url


def exported_texts(server: str) -> str:
    return httpx.get(f"{server}/feedback.csv", timeout=30).text


# --- 1. cross-site request forgery ----------------------------------------------------------


class _OtherOrigin(BaseHTTPRequestHandler):
    page = b""

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.end_headers()
        self.wfile.write(self.page)

    def log_message(self, *args: object) -> None:
        pass


ATTACKER_PAGE = """<!doctype html><html><body>
<form id="form" method="post" enctype="text/plain" action="{server}/feedback" target="sink">
<input name='{{"text":"{form_text}","method":"default","summary_shown":"x",
"decision":"approve","pad":"' value='"}}'>
</form>
<iframe name="sink" id="sink"></iframe>
<script>
const body = JSON.stringify(
  {{text: "{fetch_text}", method: "default", summary_shown: "x", decision: "approve"}});
const done = [];
const settle = (what) => {{ done.push(what); document.title = done.sort().join(","); }};
document.getElementById("sink").addEventListener("load", () => settle("form"));
fetch("{server}/feedback", {{method: "POST", mode: "no-cors", body}})
  .then(() => settle("no-cors"), () => settle("no-cors"));
fetch("{server}/feedback", {{method: "POST", headers: {{"Content-Type": "application/json"}}, body}})
  .then(() => settle("cors"), () => settle("cors"));
document.getElementById("form").submit();
</script></body></html>"""


@pytest.fixture
def other_origin() -> Iterator[tuple[str, type[_OtherOrigin]]]:
    """A second origin on loopback (another port), serving whatever page the test gives it."""
    handler = type("Page", (_OtherOrigin,), {})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", handler
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_page_on_another_origin_cannot_record_decisions(server: str, other_origin) -> None:
    """A text/plain form, a no-cors fetch and a JSON fetch from another origin, in Chromium: the
    first two are refused (415: not JSON), the third never leaves the browser (no CORS preflight is
    granted). Before: the form and the no-cors fetch were recorded."""
    origin, handler = other_origin
    form_text, fetch_text = f"csrf-form-{uuid.uuid4().hex}", f"csrf-fetch-{uuid.uuid4().hex}"
    handler.page = ATTACKER_PAGE.format(server=server, form_text=form_text, fetch_text=fetch_text).encode()
    with chromium() as browser:
        browser.get(origin + "/")
        WebDriverWait(browser, 30).until(
            lambda b: b.title == "cors,form,no-cors", message="the three requests to be sent"
        )
    exported = exported_texts(server)
    assert form_text not in exported and fetch_text not in exported


def test_state_changing_routes_take_only_json_from_their_own_origin(server: str) -> None:
    text = f"origin-{uuid.uuid4().hex}"
    body = json.dumps({"text": text, **DECISION})
    as_form = httpx.post(f"{server}/feedback", content=body, headers={"Content-Type": "text/plain"})
    from_elsewhere = httpx.post(
        f"{server}/feedback",
        content=body,
        headers={"Content-Type": "application/json", "Origin": "http://evil.example"},
    )
    assert (as_form.status_code, from_elsewhere.status_code) == (415, 403)
    assert text not in exported_texts(server)
    # The page's own origin (any loopback name of it), and clients that send no Origin (curl), may.
    port = urlsplit(server).port
    for own in (server, f"http://localhost:{port}", None):
        headers = {"Content-Type": "application/json", **({"Origin": own} if own else {})}
        answer = httpx.post(f"{server}/feedback", content=body, headers=headers)
        assert answer.status_code in (200, 201), answer.text
    uploads = httpx.post(
        f"{server}/uploads", content='{"filename": "a.csv"}', headers={"Content-Type": "text/plain"}
    )
    assert uploads.status_code == 415


# --- 4. slow clients --------------------------------------------------------------------------


@pytest.fixture
def server_with_256_files() -> Iterator[str]:
    """A server whose open-files limit is 256, as in the finding (the test process gets its own
    limit back once the server has started)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        with serve() as (url, _):
            resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
            yield url
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _closed_by_server(sock: socket.socket) -> bytes | None:
    """What the server sent before closing, or None while the connection is open."""
    try:
        data = sock.recv(4096, socket.MSG_DONTWAIT)
    except BlockingIOError:
        return None
    except OSError:
        return b"(reset)"
    return data or b"(closed)"


def test_slow_clients_are_timed_out_and_others_are_served(server_with_256_files: str) -> None:
    """300 sockets sending a header byte every 3 s, more than the server has files for. Before: they
    stayed open (60 s and more) and every other request failed. Now each gets a 408 within the head
    timeout of being accepted, and a normal request is answered meanwhile."""
    address = ("127.0.0.1", urlsplit(server_with_256_files).port)
    slow = [socket.create_connection(address, timeout=10) for _ in range(300)]
    normal: list[int] = []
    client = threading.Thread(
        target=lambda: normal.append(httpx.get(f"{server_with_256_files}/health", timeout=120).status_code)
    )
    answers: dict[int, bytes] = {}
    try:
        for sock in slow:
            sock.sendall(b"G")
        client.start()
        deadline = time.monotonic() + 30 * server_limits.HEAD_TIMEOUT_S
        while len(answers) < len(slow) and time.monotonic() < deadline:
            time.sleep(3)
            for index, sock in enumerate(slow):
                if index in answers:
                    continue
                answer = _closed_by_server(sock)
                if answer is not None:
                    answers[index] = answer
                    continue
                try:
                    sock.sendall(b"E")
                except OSError:
                    answers[index] = b"(reset)"
        client.join(timeout=120)
    finally:
        for sock in slow:
            sock.close()
    assert len(answers) == len(slow), f"{len(slow) - len(answers)} slow clients still connected"
    assert sum(answer.startswith(b"HTTP/1.1 408") for answer in answers.values()) > len(slow) // 2
    assert normal == [200]


# --- 5. one huge header -----------------------------------------------------------------------


def test_a_huge_header_is_refused_without_stalling_others(server: str) -> None:
    """A 64 MiB header line. Before: read whole (6.6 s, /health waiting meanwhile), then a 200.
    Now: a 431 once the head passes the cap, and /health answers meanwhile."""
    port = urlsplit(server).port
    total = 64 * 1024 * 1024
    sent = 0
    answer = b""

    def send_huge() -> None:
        nonlocal sent, answer
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Big: ".encode())
            chunk = b"a" * 65536
            try:
                while sent < total:
                    sock.sendall(chunk)
                    sent += len(chunk)
                sock.sendall(b"\r\n\r\n")
                answer = sock.recv(4096)
            except OSError:
                answer = _closed_by_server(sock) or b"(reset)"

    sender = threading.Thread(target=send_huge)
    sender.start()
    health = [httpx.get(f"{server}/health", timeout=60).status_code for _ in range(5)]
    sender.join(timeout=120)
    assert health == [200] * 5
    assert sent < total, "the server read the whole 64 MiB header"
    assert answer.startswith(b"HTTP/1.1 431") or answer in (b"(reset)", b"(closed)"), answer[:100]


def test_too_many_or_too_large_headers_get_431(server: str) -> None:
    many = {f"X-Header-{n}": "1" for n in range(server_limits.MAX_HEADERS + 1)}
    assert httpx.get(f"{server}/health", headers=many).status_code == 431
    large = {"X-Large": "a" * (server_limits.MAX_HEAD_BYTES + 1)}
    assert httpx.get(f"{server}/health", headers=large).status_code == 431
    assert httpx.get(f"{server}/health", headers={"X-Fine": "a" * 8000}).status_code == 200


# --- 6. errors amplify ------------------------------------------------------------------------


def test_a_body_of_unknown_keys_gets_a_short_answer(server: str) -> None:
    """80,000 unknown keys (960 KB). Before: a 3.28 MB 400 naming each, ten at once held /health
    for 3.5 s. Now: the first 10 and a count, validated off the event loop."""
    body = json.dumps({"text": "a", **{f"k{n:05d}": 0 for n in range(80_000)}})
    assert len(body) < 1024 * 1024

    def post() -> httpx.Response:
        return httpx.post(
            f"{server}/summarize", content=body, headers={"Content-Type": "application/json"}, timeout=120
        )

    with ThreadPoolExecutor(10) as pool:
        answers = [pool.submit(post) for _ in range(10)]
        health = httpx.get(f"{server}/health", timeout=60)
        results = [answer.result() for answer in answers]
    assert health.status_code == 200
    for result in results:
        assert result.status_code == 400
        assert len(result.content) < 2048
        assert result.json()["detail"].endswith(
            "k00009: Extra inputs are not permitted; and 79990 more problems"
        )


# --- 7 and 8: downloads and uploads, against a stack in moto ------------------------------------

INJECTED_KEY = "uploads/x\"; filename*=UTF-8''evil.html; a=\".csv"
PUBLIC_URL = "http://review.example.test:8080/"


@pytest.fixture(scope="module")
def stack_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """`sumpipe serve` with a stack in a moto server: a succeeded job uploaded directly to S3 under
    a key made to break the download's header, and a public address that is not loopback."""
    with emulated_stack(tmp_path_factory.mktemp("moto") / "moto.log") as stack:
        job_id = keys.job_id("in-bucket", INJECTED_KEY, "v1")
        now = time.time()
        job = Job(job_id, "in-bucket", INJECTED_KEY, "v1", state="succeeded", created_at=now, finished_at=now)
        DynamoLedger(stack.dynamodb, "jobs").create_job(job)
        summary = keys.output_key(job_id, "summary.csv")
        stack.s3.put_object(Bucket="out-bucket", Key=summary, Body=b"id,summary\n")
        env = {
            **stack.env,
            "SUMPIPE_PUBLIC_URL": PUBLIC_URL,
            # The test reaches the server at 127.0.0.1, and sends Host: evil.example on purpose.
            "SUMPIPE_ALLOWED_HOSTS": '["127.0.0.1", "evil.example"]',
        }
        with serve(env) as (url, _):
            yield SimpleNamespace(url=url, job_id=job_id)


def test_the_download_name_cannot_inject_header_parameters(stack_server: SimpleNamespace) -> None:
    """An input key put into S3 directly (not through the page's checked names). Before: S3 was asked
    for `attachment; filename="x"; filename*=UTF-8''evil.html; ...`, which Chromium saved as
    evil.html. Now: one quoted, sanitized filename= (and filename*= only for non-ASCII names)."""
    redirect = httpx.get(f"{stack_server.url}/jobs/{stack_server.job_id}/summary")
    assert redirect.status_code == 303
    assert redirect.headers["cache-control"] == "no-store"
    download = httpx.get(redirect.headers["location"])
    assert download.status_code == 200, download.text
    disposition = download.headers["content-disposition"]
    assert disposition == attachment("x\"; filename*=UTF-8''evil.html; a=\".summary.csv")
    assert "filename*" not in disposition and disposition.count('"') == 2
    parsed = email.message.Message()
    parsed["content-disposition"] = disposition
    assert parsed.get_filename() == "x__ filename__UTF-8__evil.html_ a__.summary.csv"


def _quoted_filename(header: str) -> str:
    parsed = email.message.Message()
    parsed["content-disposition"] = header
    return parsed.get_filename()


@pytest.mark.parametrize(
    ("name", "saved"),
    [
        ("reviews.summary.csv", "reviews.summary.csv"),
        ("../../etc/passwd", "passwd"),
        ("a\r\nSet-Cookie: x.csv", "a__Set-Cookie_ x.csv"),
        (".hidden.csv", "hidden.csv"),
        ("Größe.summary.csv", "Größe.summary.csv"),
    ],
)
def test_download_names_are_plain_and_encoded_per_rfc_6266(name: str, saved: str) -> None:
    assert safe_download_name(name) == saved
    header = attachment(name)
    assert header.isascii() and "\r" not in header and "\n" not in header
    # What a browser saves it as: filename* (RFC 8187) where there is one, else filename.
    extended = header.partition("; filename*=UTF-8''")[2]
    assert (unquote(extended, errors="strict") if extended else _quoted_filename(header)) == saved


def test_the_upload_redirect_comes_from_configuration_not_host(stack_server: SimpleNamespace) -> None:
    """Before: `Host: evil.example` made the signed form send the browser to http://evil.example/."""
    answer = httpx.post(
        f"{stack_server.url}/uploads", json={"filename": "reviews.csv"}, headers={"Host": "evil.example"}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["fields"]["success_action_redirect"] == PUBLIC_URL + "?uploaded=1"


def test_a_host_the_server_is_not_for_is_refused(server: str) -> None:
    """DNS rebinding: a page on evil.example resolved to 127.0.0.1 gets nothing, not even the export."""
    for path in ("/feedback.csv", "/health"):
        answer = httpx.get(f"{server}{path}", headers={"Host": "evil.example"})
        assert answer.status_code == 400 and "evil.example" in answer.json()["detail"]
    answer = httpx.post(f"{server}/uploads", json={"filename": "a.csv"}, headers={"Host": "evil.example:80"})
    assert answer.status_code == 400


# --- 10. headers ------------------------------------------------------------------------------


def test_every_response_says_nosniff_and_data_is_not_stored(server: str) -> None:
    for method, path, body in [
        ("GET", "/health", None),
        ("GET", "/feedback.csv", None),
        ("POST", "/summarize", {"text": "One. Two."}),
        ("POST", "/summarize", {}),
        ("GET", "/nope", None),
        ("GET", "/jobs", None),
    ]:
        answer = httpx.request(method, f"{server}{path}", json=body)
        assert answer.headers["x-content-type-options"] == "nosniff", path
        assert answer.headers["cache-control"] == "no-store", path
        assert answer.headers["content-security-policy"].startswith("default-src 'none'"), path


def test_docs_load_only_packaged_files_under_a_policy(server: str) -> None:
    """Before: /docs had no CSP and loaded Swagger UI from a CDN (failing offline)."""
    docs = httpx.get(f"{server}/docs")
    policy = docs.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src" not in policy  # no inline script allowed
    assert "http" not in docs.text
    assert httpx.get(f"{server}/redoc").status_code == 404
    with chromium() as browser:
        browser.get(f"{server}/docs")
        title = WebDriverWait(browser, 30).until(
            lambda b: b.find_elements(By.CSS_SELECTOR, ".swagger-ui .info .title"), message="Swagger UI"
        )
        assert "sumpipe realtime summarization" in title[0].text
        operations = browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")
        assert "/summarize" in {op.text.strip() for op in operations}


def test_docs_are_off_when_configured() -> None:
    with serve({"SUMPIPE_API_DOCS": "false"}) as (url, _):
        assert httpx.get(f"{url}/docs").status_code == 404
        assert httpx.get(f"{url}/openapi.json").status_code == 200


# --- 11. the OpenAPI document is the behaviour (the fuzzing is test_openapi_conformance.py) ------


@pytest.fixture(scope="module")
def openapi(server: str) -> dict:
    return httpx.get(f"{server}/openapi.json").json()


def _request_schema(openapi: dict, path: str) -> jsonschema_rs.Validator:
    schema = openapi["paths"][path]["post"]["requestBody"]["content"]["application/json"]["schema"]
    return jsonschema_rs.validator_for({**schema, "components": openapi.get("components", {})})


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/summarize", {}),
        ("/summarize", {"text": "", "texts": [""]}),
        ("/summarize", {"text": None}),
        ("/summarize", {"text": "A. B.", "sentences": 1, "ratio": 0.5}),
        ("/summarize", {"text": "A. B.", "texts": None}),
        ("/summarize", {"text": "A. B.", "sentences": 1, "ratio": None}),
        ("/summarize", {"texts": ["A."], "method": "kmeans"}),
        ("/summarize", {"text": "a" * 100_001}),
        ("/feedback", {"text": "A.", **DECISION, "decision": "correct"}),
        ("/feedback", {"text": "A.", **DECISION, "decision": "correct", "corrected_summary": "  "}),
        ("/feedback", {"text": "A.", **DECISION, "decision": "correct", "corrected_summary": "A."}),
        ("/feedback", {"text": "A.", **DECISION, "decision": "correct", "corrected_summary": "x"}),
        ("/summarize", {"text": "A. B.", "sentences": 1.0}),
        ("/summarize", {"text": "A. B.", "sentences": 1.5}),
        ("/feedback", {"text": "A.", **DECISION, "corrected_summary": "A."}),
        ("/feedback", {"text": "A.", **DECISION, "corrected_summary": ""}),
        ("/feedback", {"text": "", **DECISION}),
    ],
)
def test_the_schema_and_the_server_agree_on_each_body(
    server: str, openapi: dict, path: str, body: dict
) -> None:
    """Before: `{}` and `{"text": "", "texts": [""]}` were schema-valid yet refused, and so was a
    correction with no corrected summary."""
    answer = httpx.post(f"{server}{path}", json=body, timeout=30)
    assert answer.status_code in (200, 201, 400), answer.text
    assert _request_schema(openapi, path).is_valid(body) == (answer.status_code != 400), answer.text


def test_the_upload_schema_refuses_what_the_server_refuses(
    stack_server: SimpleNamespace, openapi: dict
) -> None:
    for filename in ("", "a", "../a.csv", "a.CSV", "a.exe", "r" * 197 + ".csv", "r" * 200 + ".csv"):
        body = {"filename": filename}
        answer = httpx.post(f"{stack_server.url}/uploads", json=body)
        assert answer.status_code in (200, 400), answer.text
        assert _request_schema(openapi, "/uploads").is_valid(body) == (answer.status_code == 200), filename


def test_every_status_returned_is_documented(server: str, openapi: dict) -> None:
    """Before: 400/413 on /feedback and /uploads, 404/503 on the job routes were undocumented, and
    a 422 that never happens was."""
    documented = {
        (path, method.upper()): set(operation["responses"])
        for path, operations in openapi["paths"].items()
        for method, operation in operations.items()
    }
    assert not any("422" in statuses for statuses in documented.values())
    big = b'{"text": "' + b"a" * (1024 * 1024) + b'"}'
    seen = {
        ("/feedback", "POST"): [
            httpx.post(f"{server}/feedback", json={"text": ""}).status_code,
            httpx.post(
                f"{server}/feedback", content=big, headers={"Content-Type": "application/json"}
            ).status_code,
            httpx.post(
                f"{server}/feedback", content=b"{}", headers={"Content-Type": "text/plain"}
            ).status_code,
            httpx.post(f"{server}/feedback", json={}, headers={"Origin": "http://evil.example"}).status_code,
        ],
        ("/uploads", "POST"): [httpx.post(f"{server}/uploads", json={"filename": "a.csv"}).status_code],
        ("/jobs", "GET"): [httpx.get(f"{server}/jobs").status_code],
        ("/jobs/{job_id}/rows", "GET"): [httpx.get(f"{server}/jobs/j-1/rows").status_code],
        ("/jobs/{job_id}/summary", "GET"): [httpx.get(f"{server}/jobs/j-1/summary").status_code],
        ("/uploads/status", "GET"): [httpx.get(f"{server}/uploads/status?key=x").status_code],
    }
    assert seen[("/feedback", "POST")] == [400, 413, 415, 403]
    for route, statuses in seen.items():
        assert {str(status) for status in statuses} <= documented[route], route
