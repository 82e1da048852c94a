"""`sumpipe submit | jobs | logs | demo`: the operator's view of the batch pipeline.

Names (buckets, table, functions) come from the CloudFormation stack's outputs (`--stack`), so the
commands work the same against AWS and against the local stack. When AWS_ENDPOINT_URL is unset and
the local stack is up, the variables of `.sumpipe/local/env` (written by `sumpipe local up`) are
used: that is how the commands find the local stack. Otherwise boto3's usual configuration applies.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sumpipe import keys, options
from sumpipe.aws import client
from sumpipe.flow import chain
from sumpipe.ledger import DynamoLedger, Job, Ledger
from sumpipe.local import motoserver, stack
from sumpipe.ops.commands import local

REPO_ROOT = Path(__file__).resolve().parents[3]
DEMO_SAMPLE = REPO_ROOT / "tests" / "data" / "reviews_sample.csv"
FUNCTIONS = chain.FUNCTION_OUTPUTS


def register(subparsers: argparse._SubParsersAction) -> None:
    submit = subparsers.add_parser(
        "submit", help="upload a table to the input bucket (and wait for its summary)"
    )
    submit.add_argument("file", type=Path, help="a .csv, .jsonl or .parquet table with a Text column")
    submit.add_argument("--key", help="object key in the input bucket (default: the file's name)")
    submit.add_argument("--wait", action="store_true", help="wait for the job to finish")
    submit.add_argument("-o", "--output", type=Path, help="where to save summary.csv (implies --wait)")
    submit.add_argument(
        "--timeout", type=float, default=1800.0, help="seconds to wait (default: %(default)s)"
    )
    submit.add_argument(
        "--record-timeout",
        type=float,
        default=chain.Policy.record_timeout_s,
        metavar="S",
        help="give up when no job is recorded this long after the upload, or a function keeps failing "
        "on it with no progress this long (default: %(default)s)",
    )
    _job_option_arguments(submit)
    _stack_argument(submit)
    submit.set_defaults(func=run_submit)

    jobs = subparsers.add_parser("jobs", help="the job ledger")
    jobs.add_argument("--json", action="store_true", help="one JSON object per job")
    _stack_argument(jobs)
    jobs.set_defaults(func=run_jobs)

    logs = subparsers.add_parser(
        "logs", help="a job's log lines from every step, in time order (or a function's recent lines)"
    )
    logs.add_argument("job_id", metavar="JOB", nargs="?")
    logs.add_argument(
        "--function", choices=chain.FUNCTIONS, help="instead of a job's lines: this function's recent lines"
    )
    logs.add_argument(
        "--minutes", type=float, default=60.0, help="with --function: how far back (default: %(default)s)"
    )
    logs.add_argument("--json", action="store_true", help="the raw JSON lines")
    _stack_argument(logs)
    logs.set_defaults(func=run_logs)

    demo = subparsers.add_parser(
        "demo", help="local stack up, submit the Amazon reviews sample, timeline, down"
    )
    demo.add_argument(
        "--file", type=Path, default=DEMO_SAMPLE, help="table to submit (default: the bundled sample)"
    )
    demo.add_argument("--keep", action="store_true", help="leave the local stack running afterwards")
    local.add_hosts_argument(demo)
    demo.set_defaults(func=run_demo)


def _job_option_arguments(parser: argparse.ArgumentParser) -> None:
    """The job's options (sumpipe.options), stored as the upload's metadata; checked by the trigger."""
    group = parser.add_argument_group("job options (the summarizer's defaults when left out)")
    group.add_argument("--text-column", metavar="NAME", help="column to summarize (default: Text)")
    group.add_argument("--id-column", metavar="NAME", help="column copied to the output id (default: Id)")
    budget = group.add_mutually_exclusive_group()
    budget.add_argument("--sentences", type=int, metavar="K", help="sentences per summary")
    budget.add_argument("--ratio", type=float, metavar="R", help="fraction of the sentences to keep")
    group.add_argument("--method", choices=options.METHODS, help="default: the stack's")
    group.add_argument("--group-by", metavar="NAME", help="one summary per distinct value of this column")
    group.add_argument(
        "--stars", metavar="NAME", help="with --group-by: each row's 1-5 stars (default: Score if present)"
    )
    group.add_argument(
        "--themes", action="store_true", help="with --group-by: a row per theme instead of one per group"
    )
    group.add_argument(
        "--format", choices=keys.SUMMARY_FORMATS, default="csv", help="the summary's format (default: csv)"
    )


def job_options(args: argparse.Namespace) -> options.JobOptions:
    """The job options given on the command line; OptionError names a bad one."""
    return options.JobOptions(
        text_column=args.text_column,
        id_column=args.id_column,
        sentences=args.sentences,
        ratio=args.ratio,
        method=args.method,
        group_by=args.group_by,
        stars=args.stars,
        themes=args.themes,
        format=args.format,
    )


def _stack_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stack", default=None, help="CloudFormation stack name (default: sumpipe)")


# -- what reaches the terminal -------------------------------------------------------------------

# Characters a terminal acts on instead of showing: C0 and C1 controls (ANSI escape sequences
# start with ESC), DEL, and the bidirectional overrides that reorder what follows them. Input
# keys, error messages and log lines carry user text, so they are printed with these escaped.
_ACTIVE = {
    code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    for code in [*range(0x20), *range(0x7F, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
}


def shown(text: object) -> str:
    """`text` with every control character escaped (``\\x1b[31m`` prints as text, not red)."""
    return str(text).translate(_ACTIVE)


# -- resolving the stack ---------------------------------------------------------------------------


def use_local_stack_if_up(state_dir: Path = stack.DEFAULT_DIR, aws_named: bool = False) -> bool:
    """Points boto3 at the local stack (its env file) when it is up, no endpoint is configured and
    the command line named no AWS region or profile (`aws_named`: those mean AWS)."""
    if aws_named or os.environ.get("AWS_ENDPOINT_URL") or not stack.is_up(state_dir):
        return False
    # The stack's administrator, not whatever AWS identity the shell has: the emulator knows only its own.
    for name in motoserver.OTHER_IDENTITY_VARIABLES:
        os.environ.pop(name, None)
    os.environ.update(stack.read_env_file(state_dir / "env"))
    return True


@dataclass(frozen=True)
class Stack:
    outputs: dict[str, str]

    @property
    def input_bucket(self) -> str:
        return self.outputs["InputBucketName"]

    @property
    def output_bucket(self) -> str:
        return self.outputs["OutputBucketName"]

    def ledger(self) -> Ledger:
        return DynamoLedger(client("dynamodb"), self.outputs["JobTableName"])


def resolve_stack(name: str | None, aws_named: bool = False) -> Stack:
    from sumpipe.ops.deploy import stack_outputs

    use_local_stack_if_up(aws_named=aws_named)
    stack_name = name or os.environ.get("SUMPIPE_STACK_NAME") or "sumpipe"
    return Stack(stack_outputs(client("cloudformation"), stack_name))


def _target(args: argparse.Namespace) -> Stack:
    return resolve_stack(args.stack, aws_named=bool(args.region or args.profile))


# -- submit ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Submitted:
    job_id: str
    key: str
    version: str
    uploaded_at: float

    @property
    def upload(self) -> chain.Upload:
        return chain.Upload(self.key, self.job_id, self.uploaded_at)


def submit_file(
    target: Stack, path: Path, key: str | None = None, job_options: options.JobOptions | None = None
) -> Submitted:
    """Uploads the file, with `job_options` as its metadata; its job id follows from the object
    version (see sumpipe.keys.job_id)."""
    key = key or path.name
    metadata = (job_options or options.JobOptions()).as_metadata()
    uploaded_at = time.time()
    with path.open("rb") as body:
        resp = client("s3").put_object(Bucket=target.input_bucket, Key=key, Body=body, Metadata=metadata)
    version = resp.get("VersionId") or resp["ETag"].strip('"')
    return Submitted(keys.job_id(target.input_bucket, key, version), key, version, uploaded_at)


def wait_for_job(
    target: Stack,
    job_id: str,
    timeout_s: float,
    on_state: Any = None,
    *,
    upload: chain.Upload | None = None,
    policy: chain.Policy | None = None,
    on_failure: Any = None,
) -> Job:
    """Polls the ledger until the job is succeeded/failed; TimeoutError after `timeout_s`. With the
    `upload`, also watches the chain for it (sumpipe.flow.chain): chain.ChainBroken, naming the
    failing function and its last error, as soon as the policy says the job won't come;
    `on_failure(failures)` hears of each new failure meanwhile."""
    ledger = target.ledger()
    deadline = time.monotonic() + timeout_s
    last_state = None
    interval = 0.05
    next_check = time.monotonic() + 1.0
    seen_failures = 0
    while True:
        job = ledger.get_job(job_id)
        if job is not None and job.state != last_state:
            last_state = job.state
            if on_state is not None:
                on_state(job)
        if job is not None and job.terminal:
            return job
        if upload is not None and time.monotonic() >= next_check:
            broken, failures = chain.check(
                client("logs"),
                chain.stack_function_names(target.outputs),
                upload,
                job,
                time.time(),
                sqs=client("sqs"),
                dead_letter_queues=chain.stack_dead_letter_queues(target.outputs),
                policy=policy or chain.Policy(),
            )
            count = sum(f.count for f in failures)
            if count > seen_failures and on_failure is not None:
                on_failure(failures)
            seen_failures = max(seen_failures, count)
            if broken is not None:
                raise chain.ChainBroken(broken)
            next_check = time.monotonic() + CHAIN_CHECK_INTERVAL_S
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {last_state or 'not recorded'} after {timeout_s:.0f}s")
        time.sleep(interval)
        interval = min(interval * 1.5, 1.0)


# Each look at the chain reads three log groups (and peeks at three queues): not at every poll.
CHAIN_CHECK_INTERVAL_S = 2.0


def _print_failure(failures: list[chain.Failures]) -> None:
    latest = max(failures, key=lambda f: f.at[-1])
    times = "once" if latest.count == 1 else f"{latest.count} times"
    print(f"  {_clock(latest.at[-1])}  {latest.function} failed ({times} so far): {shown(latest.error)}",
          file=sys.stderr)  # fmt: skip


def output_object(target: Stack, job_id: str, name: str) -> bytes:
    return (
        client("s3").get_object(Bucket=target.output_bucket, Key=keys.output_key(job_id, name))["Body"].read()
    )


def run_submit(args: argparse.Namespace) -> int:
    try:
        chosen = job_options(args)
    except options.OptionError as error:
        print(f"sumpipe submit: error: {error}", file=sys.stderr)
        return 2
    target = _target(args)
    submitted = submit_file(target, args.file, args.key, chosen)
    print(f"uploaded s3://{target.input_bucket}/{shown(submitted.key)} -> job {submitted.job_id}")
    if not (args.wait or args.output):
        print(f"follow it with: sumpipe jobs   /   sumpipe logs {submitted.job_id}")
        return 0
    try:
        job = wait_for_job(
            target,
            submitted.job_id,
            args.timeout,
            on_state=lambda j: print(f"  {_clock(time.time())}  {j.state}", file=sys.stderr),
            upload=submitted.upload,
            policy=chain.Policy(record_timeout_s=args.record_timeout, stall_s=args.record_timeout),
            on_failure=_print_failure,
        )
    except chain.ChainBroken as broken:
        print(f"sumpipe submit: {shown(broken)}", file=sys.stderr)
        return 1
    return report_outcome(target, job, args.output or Path(f"{args.file.stem}.{chosen.summary_name}"))


def report_outcome(target: Stack, job: Job, output: Path) -> int:
    if job.state == "succeeded":
        output.write_bytes(output_object(target, job.job_id, options.from_strings(job.options).summary_name))
        manifest = json.loads(output_object(target, job.job_id, keys.MANIFEST))
        print(
            f"job {job.job_id} succeeded: {manifest.get('rows')} rows, "
            f"{manifest.get('sentences_in')} -> {manifest.get('sentences_out')} sentences; "
            f"summary saved to {output}"
        )
        return 0
    print(f"job {job.job_id} failed: {shown(job.error)}", file=sys.stderr)
    try:
        report = json.loads(output_object(target, job.job_id, keys.ERROR))
        print(json.dumps(report, indent=2), file=sys.stderr)
    except Exception as exc:
        print(f"(no error report: {exc})", file=sys.stderr)
    return 1


# -- jobs ------------------------------------------------------------------------------------------


def run_jobs(args: argparse.Namespace) -> int:
    jobs = _target(args).ledger().list_jobs()
    if args.json:
        for job in jobs:
            print(json.dumps(job.__dict__))
        return 0
    print(f"{'JOB':24} {'STATE':10} {'CREATED':19} {'TOOK':>7} {'ROWS':>6} {'INSTANCE':20} INPUT / ERROR")
    for job in jobs:
        took = f"{job.finished_at - job.created_at:.1f}s" if job.finished_at else ""
        detail = shown(job.input_key) + (f"  [{shown(job.error)}]" if job.error else "")
        print(
            f"{job.job_id:24} {job.state:10} {_clock(job.created_at, date=True):19} {took:>7} "
            f"{'' if job.rows is None else job.rows:>6} {job.instance_id or '':20} {detail}"
        )
    return 0


# -- logs ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LogLine:
    at: float
    source: str
    record: dict[str, Any]


def job_log_lines(target: Stack, job_id: str) -> list[LogLine]:
    """The job's lines from the three functions' CloudWatch Logs and the runner's log in S3."""
    keys.require_job_id(job_id)
    logs = client("logs")
    lines: list[LogLine] = []
    for source, output_name in FUNCTIONS.items():
        group = chain.log_group(target.outputs[output_name])
        for event in chain.log_events(logs, group, filterPattern=f'"{job_id}"'):
            record = _json_or_none(event["message"])
            if record is not None and record.get("job_id") == job_id:
                lines.append(LogLine(event["timestamp"] / 1000, source, record))
    try:
        runner_log = output_object(target, job_id, keys.RUNNER_LOG).decode(errors="replace")
    except Exception:
        runner_log = ""
    for text in runner_log.splitlines():
        record = _json_or_none(text)
        if record is not None:
            lines.append(LogLine(_powertools_time(record.get("timestamp", "")), "runner", record))
    return sorted(lines, key=lambda line: line.at)


def _json_or_none(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _powertools_time(text: str) -> float:
    try:
        return datetime.strptime(text, "%Y-%m-%d %H:%M:%S,%f%z").timestamp()
    except ValueError:
        return 0.0


_NOT_SHOWN = {
    "level",
    "location",
    "message",
    "timestamp",
    "service",
    "job_id",
    "function_name",
    "request_id",
    "cold_start",
    "function_memory_size",
    "function_arn",
    "function_request_id",
    "xray_trace_id",
    "step",
}


def format_line(line: LogLine) -> str:
    extra = " ".join(f"{k}={v}" for k, v in line.record.items() if k not in _NOT_SHOWN and v is not None)
    level, message = line.record.get("level", ""), line.record.get("message", "")
    text = f"{_clock(line.at)}  {line.source:8} {level:7} {message}" + (f"  {extra}" if extra else "")
    return shown(text)


def function_log_lines(target: Stack, function: str, since: float) -> list[LogLine]:
    """A function's lines since `since` (epoch seconds), every job's and none."""
    logs = client("logs")
    group = chain.log_group(target.outputs[FUNCTIONS[function]])
    lines = []
    for event in chain.log_events(logs, group, startTime=int(since * 1000)):
        record = _json_or_none(event["message"]) or {"message": event["message"]}
        lines.append(LogLine(event["timestamp"] / 1000, function, record))
    return sorted(lines, key=lambda line: line.at)


def run_logs(args: argparse.Namespace) -> int:
    if (args.job_id is None) == (args.function is None):
        print("sumpipe logs: error: name a JOB, or a function with --function", file=sys.stderr)
        return 2
    if args.function is not None:
        lines = function_log_lines(_target(args), args.function, time.time() - args.minutes * 60)
        if not lines:
            print(f"no log lines from {args.function} in the last {args.minutes:g} minutes", file=sys.stderr)
            return 1
        for line in lines:
            print(json.dumps({"source": line.source, **line.record}) if args.json else format_line(line))
        return 0
    lines = job_log_lines(_target(args), args.job_id)
    if not lines:
        print(f"no log lines for {args.job_id} (yet)", file=sys.stderr)
        return 1
    for line in lines:
        print(json.dumps({"source": line.source, **line.record}) if args.json else format_line(line))
    return 0


def _clock(epoch: float, date: bool = False) -> str:
    moment = datetime.fromtimestamp(epoch, UTC).astimezone()
    return moment.strftime("%Y-%m-%d %H:%M:%S") if date else moment.strftime("%H:%M:%S.%f")[:-3]


# -- demo ------------------------------------------------------------------------------------------

# (source, message) of the lines that make the timeline, in the order they happen.
TIMELINE = (
    ("trigger", "job recorded", "S3 event received, job recorded"),
    ("trigger", "instance started", "worker instance started"),
    ("trigger", "instance reachable", "worker instance reachable over SSH"),
    ("worker", "job running", "job started on the instance (detached)"),
    ("runner", "summarized", "rows summarized on the instance"),
    ("stop_ec2", "job succeeded", "summary.csv written, job succeeded"),
    ("stop_ec2", "job failed", "error report written, job failed"),
    ("stop_ec2", "instance stopped", "worker instance stopped"),
)


def timeline(lines: list[LogLine], uploaded_at: float) -> list[tuple[float, str]]:
    found = []
    for source, message, label in TIMELINE:
        match = next(
            (ln for ln in lines if ln.source == source and ln.record.get("message") == message), None
        )
        if match is not None:
            found.append((match.at - uploaded_at, label))
    return sorted(found)


def wait_for_log(target: Stack, job_id: str, message: str, timeout_s: float) -> list[LogLine]:
    """The job's lines once one says `message` (CloudWatch delivery lags a little)."""
    deadline = time.monotonic() + timeout_s
    while True:
        lines = job_log_lines(target, job_id)
        if any(ln.record.get("message") == message for ln in lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.2)


def run_demo(args: argparse.Namespace) -> int:
    import pandas as pd

    if os.environ.get("AWS_ENDPOINT_URL"):
        raise SystemExit("sumpipe demo runs on the local stack; unset AWS_ENDPOINT_URL")
    started_stack = not stack.is_up(stack.DEFAULT_DIR)
    print("bringing up the local stack (moto + sshd worker host + Lambda runtime)...")
    try:
        info = stack.up(stack.StackConfig(hosts=args.hosts, iam=args.iam))
    except stack.StackError as error:
        raise SystemExit(f"sumpipe demo: {error}") from None
    print(f"  ready in {info.timings['total_s']:.1f}s")
    try:
        target = resolve_stack(None)
        print(f"submitting {args.file.name} ({args.file.stat().st_size / 1024:.0f} KiB)...")
        submitted = submit_file(target, args.file)
        try:
            job = wait_for_job(
                target, submitted.job_id, 600, upload=submitted.upload, on_failure=_print_failure
            )
        except chain.ChainBroken as broken:
            print(f"sumpipe demo: {shown(broken)}", file=sys.stderr)
            if started_stack and not args.keep:
                print("(to look closer, run it again with --keep: the stack then stays up)", file=sys.stderr)
            return 1
        lines = wait_for_log(target, job.job_id, "instance stopped", 10)
        print(f"\ntimeline of job {job.job_id} (seconds after the upload):")
        for offset, label in timeline(lines, submitted.uploaded_at):
            print(f"  {offset:6.2f}s  {label}")
        output = stack.DEFAULT_DIR.parent / "demo" / f"{args.file.stem}.summary.csv"
        output.parent.mkdir(parents=True, exist_ok=True)
        status = report_outcome(target, job, output)
        if status == 0:
            table = pd.read_csv(output, keep_default_na=False)
            print("\na few summaries:")
            for _, row in table[table["status"] == "ok"].head(3).iterrows():
                print(f"  [{row['id']}] {row['summary'][:300]}")
            print(f"\nmore: sumpipe logs {job.job_id}   (needs the stack: run `sumpipe demo --keep`)")
        return status
    finally:
        if started_stack and not args.keep:
            stack.down(stack.DEFAULT_DIR)
            print("local stack down")
