"""The local stack's emulator keeps the DynamoDB guarantees the ledger relies on, under concurrent
requests: a cancelled transaction writes nothing (and undoes nothing it didn't write), and of
several conditional writes racing for one item exactly one wins.

Run against the local stack's own moto server process (sumpipe.local.motoserver). Stock moto
fails the first test: a cancelled TransactWriteItems restores a copy of the whole table taken when
it began, so increments made meanwhile by other requests are lost."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from sumpipe.local import motoserver

TABLE = "race"


@pytest.fixture(scope="module")
def dynamodb(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    port = motoserver.free_port()
    server = motoserver.start(port, ["127.0.0.1"], tmp_path_factory.mktemp("moto") / "moto.log")
    try:
        db = boto3.client(
            "dynamodb",
            endpoint_url=f"http://127.0.0.1:{port}",
            region_name=motoserver.REGION,
            aws_access_key_id=motoserver.BOOTSTRAP_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=motoserver.BOOTSTRAP_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            # no retries: a request the server answered must be counted as it answered
            config=Config(max_pool_connections=16, retries={"total_max_attempts": 1}),
        )
        db.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        yield db
    finally:
        server.kill()
        server.wait()


REFUSED = ("TransactionCanceledException", "ConditionalCheckFailedException")


def _cancelled(exc: ClientError) -> bool:
    return exc.response["Error"]["Code"] in REFUSED


def test_a_cancelled_transaction_does_not_undo_writes_made_while_it_ran(dynamodb) -> None:
    db = dynamodb
    # A large table makes moto's copy of it (taken when a transaction begins) slow, as the
    # ledger's table is after some jobs: the window in which other writes get undone.
    for i in range(300):
        db.put_item(TableName=TABLE, Item={"pk": {"S": f"job-{i}"}, "state": {"S": "queued"}})
    db.put_item(TableName=TABLE, Item={"pk": {"S": "counter"}, "n": {"N": "0"}})
    increments = 400
    done = threading.Event()

    def cancelled_transactions() -> int:
        cancelled = 0
        while not done.is_set():
            try:
                db.transact_write_items(
                    TransactItems=[
                        {"Update": {
                            "TableName": TABLE,
                            "Key": {"pk": {"S": "job-0"}},
                            "UpdateExpression": "SET #s = :s",
                            "ExpressionAttributeNames": {"#s": "state"},
                            "ExpressionAttributeValues": {":s": {"S": "starting"}},
                        }},
                        {"ConditionCheck": {
                            "TableName": TABLE,
                            "Key": {"pk": {"S": "job-1"}},
                            "ConditionExpression": "attribute_not_exists(pk)",  # always refused
                        }},
                    ]
                )  # fmt: skip
            except ClientError as exc:
                assert _cancelled(exc), exc
                cancelled += 1
        return cancelled

    def increment(_: int) -> None:
        db.update_item(
            TableName=TABLE,
            Key={"pk": {"S": "counter"}},
            UpdateExpression="ADD n :one",
            ExpressionAttributeValues={":one": {"N": "1"}},
        )

    with ThreadPoolExecutor(max_workers=8) as pool:
        refusers = [pool.submit(cancelled_transactions) for _ in range(3)]
        list(pool.map(increment, range(increments)))
        done.set()
        assert all(r.result() > 0 for r in refusers)
    counter = db.get_item(TableName=TABLE, Key={"pk": {"S": "counter"}}, ConsistentRead=True)["Item"]
    assert int(counter["n"]["N"]) == increments
    job = db.get_item(TableName=TABLE, Key={"pk": {"S": "job-0"}}, ConsistentRead=True)["Item"]
    assert job["state"]["S"] == "queued"  # the cancelled transactions wrote nothing


def test_of_conditional_writes_racing_for_an_item_exactly_one_wins(dynamodb) -> None:
    db = dynamodb
    contenders = 8

    def claim(key: str) -> bool:
        try:
            db.update_item(
                TableName=TABLE,
                Key={"pk": {"S": key}},
                UpdateExpression="SET claimed = :yes",
                ConditionExpression="attribute_not_exists(claimed)",
                ExpressionAttributeValues={":yes": {"BOOL": True}},
            )
        except ClientError as exc:
            assert _cancelled(exc), exc
            return False
        return True

    with ThreadPoolExecutor(max_workers=contenders) as pool:
        for round_ in range(40):
            key = f"claim-{round_}"
            assert sum(pool.map(claim, [key] * contenders)) == 1, key


def test_a_signed_get_to_a_rest_service_is_checked_over_its_empty_body(tmp_path: Path) -> None:
    """With IAM enforced, moto refused every signed GET of a REST service (it recomputed the
    signature over the request's headers as if they were its body); the emulator checks it as AWS
    does: the right key passes, a wrong secret is still refused."""
    port = motoserver.free_port()
    server = motoserver.start(port, ["127.0.0.1"], tmp_path / "moto.log")
    endpoint = f"http://127.0.0.1:{port}"
    try:
        admin = motoserver.create_administrator(endpoint)
        motoserver.enforce_iam(endpoint)

        def functions(secret: str) -> object:
            return boto3.client(
                "lambda", endpoint_url=endpoint, region_name=motoserver.REGION,
                aws_access_key_id=admin["AWS_ACCESS_KEY_ID"], aws_secret_access_key=secret,
            ).list_functions()  # fmt: skip

        assert functions(admin["AWS_SECRET_ACCESS_KEY"])["Functions"] == []
        with pytest.raises(ClientError) as refused:
            functions("not-" + admin["AWS_SECRET_ACCESS_KEY"])
        # moto answers in the query protocol's XML, which botocore's REST-JSON parser reads as a code.
        assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
        assert "SignatureDoesNotMatch" in str(refused.value)
    finally:
        server.terminate()
        server.wait(10)
