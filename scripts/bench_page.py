"""The review page's first load, in Debian's headless Chromium against a local `sumpipe serve`.

Each round loads, with the browser cache off, the page (HTML, CSS, JavaScript, and the page's own
first request, GET /batch) and, as the baseline in the same round, one bare static file from the
same server: the ratio says what the page costs beyond a round trip, whatever the machine's speed
at that moment. Prints the page's bytes, the median load times and the median ratio.

    .venv/bin/python scripts/bench_page.py [--rounds 30]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from scripts.page_screenshot import free_port, serve

LOAD_MS = "const t = performance.getEntriesByType('navigation')[0]; return t.loadEventEnd - t.startTime;"
BYTES = (
    "return performance.getEntriesByType('navigation')[0].transferSize"
    " + performance.getEntriesByType('resource').reduce((n, r) => n + r.transferSize, 0);"
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox"):
        options.add_argument(argument)
    port = free_port()
    with serve(port) as url:
        browser = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        try:
            browser.execute_cdp_cmd("Network.enable", {})  # the cache switch takes effect only then
            browser.execute_cdp_cmd("Network.setCacheDisabled", {"cacheDisabled": True})
            browser.get(url)  # warm: the server's first answers, the browser's start-up
            page, bare, sizes = [], [], []
            for _ in range(args.rounds):
                browser.get(url + "static/page.css")
                bare.append(browser.execute_script(LOAD_MS))
                browser.get(url)
                page.append(browser.execute_script(LOAD_MS))
                sizes.append(browser.execute_script(BYTES))
        finally:
            browser.quit()
    ratios = [p / b for p, b in zip(page, bare, strict=True) if b > 0]
    print(f"first load: {min(sizes):,} bytes over the wire (HTML, CSS, JS, GET /batch)")
    print(
        f"page load  median {statistics.median(page):6.1f} ms  (max {max(page):.1f} ms, {args.rounds} rounds)"
    )
    print(f"bare file  median {statistics.median(bare):6.1f} ms")
    print(f"page / bare file: median {statistics.median(ratios):.2f}x")


if __name__ == "__main__":
    main()
