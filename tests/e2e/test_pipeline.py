"""The whole chain through moto server and real sshd: upload -> summary.csv -> instance stopped."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pandas as pd
import pytest

from summarizer.split import split_sentences
from sumpipe import keys, options
from sumpipe.aws import client
from sumpipe.ops.commands import jobs as operator

from .conftest import DATA, ec2_state, run_job, stop_lines, wait_until

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
SAMPLE = DATA / "reviews_sample.csv"


def test_a_real_reviews_csv_becomes_summary_csv_and_the_instance_stops(local_stack, tmp_path):
    job = run_job(
        local_stack, SAMPLE, key="uploads/reviews sample+1.csv"
    )  # spaces/plus: URL-encoded in events

    assert job.state == "succeeded", job.error
    summary = pd.read_csv(
        io.BytesIO(operator.output_object(local_stack, job.job_id, keys.SUMMARY)), keep_default_na=False
    )
    source = pd.read_csv(SAMPLE)
    assert list(summary["id"]) == list(source["Id"])
    assert job.rows == len(source)
    assert (summary["status"] == "ok").sum() > 100
    manifest = json.loads(operator.output_object(local_stack, job.job_id, keys.MANIFEST))
    assert manifest["rows"] == len(source) and manifest["sentences_out"] < manifest["sentences_in"]
    assert manifest["input"]["key"] == "uploads/reviews sample+1.csv"
    assert {"sumpipe", "numpy", "scikit-learn"} <= set(manifest["versions"])
    wait_until(lambda: ec2_state(local_stack) == "stopped", what="the instance to stop")
    # Handler logs reach CloudWatch Logs in batches (as in Lambda): wait for stop_ec2's last line.
    lines = operator.wait_for_log(local_stack, job.job_id, "instance stopped", 10)
    assert {line.source for line in lines} == {"trigger", "worker", "runner", "stop_ec2"}


def test_the_same_event_delivered_three_times_is_one_job(local_stack):
    key = f"dup-{uuid.uuid4().hex}.csv"
    submitted = operator.submit_file(local_stack, SAMPLE, key)  # S3 delivers the event once...
    head = client("s3").head_object(Bucket=local_stack.input_bucket, Key=key)
    event = {
        "Records": [
            {
                "eventVersion": "2.1",
                "eventSource": "aws:s3",
                "eventName": "ObjectCreated:Put",
                "s3": {
                    "bucket": {"name": local_stack.input_bucket},
                    "object": {
                        "key": key,
                        "versionId": head["VersionId"],
                        "eTag": head["ETag"].strip('"'),
                        "size": head["ContentLength"],
                    },
                },
            }
        ]
    }
    sqs = client("sqs")
    for _ in range(2):  # ...and redelivers it twice (at-least-once delivery)
        sqs.send_message(QueueUrl=local_stack.outputs["InputEventsQueueUrl"], MessageBody=json.dumps(event))

    job = operator.wait_for_job(local_stack, submitted.job_id, 60)
    assert job.state == "succeeded"
    assert [j.job_id for j in local_stack.ledger().list_jobs() if j.input_key == key] == [submitted.job_id]
    lines = wait_until(
        lambda: (
            [
                ln
                for ln in operator.job_log_lines(local_stack, job.job_id)
                if ln.source == "trigger" and "duplicate" in ln.record["message"]
            ]
            or None
        ),
        what="the duplicate deliveries to be logged",
    )
    assert len(lines) >= 1
    recorded = [
        ln for ln in operator.job_log_lines(local_stack, job.job_id) if ln.record["message"] == "job recorded"
    ]
    assert len(recorded) == 1


def test_ten_uploads_at_once_give_ten_summaries_and_one_stop_after_the_last(local_stack, tmp_path):
    wait_until(lambda: ec2_state(local_stack) == "stopped", what="an idle instance")
    batch_started = time.time()
    rows = pd.read_csv(SAMPLE).head(20)
    paths = []
    for n in range(10):
        path = tmp_path / f"batch-{n}.csv"
        rows.iloc[n * 2 : n * 2 + 2].to_csv(path, index=False)
        paths.append(path)
    submitted: list = []
    threads = [
        threading.Thread(target=lambda p=p: submitted.append(operator.submit_file(local_stack, p)))
        for p in paths
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    done = [operator.wait_for_job(local_stack, s.job_id, 120) for s in submitted]
    assert [j.state for j in done] == ["succeeded"] * 10
    for job in done:
        assert job.rows == 2
    last_finish = max(j.finished_at for j in done)

    def stops_since(moment: float) -> list[float]:
        return [
            pd.Timestamp(line["timestamp"]).timestamp()
            for line in stop_lines(local_stack)
            if pd.Timestamp(line["timestamp"]).timestamp() >= moment
        ]

    wait_until(lambda: ec2_state(local_stack) == "stopped", what="the instance to stop")
    wait_until(lambda: stops_since(last_finish), what="the stop's log line")
    time.sleep(1.0)  # log lines reach CloudWatch in batches: let any other stop line arrive
    assert len(stops_since(batch_started)) == 1, "the instance stopped before the last job finished"


def test_shell_metacharacters_in_text_are_summarized_verbatim_and_never_executed(local_stack, tmp_path):
    marker = Path(f"/tmp/pwned-{uuid.uuid4().hex}")
    # Every sentence carries shell syntax, so whatever the summarizer keeps must come out verbatim.
    texts = [
        f"This treat is great $(touch {marker}) for small dogs. My dog loves it `touch {marker}` every day. "
        "The price went up; rm -rf / && echo hacked.",
        f"Quotes ' \" and pipes | cat /etc/passwd > {marker} do nothing. It tastes fine $(reboot) really. "
        "Five stars && shutdown -h now.",
    ]
    shell_bits = ("$(touch", "`touch", "; rm -rf", "| cat", "$(reboot)", "&& shutdown")
    path = tmp_path / "$(touch x); rm -rf ~.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["Id", "Text"])
        for n, text in enumerate(texts):
            writer.writerow([n, text])

    job = run_job(local_stack, path)

    assert job.state == "succeeded", job.error
    assert not marker.exists()
    summary = pd.read_csv(
        io.BytesIO(operator.output_object(local_stack, job.job_id, keys.SUMMARY)), keep_default_na=False
    )
    for text, summarized in zip(texts, summary["summary"], strict=True):
        sentences = split_sentences(summarized)
        assert sentences and all(sentence in text for sentence in sentences)  # verbatim
        assert any(bit in summarized for bit in shell_bits), summarized


def test_a_bad_csv_gets_an_error_report_and_the_instance_stops(local_stack, tmp_path):
    path = tmp_path / "no-text-column.csv"
    path.write_text("Id,Body\n1,hello there. general kenobi.\n")

    job = run_job(local_stack, path)

    assert job.state == "failed"
    report = json.loads(operator.output_object(local_stack, job.job_id, keys.ERROR))
    assert report["step"] == "runner" and "Text" in report["reason"]
    assert job.error == report["reason"]
    wait_until(lambda: ec2_state(local_stack) == "stopped", what="the instance to stop")


def test_a_summarizer_crash_fails_the_job_with_a_report_and_the_instance_stops(local_stack, tmp_path):
    path = tmp_path / "not-a-table.parquet"
    path.write_bytes(b"PAR1 this is not parquet at all \x00\x01\x02")

    job = run_job(local_stack, path)

    assert job.state == "failed"
    report = json.loads(operator.output_object(local_stack, job.job_id, keys.ERROR))
    assert report["job_id"] == job.job_id and report["reason"]
    wait_until(lambda: ec2_state(local_stack) == "stopped", what="the instance to stop")


def test_writing_the_output_never_retriggers_the_pipeline(local_stack):
    jobs_before = {j.job_id for j in local_stack.ledger().list_jobs()}
    # Whatever lands in the output bucket, even a file shaped like an input, starts no job.
    s3 = client("s3")
    s3.put_object(Bucket=local_stack.output_bucket, Key="reviews.csv", Body=SAMPLE.read_bytes())
    s3.put_object(Bucket=local_stack.output_bucket, Key="jobs/j-0123456789abcdef0123/summary.csv", Body=b"x")
    job = run_job(local_stack, SAMPLE, key="once-more.csv")
    assert job.state == "succeeded"

    jobs_after = {j.job_id for j in local_stack.ledger().list_jobs()}
    assert jobs_after - jobs_before == {job.job_id}
    for queue in ("InputEventsQueueUrl", "InputEventsDeadLetterQueueUrl", "OutputEventsDeadLetterQueueUrl"):
        attributes = client("sqs").get_queue_attributes(
            QueueUrl=local_stack.outputs[queue], AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
        assert attributes["ApproximateNumberOfMessages"] == "0", queue


def test_the_sumpipe_commands_submit_list_and_show_logs(local_stack, tmp_path):
    env = {**os.environ}  # AWS_ENDPOINT_URL etc. of this module's stack
    sumpipe = [sys.executable, "-m", "sumpipe.ops.cli"]
    out = tmp_path / "summary.csv"

    done = subprocess.run(
        [*sumpipe, "submit", str(SAMPLE), "--key", "cli.csv", "-o", str(out)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    rows = len(pd.read_csv(SAMPLE))
    assert f"succeeded: {rows} rows" in done.stdout
    assert len(pd.read_csv(out)) == rows
    job_id = done.stdout.split("-> job ")[1].split()[0]

    listed = subprocess.run([*sumpipe, "jobs", "--json"], capture_output=True, text=True, env=env, timeout=60)
    assert {"job_id": job_id, "state": "succeeded"}.items() <= next(
        json.loads(line) for line in listed.stdout.splitlines() if job_id in line
    ).items()

    logs = wait_until(
        lambda: (
            (
                r := subprocess.run(
                    [*sumpipe, "logs", job_id], capture_output=True, text=True, env=env, timeout=60
                )
            ).stdout.count("instance stopped")
            and r
        ),
        what="the stop in the job's logs",
    )
    for step in ("trigger", "worker", "runner", "stop_ec2"):
        assert f" {step} " in logs.stdout

    bad = tmp_path / "bad.csv"
    bad.write_text("Id,Body\n1,no text column here.\n")
    failed = subprocess.run(
        [*sumpipe, "submit", str(bad), "--wait"], capture_output=True, text=True, env=env, timeout=120
    )
    assert failed.returncode == 1
    assert "failed" in failed.stderr and '"reason"' in failed.stderr


def test_job_options_chosen_at_upload_shape_the_summary(local_stack, tmp_path):
    """`sumpipe submit` with a renamed text and id column, one sentence each, JSON Lines out."""
    source = pd.read_csv(SAMPLE, dtype=str, keep_default_na=False).head(40)
    path = tmp_path / "renamed.csv"
    source.rename(columns={"Text": "Commentaire été", "Id": "review_id"}).to_csv(path, index=False)
    out = tmp_path / "out.jsonl"
    done = subprocess.run(
        [sys.executable, "-m", "sumpipe.ops.cli", "submit", str(path), "-o", str(out),
         "--text-column", "Commentaire été", "--id-column", "review_id", "--sentences", "1",
         "--format", "jsonl"],
        capture_output=True, text=True, env={**os.environ}, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in records] == source["Id"].tolist()
    assert {r["n_sentences_out"] for r in records} == {1}
    job_id = done.stdout.split("-> job ")[1].split()[0]
    manifest = json.loads(operator.output_object(local_stack, job_id, keys.MANIFEST))
    assert manifest["summary"] == "summary.jsonl"
    assert manifest["options"] == {
        "text-column": "Commentaire été", "id-column": "review_id", "sentences": "1", "format": "jsonl"
    }  # fmt: skip
    assert manifest["rows"] == len(source)


def test_group_options_ask_for_a_row_per_theme_and_name_the_stars_column(local_stack, tmp_path):
    """`sumpipe submit --group-by ProductId --themes --stars Rating`: the summarizer's own rows per
    theme, with the star split read from the column named."""
    source = pd.read_csv(DATA / "kettle_chips.csv").rename(columns={"Score": "Rating"})
    path = tmp_path / "chips.csv"
    source.to_csv(path, index=False)
    out = tmp_path / "themes.csv"
    done = subprocess.run(
        [sys.executable, "-m", "sumpipe.ops.cli", "submit", str(path), "-o", str(out),
         "--group-by", "ProductId", "--themes", "--stars", "Rating"],
        capture_output=True, text=True, env={**os.environ}, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    table = pd.read_csv(out)
    assert len(table) > 3 and set(table["ProductId"]) == {"B000G6RYNE"}
    assert (table["n_rows"] == len(source)).all()
    assert table["theme"].str.len().gt(0).all()
    stars = table[[f"stars_{n}" for n in range(1, 6)]].sum(axis=1)
    assert (stars == table["theme_rows"]).all()  # every row of a theme has its rating counted
    job_id = done.stdout.split("-> job ")[1].split()[0]
    manifest = json.loads(operator.output_object(local_stack, job_id, keys.MANIFEST))
    assert manifest["options"] == {"group-by": "ProductId", "stars": "Rating", "themes": "true"}


def test_group_summaries_in_parquet_and_a_bad_option_that_fails_at_once(local_stack, tmp_path):
    chosen = options.JobOptions(group_by="ProductId", format="parquet")
    submitted = operator.submit_file(local_stack, SAMPLE, f"groups-{uuid.uuid4().hex}.csv", chosen)
    job = operator.wait_for_job(local_stack, submitted.job_id, 60)
    assert job.state == "succeeded", job.error
    table = pd.read_parquet(io.BytesIO(operator.output_object(local_stack, job.job_id, "summary.parquet")))
    products = pd.read_csv(SAMPLE)["ProductId"]
    assert table["ProductId"].tolist() == products.unique().tolist()
    assert table["n_rows"].sum() == len(products)
    # each product's themes, and (the sample has Score) its star split
    assert {"themes", "stars", "stars_5"} <= set(table.columns)

    key = f"bad-{uuid.uuid4().hex}.csv"
    client("s3").put_object(
        Bucket=local_stack.input_bucket, Key=key, Body=SAMPLE.read_bytes(), Metadata={"sumpipe-ratio": "2"}
    )

    def finished():
        return next((j for j in local_stack.ledger().list_jobs() if j.input_key == key and j.terminal), None)

    bad = wait_until(finished, what="the job with a bad option to fail")
    assert bad.state == "failed" and bad.instance_id is None
    report = json.loads(operator.output_object(local_stack, bad.job_id, keys.ERROR))
    assert report["reason"] == "job option sumpipe-ratio: must be a fraction in (0, 1], got 2.0"
