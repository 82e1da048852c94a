"""The local stack's AWS resources: `deploy/template.yaml` deployed into moto, plus what moto drops.

The same rendered template as `sumpipe deploy` is created through moto's CloudFormation, so local and
cloud resources can't drift. moto's CloudFormation skips resource types it doesn't implement and
ignores some properties; those are applied here by API, from the same template:

- AWS::SecretsManager::Secret: created by name (empty unless a private key is given);
- AWS::SQS::QueuePolicy: put on the queues;
- AWS::S3::BucketPolicy is left out on purpose: it denies requests without TLS, moto enforces it, and
  the emulator's endpoint is plain HTTP on loopback;
- the buckets' NotificationConfiguration, VersioningConfiguration and PublicAccessBlockConfiguration
  (moto ignores them on AWS::S3::Bucket): put on the buckets;
- AWS::ApiGatewayV2::*: not created; the realtime API runs locally under `sumpipe serve` instead.

Emulator-specific parameters: the worker network 10.200.0.0/16 (see ensure_local_network), the
workers' private IPs are pinned (the local hosts live there), they get
no public IP, and the SQS event source mappings are created disabled, because moto would otherwise
consume the queues itself and try to run the functions in Docker; the local runtime polls them.
"""

from __future__ import annotations

import json
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sumpipe import deploy, package

LOCAL_VPC_CIDR = "10.200.0.0/16"
LOCAL_SUBNET_CIDR = "10.200.1.0/24"
# The local hosts run the project's venv: no wheel to install at boot.
_UNUSED_LOCALLY = "unused-locally"


def _resolve(value: Any, refs: Mapping[str, Any]) -> Any:
    """Evaluate the few intrinsics the dropped resources use, against the deployed stack's values."""
    if isinstance(value, dict):
        if "Ref" in value:
            return refs[value["Ref"]]
        if "Fn::GetAtt" in value:
            logical_id, attribute = value["Fn::GetAtt"]
            return refs[f"{logical_id}.{attribute}"]
        if "Fn::Sub" in value:
            text = value["Fn::Sub"]
            for name, replacement in refs.items():
                if isinstance(replacement, str):
                    text = text.replace("${" + name + "}", replacement)
            return text
        if "Fn::Join" in value:
            separator, items = value["Fn::Join"]
            return separator.join(str(_resolve(item, refs)) for item in items)
        if "Fn::If" in value:
            condition, when_true, when_false = value["Fn::If"]
            return _resolve(when_true if refs[f"Condition:{condition}"] else when_false, refs)
        if "Fn::Equals" in value:
            left, right = (str(_resolve(item, refs)) for item in value["Fn::Equals"])
            return left == right
        if "Fn::Not" in value:
            return not _resolve(value["Fn::Not"][0], refs)
        return {key: _resolve(item, refs) for key, item in value.items()}
    if isinstance(value, list):
        return [_resolve(item, refs) for item in value]
    return value


def _stack_refs(session: Any, stack_name: str, template: Mapping[str, Any]) -> dict[str, Any]:
    """Ref and GetAtt Arn values of the stack's queues and buckets, its parameters, pseudo parameters
    and conditions (as `Condition:<name>`)."""
    cloudformation = session.client("cloudformation")
    sqs = session.client("sqs")
    account_id = session.client("sts").get_caller_identity()["Account"]
    refs: dict[str, Any] = {
        "AWS::StackName": stack_name,
        "AWS::AccountId": account_id,
        "AWS::Region": session.region_name,
        "AWS::Partition": "aws",
    }
    stack = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
    refs.update({p["ParameterKey"]: p["ParameterValue"] for p in stack.get("Parameters", [])})
    for name, expression in template.get("Conditions", {}).items():
        refs[f"Condition:{name}"] = _resolve(expression, refs)
    paginator = cloudformation.get_paginator("list_stack_resources")
    for page in paginator.paginate(StackName=stack_name):
        for resource in page["StackResourceSummaries"]:
            logical_id, physical_id = resource["LogicalResourceId"], resource.get("PhysicalResourceId", "")
            refs[logical_id] = physical_id
            if resource["ResourceType"] == "AWS::SQS::Queue":
                attributes = sqs.get_queue_attributes(QueueUrl=physical_id, AttributeNames=["QueueArn"])
                refs[f"{logical_id}.Arn"] = attributes["Attributes"]["QueueArn"]
            elif resource["ResourceType"] == "AWS::S3::Bucket":
                refs[f"{logical_id}.Arn"] = f"arn:aws:s3:::{physical_id}"
    return refs


def _placeholder_layer(out_dir: Path) -> package.Artifact:
    # The local runtime runs the handlers in-process, in the project's venv: building the Linux
    # dependency layer (pip for another platform, ~30 s) would buy nothing here.
    path = out_dir / "pipeline-deps.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("python/README", "local stack: dependencies come from the project venv\n")
    return package.describe_zip("pipeline-deps", path)


def apply_dropped_resources(session: Any, stack_name: str, template: Mapping[str, Any]) -> None:
    """Apply by API what moto's CloudFormation drops (see the module docstring)."""
    s3 = session.client("s3")
    sqs = session.client("sqs")
    refs = _stack_refs(session, stack_name, template)
    for logical_id, resource in template["Resources"].items():
        properties = resource.get("Properties", {})
        kind = resource["Type"]
        if kind == "AWS::SQS::QueuePolicy":
            policy = json.dumps(_resolve(properties["PolicyDocument"], refs))
            for queue in properties["Queues"]:
                sqs.set_queue_attributes(QueueUrl=_resolve(queue, refs), Attributes={"Policy": policy})
        elif kind == "AWS::S3::Bucket":
            _apply_bucket_properties(s3, refs[logical_id], properties, refs)


def _apply_bucket_properties(
    s3: Any, bucket: str, properties: Mapping[str, Any], refs: Mapping[str, Any]
) -> None:
    if "VersioningConfiguration" in properties:
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration=properties["VersioningConfiguration"])
    if "PublicAccessBlockConfiguration" in properties:
        s3.put_public_access_block(
            Bucket=bucket, PublicAccessBlockConfiguration=properties["PublicAccessBlockConfiguration"]
        )
    if "NotificationConfiguration" in properties:
        queues = [
            {
                "QueueArn": _resolve(entry["Queue"], refs),
                "Events": [entry["Event"]],
                **({"Filter": {"Key": {"FilterRules": entry["Filter"]["S3Key"]["Rules"]}}}
                   if "Filter" in entry else {}),
            }
            for entry in properties["NotificationConfiguration"]["QueueConfigurations"]
        ]
        s3.put_bucket_notification_configuration(
            Bucket=bucket, NotificationConfiguration={"QueueConfigurations": queues}
        )


def ensure_local_network(ec2: Any) -> tuple[str, str]:
    """(vpc id, subnet id) of the emulator's worker network, created once.

    Made here rather than by the template: moto leaves a terminated instance's network interface
    "in-use", so it can never delete a VPC that held an instance and `sumpipe destroy` would fail.
    """
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "cidr", "Values": [LOCAL_VPC_CIDR]}])["Vpcs"]
    vpc_id = vpcs[0]["VpcId"] if vpcs else ec2.create_vpc(CidrBlock=LOCAL_VPC_CIDR)["Vpc"]["VpcId"]
    subnets = ec2.describe_subnets(
        Filters=[
            {"Name": "vpc-id", "Values": [vpc_id]},
            {"Name": "cidr-block", "Values": [LOCAL_SUBNET_CIDR]},
        ]
    )["Subnets"]
    if subnets:
        return vpc_id, subnets[0]["SubnetId"]
    return vpc_id, ec2.create_subnet(VpcId=vpc_id, CidrBlock=LOCAL_SUBNET_CIDR)["Subnet"]["SubnetId"]


def _ensure_secret(session: Any, secret_id: str, private_key: str | None) -> None:
    secrets = session.client("secretsmanager")
    try:
        secrets.describe_secret(SecretId=secret_id)
    except secrets.exceptions.ResourceNotFoundException:
        secrets.create_secret(Name=secret_id, Description="Private SSH key of the pipeline (local stack)")
    if private_key:
        secrets.put_secret_value(SecretId=secret_id, SecretString=private_key)


def deploy_local_stack(
    session: Any,
    stack_name: str = "sumpipe",
    worker_private_ips: Sequence[str] = ("10.200.1.10",),
    *,
    ssh_public_key: str | None = None,
    ssh_private_key: str | None = None,
    parameters: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Deploy the template into moto (`session` is a boto3 Session pointed at it); the stack outputs.

    With no key given, a fresh pair is generated and the private half stored in the secret. Idempotent:
    an existing stack is updated.
    """
    if not 1 <= len(worker_private_ips) <= 3:
        raise deploy.DeployError(f"the template supports 1 to 3 workers, got {len(worker_private_ips)}")
    if ssh_public_key is None:
        if ssh_private_key is not None:
            ssh_public_key = deploy.public_key_of(ssh_private_key)
        else:
            ssh_private_key, ssh_public_key = deploy.generate_ssh_key_pair()
    region = session.region_name
    account_id = session.client("sts").get_caller_identity()["Account"]
    s3 = session.client("s3")
    bucket = deploy.artifacts_bucket_name(stack_name, account_id, region)
    deploy.ensure_private_bucket(s3, bucket, region)
    vpc_id, subnet_id = ensure_local_network(session.client("ec2"))

    values = {
        "ArtifactsBucket": bucket,
        "WorkerCount": str(len(worker_private_ips)),
        "WorkerPrivateIps": ",".join(worker_private_ips),
        "VpcId": vpc_id,
        "SubnetId": subnet_id,
        "AssignPublicIp": "false",
        "EventSourcesEnabled": "false",
        "SshPublicKey": ssh_public_key,
        "WheelKey": _UNUSED_LOCALLY,
    }
    with tempfile.TemporaryDirectory(prefix="sumpipe-local-package-") as tmp:
        out_dir = Path(tmp)
        for function, parameter in (("trigger", "TriggerCodeKey"), ("worker", "WorkerCodeKey"),
                                    ("stop_ec2", "StopCodeKey")):
            artifact = package.build_function_zip(function, out_dir)
            values[parameter] = deploy.upload_artifact(s3, bucket, stack_name, artifact)
        layer = _placeholder_layer(out_dir)
        values["PipelineLayerKey"] = deploy.upload_artifact(s3, bucket, stack_name, layer)
    values.update(parameters or {})

    template = deploy.render_template()
    outputs = deploy.apply_stack(
        session.client("cloudformation"), s3, stack_name, template, values, bucket,
        progress=lambda _line: None, poll_s=0.2,
    )
    _ensure_secret(session, outputs["SshKeySecretId"], ssh_private_key)
    apply_dropped_resources(session, stack_name, template)
    return outputs
