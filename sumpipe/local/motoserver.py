"""The AWS emulator of the local stack: moto in server mode, in a process of its own.

It listens on loopback (for the CLI and the Lambda runtime) and, when the hosts live in network
namespaces, also on the bridge address (for the job runner on the hosts). Both listeners are in
one process, so they serve the same emulated account. It never binds a wildcard address.

    python -m sumpipe.local.motoserver --port 4566 --bind 127.0.0.1 --bind 10.200.0.1
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import boto3

REGION = "us-east-1"
# Until IAM is enforced moto accepts any credentials: these placeholders (not secrets) make the
# calls that create the administrator below.
BOOTSTRAP_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "bootstrap", "AWS_SECRET_ACCESS_KEY": "bootstrap"}
# The operator principal of the local stack (`sumpipe deploy`, `submit`, `jobs`, `logs`, the stack
# daemon itself): allowed everything, as an account administrator is.
ADMIN_USER = "sumpipe-local-admin"
# Other ways a shell names an AWS identity: dropped wherever the administrator's key is put in
# place, since the emulator knows no identity but its own.
OTHER_IDENTITY_VARIABLES = ("AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_PROFILE")
ADMIN_POLICY = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def endpoint_environment(endpoint: str) -> dict[str, str]:
    """Where the emulator is and its region (standard variables only; credentials come separately:
    the administrator's for operators, a role's for functions and instances)."""
    return {"AWS_ENDPOINT_URL": endpoint, "AWS_REGION": REGION, "AWS_DEFAULT_REGION": REGION}


def create_administrator(endpoint: str) -> dict[str, str]:
    """An IAM user allowed everything, and its access key as AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY:
    made before IAM is enforced, it is the principal every operator command uses."""
    iam = boto3.client(
        "iam",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=BOOTSTRAP_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=BOOTSTRAP_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )
    iam.create_user(UserName=ADMIN_USER)
    iam.put_user_policy(
        UserName=ADMIN_USER, PolicyName="administrator", PolicyDocument=json.dumps(ADMIN_POLICY)
    )
    key = iam.create_access_key(UserName=ADMIN_USER)["AccessKey"]
    return {"AWS_ACCESS_KEY_ID": key["AccessKeyId"], "AWS_SECRET_ACCESS_KEY": key["SecretAccessKey"]}


def enforce_iam(endpoint: str, enforced: bool = True) -> None:
    """From now on the emulator checks every request against its caller's IAM policies (actions,
    and resources for S3; see sumpipe/local/resources.py), or, with `enforced=False`, no longer."""
    if not endpoint.startswith("http://"):
        raise ValueError(f"not the local emulator's endpoint: {endpoint}")
    # Not form-encoded: moto reads the raw body, which Flask leaves empty for a form.
    request = urllib.request.Request(  # noqa: S310
        f"{endpoint}/moto-api/reset-auth",
        data=b"0" if enforced else b"inf",
        method="POST",
        headers={"Content-Type": "text/plain"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310 (http only, checked above)
        if response.status != 200:
            raise RuntimeError(f"the emulator refused to enforce IAM: HTTP {response.status}")


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


def make_dynamodb_requests_atomic() -> None:
    """Each DynamoDB request applied whole, as DynamoDB does; moto doesn't, under concurrency.

    The server answers each request on its own thread, and moto's DynamoDB holds nothing while
    it works: an UpdateItem checks its condition and then writes, so two conditional writes can
    both pass; and a TransactWriteItems that is cancelled restores a deep copy of the whole table
    taken when it began, undoing every write other requests made meanwhile. The ledger's
    exclusions rely on DynamoDB's guarantees (a conditional write is atomic, a cancelled
    transaction writes nothing), so under the emulator a refused job assignment once brought back
    a stop mark that its stopper had already removed, and the instance refused jobs until the
    mark's lease ran out. One lock around every DynamoDB request, serialization of the answer
    included, gives the emulator DynamoDB's behaviour. Other emulators fixed the same race in
    themselves (floci-io/floci#572, stackshy/cloudemu#661)."""
    from moto.dynamodb.responses import DynamoHandler

    if getattr(DynamoHandler.call_action, "serialized", False):
        return
    lock = threading.Lock()
    handle = DynamoHandler.call_action

    def call_action(self: DynamoHandler) -> object:
        with lock:
            return handle(self)

    call_action.serialized = True  # type: ignore[attr-defined]
    DynamoHandler.call_action = call_action  # type: ignore[method-assign,assignment]


def serve(port: int, binds: list[str]) -> None:
    from moto.server import ThreadedMotoServer

    make_dynamodb_requests_atomic()
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
