"""`sumpipe serve` as a user runs it, on a free loopback port, for the API and page tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def serve(env: dict[str, str] | None = None, *args: str) -> Iterator[tuple[str, int]]:
    """(its base URL, its pid). Its feedback store is a SQLite file of its own, in a temporary
    directory, unless `args` name one (`--feedback-db`)."""
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="sumpipe-serve-") as tmp:
        command = [sys.executable, "-m", "sumpipe.ops.cli", "serve", "--port", str(port), *args]
        if "--feedback-db" not in args:
            command += ["--feedback-db", str(Path(tmp) / "feedback.sqlite3")]
        process = subprocess.Popen(
            command,
            cwd=REPO,
            env={**os.environ, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, process.stderr.read().decode() if process.stderr else ""
                try:
                    if httpx.get(f"{url}/health").status_code == 200:
                        break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "sumpipe serve did not answer within 60 s"
                    time.sleep(0.05)
            yield url, process.pid
        finally:
            process.terminate()
            process.wait(timeout=10)
