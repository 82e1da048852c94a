"""Headless Chromium from Debian's packages (scripts/setup installs chromium and chromium-driver),
driven by selenium: the page is tested in a real browser. Selenium is pointed at both binaries, so
it never tries to download a browser or a driver (nothing outside the registries is reachable)."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import Select

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@contextmanager
def chromium(network_log: bool = False, downloads: Path | None = None) -> Iterator[webdriver.Chrome]:
    """`network_log`: keep the DevTools network events, for requests_sent(); `downloads`: where
    downloads are saved, without asking."""
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.fail(f"{CHROMIUM} and {CHROMEDRIVER} are needed: scripts/setup installs them")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    # --no-sandbox: the suite runs as root, where Chromium's sandbox refuses to start.
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1200,1000"):
        options.add_argument(argument)
    if network_log:
        options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    if downloads is not None:
        options.add_experimental_option(
            "prefs", {"download.default_directory": str(downloads), "download.prompt_for_download": False}
        )
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def fill(form: WebElement, name: str, value: str) -> None:
    """Set a form's field as a user does: type into a box, pick from a list, tick a box ("true")."""
    field = form.find_element(By.NAME, name)
    if field.tag_name == "select":
        Select(field).select_by_value(value)
    elif field.get_attribute("type") == "checkbox":
        if field.is_selected() != (value == "true"):
            field.click()
    else:
        field.clear()
        field.send_keys(value)


def requests_sent(driver: webdriver.Chrome) -> list[dict[str, Any]]:
    """The requests the browser sent since the last call (a `network_log` driver), each as
    DevTools' Network.requestWillBeSent has it: url, method, headers (those the page set too)."""
    sent = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            sent.append(message["params"]["request"])
    return sent


def downloaded(folder: Path, name: str, timeout: float = 30) -> bytes:
    """The file the browser saved as `name` in its `downloads` folder, once it is there (Chromium
    writes to a temporary name and renames it when done)."""
    deadline = time.monotonic() + timeout
    while not (folder / name).exists():
        assert time.monotonic() < deadline, f"{name} was not downloaded: {sorted(folder.iterdir())}"
        time.sleep(0.1)
    return (folder / name).read_bytes()
