#!/usr/bin/env python3
"""Bounded load test of the realtime API, on loopback only, with real review texts.

1. Cold start: starts `sumpipe serve` (one worker) and times process start -> first successful
   POST /summarize answer; the same for the API Lambda (a fresh interpreter imports
   lambdas/api/handler.py, whose init phase loads the vectors, and answers one API Gateway v2
   event). Median of --cold-starts runs, next to a bare `python -c pass` for scale.
2. Load: starts `sumpipe serve --workers N` (or uses --url, loopback only) and sends a fixed
   number of single-review requests over --concurrency keep-alive connections, stopping early at
   --time-limit. Reports requests/s, success rate and p50/p95/p99 latency.

Exits 1 when a target from the issue is missed (300 requests/s at 100% success, p99 < 50 ms,
cold start < 1 s).

    .venv/bin/python scripts/loadtest.py
    .venv/bin/python scripts/loadtest.py --url http://127.0.0.1:8080 --requests 500
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import ipaddress
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parent.parent
REVIEW_FILES = (
    REPO / "tests" / "data" / "reviews_sample.csv",
    REPO.parent / "shared" / "data" / "amazon-fine-food-reviews" / "Reviews.csv",
)
# Targets from the issue, for single-review requests on 2 cores.
TARGET_RPS = 300.0
TARGET_P99_MS = 50.0
TARGET_COLD_START_S = 1.0
REQUEST_TIMEOUT_S = 10.0
STARTUP_TIMEOUT_S = 60.0


def load_reviews(path: Path | None) -> list[str]:
    candidates = [path] if path else [p for p in REVIEW_FILES if p.exists()]
    if not candidates:
        sys.exit(f"loadtest: no review file found; looked for {', '.join(map(str, REVIEW_FILES))}")
    with candidates[0].open(newline="", encoding="utf-8") as f:
        texts = [row["Text"] for row in csv.DictReader(f) if row.get("Text")]
    if not texts:
        sys.exit(f"loadtest: {candidates[0]} has no rows with a Text column")
    return texts


def require_loopback(url: str) -> None:
    host = urlsplit(url).hostname or ""
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        sys.exit(f"loadtest: refusing to send load to {host!r}: only loopback addresses are allowed")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int, workers: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sumpipe.ops.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


async def wait_first_answer(port: int, body: bytes, process: subprocess.Popen[bytes]) -> None:
    """Polls POST /summarize until it answers 200."""
    deadline = time.perf_counter() + STARTUP_TIMEOUT_S
    while time.perf_counter() < deadline:
        if process.poll() is not None:
            error = process.stderr.read().decode(errors="replace") if process.stderr else ""
            sys.exit(f"loadtest: server exited with {process.returncode}:\n{error}")
        client = KeepAliveConnection("127.0.0.1", port)
        try:
            if (await client.post("/summarize", body))[0] == 200:
                return
        except OSError:
            await asyncio.sleep(0.005)
        finally:
            await client.close()
    sys.exit(f"loadtest: no answer on port {port} within {STARTUP_TIMEOUT_S} s")


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def server_cold_start(body: bytes) -> tuple[float, float]:
    """(wall s, CPU s) from starting `sumpipe serve` to its first answer."""
    port = free_port()
    cpu_before, started = children_cpu_s(), time.perf_counter()
    process = start_server(port, workers=1)
    try:
        asyncio.run(wait_first_answer(port, body, process))
        wall = time.perf_counter() - started
    finally:
        stop(process)  # its CPU time is counted once it has been waited for
    return wall, children_cpu_s() - cpu_before


def lambda_cold_start() -> tuple[float, float]:
    """(wall s, CPU s) for a fresh interpreter to import the handler and answer one v2 event."""
    program = (
        "import json, sys\n"
        "from lambdas.api.handler import lambda_handler\n"
        "response = lambda_handler(json.load(sys.stdin), None)\n"
        "assert response['statusCode'] == 200, response\n"
    )
    event = (REPO / "tests" / "data" / "api_gateway_v2_event.json").read_bytes()
    cpu_before, started = children_cpu_s(), time.perf_counter()
    subprocess.run([sys.executable, "-c", program], cwd=REPO, input=event, check=True)
    return time.perf_counter() - started, children_cpu_s() - cpu_before


def python_startup() -> tuple[float, float]:
    cpu_before, started = children_cpu_s(), time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    return time.perf_counter() - started, children_cpu_s() - cpu_before


def median_of(runs: int, measure: Callable[[], tuple[float, float]]) -> tuple[float, float]:
    """Median wall and CPU seconds of `runs` measurements. On a busy machine wall time includes
    waiting for a core; CPU time is what the start-up itself costs."""
    walls, cpus = zip(*(measure() for _ in range(runs)), strict=True)
    return statistics.median(walls), statistics.median(cpus)


class KeepAliveConnection:
    """A minimal HTTP/1.1 client connection (keep-alive, Content-Length bodies).

    The load generator shares the 2 cores with the server, so it must be cheap: httpx spends
    more CPU per request than the server does, and would measure the client, not the API.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        status = int((await self.reader.readline()).split()[1])
        length, close = -1, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection":
                close = value.strip().lower() == b"close"
        if length < 0:
            raise ConnectionError("response without Content-Length")
        payload = await self.reader.readexactly(length)
        if close:
            await self.close()
        return status, payload

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.reader = self.writer = None


async def run_load(
    url: str, bodies: list[bytes], requests: int, concurrency: int, time_limit_s: float
) -> tuple[list[float], int, int, float]:
    """Closed loop: `concurrency` connections each send the next request as soon as the last answers.

    Returns (latencies of successful requests in s, requests sent, successes, elapsed s).
    """
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    latencies: list[float] = []
    sent = successes = 0
    started = time.perf_counter()
    deadline = started + time_limit_s

    async def connection() -> None:
        nonlocal sent, successes
        client = KeepAliveConnection(host, port)
        try:
            while sent < requests and time.perf_counter() < deadline:
                body = bodies[sent % len(bodies)]
                sent += 1
                t0 = time.perf_counter()
                try:
                    answer = client.post("/summarize", body)
                    status, payload = await asyncio.wait_for(answer, REQUEST_TIMEOUT_S)
                except (OSError, ValueError, IndexError, asyncio.IncompleteReadError, TimeoutError):
                    await client.close()  # a broken or timed-out connection is not reused
                    continue
                if status == 200 and json.loads(payload).get("status"):
                    latencies.append(time.perf_counter() - t0)
                    successes += 1
        finally:
            await client.close()

    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return latencies, sent, successes, time.perf_counter() - started


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, round(q / 100 * (len(sorted_values) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="an already running server (loopback only); default: start one")
    parser.add_argument("--workers", type=int, default=2, help="server workers when starting one")
    parser.add_argument("--requests", type=int, default=3000, help="requests to send (after warm-up)")
    parser.add_argument("--concurrency", type=int, default=4, help="connections in flight")
    parser.add_argument("--time-limit", type=float, default=60.0, help="stop sending after this many s")
    parser.add_argument("--warmup", type=int, default=200, help="requests sent first and not counted")
    parser.add_argument("--cold-starts", type=int, default=3, help="cold starts timed (0: skip)")
    parser.add_argument("--reviews", type=Path, help="CSV with a Text column (default: tests/data sample)")
    parser.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = parser.parse_args()

    reviews = load_reviews(args.reviews)
    bodies = [json.dumps({"text": text}).encode() for text in reviews]
    report: dict[str, object] = {"cpus": os.cpu_count(), "reviews": len(reviews)}
    missed = []

    if args.cold_starts:
        timed = {
            "python_startup": median_of(args.cold_starts, python_startup),
            "server_cold_start": median_of(args.cold_starts, lambda: server_cold_start(bodies[0])),
            "lambda_cold_start": median_of(args.cold_starts, lambda_cold_start),
        }
        for name, (wall, cpu) in timed.items():
            report[f"{name}_s"] = round(wall, 3)
            report[f"{name}_cpu_s"] = round(cpu, 3)
            if name != "python_startup" and wall >= TARGET_COLD_START_S:
                missed.append(f"{name} not under {TARGET_COLD_START_S} s")

    process = None
    if args.url:
        require_loopback(args.url)
        url = args.url.rstrip("/")
    else:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        process = start_server(port, args.workers)
        report["server_workers"] = args.workers
        asyncio.run(wait_first_answer(port, bodies[0], process))
    try:
        asyncio.run(run_load(url, bodies, args.warmup, args.concurrency, args.time_limit))
        latencies, sent, ok, elapsed = asyncio.run(
            run_load(url, bodies, args.requests, args.concurrency, args.time_limit)
        )
    finally:
        if process is not None:
            stop(process)

    latencies.sort()
    rps = sent / elapsed if elapsed else 0.0
    p99_ms = percentile(latencies, 99) * 1000
    report.update(
        concurrency=args.concurrency,
        requests=sent,
        succeeded=ok,
        success_rate=round(ok / sent, 4) if sent else 0.0,
        seconds=round(elapsed, 2),
        requests_per_s=round(rps, 1),
        p50_ms=round(percentile(latencies, 50) * 1000, 2),
        p95_ms=round(percentile(latencies, 95) * 1000, 2),
        p99_ms=round(p99_ms, 2),
        max_ms=round(latencies[-1] * 1000, 2) if latencies else None,
    )
    if sent < args.requests:
        missed.append(f"only {sent} of {args.requests} requests sent within {args.time_limit} s")
    if rps < TARGET_RPS:
        missed.append(f"requests/s below {TARGET_RPS}")
    if ok != sent:
        missed.append("not every request succeeded")
    if not p99_ms < TARGET_P99_MS:
        missed.append(f"p99 not under {TARGET_P99_MS} ms")
    report["targets_missed"] = missed

    if args.json:
        print(json.dumps(report))
    else:
        for key, value in report.items():
            print(f"{key:>20}: {value}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
