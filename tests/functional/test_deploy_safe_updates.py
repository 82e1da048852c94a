"""Safe updates (parameters kept, change set shown and confirmed) and the preflight checks of
`sumpipe deploy` (sumpipe/ops/preflight.py): against moto where it can express the condition, and
with botocore's Stubber where moto can't (each such test says why)."""

from __future__ import annotations

import io
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber
from moto import mock_aws

from sumpipe.local.resources import build_local_artifacts, emulator_parameters
from sumpipe.ops import cli, deploy, preflight
from sumpipe.ops.commands import deploy as deploy_command

REGION = "us-east-1"
ACCOUNT = "123456789012"


@pytest.fixture
def fast_build(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI's builder, swapped for the local stack's (no Linux layer from pip): what is under test
    is the stack update, not the packaging."""

    def build(out_dir: Path, progress: Any, parameters: Any, *, api: bool = False) -> dict[str, Path]:
        return build_local_artifacts(out_dir, progress, parameters)

    monkeypatch.setattr(deploy, "build_cloud_artifacts", build)


def _stack_parameters(session: Any, stack: str) -> dict[str, str]:
    (described,) = session.client("cloudformation").describe_stacks(StackName=stack)["Stacks"]
    return {p["ParameterKey"]: p["ParameterValue"] for p in described["Parameters"]}


# ------------------------------------------------------------------------------------------ the API's auth
def test_an_api_new_to_a_stack_takes_the_default_auth_not_the_recorded_one() -> None:
    """A stack made before ApiAuth defaulted to jwt recorded `iam`; its first API takes the stack's
    own reviewer pool unless the deploy says otherwise. An API the stack has keeps its auth."""
    template = deploy.render_template()
    old_stack = {"ApiCodeKey": "", "ApiAuth": "iam", "ApiJwtIssuer": "", "ApiJwtAudience": ""}
    adding = {"ApiCodeKey": "s/abc/api.zip"}
    assert deploy.new_api_auth(template, old_stack, adding) == {"ApiAuth": "jwt"}
    assert deploy.new_api_auth(template, old_stack, {**adding, "ApiAuth": "iam"}) == {}
    # Already at the default, or no API being added, or an API already there: nothing to change.
    assert deploy.new_api_auth(template, {**old_stack, "ApiAuth": "jwt"}, adding) == {}
    assert deploy.new_api_auth(template, old_stack, {}) == {}
    assert deploy.new_api_auth(template, {**old_stack, "ApiCodeKey": "s/old/api.zip"}, adding) == {}


def test_after_a_deploy_the_operator_is_told_how_reviewers_get_in() -> None:
    url = "https://abc.execute-api.us-east-1.amazonaws.com"
    own_pool = {"ApiAuth": "jwt", "ApiJwtIssuer": "", "ApiJwtAudience": ""}
    assert deploy.api_next_steps({"ApiUrl": url}, own_pool, "try") == [
        f"review page: {url}/ (reviewers sign in with the stack's Cognito user pool)",
        "add a reviewer: sumpipe reviewers add NAME --stack try [--email ADDRESS]",
    ]
    assert deploy.api_next_steps({"ApiUrl": url}, own_pool, "sumpipe")[1] == (
        "add a reviewer: sumpipe reviewers add NAME [--email ADDRESS]"
    )
    other = {**own_pool, "ApiJwtIssuer": "https://example.eu.auth0.com/", "ApiJwtAudience": "x"}
    [line] = deploy.api_next_steps({"ApiUrl": url}, other, "sumpipe")
    assert "bearer tokens from https://example.eu.auth0.com/" in line
    iam = {"ApiUrl": url, "ApiInvokePolicyArn": "arn:aws:iam::1:policy/p"}
    [line] = deploy.api_next_steps(iam, {**own_pool, "ApiAuth": "iam"}, "sumpipe")
    assert line.startswith(f"API: {url} (SigV4-signed requests only, ApiAuth=iam: attach arn:aws:iam::1:")
    assert line.endswith("the review page needs sign-in: sumpipe deploy --api --param ApiAuth=jwt)")
    assert deploy.api_next_steps({}, own_pool, "sumpipe") == []  # no API


# ------------------------------------------------------------------------------------------ safe updates
@pytest.mark.slow
def test_a_redeploy_without_the_parameters_keeps_them_and_asks_first(
    moto_session: Any, fast_build: None, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    ec2, ssm = moto_session.client("ec2"), moto_session.client("ssm")
    network = emulator_parameters(ec2, workers=2)
    # An image whose root device isn't AL2023's /dev/xvda: deploy must read it, not assume it.
    base = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    ubuntu = ec2.create_image(
        InstanceId=ec2.run_instances(ImageId=base, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"],
        Name="ubuntu-like",
    )["ImageId"]
    image = ec2.describe_images(ImageIds=[ubuntu])["Images"][0]
    root = image["RootDeviceName"]
    assert root != "/dev/xvda"
    ssm.put_parameter(Name="/test/worker-ami", Value=ubuntu, Type="String")
    given = {
        k: network[k]
        for k in (
            "VpcId",
            "SubnetId",
            "WorkerCount",
            "AssignPublicIp",
            "EnforceTls",
            "WorkerPython",
            "WorkerPrivateIps",
            "EventSourcesEnabled",
        )
    }
    given |= {"ImageId": "/test/worker-ami"}
    # The wheelhouse is an artifact every deploy builds, unless named (then no download): named each time.
    # And ImageId, named each time: moto reports an SSM-typed parameter's previous value resolved
    # (ami-...), which it can't resolve again, so it keeps its default there (AWS keeps the name; see
    # deploy.previous_values).
    no_download = "--param=WheelhouseKey=baked/none --param=ImageId=/test/worker-ami"
    arguments = [f"--param={k}={v}" for k, v in given.items()]
    assert (
        cli.main(["deploy", "--stack", "demo", *no_download.split(), *arguments]) == 0
    )  # a create needs no answer
    first = _stack_parameters(moto_session, "demo")
    assert {k: first[k] for k in given if k != "ImageId"} == {
        k: v for k, v in given.items() if k != "ImageId"
    }
    assert first["RootDeviceName"] == root
    capsys.readouterr()

    # Without --yes and without a terminal: refused before anything is built or changed.
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert cli.main(["deploy", "--stack", "demo", *no_download.split()]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        "sumpipe deploy: stack demo exists and stdin is not a terminal to confirm the update: "
        "pass --yes to apply it without asking"
    ]

    # At a terminal, answering no: the change set is shown, deleted, and the stack keeps WorkerCount=2.
    monkeypatch.setattr(deploy_command, "_interactive", lambda: True)
    monkeypatch.setattr(sys, "stdin", io.StringIO("n\n"))
    assert cli.main(["deploy", "--stack", "demo", *no_download.split(), "--param", "WorkerCount=1"]) == 1
    err = capsys.readouterr().err
    assert "change set: " in err and "not applied, so the stack is unchanged" in err
    assert _stack_parameters(moto_session, "demo")["WorkerCount"] == "2"

    # With --yes and none of the first deploy's parameters: every one keeps its value (moto's change
    # set lists no resource changes for a parameter-only update; the preview says so).
    assert cli.main(["deploy", "--stack", "demo", *no_download.split(), "--yes"]) == 0
    err = capsys.readouterr().err
    assert "change set: " in err
    after = _stack_parameters(moto_session, "demo")
    assert {k: after[k] for k in given if k != "ImageId"} == {k: first[k] for k in given if k != "ImageId"}
    assert after["RootDeviceName"] == root
    instances = [
        i
        for r in ec2.describe_instances()["Reservations"]
        for i in r["Instances"]
        if i["State"]["Name"] != "terminated" and i["ImageId"] != base
    ]
    assert len(instances) == 2 and {i["SubnetId"] for i in instances} == {network["SubnetId"]}


def test_the_preview_marks_replacements_and_removals_and_a_no_deletes_the_change_set() -> None:
    """Stubber, not moto: moto's DescribeChangeSet has no Replacement or Details, and lists nothing for
    a parameter-only change (it diffs the template text alone)."""
    cloudformation = boto3.client(
        "cloudformation", region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x"
    )  # pragma: allowlist secret
    template = {
        "Parameters": {
            "SubnetId": {"Type": "String", "Default": ""},
            "WorkerCount": {"Type": "Number", "Default": 1},
            "LogLevel": {"Type": "String", "Default": "INFO"},
        },
        "Resources": {},
    }
    stack = {
        "StackName": "demo",
        "CreationTime": "2025-01-01T00:00:00Z",
        "StackStatus": "UPDATE_COMPLETE",
        "Parameters": [
            {"ParameterKey": "SubnetId", "ParameterValue": "subnet-1"},
            {"ParameterKey": "WorkerCount", "ParameterValue": "2"},
            {"ParameterKey": "LogLevel", "ParameterValue": "INFO"},
        ],
    }
    changes = [
        {
            "Type": "Resource",
            "ResourceChange": {
                "Action": "Modify",
                "LogicalResourceId": "WorkerInstance1",
                "ResourceType": "AWS::EC2::Instance",
                "Replacement": "True",
                "Details": [{"Target": {"Attribute": "Properties", "Name": "SubnetId"}}],
            },
        },
        {
            "Type": "Resource",
            "ResourceChange": {
                "Action": "Remove",
                "LogicalResourceId": "ApiFunction",
                "ResourceType": "AWS::Lambda::Function",
            },
        },
        {
            "Type": "Resource",
            "ResourceChange": {
                "Action": "Modify",
                "LogicalResourceId": "TriggerFunction",
                "ResourceType": "AWS::Lambda::Function",
                "Replacement": "False",
            },
        },
    ]
    lines: list[str] = []
    shown: list[list[str]] = []
    with Stubber(cloudformation) as stub:
        stub.add_response("describe_stacks", {"Stacks": [stack]}, {"StackName": "demo"})
        stub.add_response("describe_stacks", {"Stacks": [stack]}, {"StackName": "demo"})
        stub.add_response(
            "create_change_set",
            {"Id": "cs"},
            {
                "StackName": "demo",
                "ChangeSetName": ANY,
                "ChangeSetType": "UPDATE",
                "Capabilities": ANY,
                "TemplateBody": ANY,
                # Given: SubnetId. Kept: WorkerCount (2, not its default). LogLevel is at its default.
                "Parameters": [
                    {"ParameterKey": "SubnetId", "ParameterValue": "subnet-2"},
                    {"ParameterKey": "WorkerCount", "UsePreviousValue": True},
                ],
            },
        )
        stub.add_response(
            "describe_change_set",
            {"Status": "CREATE_COMPLETE", "Changes": changes},
            {"StackName": "demo", "ChangeSetName": ANY},
        )
        stub.add_response("delete_change_set", {}, {"StackName": "demo", "ChangeSetName": ANY})
        with pytest.raises(deploy.DeployError, match="not applied"):
            deploy.apply_stack(
                cloudformation,
                None,
                "demo",
                template,
                {"SubnetId": "subnet-2"},
                "bucket",
                lines.append,
                confirm=lambda preview: shown.append(preview) is not None,
            )
        stub.assert_no_pending_responses()
    assert lines[0].startswith("updating stack demo") and shown == [lines[1:]]
    assert lines[1] == "change set: 0 to add, 2 to modify (1 replaced or maybe), 1 to remove"
    (replaced,) = [line for line in lines if "WorkerInstance1" in line]
    assert "because of SubnetId" in replaced and "REPLACED" in replaced
    (removed,) = [line for line in lines if "ApiFunction" in line]
    assert "DELETED" in removed
    (modified,) = [line for line in lines if "TriggerFunction" in line]
    assert "REPLACED" not in modified and "DELETED" not in modified


# ------------------------------------------------------------------------------------------ preflight
@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",  # pragma: allowlist secret
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield boto3.session.Session(region_name=REGION)


def test_a_long_stack_name_fails_before_anything_is_made(
    aws: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    # 31 characters: <stack>-123456789012-us-east-1-artifacts is then 64.
    stack = "a" * 31
    assert cli.main(["deploy", "--stack", stack, "--yes"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"sumpipe deploy: preflight: bucket name '{stack}-")
    assert "is 64 characters (S3 allows 63): use a stack name at most 30 characters long" in err[0]
    assert aws.client("s3").list_buckets()["Buckets"] == []
    assert aws.client("cloudformation").list_stacks()["StackSummaries"] == []


def test_bucket_names_come_from_the_template() -> None:
    template = deploy.render_template()
    values = preflight.evaluator(
        template, preflight.effective_parameters(template, {}, {}), "s", ACCOUNT, REGION
    )
    assert sorted(preflight.bucket_names(values)) == [
        f"s-{ACCOUNT}-{REGION}-input",
        f"s-{ACCOUNT}-{REGION}-output",
    ]
    named = preflight.effective_parameters(template, {}, {"InputBucketName": "Bad_Name"})
    with pytest.raises(preflight.PreflightError, match="'Bad_Name' may hold only lowercase"):
        preflight.check_bucket_names(
            preflight.bucket_names(preflight.evaluator(template, named, "s", ACCOUNT, REGION)), "s"
        )


def test_a_subnet_without_public_ips_fails_unless_the_workers_are_private(aws: Any) -> None:
    ec2 = aws.client("ec2")
    vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.9.1.0/24")["Subnet"]["SubnetId"]
    with pytest.raises(
        preflight.PreflightError,
        match=rf"subnet {subnet} gives instances no public IP .*"
        "--param AssignPublicIp=false",
    ):
        preflight.check_subnet_public_ip(ec2, {"SubnetId": subnet, "AssignPublicIp": "true"})
    preflight.check_subnet_public_ip(ec2, {"SubnetId": subnet, "AssignPublicIp": "false"})
    ec2.modify_subnet_attribute(SubnetId=subnet, MapPublicIpOnLaunch={"Value": True})
    preflight.check_subnet_public_ip(ec2, {"SubnetId": subnet, "AssignPublicIp": "true"})


def test_the_root_device_is_read_from_the_image(aws: Any) -> None:
    ec2, ssm = aws.client("ec2"), aws.client("ssm")
    base = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instance = ec2.run_instances(ImageId=base, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    image = ec2.create_image(InstanceId=instance, Name="other-root")["ImageId"]
    expected = ec2.describe_images(ImageIds=[image])["Images"][0]["RootDeviceName"]
    ssm.put_parameter(Name="/test/ami", Value=image, Type="String")
    assert preflight.image_root_device(ssm, ec2, "/test/ami") == expected
    al2023 = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
    assert preflight.image_root_device(ssm, ec2, al2023) == "/dev/xvda"
    with pytest.raises(preflight.PreflightError, match="SSM parameter /test/missing does not exist"):
        preflight.image_root_device(ssm, ec2, "/test/missing")
    ssm.put_parameter(Name="/test/gone", Value="ami-0123456789abcdef0", Type="String")
    with pytest.raises(preflight.PreflightError, match=r"image ami-0123456789abcdef0 .* is not available"):
        preflight.image_root_device(ssm, ec2, "/test/gone")


def _client(service: str) -> Any:
    return boto3.client(
        service, region_name=REGION, aws_access_key_id="x", aws_secret_access_key="x"
    )  # pragma: allowlist secret


def test_reserved_concurrency_over_the_accounts_quota_fails() -> None:
    """Stubber, not moto: moto doesn't implement lambda:GetAccountSettings (404)."""
    template = deploy.render_template()
    with_api = preflight.effective_parameters(template, {}, {"ApiCodeKey": "api.zip"})
    reserved = preflight.reserved_concurrency(preflight.evaluator(template, with_api, "s", ACCOUNT, REGION))
    assert reserved == {"s-trigger": 5, "s-worker": 5, "s-stop-ec2": 5, "s-api": 10}
    client = _client("lambda")
    settings = {"AccountLimit": {"ConcurrentExecutions": 10, "UnreservedConcurrentExecutions": 10}}
    with Stubber(client) as stub:
        stub.add_response("get_account_settings", settings, {})
        with pytest.raises(
            preflight.PreflightError,
            match=r"reserves 25 concurrent .* quota is 10 .*"
            "PipelineReservedConcurrency=N",
        ):
            preflight.check_concurrency(client, reserved)
        stub.add_response(
            "get_account_settings",
            {"AccountLimit": {"ConcurrentExecutions": 1000, "UnreservedConcurrentExecutions": 1000}},
            {},
        )
        preflight.check_concurrency(client, reserved)
        # On update the stack's own reservations are already out of the unreserved pool.
        stub.add_response(
            "get_account_settings",
            {"AccountLimit": {"ConcurrentExecutions": 50, "UnreservedConcurrentExecutions": 25}},
            {},
        )
        for name, value in reserved.items():
            stub.add_response(
                "get_function_concurrency", {"ReservedConcurrentExecutions": value}, {"FunctionName": name}
            )
        preflight.check_concurrency(client, reserved, updating=True)
        stub.assert_no_pending_responses()
    none = preflight.effective_parameters(template, {}, {"PipelineReservedConcurrency": "0"})
    assert preflight.reserved_concurrency(preflight.evaluator(template, none, "s", ACCOUNT, REGION)) == {}


def test_a_customer_managed_default_ebs_key_fails_unless_acknowledged() -> None:
    """Stubber, not moto: moto doesn't implement ec2:GetEbsDefaultKmsKeyId."""
    ec2, kms = _client("ec2"), _client("kms")
    key = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
    with Stubber(ec2) as ec2_stub, Stubber(kms) as kms_stub:
        ec2_stub.add_response("get_ebs_default_kms_key_id", {"KmsKeyId": key}, {})
        kms_stub.add_response(
            "describe_key", {"KeyMetadata": {"KeyId": key, "KeyManager": "CUSTOMER"}}, {"KeyId": key}
        )
        with pytest.raises(
            preflight.PreflightError, match=r"customer managed.*kms:CreateGrant.*--ebs-key-grants-ok"
        ):
            preflight.check_ebs_default_key(ec2, kms, ACCOUNT, REGION)
        ec2_stub.add_response("get_ebs_default_kms_key_id", {"KmsKeyId": key}, {})
        preflight.check_ebs_default_key(ec2, kms, ACCOUNT, REGION, grants_ok=True)
        ec2_stub.add_response("get_ebs_default_kms_key_id", {"KmsKeyId": "alias/aws/ebs"}, {})
        preflight.check_ebs_default_key(ec2, kms, ACCOUNT, REGION)
        ec2_stub.assert_no_pending_responses()
        kms_stub.assert_no_pending_responses()
