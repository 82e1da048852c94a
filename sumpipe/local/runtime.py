"""The local stack's Lambda runtime: what AWS Lambda's SQS event source mappings and EventBridge
schedule do, for handlers running in this process.

One poller per event source mapping receives from its queue and calls
`lambdas.<name>.handler.lambda_handler(event, context)` with exactly the event Lambda would send
(Records with messageId, receiptHandle, body, attributes, eventSource "aws:sqs", eventSourceARN, ...).
A message is deleted only when its record succeeded: a raised handler keeps the whole batch,
`batchItemFailures` keeps the records it names. Kept messages come back after `retry_delay_s`
(the queue's visibility timeout, shortened for the emulator) and go to the DLQ by the queue's own
redrive policy. A ticker sends the watchdog's scheduled event to stop_ec2.

Each function runs with its own role's credentials, as in Lambda: every AWS client its pollers and
handler build (the queue's receives and deletes included) comes from a session holding them
(`sumpipe.aws.use_session`), and with IAM enforced the emulator refuses what the role's policy
does not allow.

Handler log lines also go to the emulator's CloudWatch Logs (/aws/lambda/<function>), as they do
in Lambda, so `sumpipe logs` reads them the same way in both places.
"""

from __future__ import annotations

import contextlib
import contextvars
import importlib
import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from sumpipe.aws import client, use_session
from sumpipe.logs import get_logger

if TYPE_CHECKING:
    from sumpipe.local.stack import RoleCredentials

logger = logging.getLogger(__name__)

_current_function: contextvars.ContextVar[str | None] = contextvars.ContextVar("function", default=None)


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


def load_handler(name: str) -> Callable[[dict[str, Any], Any], Any]:
    return importlib.import_module(f"lambdas.{name}.handler").lambda_handler  # type: ignore[no-any-return]


class CloudWatchSink(logging.Handler):
    """Ships the lines a handler logs (formatted by the pipeline's JSON formatter) to the log
    group of the function whose poller thread logged them, in batches."""

    def __init__(self, interval_s: float = 0.5) -> None:
        super().__init__()
        self._logs = client("logs")
        self._pending: dict[str, list[dict[str, Any]]] = {}
        self._streams: dict[str, str] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._interval_s = interval_s
        self._thread = threading.Thread(target=self._loop, name="cloudwatch-sink", daemon=True)

    def start(self) -> None:
        pipeline_logger = get_logger()
        self.setFormatter(pipeline_logger.registered_formatter)
        logging.getLogger(pipeline_logger.name).addHandler(self)
        self._thread.start()

    def close(self) -> None:
        logging.getLogger(get_logger().name).removeHandler(self)
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()
        self.flush()
        super().close()

    def emit(self, record: logging.LogRecord) -> None:
        function = _current_function.get()
        if function is None:
            return
        event = {"timestamp": int(record.created * 1000), "message": self.format(record)}
        with self._lock:
            self._pending.setdefault(function, []).append(event)

    def flush(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        for function, events in pending.items():
            group = f"/aws/lambda/{function}"
            stream = self._streams.get(function)
            try:
                if stream is None:
                    stream = datetime.now(UTC).strftime("%Y/%m/%d/[$LATEST]") + uuid.uuid4().hex
                    self._ensure_group(group)
                    self._logs.create_log_stream(logGroupName=group, logStreamName=stream)
                    self._streams[function] = stream
                self._logs.put_log_events(logGroupName=group, logStreamName=stream, logEvents=events)
            except Exception:
                logger.exception("could not ship %d log lines to %s", len(events), group)

    def _ensure_group(self, group: str) -> None:
        with contextlib.suppress(self._logs.exceptions.ResourceAlreadyExistsException):
            self._logs.create_log_group(logGroupName=group)

    def _loop(self) -> None:
        while not self._stopping.wait(self._interval_s):
            self.flush()


class Runtime:
    """Pollers for the event sources and the watchdog ticker, in daemon threads."""

    def __init__(
        self,
        sources: list[EventSource],
        *,
        watchdog_function: str,
        watchdog_interval_s: float,
        watchdog_credentials: RoleCredentials | None = None,
        account: str,
        region: str,
        retry_delay_s: int = 1,
    ) -> None:
        self.sources = sources
        self.watchdog_function = watchdog_function
        self.watchdog_interval_s = watchdog_interval_s
        self.watchdog_credentials = watchdog_credentials
        self.account = account
        self.region = region
        self.retry_delay_s = retry_delay_s
        self._stopping = threading.Event()
        self._warm = threading.Semaphore(0)  # released by each poller once warmed up
        self._threads: list[threading.Thread] = []
        self._sink = CloudWatchSink()

    def start(self, warm_timeout_s: float = 60.0) -> None:
        """Starts the pollers and returns once each has warmed up (or failed to)."""
        self._sink.start()
        # The handlers are imported here, one after the other: imports racing in the pollers' threads
        # can deadlock on module locks (and each Lambda imports its handler once, before any event).
        for source in self.sources:
            load_handler(source.handler)
        pollers = sum(source.concurrency for source in self.sources)
        for source in self.sources:
            for n in range(source.concurrency):
                self._spawn(f"poll-{source.handler}-{n}", self._poll, source)
        deadline = time.monotonic() + warm_timeout_s
        for _ in range(pollers):
            self._warm.acquire(timeout=max(0.0, deadline - time.monotonic()))
        if self.watchdog_interval_s > 0:
            self._spawn("watchdog", self._tick)

    def stop(self) -> None:
        self._stopping.set()
        for thread in self._threads:
            thread.join()
        self._threads = []
        self._sink.close()

    def _spawn(self, name: str, target: Callable[..., None], *args: Any) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _context(self, function_name: str) -> LambdaContext:
        arn = f"arn:aws:lambda:{self.region}:{self.account}:function:{function_name}"
        return LambdaContext(function_name, arn, str(uuid.uuid4()))

    def invoke(self, handler: str, function_name: str, event: dict[str, Any]) -> Any:
        token = _current_function.set(function_name)
        try:
            return load_handler(handler)(event, self._context(function_name))
        finally:
            _current_function.reset(token)

    def _poll(self, source: EventSource) -> None:
        if source.credentials is not None:
            use_session(source.credentials.session())
        # Warm this thread's AWS session before the first event, as a provisioned Lambda environment
        # would be: the first job shouldn't pay for it.
        try:
            for service in ("s3", "ec2", "dynamodb", "secretsmanager", "ssm"):
                client(service)
        finally:
            self._warm.release()
        sqs = client("sqs")
        queue_arn = sqs.get_queue_attributes(QueueUrl=source.queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        while not self._stopping.is_set():
            try:
                messages = sqs.receive_message(
                    QueueUrl=source.queue_url,
                    MaxNumberOfMessages=source.batch_size,
                    WaitTimeSeconds=1,
                    MessageSystemAttributeNames=["All"],
                    MessageAttributeNames=["All"],
                ).get("Messages", [])
                if messages:
                    self._deliver(sqs, source, queue_arn, messages)
            except Exception:
                logger.exception("poller for %s failed; retrying", source.function_name)
                self._stopping.wait(1.0)

    def _deliver(self, sqs: Any, source: EventSource, queue_arn: str, messages: list[dict[str, Any]]) -> None:
        event = {"Records": [self._record(m, queue_arn) for m in messages]}
        try:
            response = self.invoke(source.handler, source.function_name, event) or {}
            failed = {f["itemIdentifier"] for f in response.get("batchItemFailures", [])}
        except Exception:
            logger.exception("%s raised; the batch stays in the queue", source.function_name)
            failed = {m["MessageId"] for m in messages}
        for message in messages:
            if message["MessageId"] in failed:
                sqs.change_message_visibility(
                    QueueUrl=source.queue_url,
                    ReceiptHandle=message["ReceiptHandle"],
                    VisibilityTimeout=self.retry_delay_s,
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

    def _tick(self) -> None:
        if self.watchdog_credentials is not None:
            use_session(self.watchdog_credentials.session())
        while not self._stopping.wait(self.watchdog_interval_s):
            try:
                self.invoke("stop_ec2", self.watchdog_function, self.scheduled_event())
            except Exception:
                logger.exception("watchdog run failed")
