"""The logic behind the three Lambda handlers: plain functions over clients and settings.

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
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from aws_lambda_powertools.utilities.data_classes import S3Event

from sumpipe import ec2, keys, remote
from sumpipe.aws import client
from sumpipe.ledger import FAILED, QUEUED, STARTING, SUCCEEDED, InstanceStopping, Job, Ledger
from sumpipe.logs import get_logger, job_context
from sumpipe.settings import Settings

logger = get_logger()


@dataclass
class Clients:
    """AWS clients, built on first use (a handler only pays for the ones it touches)."""

    _built: dict[str, Any] = field(default_factory=dict)

    def __getattr__(self, service: str) -> Any:
        if service.startswith("_"):
            raise AttributeError(service)
        if service not in self._built:
            self._built[service] = client(service)
        return self._built[service]


def ledger_for(settings: Settings, clients: Clients) -> Ledger:
    return Ledger(clients.dynamodb, settings.job_table)


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
    settings: Settings,
    clients: Clients,
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
    clients.s3.put_object(
        Bucket=settings.output_bucket,
        Key=keys.output_key(job_id, keys.ERROR),
        Body=json.dumps(report, indent=2).encode(),
        ContentType="application/json",
    )


def fail_job(
    settings: Settings,
    clients: Clients,
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
    ledger = ledger_for(settings, clients)
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
    write_error_report(settings, clients, job_id, reason, step, exc)
    job = ledger.get_job(job_id)
    if job is not None:
        finish_job(settings, clients, job, FAILED, error=reason)


def finish_job(
    settings: Settings,
    clients: Clients,
    job: Job,
    state: str,
    *,
    rows: int | None = None,
    error: str | None = None,
) -> bool:
    """Moves an active job to its terminal state; False (and nothing else done) if it already was."""
    ledger = ledger_for(settings, clients)
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
        stop_if_idle(settings, clients, job.instance_id)
    return True


def stop_if_idle(settings: Settings, clients: Clients, instance_id: str, *, idle_sweep: bool = False) -> bool:
    """Stops the instance if no job is in flight on it. Exactly one caller wins the stop of an
    idle period (a conditional claim in the ledger), so racing finishes stop it once."""
    ledger = ledger_for(settings, clients)
    reason = "idle" if idle_sweep else "last job finished"
    if not ledger.claim_stop(instance_id, idle=idle_sweep):
        load = ledger.instance_load(instance_id)
        logger.info("instance left running", extra={"instance_id": instance_id, "inflight": load.inflight})
        return False
    try:
        previous = ec2.stop(clients.ec2, instance_id)
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


def accept_upload(settings: Settings, clients: Clients, upload: ObjectCreated) -> str | None:
    """Records the job for an uploaded object and starts it on a worker. Returns the job id, or
    None when the event is not for the input bucket."""
    if upload.bucket != settings.input_bucket:
        # Recursion guard: only the input bucket starts jobs, never our own output.
        logger.warning("event for another bucket ignored", extra={"bucket": upload.bucket, "key": upload.key})
        return None
    version = upload.version_id or current_version(clients, upload) or upload.etag
    job_id = keys.job_id(upload.bucket, upload.key, version)
    with job_context(logger, job_id=job_id):
        ledger = ledger_for(settings, clients)
        now = time.time()
        job = Job(
            job_id=job_id,
            input_bucket=upload.bucket,
            input_key=upload.key,
            version=version,
            etag=upload.etag,
            created_at=now,
            updated_at=now,
            deadline_at=now + settings.job_deadline_s,
        )
        if ledger.create_job(job):
            logger.info("job recorded", extra={"input_key": upload.key, "version": version})
        else:
            existing = ledger.get_job(job_id)
            left_starting = existing is not None and existing.state == STARTING and existing.instance_id
            if left_starting and ledger.resume_start(job_id, settings.start_lease_s):
                # Its trigger died between assigning and handing it on: this event carries on.
                assert existing is not None and existing.instance_id is not None
                logger.info("resuming a job left starting", extra={"instance_id": existing.instance_id})
                hand_off(settings, clients, job_id, existing.instance_id)
                return job_id
            if existing is None or existing.state != QUEUED:
                logger.info(
                    "duplicate event: job already recorded",
                    extra={"state": existing.state if existing else None},
                )
                return job_id
            # A redelivery after a failure before the job got an instance: carry on with it.
            logger.info("resuming a queued job")
        size = upload.size if upload.size is not None else input_size(clients, upload, version)
        if size > settings.max_input_bytes:
            reason = (
                f"input is {size:,} bytes, over the limit of {settings.max_input_bytes:,} bytes "
                "(SUMPIPE_MAX_INPUT_BYTES); split it into smaller files"
            )
            fail_job(settings, clients, job_id, reason, "trigger")
            return job_id
        start_job(settings, clients, job_id)
        return job_id


def input_size(clients: Clients, upload: ObjectCreated, version: str) -> int:
    """The uploaded object's size when the event didn't say (HeadObject of that very version)."""
    by_version = {"VersionId": version} if version not in (upload.etag, "") else {}
    return int(clients.s3.head_object(Bucket=upload.bucket, Key=upload.key, **by_version)["ContentLength"])


def current_version(clients: Clients, upload: ObjectCreated) -> str | None:
    """The version id of the uploaded object when the event didn't carry one (some emulators
    omit it): the current version, provided it is still the uploaded content (same etag)."""
    try:
        head = clients.s3.head_object(Bucket=upload.bucket, Key=upload.key, IfMatch=f'"{upload.etag}"')
    except Exception as exc:
        logger.warning("could not read the object's version", extra={"key": upload.key, "error": str(exc)})
        return None
    version = head.get("VersionId")
    return None if version in (None, "null") else str(version)


def start_job(settings: Settings, clients: Clients, job_id: str) -> None:
    ledger = ledger_for(settings, clients)
    workers = _workers(settings, clients)
    if not workers:
        tag = f"{settings.worker_tag_key}={settings.worker_tag_value}"
        reason = f"no worker instance tagged {tag} in stack {settings.stack_name}"
        fail_job(settings, clients, job_id, reason, "trigger")
        return
    deadline = time.monotonic() + settings.instance_ready_timeout_s
    while True:
        chosen = min(workers, key=lambda i: (ledger.instance_load(i.instance_id).inflight, i.instance_id))
        try:
            assigned = ledger.assign(job_id, chosen.instance_id)
        except InstanceStopping:
            # Its last job just ended and its stop is being made: wait the stop out (the instance
            # then restarts for this job), within the trigger's own wait budget.
            logger.info("instance being stopped; waiting", extra={"instance_id": chosen.instance_id})
            ec2.poll(
                partial(_stop_made, ledger, chosen.instance_id),
                ec2.remaining(deadline),
                f"the stop of {chosen.instance_id} to be made",
            )
            continue
        break
    if not assigned:
        logger.info("duplicate event: job already assigned")
        return
    logger.info("job assigned", extra={"instance_id": chosen.instance_id, "instance_state": chosen.state})
    hand_off(settings, clients, job_id, chosen.instance_id, ec2.remaining(deadline))


def _stop_made(ledger: Ledger, instance_id: str) -> bool:
    return ledger.instance_load(instance_id).stopping_at is None


def hand_off(
    settings: Settings, clients: Clients, job_id: str, instance_id: str, budget_s: float | None = None
) -> None:
    """The job's instance made ready, then the job handed to the worker function."""
    try:
        ready = ready_instance(settings, clients, instance_id, budget_s)
    except Exception as exc:
        fail_job(settings, clients, job_id, f"worker instance not ready: {exc}", "trigger", exc)
        return
    clients.sqs.send_message(QueueUrl=settings.job_queue_url, MessageBody=json.dumps({"job_id": job_id}))
    logger.info("job handed to worker", extra={"instance_id": ready.instance.instance_id})


@dataclass(frozen=True)
class ReadyInstance:
    instance: ec2.Instance
    address: str  # the one `settings.worker_address` names
    known_hosts: str | None  # the known-hosts text holding its key for `address` (SSH only)


def ready_instance(
    settings: Settings, clients: Clients, instance_id: str, budget_s: float | None = None
) -> ReadyInstance:
    """The instance running and accepting SSH (started if need be), and the address to use: the
    one `settings.worker_address` names, never the other (locally, only the private one exists).
    Every wait together within `budget_s` (default: settings.instance_ready_timeout_s)."""
    deadline = time.monotonic() + (settings.instance_ready_timeout_s if budget_s is None else budget_s)
    instance, started = ec2.ensure_running(clients.ec2, instance_id, ec2.remaining(deadline))
    if started:
        logger.info("instance started", extra={"instance_id": instance_id, "event": "instance_started"})
    address = instance.public_ip if settings.worker_address == "public" else instance.private_ip
    if not address:
        raise ec2.InstanceError(f"instance {instance_id} has no {settings.worker_address} address")
    known_hosts = None
    if settings.transport == "ssh":
        remote.wait_port_open(address, settings.ssh_port, ec2.remaining(deadline))
        known_hosts = wait_for_host_key(settings, clients, instance_id, address, ec2.remaining(deadline))
    logger.info("instance reachable", extra={"instance_id": instance_id, "address": address})
    return ReadyInstance(instance, address, known_hosts)


def wait_for_host_key(
    settings: Settings, clients: Clients, instance_id: str, address: str, timeout_s: float
) -> str:
    """The known-hosts text, once the instance has published its host key for `address` (it does
    at every boot, after sshd is up): the worker would otherwise refuse the host as unknown."""
    published: list[str] = []

    def has_key() -> bool:
        parameter = clients.ssm.get_parameter(Name=settings.known_hosts_parameter)["Parameter"]
        published[:] = [parameter["Value"]]
        return remote.has_published_key(parameter["Value"], address, settings.ssh_port, instance_id)

    ec2.poll(has_key, timeout_s, f"{instance_id} to publish its host key")
    return published[0]


# -- worker ------------------------------------------------------------------------------------


# The worker's wait for an instance the trigger already made ready: well within its 120 s timeout,
# beside the SSH start (connect_timeout_s x connect_attempts).
WORKER_READY_BUDGET_S = 60.0
# A jobs-queue message whose handling keeps raising (not a failure to reach the host, which
# dispatch_job already turns into a failed job) is retried by SQS this many times, then the job fails.
MAX_DISPATCH_ATTEMPTS = 3


def dispatch_message(settings: Settings, clients: Clients, body: dict[str, Any], attempt: int) -> None:
    """One jobs-queue message ({"job_id": ...}); `attempt` is SQS's receive count."""
    job_id = keys.require_job_id(str(body.get("job_id", "")))
    try:
        dispatch_job(settings, clients, job_id)
    except Exception as exc:
        if attempt < MAX_DISPATCH_ATTEMPTS:
            raise
        with job_context(logger, job_id=job_id):
            fail_job(settings, clients, job_id, f"gave up after {attempt} attempts: {exc}", "worker", exc)


def dispatch_job(settings: Settings, clients: Clients, job_id: str) -> None:
    """Starts the job on its instance. Any failure to do so (host down, host key changed, runner
    refused) fails the job with the reason, after the transport's bounded retries."""
    keys.require_job_id(job_id)
    with job_context(logger, job_id=job_id):
        ledger = ledger_for(settings, clients)
        job = ledger.get_job(job_id)
        if job is None or job.state != STARTING or not job.instance_id:
            state = job.state if job else None
            logger.info("job not waiting to start; message ignored", extra={"state": state})
            return
        try:
            ready = ready_instance(
                settings,
                clients,
                job.instance_id,
                min(settings.instance_ready_timeout_s, WORKER_READY_BUDGET_S),
            )
            transport = transport_for(settings, clients, ready)
            try:
                result = transport.run(f"start {job_id}", timeout=30.0)
            finally:
                if isinstance(transport, remote.SshTransport):
                    transport.close()
        except Exception as exc:
            reason = f"could not start the job on the worker: {exc}"
            if isinstance(exc, remote.RemoteCommandFailed) and exc.result.stderr:
                reason += f" ({exc.result.stderr.decode(errors='replace').strip()[-300:]})"
            fail_job(settings, clients, job_id, reason, "worker", exc)
            return
        if ledger.mark_running(job_id):
            logger.info(
                "job running",
                extra={
                    "instance_id": job.instance_id,
                    "runner": result.stdout.decode(errors="replace").strip()[:200],
                },
            )
        else:
            logger.info("job finished before it was marked running")


def transport_for(
    settings: Settings, clients: Clients, ready: ReadyInstance
) -> remote.SshTransport | remote.SsmTransport:
    if settings.transport == "ssm":
        return remote.SsmTransport(clients.ssm, ready.instance.instance_id, run_as=settings.ssh_user)
    assert ready.known_hosts is not None  # ready_instance waited for the host's published key
    private_key = clients.secretsmanager.get_secret_value(SecretId=settings.ssh_key_secret_id)["SecretString"]
    return remote.SshTransport(
        ready.address,
        user=settings.ssh_user,
        port=settings.ssh_port,
        private_key=private_key,
        known_hosts=ready.known_hosts,
        timeout=settings.connect_timeout_s,
        attempts=settings.connect_attempts,
    )


# -- stop_ec2 ----------------------------------------------------------------------------------


def accept_output(settings: Settings, clients: Clients, created: ObjectCreated) -> None:
    """summary.csv -> succeeded, error.json -> failed; then stop the instance if idle."""
    output = keys.parse_output_key(created.key)
    if created.bucket != settings.output_bucket or output is None or output.name not in keys.FINISHING_FILES:
        logger.warning(
            "event for an object that finishes no job ignored",
            extra={"bucket": created.bucket, "key": created.key},
        )
        return
    with job_context(logger, job_id=output.job_id):
        job = ledger_for(settings, clients).get_job(output.job_id)
        if job is None:
            logger.warning("output for an unknown job ignored", extra={"key": created.key})
            return
        if job.terminal:
            logger.info("job already finished; event ignored", extra={"state": job.state})
            return
        if output.name == keys.SUMMARY:
            manifest = _read_json(clients, settings.output_bucket, keys.output_key(job.job_id, keys.MANIFEST))
            finish_job(settings, clients, job, SUCCEEDED, rows=manifest.get("rows"))
        else:
            report = _read_json(clients, settings.output_bucket, created.key)
            reason = str(report.get("reason") or "failed (no reason given)")
            finish_job(settings, clients, job, FAILED, error=reason)


def _read_json(clients: Clients, bucket: str, key: str) -> dict[str, Any]:
    try:
        body = clients.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        value = json.loads(body)
    except Exception as exc:  # a missing or broken manifest must not block finishing the job
        logger.warning("could not read output file", extra={"key": key, "error": str(exc)})
        return {}
    return value if isinstance(value, dict) else {}


# A runner that claimed success past its job's deadline gets this long to upload summary.csv.
SUMMARY_GRACE_S = 900.0


def watchdog(settings: Settings, clients: Clients, now: float | None = None) -> None:
    """Fails jobs past their deadline (their instance then stops as usual), and stops worker
    instances that have been running with nothing in flight for longer than the idle grace."""
    now = time.time() if now is None else now
    ledger = ledger_for(settings, clients)
    for job in ledger.overdue_jobs(now):
        with job_context(logger, job_id=job.job_id):
            if job.outcome == keys.SUMMARY and now < job.deadline_at + SUMMARY_GRACE_S:
                logger.info("overdue, but its summary.csv is being written", extra={"runner": job.runner})
                continue
            reason = "deadline exceeded"
            if job.outcome == keys.SUMMARY:
                reason += f" (its runner {job.runner} claimed success, but summary.csv never came)"
            fail_job(settings, clients, job.job_id, reason, "watchdog", overrule=job.outcome == keys.SUMMARY)
    for instance in _workers(settings, clients):
        if instance.state != "running":
            continue
        # One instance that can't be checked or stopped must not keep the others running.
        try:
            load = ledger.instance_load(instance.instance_id)
            if load.inflight == 0 and now - load.updated_at > settings.idle_grace_s:
                stop_if_idle(settings, clients, instance.instance_id, idle_sweep=True)
        except Exception as exc:
            extra = {"instance_id": instance.instance_id, "error": str(exc)}
            logger.exception("idle check failed", extra=extra)


def _workers(settings: Settings, clients: Clients) -> list[ec2.Instance]:
    return ec2.find_workers(
        clients.ec2, settings.worker_tag_key, settings.worker_tag_value, settings.stack_name
    )
