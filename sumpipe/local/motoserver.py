"""The AWS emulator of the local stack: moto in server mode, in a process of its own.

It listens on loopback (for the CLI and the Lambda runtime) and, when the hosts live in network
namespaces, also on the bridge address (for the job runner on the hosts). Both listeners are in
one process, so they serve the same emulated account. It never binds a wildcard address.

    python -m sumpipe.local.motoserver --port 4566 --bind 127.0.0.1 --bind 10.200.0.1
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

REGION = "us-east-1"
# moto accepts any credentials; these are fixed placeholders, not secrets.
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def client_environment(endpoint: str) -> dict[str, str]:
    """What a boto3 process needs to talk to the emulator at `endpoint` (standard variables only)."""
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION, **CREDENTIALS}


def start(port: int, binds: list[str], log_path: Path, timeout_s: float = 20.0) -> subprocess.Popen[bytes]:
    """Starts the server process and returns once every listener accepts connections."""
    argv = [sys.executable, "-m", "sumpipe.local.motoserver", "--port", str(port)]
    for address in binds:
        argv += ["--bind", address]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
        )
    deadline = time.monotonic() + timeout_s
    pending = list(binds)
    while pending:
        if process.poll() is not None:
            raise RuntimeError(f"moto server exited ({process.returncode}); see {log_path}")
        try:
            with socket.create_connection((pending[0], port), timeout=0.5):
                pending.pop(0)
                continue
        except OSError:
            if time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(
                    f"moto server not listening on {pending[0]}:{port} after {timeout_s}s"
                ) from None
        time.sleep(0.02)
    return process


def serve(port: int, binds: list[str]) -> None:
    from moto.server import ThreadedMotoServer

    servers = [ThreadedMotoServer(ip_address=address, port=port, verbose=False) for address in binds]
    for server in servers:
        server.start()
    stopping = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    while not stopping:
        time.sleep(0.2)
    for server in servers:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="moto server for the local stack")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--bind", action="append", required=True, help="address to listen on (repeatable)")
    args = parser.parse_args()
    if any(ipaddress.ip_address(address).is_unspecified for address in args.bind):
        parser.error("refusing to listen on a wildcard address")
    print(f"moto server pid {os.getpid()} on {', '.join(args.bind)} port {args.port}", flush=True)
    serve(args.port, args.bind)


if __name__ == "__main__":
    main()
