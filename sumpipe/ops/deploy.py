"""Render the CloudFormation template and deploy or destroy the stack with boto3.

Single source of truth: `deploy/template.yaml` names, in each role's Metadata, the `iam/*.json`
document that is its policy, and in each worker instance's Metadata, the user-data script. Rendering
puts those files into the template; the rendered template is what cfn-lint checks, what `sumpipe deploy`
deploys to AWS and what the local stack deploys into moto.

`deploy()` is the one way the stack is deployed, to AWS and into the emulator alike: the local stack
calls it with the emulator's parameters and its own artifact builder (see sumpipe/local/resources.py).
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sumpipe.ops import package, preflight

REPO_ROOT = package.REPO_ROOT
TEMPLATE_PATH = REPO_ROOT / "deploy" / "template.yaml"
POLICY_METADATA = "sumpipe:policy"
USER_DATA_METADATA = "sumpipe:user-data"
# CloudFormation takes a template body up to this size inline; bigger ones go through S3.
INLINE_TEMPLATE_LIMIT = 51_200
ARTIFACTS_OWNER_VARIABLE = "ARTIFACTS_BUCKET_OWNER"
# Variables the bootstrap script expects (see deploy/bootstrap.sh), from template parameters.
BOOTSTRAP_VARIABLES = {
    "SUMPIPE_REGION": {"Ref": "AWS::Region"},
    "ARTIFACTS_BUCKET": {"Ref": "ArtifactsBucket"},
    # The artifacts bucket's expected owner: the instance's fetches refuse a bucket of another account.
    ARTIFACTS_OWNER_VARIABLE: {"Ref": "AWS::AccountId"},
    "WHEEL_KEY": {"Ref": "WheelKey"},
    "WHEELHOUSE_KEY": {"Ref": "WheelhouseKey"},
    "WORKER_PYTHON": {"Ref": "WorkerPython"},
    "KNOWN_HOSTS_PARAMETER": {"Fn::Sub": "/${AWS::StackName}/worker/known-hosts"},
    "SSH_PUBLIC_KEY": {"Ref": "SshPublicKey"},
    "IDLE_SHUTDOWN_MINUTES": {"Ref": "WorkerIdleShutdownMinutes"},
    "JOB_TABLE": {"Ref": "JobTable"},
    "OUTPUT_BUCKET": {"Ref": "OutputBucket"},
    "JOB_DEADLINE": {"Ref": "JobDeadlineSeconds"},
}

Progress = Callable[[str], None]
# Shown an update's change set (its lines), says whether to apply it.
Confirm = Callable[[list[str]], bool]
# Builds the artifacts into a directory, for the stack's parameters (the caller's; the template's
# defaults for the rest): template parameter (an S3 key parameter) -> file to upload.
ArtifactBuilder = Callable[[Path, Progress, Mapping[str, str]], dict[str, Path]]


class DeployError(Exception):
    """The stack can't be deployed or destroyed; the message says why and what to do."""


# ------------------------------------------------------------------------------------------ rendering
def render_template(template_path: Path = TEMPLATE_PATH, root: Path = REPO_ROOT) -> dict[str, Any]:
    """The deployable template: policies from iam/*.json and user data from the bootstrap script."""
    template = yaml.safe_load(template_path.read_text(encoding="utf-8"))
    for logical_id, resource in template["Resources"].items():
        metadata = resource.get("Metadata", {})
        if POLICY_METADATA in metadata:
            policy_path = root / metadata[POLICY_METADATA]
            resource["Properties"]["Policies"] = [
                {
                    "PolicyName": policy_path.stem,
                    "PolicyDocument": json.loads(policy_path.read_text(encoding="utf-8")),
                }
            ]
        if USER_DATA_METADATA in metadata:
            script = (root / metadata[USER_DATA_METADATA]).read_text(encoding="utf-8")
            resource["Properties"]["UserData"] = _user_data(script)
        if not resource.get("Properties") and resource["Type"] != "AWS::EC2::InternetGateway":
            raise DeployError(f"{logical_id}: rendered without properties")
    return template


def _user_data(script: str) -> dict[str, Any]:
    # Values are single-quoted shell words; stack parameters never contain a quote (checked by deploy).
    parts: list[Any] = ["#!/bin/bash\n"]
    for name, value in BOOTSTRAP_VARIABLES.items():
        parts += [f"{name}='", value, "'\n"]
    parts.append(script)
    return {"Fn::Base64": {"Fn::Join": ["", parts]}}


def template_body(template: Mapping[str, Any]) -> str:
    return json.dumps(template, separators=(",", ":"))


# ------------------------------------------------------------------------------------------ ssh key
def generate_ssh_key_pair() -> tuple[str, str]:
    """(private key in OpenSSH PEM format, public key line) for the worker's SSH access."""
    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, public.decode() + " sumpipe-pipeline"


def public_key_of(private_pem: str) -> str:
    key = serialization.load_ssh_private_key(private_pem.encode(), password=None)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return public.decode() + " sumpipe-pipeline"


def _existing_private_key(secrets: Any, secret_id: str) -> str | None:
    try:
        return secrets.get_secret_value(SecretId=secret_id)["SecretString"] or None
    except ClientError as error:
        if error.response["Error"]["Code"] in ("ResourceNotFoundException", "InvalidRequestException"):
            return None
        raise


# ------------------------------------------------------------------------------------------ stacks
def _described_stack(cloudformation: Any, stack_name: str) -> dict[str, Any] | None:
    """DescribeStacks' record of the stack, or None when there is no such stack."""
    try:
        stacks = cloudformation.describe_stacks(StackName=stack_name)["Stacks"]
    except ClientError as error:
        if "does not exist" in error.response["Error"]["Message"]:
            return None
        raise
    return stacks[0] if stacks else None


def stack_status(cloudformation: Any, stack_name: str) -> str | None:
    stack = _described_stack(cloudformation, stack_name)
    return stack["StackStatus"] if stack else None


def stack_outputs(cloudformation: Any, stack_name: str) -> dict[str, str]:
    stack = cloudformation.describe_stacks(StackName=stack_name)["Stacks"][0]
    return {output["OutputKey"]: output["OutputValue"] for output in stack.get("Outputs", [])}


def wait_for_stack(
    cloudformation: Any, stack_name: str, progress: Progress, poll_s: float = 5.0, timeout_s: float = 3600
) -> str:
    """Poll until the stack leaves its *_IN_PROGRESS state, reporting each new event; the final status."""
    seen: set[str] = set()
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            events = cloudformation.describe_stack_events(StackName=stack_name)["StackEvents"]
        except ClientError as error:
            if "does not exist" in error.response["Error"]["Message"]:
                return "DELETE_COMPLETE"
            raise
        for event in reversed(events):
            if event["EventId"] not in seen:
                seen.add(event["EventId"])
                reason = f" ({event['ResourceStatusReason']})" if event.get("ResourceStatusReason") else ""
                progress(f"{event['LogicalResourceId']:<32} {event['ResourceStatus']}{reason}")
        status = stack_status(cloudformation, stack_name) or "DELETE_COMPLETE"
        if not status.endswith("_IN_PROGRESS"):
            return status
        if time.monotonic() > deadline:
            raise DeployError(f"{stack_name}: still {status} after {timeout_s:.0f} s")
        time.sleep(poll_s)


def _template_argument(s3: Any, bucket: str, stack_name: str, template: Mapping[str, Any]) -> dict[str, str]:
    body = template_body(template)
    if len(body) <= INLINE_TEMPLATE_LIMIT:
        return {"TemplateBody": body}
    key = f"{stack_name}/template.json"
    s3.put_object(Bucket=bucket, Key=key, Body=body.encode())
    # CloudFormation reads the template itself, with the caller's credentials, from this URL form.
    return {"TemplateURL": f"https://{bucket}.s3.{s3.meta.region_name}.amazonaws.com/{key}"}


def stack_parameters(cloudformation: Any, stack_name: str) -> dict[str, str] | None:
    """The existing stack's parameters (key -> value as given), or None when there is no stack."""
    stack = _described_stack(cloudformation, stack_name)
    if stack is None:
        return None
    return {p["ParameterKey"]: p.get("ParameterValue", "") for p in stack.get("Parameters", [])}


def previous_values(template: Mapping[str, Any], previous: Mapping[str, str]) -> dict[str, str]:
    """The existing stack's parameter values an update keeps: those the template still declares. An
    SSM-typed parameter (ImageId) is kept only as the SSM parameter name AWS reports; moto reports the
    value it resolved to (ami-...), which it can't resolve again, so there the default applies."""
    declared = template.get("Parameters", {})
    return {
        key: value
        for key, value in previous.items()
        if key in declared
        and not (
            str(declared[key].get("Type", "")).startswith("AWS::SSM::Parameter::Value")
            and re.fullmatch(r"[a-z]+-[0-9a-f]{8,17}", value)
        )
    }


def update_parameters(
    parameters: Mapping[str, str], previous: Mapping[str, str], template: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """An update's Parameters: the given values, and UsePreviousValue for every other parameter the stack
    has and the template still declares (CloudFormation would otherwise reset it to its default: a
    redeploy without --param SubnetId=... would replace the network and the instances)."""
    given = [{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()]
    declared = template.get("Parameters", {})
    kept = [
        {"ParameterKey": k, "UsePreviousValue": True}
        for k, value in previous_values(template, previous).items()
        # A value equal to the default needs no carrying over (and moto, which keeps previous values
        # typed, would otherwise see it as changed and update resources whose condition is false).
        if k not in parameters and str(value) != str(declared[k].get("Default"))
    ]
    return given + kept


def change_set_preview(change_set: Mapping[str, Any]) -> list[str]:
    """Lines describing a change set: a summary, then each resource change, replacements and removals
    marked (DescribeChangeSet's Replacement: True = a new physical resource, Conditional = maybe)."""
    lines = []
    counts = {"Add": 0, "Modify": 0, "Remove": 0}
    replaced = 0
    for change in change_set.get("Changes", []):
        detail = change.get("ResourceChange", {})
        action = detail.get("Action", "?")
        counts[action] = counts.get(action, 0) + 1
        causes = sorted({
            d.get("Target", {}).get("Name") or d.get("CausingEntity") or ""
            for d in detail.get("Details", [])
        } - {""})
        because = f" (because of {', '.join(causes)})" if causes else ""
        mark = ""
        if action == "Remove":
            mark = "  <-- DELETED"
        elif detail.get("Replacement") == "True":
            replaced += 1
            mark = "  <-- REPLACED (a new resource; the old one is deleted)"
        elif detail.get("Replacement") == "Conditional":
            replaced += 1
            mark = "  <-- MAY BE REPLACED"
        symbol = {"Add": "+", "Modify": "~", "Remove": "-"}.get(action, "?")
        lines.append(
            f"  {symbol} {action:<8} {detail.get('LogicalResourceId')} ({detail.get('ResourceType')})"
            f"{because}{mark}"
        )
    summary = (
        f"change set: {counts['Add']} to add, {counts['Modify']} to modify ({replaced} replaced or maybe), "
        f"{counts['Remove']} to remove"
    )
    if not lines:
        lines.append("  (no resource changes listed; parameter or output changes only)")
    return [summary, *lines]


def apply_stack(
    cloudformation: Any,
    s3: Any,
    stack_name: str,
    template: Mapping[str, Any],
    parameters: Mapping[str, str],
    artifacts_bucket: str,
    progress: Progress,
    poll_s: float = 5.0,
    *,
    confirm: Confirm | None = None,
) -> dict[str, str]:
    """Create the stack, or update it through a change set: parameters not in `parameters` keep their
    values, the change set is shown, and `confirm` (when given) decides whether it runs; the outputs."""
    for key, value in parameters.items():
        if "'" in value:
            raise DeployError(f"parameter {key}: single quotes are not allowed")
    template_argument = _template_argument(s3, artifacts_bucket, stack_name, template)
    capabilities = ["CAPABILITY_IAM"]
    status = stack_status(cloudformation, stack_name)
    if status == "ROLLBACK_COMPLETE":
        raise DeployError(f"{stack_name}: a failed create left it in ROLLBACK_COMPLETE; destroy it first")
    if status is None:
        progress(f"creating stack {stack_name}")
        cloudformation.create_stack(
            StackName=stack_name, Capabilities=capabilities,
            Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
            OnFailure="ROLLBACK", Tags=[{"Key": "sumpipe:stack", "Value": stack_name}], **template_argument,
        )
        final = wait_for_stack(cloudformation, stack_name, progress, poll_s)
        if final != "CREATE_COMPLETE":
            raise DeployError(f"{stack_name}: create ended in {final}; see the events above")
        return stack_outputs(cloudformation, stack_name)

    previous = stack_parameters(cloudformation, stack_name) or {}
    change_set_name = f"sumpipe-{int(time.time())}"
    progress(f"updating stack {stack_name} (change set {change_set_name})")
    try:
        cloudformation.create_change_set(
            StackName=stack_name, ChangeSetName=change_set_name, ChangeSetType="UPDATE",
            Parameters=update_parameters(parameters, previous, template), Capabilities=capabilities,
            **template_argument,
        )
    except ClientError as error:
        if "No updates are to be performed" in error.response["Error"]["Message"]:
            progress("no changes")
            return stack_outputs(cloudformation, stack_name)
        raise
    change_set = _wait_for_change_set(cloudformation, stack_name, change_set_name, poll_s)
    if change_set["Status"] == "FAILED":
        if "didn't contain changes" in change_set.get("StatusReason", "") or "No updates" in change_set.get(
            "StatusReason", ""
        ):
            cloudformation.delete_change_set(StackName=stack_name, ChangeSetName=change_set_name)
            progress("no changes")
            return stack_outputs(cloudformation, stack_name)
        raise DeployError(f"{stack_name}: change set failed: {change_set.get('StatusReason')}")
    preview = change_set_preview(change_set)
    for line in preview:
        progress(line)
    if confirm is not None and not confirm(preview):
        cloudformation.delete_change_set(StackName=stack_name, ChangeSetName=change_set_name)
        raise DeployError(f"{stack_name}: not applied, so the stack is unchanged (change set deleted)")
    cloudformation.execute_change_set(StackName=stack_name, ChangeSetName=change_set_name)
    final = wait_for_stack(cloudformation, stack_name, progress, poll_s)
    if final != "UPDATE_COMPLETE":
        raise DeployError(f"{stack_name}: update ended in {final}; see the events above")
    return stack_outputs(cloudformation, stack_name)


def _wait_for_change_set(cloudformation: Any, stack_name: str, name: str, poll_s: float) -> dict[str, Any]:
    while True:
        change_set = cloudformation.describe_change_set(StackName=stack_name, ChangeSetName=name)
        if change_set["Status"] in ("CREATE_COMPLETE", "FAILED"):
            return change_set
        time.sleep(poll_s)


# ------------------------------------------------------------------------------------------ buckets
def artifacts_bucket_name(stack_name: str, account_id: str, region: str) -> str:
    return f"{stack_name}-{account_id}-{region}-artifacts"


def pin_bucket_owner(s3: Any, bucket: str, account_id: str) -> None:
    """Every request `s3` makes to `bucket` from now on carries ExpectedBucketOwner=`account_id`
    (each operation that takes it: all but CreateBucket), so S3 refuses it (403) when the bucket
    belongs to another account: the artifacts bucket's name is predictable, and whoever created it
    first would otherwise receive the code and serve the functions theirs. A botocore hook, so that
    no call, the transfer manager's multipart parts included, can leave it out."""

    def add_owner(params: dict[str, Any], model: Any, **_: Any) -> None:
        members = model.input_shape.members if model.input_shape is not None else {}
        if params.get("Bucket") == bucket and "ExpectedBucketOwner" in members:
            params.setdefault("ExpectedBucketOwner", account_id)

    s3.meta.events.register("provide-client-params.s3.*", add_owner, unique_id=f"sumpipe-owner-{bucket}")


def ensure_private_bucket(s3: Any, bucket: str, region: str) -> None:
    """Create `bucket` if missing: encrypted, public access blocked. With the bucket's owner pinned
    (pin_bucket_owner), a bucket of that name in another account is refused."""
    try:
        s3.head_bucket(Bucket=bucket)
        return
    except ClientError as error:
        code = error.response["Error"]["Code"]
        if code in ("403", "AccessDenied", "Forbidden"):
            raise DeployError(
                f"bucket {bucket} exists but not in this account (or this identity may not use it); "
                "the artifacts bucket must be the stack account's own"
            ) from error
        if code not in ("404", "NoSuchBucket", "NotFound"):
            raise
    location = {} if region == "us-east-1" else {"CreateBucketConfiguration": {"LocationConstraint": region}}
    try:
        s3.create_bucket(Bucket=bucket, **location)
    except ClientError as error:
        if error.response["Error"]["Code"] == "BucketAlreadyExists":
            raise DeployError(
                f"bucket {bucket} was created by another account; it can't hold this stack's code"
            ) from error
        raise
    s3.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True, "IgnorePublicAcls": True,
            "BlockPublicPolicy": True, "RestrictPublicBuckets": True,
        },
    )
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
        },
    )


def empty_bucket(s3: Any, bucket: str) -> int:
    """Delete every object version and delete marker; how many were deleted."""
    deleted = 0
    paginator = s3.get_paginator("list_object_versions")
    for page in paginator.paginate(Bucket=bucket):
        entries = [
            {"Key": item["Key"], "VersionId": item["VersionId"]}
            for item in [*page.get("Versions", []), *page.get("DeleteMarkers", [])]
        ]
        for start in range(0, len(entries), 1000):
            batch = entries[start : start + 1000]
            s3.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
            deleted += len(batch)
    return deleted


def bucket_is_empty(s3: Any, bucket: str) -> bool:
    page = s3.list_object_versions(Bucket=bucket, MaxKeys=1)
    return not page.get("Versions") and not page.get("DeleteMarkers")


def _bucket_exists(s3: Any, bucket: str) -> bool:
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError:
        return False
    return True


def _delete_leftover_secret(secrets: Any, secret_id: str, progress: Progress) -> None:
    """Delete the SSH key secret if it outlived the stack (an emulator created it outside the stack),
    without a recovery window, so the same stack name can be deployed again at once."""
    if not secret_id:
        return
    try:
        secrets.delete_secret(SecretId=secret_id, ForceDeleteWithoutRecovery=True)
    except secrets.exceptions.ResourceNotFoundException:
        return
    progress(f"deleted secret {secret_id}")


# ------------------------------------------------------------------------------------------ artifacts
PIPELINE_CODE_PARAMETERS = {"trigger": "TriggerCodeKey", "worker": "WorkerCodeKey", "stop_ec2": "StopCodeKey"}


def parameter_value(parameters: Mapping[str, str], name: str) -> str:
    """A template parameter as the stack will get it: the caller's value, else the template's default."""
    if name in parameters:
        return parameters[name]
    return str(yaml.safe_load(TEMPLATE_PATH.read_text(encoding="utf-8"))["Parameters"][name]["Default"])


def build_cloud_artifacts(
    out_dir: Path, progress: Progress, parameters: Mapping[str, str], *, api: bool = False
) -> dict[str, Path]:
    """Everything AWS needs: the pipeline zips and layer, the workers' wheel and the wheelhouse for their
    Python, and with `api` the realtime API's zip and layers. Each Lambda artifact is size-checked
    against Lambda's limits (PackageError when over)."""
    progress("building the pipeline functions and their dependency layer")
    pipeline = package.build_pipeline_artifacts(out_dir)
    files = {parameter: pipeline.functions[name].path for name, parameter in PIPELINE_CODE_PARAMETERS.items()}
    files["PipelineLayerKey"] = pipeline.layer.path
    files["WheelKey"] = package.build_wheel(out_dir / "wheel")
    if "WheelhouseKey" not in parameters:  # (a caller whose image is baked names none to download)
        worker_python = parameter_value(parameters, "WorkerPython")
        progress(f"downloading the workers' dependencies for Python {worker_python} (the wheelhouse)")
        files["WheelhouseKey"] = package.build_wheelhouse(out_dir / "wheelhouse", worker_python)
    if api:
        progress("building the realtime API function, its dependency layer and the GloVe layer")
        built = package.build_api_artifacts(out_dir / "api")
        files |= {"ApiCodeKey": built.function.path, "ApiLayerKey": built.layer.path,
                  "GloveLayerKey": built.glove.path}
    return files


def upload_artifact(s3: Any, bucket: str, stack_name: str, path: Path) -> str:
    """Upload under a content-addressed key (<stack>/<sha256 prefix>/<file name>): a changed artifact
    gets a new key, so CloudFormation updates what uses it, and the file name stays as built (a wheel's
    name must stay a valid wheel name for pip)."""
    with path.open("rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()[:16]
    key = f"{stack_name}/{digest}/{path.name}"
    s3.upload_file(str(path), bucket, key)
    return key


# ------------------------------------------------------------------------------------------ the API
API_AUTH_PARAMETERS = ("ApiAuth", "ApiJwtIssuer", "ApiJwtAudience")


def new_api_auth(
    template: Mapping[str, Any], previous: Mapping[str, str], parameters: Mapping[str, str]
) -> dict[str, str]:
    """The auth parameters an API added to an existing stack takes: the template's defaults for those
    not given, rather than the values the stack recorded while it had no API and they meant nothing.
    A stack created before ApiAuth defaulted to jwt recorded `iam`, which an update would otherwise
    keep (UsePreviousValue): its first API would take SigV4 only, and the review page no sign-in."""
    if previous.get("ApiCodeKey") or not parameters.get("ApiCodeKey"):
        return {}
    declared = template.get("Parameters", {})
    return {
        name: str(declared[name]["Default"])
        for name in API_AUTH_PARAMETERS
        if name in declared and name not in parameters
        and name in previous and previous[name] != str(declared[name]["Default"])
    }


def api_next_steps(outputs: Mapping[str, str], parameters: Mapping[str, str], stack_name: str) -> list[str]:
    """What to do with the deployed API, for the operator: the page and how reviewers get in."""
    url = outputs.get("ApiUrl", "")
    if not url:
        return []
    page = url.rstrip("/") + "/"
    stack = "" if stack_name == "sumpipe" else f" --stack {stack_name}"
    auth = parameters.get("ApiAuth", "")
    if auth == "jwt" and not parameters.get("ApiJwtIssuer"):
        return [
            f"review page: {page} (reviewers sign in with the stack's Cognito user pool)",
            f"add a reviewer: sumpipe reviewers add NAME{stack} [--email ADDRESS]",
        ]
    if auth == "jwt":
        return [
            f"review page: {page} (callers send bearer tokens from {parameters['ApiJwtIssuer']}, which "
            "holds the reviewers)"
        ]
    policy = outputs.get("ApiInvokePolicyArn", "the ApiInvokePolicyArn output")
    return [
        f"API: {url} (SigV4-signed requests only, ApiAuth=iam: attach {policy} to its callers; the review "
        f"page needs sign-in: sumpipe deploy --api{stack} --param ApiAuth=jwt)"
    ]


# ------------------------------------------------------------------------------------------ commands
def deploy(
    session: Any,
    stack_name: str,
    overrides: Mapping[str, str],
    progress: Progress,
    *,
    build: ArtifactBuilder = build_cloud_artifacts,
    poll_s: float = 5.0,
    confirm: Confirm | None = None,
    ebs_key_grants_ok: bool = False,
) -> dict[str, str]:
    """Check, build and upload the artifacts, create or update the stack, store the SSH key; the outputs.

    `overrides` are template parameters given by the caller (the user's --param, or the emulator's);
    on update, the stack's other parameters keep their values. The preflight checks
    (sumpipe/ops/preflight.py) run first: one that fails raises DeployError before anything is built
    or touched. `confirm` is asked, after the update's change set is shown, whether to apply it (None:
    apply without asking).
    """
    region = session.region_name
    account_id = session.client("sts").get_caller_identity()["Account"]
    s3 = session.client("s3")
    cloudformation = session.client("cloudformation")
    secrets = session.client("secretsmanager")

    bucket = artifacts_bucket_name(stack_name, account_id, region)
    template = render_template()
    previous = stack_parameters(cloudformation, stack_name)
    effective = preflight.effective_parameters(
        template, previous_values(template, previous or {}), {"ArtifactsBucket": bucket, **overrides}
    )
    try:
        found = preflight.run(
            session, template, effective, stack_name, account_id, progress,
            artifacts_bucket=bucket, updating=previous is not None, ebs_key_grants_ok=ebs_key_grants_ok,
        )
    except preflight.PreflightError as error:
        raise DeployError(f"preflight: {error}") from error

    pin_bucket_owner(s3, bucket, account_id)
    ensure_private_bucket(s3, bucket, region)
    parameters: dict[str, str] = {"ArtifactsBucket": bucket}
    with tempfile.TemporaryDirectory(prefix="sumpipe-package-") as tmp:
        build_parameters = {"WorkerPython": effective["WorkerPython"], **overrides}
        for parameter, path in build(Path(tmp), progress, build_parameters).items():
            parameters[parameter] = upload_artifact(s3, bucket, stack_name, path)

    secret_id = f"{stack_name}/worker-ssh-key"
    existing_key = _existing_private_key(secrets, secret_id)
    new_private_key = None
    if existing_key:
        parameters["SshPublicKey"] = public_key_of(existing_key)
    else:
        new_private_key, parameters["SshPublicKey"] = generate_ssh_key_pair()
    parameters.update(found)
    parameters.update(overrides)
    if previous is not None:
        defaults = new_api_auth(template, previous, parameters)
        if defaults:
            parameters.update(defaults)
            taken = ", ".join(f"{name}={value or '(empty)'}" for name, value in defaults.items())
            progress(f"the API is new to {stack_name}: it takes the template's {taken}, not the values the "
                     "stack recorded before it had an API (--param ApiAuth=iam for SigV4 instead)")

    outputs = apply_stack(
        cloudformation, s3, stack_name, template, parameters, bucket, progress, poll_s, confirm=confirm
    )
    if new_private_key:
        # The stack creates the secret empty; its value never appears in the template. An emulator
        # without AWS::SecretsManager::Secret (moto) leaves it to us.
        try:
            secrets.put_secret_value(SecretId=outputs["SshKeySecretId"], SecretString=new_private_key)
        except secrets.exceptions.ResourceNotFoundException:
            secrets.create_secret(Name=outputs["SshKeySecretId"], SecretString=new_private_key)
        progress("stored a new SSH key pair (private key in the secret, public key on the workers)")
    return outputs


def destroy(
    session: Any, stack_name: str, progress: Progress, *, force: bool = False, poll_s: float = 5.0
) -> None:
    """Delete the stack and its artifacts bucket. Non-empty data buckets make it refuse unless `force`."""
    s3 = session.client("s3")
    cloudformation = session.client("cloudformation")
    account_id = session.client("sts").get_caller_identity()["Account"]
    if stack_status(cloudformation, stack_name) is None:
        raise DeployError(f"{stack_name}: no such stack")
    outputs = stack_outputs(cloudformation, stack_name)
    data_buckets = [outputs[k] for k in ("InputBucketName", "OutputBucketName") if outputs.get(k)]
    non_empty = [b for b in data_buckets if _bucket_exists(s3, b) and not bucket_is_empty(s3, b)]
    if non_empty and not force:
        raise DeployError(
            f"{stack_name}: bucket(s) {', '.join(non_empty)} still hold data; "
            "download what you need, then run `sumpipe destroy --force` to delete it with the stack"
        )
    for bucket in non_empty:
        progress(f"emptying {bucket}: {empty_bucket(s3, bucket)} object versions deleted")
    progress(f"deleting stack {stack_name}")
    cloudformation.delete_stack(StackName=stack_name)
    final = wait_for_stack(cloudformation, stack_name, progress, poll_s)
    if final != "DELETE_COMPLETE":
        raise DeployError(f"{stack_name}: delete ended in {final}; see the events above")
    _delete_leftover_secret(session.client("secretsmanager"), outputs.get("SshKeySecretId", ""), progress)
    pool = outputs.get("ReviewerPoolId")
    if pool:
        # DeletionPolicy Retain: the reviewers' accounts outlive a destroy by mistake.
        progress(f"kept the reviewers' user pool {pool}; to delete it too: "
                 f"aws cognito-idp delete-user-pool --user-pool-id {pool}")
    artifacts = artifacts_bucket_name(stack_name, account_id, session.region_name)
    pin_bucket_owner(s3, artifacts, account_id)
    if _bucket_exists(s3, artifacts):
        empty_bucket(s3, artifacts)
        s3.delete_bucket(Bucket=artifacts)
        progress(f"deleted artifacts bucket {artifacts}")
