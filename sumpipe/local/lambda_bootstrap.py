"""An execution environment for a function that runs from its deployment package, as Lambda's
Python runtime runs it: the local stack's stand-in for /var/runtime/bootstrap.

    python -I -S lambda_bootstrap.py HANDLER FUNCTION_ARN TIMEOUT_S CODE_DIR [LAYER_DIR ...]

Run by file path, isolated (-I) and without the site module (-S), so nothing of the machine's or the
venv's import setup applies: sys.path is exactly the unpacked zip (Lambda's /var/task) followed by
the layer directories (Lambda's /opt/python; locally the venv's site-packages stands in for the
function's layers). The venv's editable install of the project (a .pth file) is therefore never
processed: the project's modules come only from the zip, so a module the zip lacks fails here as
it would in AWS. That is why this file uses the standard library only until sys.path is set.

HANDLER is the function configuration's (`lambdas/api/handler.lambda_handler`: a file path
without .py, then the attribute). The protocol with the service (sumpipe.local.runtime
ExecutionEnvironment) is the runtime module's: after init one line `{"ready": true}`, then one
event per line in and `{"result": ...}` or `{"error": ...}` out, on the process's original stdout.

Logs: as Lambda captures a function's stdout and stderr, this process's file descriptors 1 and 2
go into a pipe whose lines are copied to the original stderr (the stack's log) and shipped to
CloudWatch Logs, /aws/lambda/<function>, in a stream of this environment's own, with the
function role's credentials (the role's policy must allow it, as in AWS). Each invocation's lines
are shipped before its result is returned.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import threading
import time
import traceback
import uuid
from datetime import UTC, datetime
from typing import Any

_FLUSH_MARK = "\x00sumpipe-flush-"


class LambdaContext:
    """The attributes of Lambda's context object that handlers read."""

    def __init__(self, function_name: str, function_arn: str, timeout_s: float, log_stream: str) -> None:
        self.function_name = function_name
        self.invoked_function_arn = function_arn
        self.aws_request_id = str(uuid.uuid4())
        self.memory_limit_in_mb = int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128"))
        self.function_version = "$LATEST"
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = log_stream
        self._deadline = time.monotonic() + timeout_s

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class LogShipper:
    """The process's stdout and stderr, line by line, to the stack's log and to CloudWatch Logs."""

    def __init__(self, function_name: str, copy_to: Any) -> None:
        self.group = f"/aws/lambda/{function_name}"
        self.stream = datetime.now(UTC).strftime("%Y/%m/%d/[$LATEST]") + uuid.uuid4().hex
        self._copy_to = copy_to
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Condition()
        self._marks: set[str] = set()
        self._logs: Any = None
        read_fd, write_fd = os.pipe()
        os.dup2(write_fd, 1)
        os.dup2(write_fd, 2)
        os.close(write_fd)
        self._reader = os.fdopen(read_fd, "rb")
        threading.Thread(target=self._read, name="log-capture", daemon=True).start()

    def start(self) -> None:
        import boto3  # the runtime's, from the layer directories (Lambda's Python runtime has it)

        self._logs = boto3.client("logs")
        self._logs.create_log_stream(logGroupName=self.group, logStreamName=self.stream)

    def _read(self) -> None:
        for raw in self._reader:
            line = raw.decode(errors="replace").rstrip("\n")
            with self._lock:
                if line.startswith(_FLUSH_MARK):
                    self._marks.add(line)
                    self._lock.notify_all()
                    continue
                self._pending.append({"timestamp": int(time.time() * 1000), "message": line})
            self._copy_to.write(raw)
            self._copy_to.flush()

    def flush(self) -> None:
        """Ships every line written so far (the pipe is drained up to a mark written now)."""
        sys.stdout.flush()
        sys.stderr.flush()
        mark = f"{_FLUSH_MARK}{uuid.uuid4().hex}"
        os.write(1, (mark + "\n").encode())
        with self._lock:
            self._lock.wait_for(lambda: mark in self._marks, timeout=5)
            self._marks.discard(mark)
            pending, self._pending = self._pending, []
        if not pending or self._logs is None:
            return
        try:
            self._logs.put_log_events(logGroupName=self.group, logStreamName=self.stream, logEvents=pending)
        except Exception as error:  # the lines are in the stack's log still
            self._copy_to.write(
                f"could not ship {len(pending)} log lines to {self.group}: {error}\n".encode()
            )
            self._copy_to.flush()


def load_handler(handler: str) -> Any:
    module_path, _, attribute = handler.rpartition(".")
    module = importlib.import_module(module_path.replace("/", "."))
    return getattr(module, attribute)


def main() -> None:
    handler_name, function_arn, timeout_s, code_dir, *layer_dirs = sys.argv[1:]
    # The zip, the layers, then the interpreter's standard library (what -I -S left on the path,
    # never this file's own directory), as Lambda orders /var/task, /opt/python, the runtime's.
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [code_dir, *layer_dirs, *(path for path in sys.path if path and path != here)]
    os.chdir(code_dir)  # Lambda's working directory is /var/task
    function_name = function_arn.rsplit(":", 1)[-1]
    replies = os.fdopen(os.dup(1), "wb")
    shipper = LogShipper(function_name, os.fdopen(os.dup(2), "wb"))
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    shipper.start()
    try:
        handler = load_handler(handler_name)
    except Exception:
        traceback.print_exc()
        shipper.flush()
        raise SystemExit(1) from None
    shipper.flush()
    replies.write(b'{"ready": true}\n')
    replies.flush()
    for line in sys.stdin.buffer:
        context = LambdaContext(function_name, function_arn, float(timeout_s), shipper.stream)
        print(f"START RequestId: {context.aws_request_id} Version: $LATEST")
        try:
            reply = {"result": handler(json.loads(line), context)}
        except Exception as error:
            # As Lambda's runtime reports it: the traceback in the log, the error to the caller.
            traceback.print_exc()
            reply = {"error": f"{type(error).__name__}: {error}"}
        print(f"END RequestId: {context.aws_request_id}")
        shipper.flush()
        replies.write(json.dumps(reply, default=str).encode() + b"\n")
        replies.flush()


if __name__ == "__main__":
    main()
