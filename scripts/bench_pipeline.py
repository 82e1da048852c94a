"""Pipeline overhead on the local stack: upload of a small file -> summary.csv in the output bucket.

Brings up its own local stack (moto + sshd host + Lambda runtime), submits a 5-row reviews file
N times (each a new object, so a new job; the instance stops between runs), and prints the median
time from the upload to summary.csv, to the ledger's `succeeded`, and to the instance stopped.

    .venv/bin/python scripts/bench_pipeline.py [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sumpipe import keys  # noqa: E402
from sumpipe.aws import client  # noqa: E402
from sumpipe.local import stack  # noqa: E402
from sumpipe.ops.commands import jobs as operator  # noqa: E402

TARGET_S = 3.0


def wait(check, timeout_s: float = 60.0, interval_s: float = 0.01) -> float:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark step timed out")
        time.sleep(interval_s)
    return time.time()


def exists(bucket: str, key: str) -> bool:
    try:
        client("s3").head_object(Bucket=bucket, Key=key)
    except Exception:
        return False
    return True


def instance_state(target: operator.Stack) -> str:
    instance_id = target.outputs["WorkerInstanceIds"].split(",")[0]
    described = client("ec2").describe_instances(InstanceIds=[instance_id])
    return str(described["Reservations"][0]["Instances"][0]["State"]["Name"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()

    import pandas as pd

    with tempfile.TemporaryDirectory(prefix="sumpipe-bench-") as tmp:
        small = Path(tmp) / "small.csv"
        pd.read_csv(REPO / "tests" / "data" / "reviews_sample.csv").head(5).to_csv(small, index=False)
        config = stack.StackConfig(state_dir=Path(tmp) / "stack", prefix="bench", subnet="10.249.0.0/16")
        started = time.time()
        info = stack.up(config)
        print(f"local stack up in {time.time() - started:.1f}s ({info.timings})")
        os.environ.update(info.env)
        try:
            target = operator.Stack(info.outputs)
            ledger = target.ledger()
            rows = []
            for n in range(args.runs):
                wait(lambda: instance_state(target) == "stopped")
                submitted = operator.submit_file(target, small, key=f"bench/{n}-{time.time_ns()}.csv")
                summary_key = keys.output_key(submitted.job_id, keys.SUMMARY)
                at_summary = wait(lambda key=summary_key: exists(target.output_bucket, key))
                job_id = submitted.job_id
                at_done = wait(lambda job_id=job_id: (j := ledger.get_job(job_id)) is not None and j.terminal)
                at_stopped = wait(lambda: instance_state(target) == "stopped")
                row = (
                    at_summary - submitted.uploaded_at,
                    at_done - submitted.uploaded_at,
                    at_stopped - submitted.uploaded_at,
                )
                rows.append(row)
                print(
                    f"run {n + 1}: summary.csv {row[0]:.2f}s  succeeded {row[1]:.2f}s  stopped {row[2]:.2f}s"
                )
            medians = [statistics.median(column) for column in zip(*rows, strict=True)]
            print(
                f"median over {args.runs} runs: upload -> summary.csv {medians[0]:.2f}s, -> succeeded "
                f"{medians[1]:.2f}s, -> instance stopped {medians[2]:.2f}s (target < {TARGET_S:.0f}s)"
            )
            return 0 if medians[0] < TARGET_S else 1
        finally:
            stack.down(config.state_dir)


if __name__ == "__main__":
    sys.exit(main())
