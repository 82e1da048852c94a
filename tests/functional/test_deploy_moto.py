"""The template deployed into moto server (the local stack's path) and `sumpipe deploy`/`destroy`
through the CLI: resources exist, are wired as the template says, and nothing remains after destroy."""

from __future__ import annotations

import os
from typing import Any

import boto3
import pytest

from sumpipe import keys
from sumpipe.local.resources import deploy_local_stack, emulator_parameters
from sumpipe.ops import cli

REGION = "us-east-1"


def _all_buckets(session: Any) -> set[str]:
    return {b["Name"] for b in session.client("s3").list_buckets()["Buckets"]}


def _live_instances(session: Any) -> list[dict[str, Any]]:
    reservations = session.client("ec2").describe_instances()["Reservations"]
    return [i for r in reservations for i in r["Instances"] if i["State"]["Name"] != "terminated"]


def test_local_stack_deploys_the_template_and_destroy_removes_it(
    moto_session: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    outputs = deploy_local_stack(moto_session, "sumpipe", network_cidr="10.200.0.0/16", workers=2)
    s3, sqs = moto_session.client("s3"), moto_session.client("sqs")
    # The emulator's endpoint is plain HTTP: EnforceTls=false leaves the TLS-only policies out, by
    # parameter (an S3 call here would be refused if they were there: moto enforces them).
    for bucket in (outputs["InputBucketName"], outputs["OutputBucketName"]):
        with pytest.raises(s3.exceptions.ClientError, match="NoSuchBucketPolicy"):
            s3.get_bucket_policy(Bucket=bucket)

    instances = _live_instances(moto_session)
    assert sorted(i["PrivateIpAddress"] for i in instances) == ["10.200.1.10", "10.200.1.11"]
    assert sorted(outputs["WorkerInstanceIds"].split(",")) == sorted(i["InstanceId"] for i in instances)
    for instance in instances:
        assert {"Key": outputs["WorkerTagKey"], "Value": outputs["WorkerTagValue"]} in instance["Tags"]
        assert "PublicIpAddress" not in instance

    # What moto's CloudFormation drops is applied by API: notifications, queue policies, versioning.
    output_rules = s3.get_bucket_notification_configuration(Bucket=outputs["OutputBucketName"])
    suffixes = sorted(
        rule["Value"]
        for c in output_rules["QueueConfigurations"]
        for rule in c["Filter"]["Key"]["FilterRules"]
        if rule["Name"] == "suffix"
    )
    assert suffixes == sorted(keys.FINISHING_FILES)
    input_targets = s3.get_bucket_notification_configuration(Bucket=outputs["InputBucketName"])
    input_queue_arn = sqs.get_queue_attributes(
        QueueUrl=outputs["InputEventsQueueUrl"], AttributeNames=["QueueArn", "Policy", "RedrivePolicy"]
    )["Attributes"]
    assert [c["QueueArn"] for c in input_targets["QueueConfigurations"]] == [input_queue_arn["QueueArn"]]
    assert outputs["InputBucketName"] in input_queue_arn["Policy"]
    assert s3.get_public_access_block(Bucket=outputs["InputBucketName"])["PublicAccessBlockConfiguration"][
        "BlockPublicPolicy"
    ]
    assert s3.get_bucket_versioning(Bucket=outputs["InputBucketName"])["Status"] == "Enabled"

    # An upload lands as an S3 event on the trigger's queue (after S3's own s3:TestEvent, as on AWS).
    s3.put_object(Bucket=outputs["InputBucketName"], Key="reviews.csv", Body=b"Id,Text\n1,Hello there.\n")
    messages = sqs.receive_message(
        QueueUrl=outputs["InputEventsQueueUrl"], MaxNumberOfMessages=10, WaitTimeSeconds=1
    )["Messages"]
    assert any('"key": "reviews.csv"' in m["Body"] for m in messages)

    secret = moto_session.client("secretsmanager").get_secret_value(SecretId=outputs["SshKeySecretId"])
    assert secret["SecretString"].startswith("-----BEGIN OPENSSH PRIVATE")  # pragma: allowlist secret
    mappings = moto_session.client("lambda").list_event_source_mappings()["EventSourceMappings"]
    assert len(mappings) == 3 and {m["State"] for m in mappings} == {"Disabled"}

    # destroy refuses while the input bucket holds data, then --force empties it and deletes everything.
    assert cli.main(["destroy", "--stack", "sumpipe"]) == 1
    assert "still hold data" in capsys.readouterr().err
    assert cli.main(["destroy", "--stack", "sumpipe", "--force"]) == 0
    assert _all_buckets(moto_session) == set()
    assert _live_instances(moto_session) == []
    assert (
        moto_session.client("cloudformation").list_stacks(
            StackStatusFilter=["CREATE_COMPLETE", "UPDATE_COMPLETE"]
        )["StackSummaries"]
        == []
    )
    assert moto_session.client("dynamodb").list_tables()["TableNames"] == []
    assert moto_session.client("lambda").list_functions()["Functions"] == []


def test_local_stack_is_idempotent(moto_session: Any) -> None:
    first = deploy_local_stack(moto_session, "sumpipe")
    secrets = moto_session.client("secretsmanager")
    key = secrets.get_secret_value(SecretId=first["SshKeySecretId"])["SecretString"]
    second = deploy_local_stack(moto_session, "sumpipe")
    assert first["InputBucketName"] == second["InputBucketName"]
    assert first["WorkerInstanceIds"] == second["WorkerInstanceIds"]
    assert secrets.get_secret_value(SecretId=first["SshKeySecretId"])["SecretString"] == key


def test_stacks_on_different_networks_share_one_emulator(moto_session: Any) -> None:
    ec2 = moto_session.client("ec2")
    first = emulator_parameters(ec2, "10.200.0.0/16", workers=1)
    second = emulator_parameters(ec2, "10.231.0.0/16", workers=3)
    assert first["WorkerPrivateIps"] == "10.200.1.10"
    assert second["WorkerPrivateIps"] == "10.231.1.10,10.231.1.11,10.231.1.12"
    assert first["SubnetId"] != second["SubnetId"]
    (subnet,) = ec2.describe_subnets(SubnetIds=[second["SubnetId"]])["Subnets"]
    assert subnet["CidrBlock"] == "10.231.1.0/24" and subnet["VpcId"] == second["VpcId"]
    assert emulator_parameters(ec2, "10.231.0.0/16", workers=3) == second  # made once, then found
    assert {first["AssignPublicIp"], first["EventSourcesEnabled"], first["EnforceTls"]} == {"false"}


@pytest.mark.slow
def test_sumpipe_deploy_then_destroy_through_the_cli(
    moto_session: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real `sumpipe deploy`: builds the zips, the Linux dependency layer (pip, from the registry)
    and the wheel, uploads them, creates the stack, stores a generated SSH key. The network is passed
    in: moto can't delete a VPC that held an instance (see ensure_local_network)."""
    parameters = emulator_parameters(moto_session.client("ec2"))
    network = [f"--param={k}={parameters[k]}" for k in ("VpcId", "SubnetId", "EnforceTls", "AssignPublicIp")]
    assert cli.main(["deploy", "--stack", "demo", "--param", "WorkerCount=1", *network]) == 0
    out = capsys.readouterr().out
    assert '"InputBucketName": "demo-' in out
    secret = moto_session.client("secretsmanager").get_secret_value(SecretId="demo/worker-ssh-key")
    assert "OPENSSH PRIVATE KEY" in secret["SecretString"]
    objects = moto_session.client("s3").list_objects_v2(Bucket="demo-123456789012-us-east-1-artifacts")
    keys = sorted(o["Key"] for o in objects["Contents"])
    assert any(k.startswith("demo/") and k.endswith("/pipeline-deps.zip") for k in keys)
    assert any(k.startswith("demo/") and k.split("/")[-1].startswith("sumpipe-") and k.endswith(".whl")
               for k in keys)
    assert os.environ["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
    assert cli.main(["destroy", "--stack", "demo"]) == 0
    assert _all_buckets(moto_session) == set()
    assert _live_instances(moto_session) == []
    assert moto_session.client("secretsmanager").list_secrets()["SecretList"] == []


def test_every_artifacts_bucket_request_names_its_expected_owner(moto_session: Any) -> None:
    """Against moto server: moto doesn't enforce ExpectedBucketOwner (probed: a GetObject naming
    another account as the owner succeeds), so a deploy into another account's bucket can't fail
    here as on AWS. What is checked instead, with a botocore event hook on every request sent: each
    request of a deploy and a destroy to the artifacts bucket (but CreateBucket, which takes none)
    carries x-amz-expected-bucket-owner = the deploying account."""
    account = moto_session.client("sts").get_caller_identity()["Account"]
    artifacts = f"sumpipe-{account}-{REGION}-artifacts"
    sent: list[tuple[str, str, str | None]] = []

    def record(request: Any, **_: Any) -> None:
        path = request.url.split("://", 1)[1].split("/", 1)[1]
        if path.split("?")[0].split("/")[0] == artifacts:
            owner = request.headers.get("x-amz-expected-bucket-owner")
            sent.append((request.method, path, owner.decode() if isinstance(owner, bytes) else owner))

    moto_session.events.register("before-send.s3", record)
    deploy_local_stack(moto_session, "sumpipe")
    assert cli.main(["destroy", "--stack", "sumpipe", "--force"]) == 0  # (its own session: not recorded)
    uploads = [path for method, path, _ in sent if method in ("PUT", "POST") and "/" in path.split("?")[0]]
    assert uploads, sent  # the code went in
    unpinned = [(method, path) for method, path, owner in sent if owner != account]
    assert unpinned == [("PUT", artifacts)]  # CreateBucket only


def test_a_bucket_of_another_account_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """What S3 answers a HeadBucket naming the wrong expected owner (403), as DeployError."""
    from botocore.stub import Stubber

    from sumpipe.ops import deploy

    s3 = boto3.client("s3", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="y")
    deploy.pin_bucket_owner(s3, "b-artifacts", "111122223333")
    with Stubber(s3) as stub:
        stub.add_client_error(
            "head_bucket", "403", http_status_code=403,
            expected_params={"Bucket": "b-artifacts", "ExpectedBucketOwner": "111122223333"},
        )
        with pytest.raises(deploy.DeployError, match="not in this account"):
            deploy.ensure_private_bucket(s3, "b-artifacts", REGION)
