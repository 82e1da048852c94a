"""The logic behind the three Lambda handlers: plain functions over the Services (settings, ledger,
AWS clients).

trigger  -> `accept_upload`: record the job, pick + start a worker instance, hand the job on.
worker   -> `dispatch_job`: start the job on the instance over SSH (the runner detaches).
stop_ec2 -> `accept_output` / `watchdog`: finish the job, stop the instance when nothing else
            runs on it; fail overdue jobs; stop instances left idle.

A job finishes in exactly one way, `finish_job`: a conditional ledger transaction (state change
+ in-flight count), then a stop of the instance if that made it idle. Failures anywhere first
write `jobs/<job_id>/error.json` (the report the user reads), then finish the job.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from functools import cached_property, partial
from typing import Any

from aws_lambda_powertools.utilities.data_classes import S3Event
from botocore.exceptions import ClientError

from sumpipe import keys
from sumpipe.aws import client
from sumpipe.flow import ec2, remote
from sumpipe.ledger import FAILED, QUEUED, STARTING, SUCCEEDED, DynamoLedger, InstanceStopping, Job, Ledger
from sumpipe.logs import get_logger, job_context
from sumpipe.options import JobOptions, OptionError, from_metadata
from sumpipe.settings import Settings

logger = get_logger()


class Services:
    """What the flow works with: the settings, the job ledger, the transport to the instances, and
    AWS clients (`services.s3`, ...), each built on first use (a handler only pays for the ones it
    touches). The ledger, the transport and any client are DynamoDB's, SSH's or SSM's, and boto3's
    unless given (the flow's unit tests give in-memory ones, or a client pointed elsewhere)."""

    def __init__(
        self,
        settings: Settings,
        *,
        ledger: Ledger | None = None,
        transport: Callable[[ReadyInstance], remote.Transport] | None = None,
        clients: Mapping[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self._built: dict[str, Any] = dict(clients or {})
        if ledger is not None:
            self.ledger = ledger
        self._transport = transport

    def __getattr__(self, service: str) -> Any:
        if service.startswith("_"):
            raise AttributeError(service)
        if service not in self._built:
            self._built[service] = client(service)
        return self._built[service]

    @cached_property
    def ledger(self) -> Ledger:
        return DynamoLedger(self.dynamodb, self.settings.job_table)

    def transport(self, ready: ReadyInstance) -> remote.Transport:
        """The way to the job runner on a ready instance (close it after use)."""
        if self._transport is not None:
            return self._transport(ready)
        if self.settings.transport == "ssm":
            return remote.SsmTransport(self.ssm, ready.instance.instance_id, run_as=self.settings.ssh_user)
        assert ready.known_hosts is not None  # ready_instance waited for the host's published key
        private_key = self.secretsmanager.get_secret_value(SecretId=self.settings.ssh_key_secret_id)[
            "SecretString"
        ]
        return remote.SshTransport(
            ready.address,
            user=self.settings.ssh_user,
            port=self.settings.ssh_port,
            private_key=private_key,
            known_hosts=ready.known_hosts,
            timeout=self.settings.connect_timeout_s,
            attempts=self.settings.connect_attempts,
        )


# -- events ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ObjectCreated:
    bucket: str
    key: str
    version_id: str | None
    etag: str
    size: int | None = None  # bytes, as the event reports them


def s3_records(event: dict[str, Any]) -> list[ObjectCreated]:
    """The ObjectCreated records of an S3 event notification (S3's test event has none)."""
    if "Records" not in event:  # s3:TestEvent, sent when a notification is configured
        return []
    return [
        ObjectCreated(
            bucket=record.s3.bucket.name,
            # Powertools hands the key over as sent: URL-encoded, spaces as '+'.
            key=keys.decode_event_key(record.s3.get_object.key),
            version_id=record.s3.get_object.version_id or None,
            etag=(record.s3.get_object.etag or "").strip('"'),
            size=record.s3.get_object.get("size"),  # the `size` property raises when it is absent
        )
        for record in S3Event(event).records
        if record.event_name.startswith("ObjectCreated")
    ]


# -- failure reports and finishing -------------------------------------------------------------


def write_error_report(
    services: Services,
    job_id: str,
    reason: str,
    step: str,
    exc: BaseException | None = None,
) -> None:
    report: dict[str, Any] = {
        "job_id": job_id,
        "state": FAILED,
        "reason": reason,
        "step": step,
        "at": time.time(),
    }
    if exc is not None:
        report["traceback"] = traceback.format_exception(exc)[-6:]
    services.s3.put_object(
        Bucket=services.settings.output_bucket,
        Key=keys.output_key(job_id, keys.ERROR),
        Body=json.dumps(report, indent=2).encode(),
        ContentType="application/json",
    )


def fail_job(
    services: Services,
    job_id: str,
    reason: str,
    step: str,
    exc: BaseException | None = None,
    *,
    overrule: bool = False,
) -> None:
    """Report the failure in the output bucket, then finish the job as failed (stopping its
    instance when idle). The report's own event reaches stop_ec2 later and is a no-op then.
    Not when the job's outcome is already decided (its runner is writing summary.csv), unless
    `overrule` (that runner died: its summary.csv never came)."""
    reason = " ".join(reason.split())  # one line (an AWS error can carry a whole XML body)
    ledger = services.ledger
    if not ledger.claim_outcome(job_id, keys.ERROR) and not overrule:
        # The runner is writing summary.csv, or someone already failed it: one finishing file only.
        job = ledger.get_job(job_id)
        logger.warning(
            "job not failed: its outcome is already decided",
            extra={
                "reason": reason,
                "step": step,
                "outcome": job and job.outcome,
                "state": job and job.state,
            },
        )
        return
    logger.error("job failed", extra={"reason": reason, "step": step})
    write_error_report(services, job_id, reason, step, exc)
    job = ledger.get_job(job_id)
    if job is not None:
        finish_job(services, job, FAILED, error=reason)


def finish_job(
    services: Services,
    job: Job,
    state: str,
    *,
    rows: int | None = None,
    error: str | None = None,
) -> bool:
    """Moves an active job to its terminal state; False (and nothing else done) if it already was."""
    ledger = services.ledger
    while not ledger.finish(job, state, rows=rows, error=error):
        # Either it finished already, or it changed since `job` was read (e.g. got its instance
        # meanwhile): then finish what it is now.
        current = ledger.get_job(job.job_id)
        if current is None or current.terminal:
            logger.info("job already finished; event ignored", extra={"state": current and current.state})
            return False
        job = current
    logger.info(
        f"job {state}", extra={"state": state, "rows": rows, "error": error, "instance_id": job.instance_id}
    )
    if job.instance_id:
        stop_if_idle(services, job.instance_id)
    return True


def stop_if_idle(services: Services, instance_id: str, *, idle_sweep: bool = False) -> bool:
    """Stops the instance if no job is in flight on it. Exactly one caller wins the stop of an
    idle period (a conditional claim in the ledger), so racing finishes stop it once."""
    ledger = services.ledger
    reason = "idle" if idle_sweep else "last job finished"
    if not ledger.claim_stop(instance_id, idle=idle_sweep):
        load = ledger.instance_load(instance_id)
        logger.info("instance left running", extra={"instance_id": instance_id, "inflight": load.inflight})
        return False
    try:
        previous = ec2.stop(services.ec2, instance_id)
    except Exception as exc:
        # The claim goes, so a later finish or the idle sweep tries again; the job's own outcome
        # stands (a stop is bookkeeping of the instance, not part of the job).
        ledger.release_stop(instance_id)
        logger.error(
            "instance stop failed",
            extra={"instance_id": instance_id, "error": str(exc), "event": "instance_stop_failed"},
        )
        return False
    ledger.stop_done(instance_id)  # EC2 has it: a new job may now be assigned (and restart it)
    # This line is the audit record of every stop the pipeline makes (`sumpipe logs` shows it).
    logger.info(
        "instance stopped",
        extra={
            "instance_id": instance_id,
            "previous_state": previous,
            "reason": reason,
            "event": "instance_stopped",
        },
    )
    return True


# -- trigger -----------------------------------------------------------------------------------


def accept_upload(services: Services, upload: ObjectCreated) -> str | None:
    """Records the job for an uploaded object and starts it on a worker. Returns the job id, or
    None when the event is not for the input bucket."""
    if upload.bucket != services.settings.input_bucket:
        # Recursion guard: only the input bucket starts jobs, never our own output.
        logger.warning("event for another bucket ignored", extra={"bucket": upload.bucket, "key": upload.key})
        return None
    version = upload.version_id or current_version(services, upload) or upload.etag
    job_id = keys.job_id(upload.bucket, upload.key, version)
    with job_context(logger, job_id=job_id):
        ledger = services.ledger
        head = head_input(services, upload, version)
        try:
            options = from_metadata(head.get("Metadata") or {}) if head is not None else JobOptions()
            bad_options = None
        except OptionError as error:
            options, bad_options = JobOptions(), str(error)
        now = time.time()
        job = Job(
            job_id=job_id,
            input_bucket=upload.bucket,
            input_key=upload.key,
            version=version,
            etag=upload.etag,
            created_at=now,
            updated_at=now,
            deadline_at=now + services.settings.job_deadline_s,
            options=options.as_strings(),
        )
        if ledger.create_job(job):
            recorded = {"input_key": upload.key, "version": version, "options": job.options}
            logger.info("job recorded", extra=recorded)
        else:
            existing = ledger.get_job(job_id)
            left_starting = existing is not None and existing.state == STARTING and existing.instance_id
            if left_starting and ledger.resume_start(job_id, services.settings.start_lease_s):
                # Its trigger died between assigning and handing it on: this event carries on.
                assert existing is not None and existing.instance_id is not None
                logger.info("resuming a job left starting", extra={"instance_id": existing.instance_id})
                hand_off(services, job_id, existing.instance_id)
                return job_id
            if existing is None or existing.state != QUEUED:
                logger.info(
                    "duplicate event: job already recorded",
                    extra={"state": existing.state if existing else None},
                )
                return job_id
            # A redelivery after a failure before the job got an instance: carry on with it.
            logger.info("resuming a queued job")
        if head is None:
            reason = f"input s3://{upload.bucket}/{upload.key} ({version}) is gone"
            fail_job(services, job_id, reason, "trigger")
            return job_id
        if bad_options is not None:
            fail_job(services, job_id, bad_options, "trigger")
            return job_id
        size = upload.size if upload.size is not None else int(head["ContentLength"])
        if size > services.settings.max_input_bytes:
            reason = (
                f"input is {size:,} bytes, over the limit of {services.settings.max_input_bytes:,} bytes "
                "(SUMPIPE_MAX_INPUT_BYTES); split it into smaller files"
            )
            fail_job(services, job_id, reason, "trigger")
            return job_id
        start_job(services, job_id)
        return job_id


def head_input(services: Services, upload: ObjectCreated, version: str) -> dict[str, Any] | None:
    """HeadObject of that very version: its size and its metadata (the job's options, which S3
    events don't carry). None when it is gone (deleted before its event was handled)."""
    if version not in (upload.etag, ""):
        by_version = {"VersionId": version}
    else:  # an unversioned bucket: the same content, or nothing
        by_version = {"IfMatch": f'"{upload.etag}"'} if upload.etag else {}
    try:
        return dict(services.s3.head_object(Bucket=upload.bucket, Key=upload.key, **by_version))
    except ClientError as error:
        code = error.response.get("Error", {}).get("Code")
        if code in ("404", "NoSuchKey", "NoSuchVersion", "412", "PreconditionFailed"):
            return None
        raise


def current_version(services: Services, upload: ObjectCreated) -> str | None:
    """The version id of the uploaded object when the event didn't carry one (some emulators
    omit it): the current version, provided it is still the uploaded content (same etag)."""
    try:
        head = services.s3.head_object(Bucket=upload.bucket, Key=upload.key, IfMatch=f'"{upload.etag}"')
    except Exception as exc:
        logger.warning("could not read the object's version", extra={"key": upload.key, "error": str(exc)})
        return None
    version = head.get("VersionId")
    return None if version in (None, "null") else str(version)


def start_job(services: Services, job_id: str) -> None:
    ledger = services.ledger
    workers = _workers(services)
    if not workers:
        tag = f"{services.settings.worker_tag_key}={services.settings.worker_tag_value}"
        reason = f"no worker instance tagged {tag} in stack {services.settings.stack_name}"
        fail_job(services, job_id, reason, "trigger")
        return
    deadline = time.monotonic() + services.settings.instance_ready_timeout_s
    while True:
        chosen = min(workers, key=lambda i: (ledger.instance_load(i.instance_id).inflight, i.instance_id))
        try:
            assigned = ledger.assign(job_id, chosen.instance_id)
            break
        except InstanceStopping:
            # Its last job just ended and its stop is being made: wait the stop out (the instance
            # then restarts for this job), within the trigger's own wait budget.
            logger.info("instance being stopped; waiting", extra={"instance_id": chosen.instance_id})
            ec2.poll(
                partial(_stop_made, ledger, chosen.instance_id),
                ec2.remaining(deadline),
                f"the stop of {chosen.instance_id} to be made",
            )
    if not assigned:
        logger.info("duplicate event: job already assigned")
        return
    logger.info("job assigned", extra={"instance_id": chosen.instance_id, "instance_state": chosen.state})
    hand_off(services, job_id, chosen.instance_id, ec2.remaining(deadline))


def _stop_made(ledger: Ledger, instance_id: str) -> bool:
    return ledger.instance_load(instance_id).stopping_at is None


def hand_off(services: Services, job_id: str, instance_id: str, budget_s: float | None = None) -> None:
    """The job's instance made ready, then the job handed to the worker function."""
    try:
        ready = ready_instance(services, instance_id, budget_s)
    except Exception as exc:
        fail_job(services, job_id, f"worker instance not ready: {exc}", "trigger", exc)
        return
    message = JobMessage(job_id, ready.instance.instance_id, ready.address)
    services.sqs.send_message(QueueUrl=services.settings.job_queue_url, MessageBody=message.body())
    logger.info("job handed to worker", extra={"instance_id": ready.instance.instance_id})


@dataclass(frozen=True)
class JobMessage:
    """The jobs queue's message: a job handed to the worker, on the instance the trigger made ready
    for it (the only place an instance is waited for), at the address to use."""

    job_id: str
    instance_id: str
    address: str

    def body(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def parse(cls, body: dict[str, Any]) -> JobMessage:
        """From a message body; ValueError when it is not one (the job id is checked first)."""
        job_id = keys.require_job_id(str(body.get("job_id", "")))
        instance_id, address = body.get("instance_id"), body.get("address")
        if not isinstance(instance_id, str) or not isinstance(address, str) or not instance_id or not address:
            raise ValueError(f"job message for {job_id} without its instance and address: {body}")
        return cls(job_id, instance_id, address)


@dataclass(frozen=True)
class ReadyInstance:
    instance: ec2.Instance
    address: str  # the one `services.settings.worker_address` names
    known_hosts: str | None  # the known-hosts text holding its key for `address` (SSH only)


def ready_instance(services: Services, instance_id: str, budget_s: float | None = None) -> ReadyInstance:
    """The instance running and accepting SSH (started if need be), and the address to use: the
    one `services.settings.worker_address` names, never the other (locally, only the private one exists).
    Every wait together within `budget_s` (default: services.settings.instance_ready_timeout_s)."""
    deadline = time.monotonic() + (
        services.settings.instance_ready_timeout_s if budget_s is None else budget_s
    )
    instance, started = ec2.ensure_running(services.ec2, instance_id, ec2.remaining(deadline))
    if started:
        logger.info("instance started", extra={"instance_id": instance_id, "event": "instance_started"})
    address = instance.public_ip if services.settings.worker_address == "public" else instance.private_ip
    if not address:
        raise ec2.InstanceError(f"instance {instance_id} has no {services.settings.worker_address} address")
    known_hosts = None
    if services.settings.transport == "ssh":
        remote.wait_port_open(address, services.settings.ssh_port, ec2.remaining(deadline))
        known_hosts = wait_for_host_key(services, instance_id, address, ec2.remaining(deadline))
    logger.info("instance reachable", extra={"instance_id": instance_id, "address": address})
    return ReadyInstance(instance, address, known_hosts)


def wait_for_host_key(services: Services, instance_id: str, address: str, timeout_s: float) -> str:
    """The known-hosts text, once the instance has published its host key for `address` (it does
    at every boot, after sshd is up): the worker would otherwise refuse the host as unknown."""
    published: list[str] = []

    def has_key() -> bool:
        text = published_known_hosts(services, instance_id, address)
        if text is not None:
            published.append(text)
        return text is not None

    ec2.poll(has_key, timeout_s, f"{instance_id} to publish its host key")
    return published[0]


def published_known_hosts(services: Services, instance_id: str, address: str) -> str | None:
    """The known-hosts text if it holds the key the instance published for `address`, else None."""
    known_hosts = services.ssm.get_parameter(Name=services.settings.known_hosts_parameter)["Parameter"][
        "Value"
    ]
    port = services.settings.ssh_port
    return known_hosts if remote.has_published_key(known_hosts, address, port, instance_id) else None


# -- worker ------------------------------------------------------------------------------------


# A jobs-queue message whose handling keeps raising (not a failure to reach the host, which
# dispatch_job already turns into a failed job) is retried by SQS this many times, then the job fails.
MAX_DISPATCH_ATTEMPTS = 3


def dispatch_message(services: Services, body: dict[str, Any], attempt: int) -> None:
    """One jobs-queue message (a JobMessage); `attempt` is SQS's receive count."""
    job_id = keys.require_job_id(str(body.get("job_id", "")))
    try:
        dispatch_job(services, JobMessage.parse(body))
    except Exception as exc:
        if attempt < MAX_DISPATCH_ATTEMPTS:
            raise
        with job_context(logger, job_id=job_id):
            fail_job(services, job_id, f"gave up after {attempt} attempts: {exc}", "worker", exc)


def dispatch_job(services: Services, message: JobMessage) -> None:
    """Starts the job on the instance the trigger made ready. Any failure to do so (host down, host
    key changed, runner refused) fails the job with the reason, after the transport's bounded
    retries."""
    with job_context(logger, job_id=message.job_id):
        ledger = services.ledger
        job = ledger.get_job(message.job_id)
        if job is None or job.state != STARTING or job.instance_id != message.instance_id:
            state = job.state if job else None
            logger.info("job not waiting to start there; message ignored", extra={"state": state})
            return
        try:
            transport = services.transport(still_ready(services, message))
            try:
                result = transport.run(f"start {message.job_id}", timeout=30.0)
            finally:
                transport.close()
        except Exception as exc:
            reason = f"could not start the job on the worker: {exc}"
            if isinstance(exc, remote.RemoteCommandFailed) and exc.result.stderr:
                reason += f" ({exc.result.stderr.decode(errors='replace').strip()[-300:]})"
            fail_job(services, message.job_id, reason, "worker", exc)
            return
        if ledger.mark_running(message.job_id):
            logger.info(
                "job running",
                extra={
                    "instance_id": job.instance_id,
                    "runner": result.stdout.decode(errors="replace").strip()[:200],
                },
            )
        else:
            logger.info("job finished before it was marked running")


def still_ready(services: Services, message: JobMessage) -> ReadyInstance:
    """The instance the trigger made ready, checked without waiting (a job in flight keeps it from
    being stopped): running, and with its host key published for the address (SSH)."""
    instance = ec2.describe(services.ec2, message.instance_id)
    if instance.state != "running":
        raise ec2.InstanceError(f"instance {message.instance_id} is {instance.state}, not running")
    known_hosts = None
    if services.settings.transport == "ssh":
        known_hosts = published_known_hosts(services, message.instance_id, message.address)
        if known_hosts is None:
            raise remote.UnknownHostKey(
                f"no host key published for {message.instance_id} at {message.address}"
            )
    return ReadyInstance(instance, message.address, known_hosts)


# -- stop_ec2 ----------------------------------------------------------------------------------


def accept_output(services: Services, created: ObjectCreated) -> None:
    """The summary -> succeeded, error.json -> failed; then stop the instance if idle."""
    output = keys.parse_output_key(created.key)
    if (
        created.bucket != services.settings.output_bucket
        or output is None
        or output.name not in keys.FINISHING_FILES
    ):
        logger.warning(
            "event for an object that finishes no job ignored",
            extra={"bucket": created.bucket, "key": created.key},
        )
        return
    with job_context(logger, job_id=output.job_id):
        job = services.ledger.get_job(output.job_id)
        if job is None:
            logger.warning("output for an unknown job ignored", extra={"key": created.key})
            return
        if job.terminal:
            logger.info("job already finished; event ignored", extra={"state": job.state})
            return
        if output.name in keys.SUMMARIES:
            manifest = _read_json(
                services, services.settings.output_bucket, keys.output_key(job.job_id, keys.MANIFEST)
            )
            finish_job(services, job, SUCCEEDED, rows=manifest.get("rows"))
        else:
            report = _read_json(services, services.settings.output_bucket, created.key)
            reason = str(report.get("reason") or "failed (no reason given)")
            finish_job(services, job, FAILED, error=reason)


def _read_json(services: Services, bucket: str, key: str) -> dict[str, Any]:
    try:
        body = services.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        value = json.loads(body)
    except Exception as exc:  # a missing or broken manifest must not block finishing the job
        logger.warning("could not read output file", extra={"key": key, "error": str(exc)})
        return {}
    return value if isinstance(value, dict) else {}


# A runner that claimed success past its job's deadline gets this long to upload summary.csv.
SUMMARY_GRACE_S = 900.0


def watchdog(services: Services, now: float | None = None) -> None:
    """Fails jobs past their deadline (their instance then stops as usual), and stops worker
    instances that have been running with nothing in flight for longer than the idle grace."""
    now = time.time() if now is None else now
    ledger = services.ledger
    for job in ledger.overdue_jobs(now):
        with job_context(logger, job_id=job.job_id):
            claimed_success = job.outcome in keys.SUMMARIES
            if claimed_success and now < job.deadline_at + SUMMARY_GRACE_S:
                logger.info("overdue, but its summary is being written", extra={"runner": job.runner})
                continue
            reason = "deadline exceeded"
            if claimed_success:
                reason += f" (its runner {job.runner} claimed success, but {job.outcome} never came)"
            fail_job(services, job.job_id, reason, "watchdog", overrule=claimed_success)
    for instance in _workers(services):
        if instance.state != "running":
            continue
        # One instance that can't be checked or stopped must not keep the others running.
        try:
            load = ledger.instance_load(instance.instance_id)
            if load.inflight == 0 and now - load.updated_at > services.settings.idle_grace_s:
                stop_if_idle(services, instance.instance_id, idle_sweep=True)
        except Exception as exc:
            extra = {"instance_id": instance.instance_id, "error": str(exc)}
            logger.exception("idle check failed", extra=extra)


def _workers(services: Services) -> list[ec2.Instance]:
    return ec2.find_workers(
        services.ec2,
        services.settings.worker_tag_key,
        services.settings.worker_tag_value,
        services.settings.stack_name,
    )
