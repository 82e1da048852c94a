"""The local stack's Lambda service: what AWS Lambda's SQS event source mappings, execution
environments and EventBridge schedule do, for the unchanged handlers.

Each function's invocations run in execution environments: processes
(`python -m sumpipe.local.runtime HANDLER FUNCTION_ARN`) that import `lambdas.<handler>.handler`
once, hold the function role's credentials in the standard variables, and run one invocation at a
time, as Lambda's do. One environment serves each poller (a unit of the mapping's concurrency) and
one the watchdog's schedule; their pids are in the stack directory's `lambda/`.

The pollers are the service's side, in the stack's process. Each receives from its queue and
invokes its environment with exactly the event Lambda would send (Records with messageId,
receiptHandle, body, attributes, eventSource "aws:sqs", eventSourceARN, ...). A message is deleted
only when its record succeeded: a raised handler keeps the whole batch, `batchItemFailures` keeps
the records it names. Kept messages come back after `retry_delay_s` (the queue's visibility
timeout, shortened for the emulator) and go to the DLQ by the queue's own redrive policy.

An environment that dies mid-invocation (killed, out of memory) fails that invocation, as Lambda
reports Runtime.ExitError, and a new one is started at once. Its batch comes back after
`crash_redelivery_s`: in AWS, after the queue's visibility timeout, which outlasts the function's
timeout and so the trigger's start lease; locally, past the local lease, so a job its trigger left
`starting` is resumed by the redelivery, as it would be in AWS.

A function can also run from its deployment package (FunctionCode: the realtime API, behind the
local HTTP API front, sumpipe/local/http_api.py): its environment is then sumpipe/local/lambda_bootstrap.py
run isolated, with the unpacked zip and the layers' stand-in as its only import path, and only the
function configuration's environment variables, as Lambda gives them.

Pollers receive and delete with the function role's credentials, and handlers act with them, so
with IAM enforced the emulator refuses what the role's policy does not allow. Each environment
ships the lines its handler logs to /aws/lambda/<function> (its own stream), as Lambda does, so
`sumpipe logs` reads them the same way in both places.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from sumpipe.aws import client, use_session
from sumpipe.logs import get_logger

if TYPE_CHECKING:
    from sumpipe.local.stack import RoleCredentials

logger = logging.getLogger(__name__)

# The variables of a credential source other than the function role's own: an environment gets none.
_OTHER_IDENTITY = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SHARED_CREDENTIALS_FILE", "AWS_CONFIG_FILE")
# What a warm environment has built before its first event (a provisioned Lambda would have too).
_WARM_SERVICES = ("s3", "ec2", "dynamodb", "secretsmanager", "ssm", "sqs")


@dataclass(frozen=True)
class EventSource:
    """An SQS event source mapping: queue -> function."""

    handler: str  # "trigger" | "worker" | "stop_ec2" (lambdas/<handler>/handler.py)
    function_name: str
    queue_url: str
    batch_size: int = 10
    concurrency: int = 1
    # The function role's credentials; None: this process's own.
    credentials: RoleCredentials | None = None


@dataclass
class LambdaContext:
    """The attributes of Lambda's context object that handlers and powertools read."""

    function_name: str
    invoked_function_arn: str
    aws_request_id: str
    memory_limit_in_mb: int = 512
    function_version: str = "$LATEST"
    timeout_s: float = 900.0

    def __post_init__(self) -> None:
        self._deadline = time.monotonic() + self.timeout_s
        self.log_group_name = f"/aws/lambda/{self.function_name}"
        self.log_stream_name = datetime.now(UTC).strftime("%Y/%m/%d/[$LATEST]") + uuid.uuid4().hex

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class RuntimeExited(RuntimeError):
    """The environment's process ended before answering (Lambda's Runtime.ExitError)."""


class InvocationTimeout(RuntimeExited):
    """The invocation outlasted its time; its environment was stopped (Lambda's "Task timed out")."""


class FunctionError(RuntimeError):
    """The handler raised (the environment logged its traceback)."""


# Lambda's Python runtime, run by file path (see its docstring): stdlib-only until it sets sys.path.
BOOTSTRAP = Path(__file__).with_name("lambda_bootstrap.py")


@dataclass(frozen=True)
class FunctionCode:
    """A function run from its deployment package, as Lambda runs it (sumpipe/local/lambda_bootstrap.py)
    rather than from the project's checkout: the unpacked zip, the directories standing in for its
    layers, its configuration's handler, timeout and environment variables (the whole environment,
    with the endpoint and the role's credentials added by the environment)."""

    code_dir: Path
    layer_dirs: tuple[Path, ...]
    handler: str  # as in the function configuration: lambdas/api/handler.lambda_handler
    timeout_s: float
    environment: dict[str, str]


def venv_site_packages() -> tuple[Path, ...]:
    """The project venv's site-packages: locally, the stand-in for a function's dependency layers
    (the editable install's .pth in it is not processed by the bootstrap, which runs with -S)."""
    import site

    return tuple(Path(path) for path in site.getsitepackages() if Path(path).is_dir())


class ExecutionEnvironment:
    """The service's handle on one execution environment process; started again when it has died."""

    def __init__(
        self,
        handler: str,
        function_arn: str,
        credentials: RoleCredentials | None,
        pid_path: Path,
        code: FunctionCode | None = None,
    ) -> None:
        self.handler, self.function_arn, self.credentials = handler, function_arn, credentials
        self.function_name = function_arn.rsplit(":", 1)[-1]
        self.pid_path = pid_path
        self.code = code
        self._process: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()  # start and stop don't interleave
        self._closed = False

    def spawn(self) -> None:
        """Starts the process (returns at once; `wait_ready` waits for its init)."""
        with self._lock:
            if self._closed:
                raise RuntimeExited(f"{self.function_name}: the runtime is stopping")
            if self.code is None:
                env = {k: v for k, v in os.environ.items() if k not in _OTHER_IDENTITY}
                argv = [sys.executable, "-m", "sumpipe.local.runtime", self.handler, self.function_arn]
            else:
                # Only what Lambda gives a function: its configuration's variables, not the stack's.
                env = {**self.code.environment}
                argv = [
                    sys.executable, "-I", "-S", str(BOOTSTRAP), self.code.handler, self.function_arn,
                    str(self.code.timeout_s), str(self.code.code_dir), *map(str, self.code.layer_dirs),
                ]  # fmt: skip
            if self.credentials is not None:
                env.update(
                    AWS_ACCESS_KEY_ID=self.credentials.credentials["AccessKeyId"],
                    AWS_SECRET_ACCESS_KEY=self.credentials.credentials["SecretAccessKey"],
                    AWS_SESSION_TOKEN=self.credentials.credentials["SessionToken"],
                )
            env["AWS_LAMBDA_FUNCTION_NAME"] = self.function_name
            self._process = subprocess.Popen(
                argv,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                env=env,
            )
            self.pid_path.write_text(str(self._process.pid))

    def wait_ready(self) -> None:
        """Until the process has imported its handler and warmed its clients (its first line)."""
        process = self._require_process()
        assert process.stdout is not None
        if not process.stdout.readline():
            raise RuntimeExited(f"{self.function_name}'s runtime exited during init ({_how(process.wait())})")

    def start(self) -> None:
        self.spawn()
        self.wait_ready()

    def ensure_running(self) -> None:
        """A new process in place of one that has died (a cold start)."""
        if self._process is None or self._process.poll() is not None:
            self.start()

    def invoke(self, event: dict[str, Any], timeout_s: float | None = None) -> Any:
        """The handler's result for `event`; FunctionError if it raised, RuntimeExited if the
        process died meanwhile (the next `ensure_running` starts another), InvocationTimeout if
        it took longer than `timeout_s` (the process is killed, as Lambda ends a timed-out one)."""
        return json.loads(self.invoke_raw(event, timeout_s))["result"]

    def invoke_raw(self, event: dict[str, Any], timeout_s: float | None = None) -> bytes:
        """As invoke, but the reply line as the environment wrote it (`{"result": ...}`): a caller
        bounding the response's size measures it before parsing it."""
        self.ensure_running()
        process = self._require_process()
        assert process.stdin is not None and process.stdout is not None
        timed_out = threading.Event()

        def expire() -> None:
            timed_out.set()
            process.kill()

        timer = threading.Timer(timeout_s, expire) if timeout_s is not None else None
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            process.stdin.write(json.dumps(event).encode() + b"\n")
            process.stdin.flush()
            line = process.stdout.readline()
        except OSError:
            line = b""
        finally:
            if timer is not None:
                timer.cancel()
        if not line:
            how = _how(process.wait())
            if timed_out.is_set():
                raise InvocationTimeout(f"{self.function_name} timed out after {timeout_s:.0f} s")
            raise RuntimeExited(f"{self.function_name}'s runtime exited ({how}) during the invocation")
        reply = json.loads(line)
        if "error" in reply:
            raise FunctionError(f"{self.function_name} raised {reply['error']}")
        return line

    def stop(self) -> None:
        with self._lock:
            self._closed = True
            process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.pid_path.unlink(missing_ok=True)

    def _require_process(self) -> subprocess.Popen[bytes]:
        if self._process is None:
            raise RuntimeExited(f"{self.function_name}'s runtime was never started")
        return self._process


def _how(returncode: int) -> str:
    return f"signal {signal.Signals(-returncode).name}" if returncode < 0 else f"status {returncode}"


class Runtime:
    """Pollers for the event sources and the watchdog's ticker, in daemon threads, each with its
    own execution environment."""

    def __init__(
        self,
        sources: list[EventSource],
        *,
        watchdog_function: str,
        watchdog_interval_s: float,
        watchdog_credentials: RoleCredentials | None = None,
        account: str,
        region: str,
        pid_dir: Path,
        retry_delay_s: int = 1,
        crash_redelivery_s: int = 35,
    ) -> None:
        self.sources = sources
        self.watchdog_function = watchdog_function
        self.watchdog_interval_s = watchdog_interval_s
        self.watchdog_credentials = watchdog_credentials
        self.account = account
        self.region = region
        self.pid_dir = pid_dir
        self.retry_delay_s = retry_delay_s
        self.crash_redelivery_s = crash_redelivery_s
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._environments: list[ExecutionEnvironment] = []
        self._log = get_logger()

    def start(self) -> None:
        """Starts every environment (their inits run side by side), then the pollers and ticker."""
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        pollers = []
        for source in self.sources:
            for n in range(source.concurrency):
                name = f"{source.handler}-{n}"
                pollers.append((name, source, self._environment(source.handler, source.function_name,
                                                                source.credentials, name)))  # fmt: skip
        ticker = None
        if self.watchdog_interval_s > 0:
            ticker = self._environment(
                "stop_ec2", self.watchdog_function, self.watchdog_credentials, "watchdog"
            )
        for environment in self._environments:
            environment.spawn()
        for environment in self._environments:
            environment.wait_ready()
        for name, source, environment in pollers:
            self._spawn(f"poll-{name}", self._poll, source, environment)
        if ticker is not None:
            self._spawn("watchdog", self._tick, ticker)

    def stop(self) -> None:
        self._stopping.set()
        for environment in self._environments:
            environment.stop()
        for thread in self._threads:
            thread.join()
        self._threads = []

    def _environment(
        self, handler: str, function_name: str, credentials: RoleCredentials | None, name: str
    ) -> ExecutionEnvironment:
        arn = f"arn:aws:lambda:{self.region}:{self.account}:function:{function_name}"
        environment = ExecutionEnvironment(handler, arn, credentials, self.pid_dir / f"{name}.pid")
        self._environments.append(environment)
        return environment

    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _poll(self, source: EventSource, environment: ExecutionEnvironment) -> None:
        if source.credentials is not None:
            use_session(source.credentials.session())
        sqs = client("sqs")
        queue_arn = sqs.get_queue_attributes(QueueUrl=source.queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        while not self._stopping.is_set():
            try:
                environment.ensure_running()
                messages = sqs.receive_message(
                    QueueUrl=source.queue_url,
                    MaxNumberOfMessages=source.batch_size,
                    WaitTimeSeconds=1,
                    MessageSystemAttributeNames=["All"],
                    MessageAttributeNames=["All"],
                ).get("Messages", [])
                if messages:
                    self._deliver(sqs, source, environment, queue_arn, messages)
            except Exception:
                self._log.exception("poller failed; retrying", extra={"function": source.function_name})
                self._stopping.wait(1.0)

    def _deliver(
        self,
        sqs: Any,
        source: EventSource,
        environment: ExecutionEnvironment,
        queue_arn: str,
        messages: list[dict[str, Any]],
    ) -> None:
        event = {"Records": [self._record(m, queue_arn) for m in messages]}
        delay = self.retry_delay_s
        try:
            response = environment.invoke(event) or {}
            failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
        except (FunctionError, RuntimeExited) as exc:
            failed = {m["MessageId"] for m in messages}
            if isinstance(exc, RuntimeExited):
                delay = self.crash_redelivery_s
            self._log.error(
                "invocation failed; its batch stays in the queue",
                extra={"function": source.function_name, "error": str(exc), "message_ids": sorted(failed),
                       "redelivery_s": delay},
            )  # fmt: skip
        for message in messages:
            if message["MessageId"] in failed:
                sqs.change_message_visibility(
                    QueueUrl=source.queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=delay
                )
            else:
                sqs.delete_message(QueueUrl=source.queue_url, ReceiptHandle=message["ReceiptHandle"])

    def _record(self, message: dict[str, Any], queue_arn: str) -> dict[str, Any]:
        return {
            "messageId": message["MessageId"],
            "receiptHandle": message["ReceiptHandle"],
            "body": message["Body"],
            "attributes": message.get("Attributes", {}),
            "messageAttributes": message.get("MessageAttributes", {}),
            "md5OfBody": message["MD5OfBody"],
            "eventSource": "aws:sqs",
            "eventSourceARN": queue_arn,
            "awsRegion": self.region,
        }

    def scheduled_event(self) -> dict[str, Any]:
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": self.account,
            "time": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "region": self.region,
            "resources": [f"arn:aws:events:{self.region}:{self.account}:rule/watchdog"],
            "detail": {},
        }

    def _tick(self, environment: ExecutionEnvironment) -> None:
        while not self._stopping.wait(self.watchdog_interval_s):
            try:
                environment.ensure_running()
                environment.invoke(self.scheduled_event())
            except Exception as exc:
                self._log.error(
                    "watchdog run failed", extra={"function": self.watchdog_function, "error": str(exc)}
                )


# -- inside an execution environment ------------------------------------------------------------


def load_handler(name: str) -> Callable[[dict[str, Any], Any], Any]:
    return importlib.import_module(f"lambdas.{name}.handler").lambda_handler  # type: ignore[no-any-return]


class CloudWatchSink(logging.Handler):
    """Ships the lines the handler logs (formatted by the pipeline's JSON formatter) to the
    function's log group, in batches, in a stream of this environment's own."""

    def __init__(self, function_name: str, interval_s: float = 0.5) -> None:
        super().__init__()
        self._group = f"/aws/lambda/{function_name}"
        self._stream = datetime.now(UTC).strftime("%Y/%m/%d/[$LATEST]") + uuid.uuid4().hex
        self._logs: Any = None
        self._pending: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._interval_s = interval_s
        self._thread = threading.Thread(target=self._loop, name="cloudwatch-sink", daemon=True)

    def start(self) -> None:
        # The group is the template's; the role may only add streams and events to it.
        self._logs = client("logs")
        self._logs.create_log_stream(logGroupName=self._group, logStreamName=self._stream)
        pipeline_logger = get_logger()
        self.setFormatter(pipeline_logger.registered_formatter)
        logging.getLogger(pipeline_logger.name).addHandler(self)
        self._thread.start()

    def emit(self, record: logging.LogRecord) -> None:
        event = {"timestamp": int(record.created * 1000), "message": self.format(record)}
        with self._lock:
            self._pending.append(event)

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        if not pending or self._logs is None:
            return
        try:
            self._logs.put_log_events(logGroupName=self._group, logStreamName=self._stream, logEvents=pending)
        except Exception:
            logger.exception("could not ship %d log lines to %s", len(pending), self._group)

    def _loop(self) -> None:
        while not self._stopping.wait(self._interval_s):
            self.flush()


def serve_environment(handler: str, function_arn: str, requests: IO[bytes], replies: IO[bytes]) -> None:
    """Init (the handler imported, clients warmed, one line on `replies`), then one invocation per
    request line: an event in, `{"result": ...}` or `{"error": ...}` out."""
    function_name = function_arn.rsplit(":", 1)[-1]
    lambda_handler = load_handler(handler)
    for service in _WARM_SERVICES:
        client(service)
    sink = CloudWatchSink(function_name)
    sink.start()
    replies.write(b'{"ready": true}\n')
    replies.flush()
    for line in requests:
        context = LambdaContext(function_name, function_arn, str(uuid.uuid4()))
        try:
            reply = {"result": lambda_handler(json.loads(line), context)}
        except Exception as exc:
            get_logger().exception("handler raised", extra={"function": function_name})
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        sink.flush()  # the invocation's lines are in the log before its result is
        replies.write(json.dumps(reply, default=str).encode() + b"\n")
        replies.flush()


def main() -> None:
    handler, function_arn = sys.argv[1:3]
    # Replies get this process's stdout; whatever the handler prints or logs goes to stderr (the
    # stack's log), never into a reply.
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    serve_environment(handler, function_arn, sys.stdin.buffer, replies)


if __name__ == "__main__":
    main()
