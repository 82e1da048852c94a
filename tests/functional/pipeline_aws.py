"""The pipeline's AWS resources in moto, in-process: the buckets, and the job table as the template
declares it (keys and indexes), with the SUMPIPE_* settings pointing at them."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import boto3
import pytest
from moto import mock_aws

from sumpipe.ledger import DynamoLedger
from sumpipe.local import motoserver
from sumpipe.ops import deploy
from sumpipe.settings import get_settings

REGION = "us-east-1"
# CloudFormation properties that are also CreateTable parameters (TTL, backups and encryption aren't).
_CREATE_TABLE_PROPERTIES = ("BillingMode", "AttributeDefinitions", "KeySchema", "GlobalSecondaryIndexes")


def create_table(dynamodb: Any, resource: str, name: str) -> None:
    """The template's table `resource` (keys and indexes as it declares them), named `name`."""
    properties = deploy.render_template()["Resources"][resource]["Properties"]
    dynamodb.create_table(
        TableName=name, **{key: properties[key] for key in _CREATE_TABLE_PROPERTIES if key in properties}
    )


def create_job_table(dynamodb: Any, name: str = "jobs") -> None:
    create_table(dynamodb, "JobTable", name)


@contextmanager
def pipeline_aws(monkeypatch: pytest.MonkeyPatch, **settings: str) -> Iterator[SimpleNamespace]:
    """moto with the input and output buckets and the job table; `settings` are more SUMPIPE_* ones."""
    monkeypatch.setenv("AWS_DEFAULT_REGION", REGION)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        s3 = boto3.client("s3", region_name=REGION)
        for bucket in ("in-bucket", "out-bucket"):
            s3.create_bucket(Bucket=bucket)
        db = boto3.client("dynamodb", region_name=REGION)
        create_job_table(db)
        values = {"INPUT_BUCKET": "in-bucket", "OUTPUT_BUCKET": "out-bucket", "JOB_TABLE": "jobs", **settings}
        for name, value in values.items():
            monkeypatch.setenv(f"SUMPIPE_{name}", value)
        get_settings.cache_clear()
        try:
            yield SimpleNamespace(
                s3=s3, ledger=DynamoLedger(db, "jobs"), ec2=boto3.client("ec2", region_name=REGION)
            )
        finally:
            get_settings.cache_clear()


@contextmanager
def emulated_stack(log_path: Path) -> Iterator[SimpleNamespace]:
    """The local stack's emulator (its own process, which checks presigned URLs and POST policies as
    S3 does) with the input and output buckets and the job table; `env` holds the variables a
    `sumpipe serve` of that stack needs (endpoint, credentials, SUMPIPE_* names)."""
    port = motoserver.free_port()
    moto = motoserver.start(port, ["127.0.0.1"], log_path)
    endpoint = f"http://127.0.0.1:{port}"
    aws = {**motoserver.endpoint_environment(endpoint), **motoserver.BOOTSTRAP_CREDENTIALS}
    try:
        session = boto3.Session(
            aws_access_key_id=aws["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=aws["AWS_SECRET_ACCESS_KEY"],
            region_name=motoserver.REGION,
        )
        s3 = session.client("s3", endpoint_url=endpoint)
        for bucket in ("in-bucket", "out-bucket"):
            s3.create_bucket(Bucket=bucket)
        dynamodb = session.client("dynamodb", endpoint_url=endpoint)
        create_job_table(dynamodb)
        env = {
            **aws,
            "SUMPIPE_INPUT_BUCKET": "in-bucket",
            "SUMPIPE_OUTPUT_BUCKET": "out-bucket",
            "SUMPIPE_JOB_TABLE": "jobs",
        }
        yield SimpleNamespace(endpoint=endpoint, s3=s3, dynamodb=dynamodb, env=env)
    finally:
        moto.terminate()
        moto.wait(timeout=10)
