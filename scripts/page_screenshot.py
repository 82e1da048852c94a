"""Screenshots of the review page for the README (docs/page-*.png), taken in Debian's headless
Chromium (scripts/setup --test installs it) from a `sumpipe serve` of this checkout.

    .venv/bin/python scripts/page_screenshot.py            # the single-text review
    .venv/bin/python scripts/page_screenshot.py --batch    # also the batch section: needs the
                                                           # local stack up (sumpipe local up)

The single-text shot summarizes a real review from tests/data/reviews_sample.csv and picks one
more sentence for a correction; the batch shot uploads that sample file and waits for its job.
"""

from __future__ import annotations

import argparse
import csv
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "tests" / "data" / "reviews_sample.csv"
REVIEW_ID = "13"  # a review with a clear complaint and some narrative around it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(port: int) -> Iterator[str]:
    """`sumpipe serve` of this checkout on `port`, its feedback in a temporary file: its base URL."""
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "sumpipe.ops.cli", "serve", "--port", str(port)]
        server = subprocess.Popen([*command, "--feedback-db", str(Path(tmp) / "feedback.sqlite3")], cwd=REPO)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                        break
                except OSError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise SystemExit("sumpipe serve did not come up") from None
                    time.sleep(0.1)
            yield f"http://127.0.0.1:{port}/"
        finally:
            server.terminate()
            server.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", action="store_true", help="also the batch section (local stack up)")
    parser.add_argument("--out", type=Path, default=REPO / "docs", help="where the PNGs go")
    args = parser.parse_args()
    with SAMPLE.open(newline="", encoding="utf-8") as f:
        review = next(row["Text"] for row in csv.DictReader(f) if row["Id"] == REVIEW_ID)

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--window-size=1100,1250", "--hide-scrollbars"):
        options.add_argument(argument)
    with serve(free_port()) as url:
        browser = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        try:
            browser.get(url)
            browser.find_element(By.NAME, "reviewer").send_keys("Ana")
            box = browser.find_element(By.CSS_SELECTOR, "textarea[name=text]")
            browser.execute_script("arguments[0].value = arguments[1]", box, review)
            browser.find_element(By.XPATH, "//button[normalize-space()='Summarize']").click()
            WebDriverWait(browser, 30).until(
                lambda d: d.find_elements(By.CSS_SELECTOR, ".sentence.in-summary"), "the summary"
            )
            spare = browser.find_elements(By.CSS_SELECTOR, ".sentence:not(.in-summary)")
            if spare:
                spare[-1].click()  # picked for a correction: underlined
            args.out.mkdir(parents=True, exist_ok=True)
            browser.save_screenshot(str(args.out / "page-review.png"))
            print(f"wrote {args.out / 'page-review.png'}")
            if args.batch:
                browser.get(url)
                form = browser.find_element(By.ID, "upload-form")
                WebDriverWait(browser, 20).until(
                    lambda _: form.is_displayed(), "the batch section (stack up?)"
                )
                form.find_element(By.NAME, "file").send_keys(str(SAMPLE))
                form.find_element(By.XPATH, ".//button[normalize-space()='Upload']").click()
                WebDriverWait(browser, 120).until(
                    lambda d: d.find_elements(By.LINK_TEXT, "Download"), "a finished job"
                )
                browser.set_window_size(1100, 720)
                browser.execute_script("document.getElementById('batch').scrollIntoView()")
                browser.save_screenshot(str(args.out / "page-batch.png"))
                print(f"wrote {args.out / 'page-batch.png'}")
        finally:
            browser.quit()


if __name__ == "__main__":
    main()
