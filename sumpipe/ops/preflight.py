"""Checks run by `sumpipe deploy` before it creates or updates the stack (before it builds or uploads
anything): each one that fails raises PreflightError with one line saying what to change.

Plain functions of boto3 clients, the rendered template and the stack's parameters as the stack will
get them (`effective_parameters`: the template's defaults, then the existing stack's values, then the
caller's). What the template will do is read from the rendered template itself (its bucket names, its
reserved concurrency), evaluated with those parameters, never restated here.

An endpoint that isn't AWS (moto, for the local stack) may not implement a call a check needs: that
check is then skipped with a progress line (see `run`); on AWS every failure counts.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Mapping
from typing import Any

from botocore.exceptions import ClientError
from botocore.parsers import ResponseParserError

Progress = Callable[[str], None]

# AWS refuses a reservation that leaves fewer than this many executions unreserved.
MIN_UNRESERVED_CONCURRENCY = 10
BUCKET_NAME_MAX = 63
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# The default EBS key when nobody changed it: the AWS managed key, usable by any principal of the account.
AWS_MANAGED_EBS_KEY = "alias/aws/ebs"


class PreflightError(Exception):
    """A check failed; the message is one line saying what to change."""


class Unsupported(Exception):
    """The endpoint doesn't implement a call a check needs (an emulator)."""


# ------------------------------------------------------------------------------------------ evaluating
def effective_parameters(
    template: Mapping[str, Any], previous: Mapping[str, str], given: Mapping[str, str]
) -> dict[str, str]:
    """The parameters the stack will get: the template's defaults, the existing stack's values (an
    update keeps them, see deploy.apply_stack), then the caller's."""
    values = {
        name: str(spec["Default"]) for name, spec in template["Parameters"].items() if "Default" in spec
    }
    values.update({k: v for k, v in previous.items() if k in template["Parameters"]})
    values.update(given)
    return values


class _Evaluator:
    """Enough of CloudFormation's intrinsic functions to read plain values out of the template."""

    def __init__(self, template: Mapping[str, Any], parameters: Mapping[str, str], pseudo: Mapping[str, str]):
        self.template = template
        self.names = {**parameters, **pseudo}
        self._conditions: dict[str, bool] = {}

    def condition(self, name: str) -> bool:
        if name not in self._conditions:
            self._conditions[name] = bool(self.value(self.template["Conditions"][name]))
        return self._conditions[name]

    def value(self, node: Any) -> Any:
        if isinstance(node, list):
            return [self.value(item) for item in node]
        if not isinstance(node, dict) or len(node) != 1:
            return node
        ((function, argument),) = node.items()
        if function == "Ref":
            if argument == "AWS::NoValue":
                return None
            return self.names[argument]
        if function == "Condition":
            return self.condition(argument)
        if function == "Fn::If":
            name, then, otherwise = argument
            return self.value(then if self.condition(name) else otherwise)
        if function == "Fn::Equals":
            left, right = (str(self.value(item)) for item in argument)
            return left == right
        if function == "Fn::Not":
            return not self.value(argument[0])
        if function == "Fn::And":
            return all(self.value(item) for item in argument)
        if function == "Fn::Or":
            return any(self.value(item) for item in argument)
        if function == "Fn::Sub" and isinstance(argument, str):
            return re.sub(r"\$\{([^}!]+)\}", lambda m: str(self.names[m.group(1)]), argument)
        return node  # anything else (GetAtt, ...) isn't known before the stack exists

    def resources(self, resource_type: str) -> dict[str, dict[str, Any]]:
        """The resources of this type the stack will have (their Condition holds)."""
        return {
            name: resource
            for name, resource in self.template["Resources"].items()
            if resource["Type"] == resource_type
            and ("Condition" not in resource or self.condition(resource["Condition"]))
        }


def evaluator(
    template: Mapping[str, Any], parameters: Mapping[str, str], stack_name: str, account_id: str, region: str
) -> _Evaluator:
    pseudo = {"AWS::StackName": stack_name, "AWS::AccountId": account_id, "AWS::Region": region}
    return _Evaluator(template, parameters, pseudo)


def reserved_concurrency(template_values: _Evaluator) -> dict[str, int]:
    """Function name -> the concurrent executions the template reserves for it (when it reserves any)."""
    reserved = {}
    for resource in template_values.resources("AWS::Lambda::Function").values():
        properties = resource["Properties"]
        value = template_values.value(properties.get("ReservedConcurrentExecutions"))
        if value is not None and int(value) > 0:
            reserved[str(template_values.value(properties["FunctionName"]))] = int(value)
    return reserved


def bucket_names(template_values: _Evaluator) -> list[str]:
    """The names of the buckets the template creates, as it derives them."""
    names = []
    for resource in template_values.resources("AWS::S3::Bucket").values():
        name = template_values.value(resource.get("Properties", {}).get("BucketName"))
        if isinstance(name, str):
            names.append(name)
    return names


# ------------------------------------------------------------------------------------------ checks
def _unsupported(error: Exception) -> bool:
    if isinstance(error, ResponseParserError):
        return True
    if isinstance(error, ClientError):
        code = error.response.get("Error", {}).get("Code", "")
        status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        return code in ("404", "NotImplemented", "InvalidAction") or status in (404, 501)
    return False


def _call(method: Callable[..., Any], **kwargs: Any) -> Any:
    try:
        return method(**kwargs)
    except (ClientError, ResponseParserError) as error:
        if _unsupported(error):
            raise Unsupported(method.__name__) from error
        raise


def check_concurrency(lambda_client: Any, reserved: Mapping[str, int], *, updating: bool = False) -> None:
    """The account keeps at least 10 unreserved concurrent executions after the stack's reservations
    (`reserved`, from `reserved_concurrency`). On update the stack's functions already hold theirs."""
    need = sum(reserved.values())
    if not need:
        return
    limit = _call(lambda_client.get_account_settings)["AccountLimit"]
    unreserved = int(limit["UnreservedConcurrentExecutions"])
    held = 0
    if updating:
        for function in reserved:
            try:
                held += int(
                    lambda_client.get_function_concurrency(FunctionName=function).get(
                        "ReservedConcurrentExecutions", 0
                    )
                )
            except ClientError as error:
                if error.response["Error"]["Code"] != "ResourceNotFoundException":
                    raise
    available = unreserved + held
    if available - need < MIN_UNRESERVED_CONCURRENCY:
        raise PreflightError(
            f"the stack reserves {need} concurrent Lambda executions "
            f"({', '.join(f'{k} {v}' for k, v in reserved.items())}) but the account's quota is "
            f"{limit['ConcurrentExecutions']} with {available} unreservable and AWS keeps "
            f"{MIN_UNRESERVED_CONCURRENCY} unreserved: lower them with --param PipelineReservedConcurrency=N "
            "(per pipeline function) and --param ApiReservedConcurrency=N (0 = no reservation), "
            "or ask AWS for a higher Lambda concurrency quota"
        )


def bucket_name_problem(name: str) -> str | None:
    """Why S3 would refuse this bucket name, or None."""
    if len(name) > BUCKET_NAME_MAX:
        return f"is {len(name)} characters (S3 allows {BUCKET_NAME_MAX})"
    if len(name) < 3:
        return "is shorter than 3 characters"
    if not _BUCKET_NAME.match(name):
        return "may hold only lowercase letters, digits, '.' and '-' (a letter or digit first and last)"
    if ".." in name or ".-" in name or "-." in name:
        return "has adjacent '.'/'-' characters"
    try:
        ipaddress.IPv4Address(name)
        return "is formatted as an IP address"
    except ValueError:
        pass
    if name.startswith(("xn--", "sthree-")) or name.endswith(("-s3alias", "--ol-s3", "--x-s3")):
        return "uses a prefix or suffix S3 reserves"
    return None


def check_bucket_names(names: list[str], stack_name: str) -> None:
    """Every bucket name the deploy will create is one S3 accepts."""
    for name in names:
        problem = bucket_name_problem(name)
        if problem:
            longest = max(len(n) for n in names)
            fix = (
                f"use a stack name at most {len(stack_name) - (longest - BUCKET_NAME_MAX)} characters long"
                if longest > BUCKET_NAME_MAX and len(stack_name) > longest - BUCKET_NAME_MAX
                else "use a lowercase stack name of letters, digits and '-'"
            )
            raise PreflightError(
                f"bucket name {name!r} {problem}: {fix}, or name the data buckets with "
                "--param InputBucketName=... --param OutputBucketName=..."
            )


def check_subnet_public_ip(ec2: Any, parameters: Mapping[str, str]) -> None:
    """Workers reached at their public IP (AssignPublicIp=true) need a subnet that gives them one; the
    stack's own subnet does, a user-supplied one may not."""
    subnet_id = parameters.get("SubnetId", "")
    if not subnet_id or parameters.get("AssignPublicIp", "true") != "true":
        return
    try:
        (subnet,) = ec2.describe_subnets(SubnetIds=[subnet_id])["Subnets"]
    except ClientError as error:
        if error.response["Error"]["Code"] in ("InvalidSubnetID.NotFound", "InvalidSubnetID.Malformed"):
            raise PreflightError(
                f"subnet {subnet_id} does not exist in this region: check --param SubnetId"
            ) from error
        raise
    if not subnet.get("MapPublicIpOnLaunch"):
        raise PreflightError(
            f"subnet {subnet_id} gives instances no public IP (MapPublicIpOnLaunch is false), so no job "
            f"could reach a worker: enable it (aws ec2 modify-subnet-attribute --subnet-id {subnet_id} "
            "--map-public-ip-on-launch), or pass --param AssignPublicIp=false if the Lambdas can reach the "
            "workers' private IPs"
        )


def check_ebs_default_key(
    ec2: Any, kms: Any, account_id: str, region: str, *, grants_ok: bool = False
) -> None:
    """The workers' root volumes are encrypted (Encrypted: true, no KmsKeyId), so with the account's
    default EBS key. A customer managed one makes StartInstances need kms:CreateGrant on it, which the
    stack's roles don't have: the key policy must allow it (then `grants_ok`)."""
    key_id = _call(ec2.get_ebs_default_kms_key_id).get("KmsKeyId") or AWS_MANAGED_EBS_KEY
    if key_id.endswith(AWS_MANAGED_EBS_KEY) or grants_ok:
        return
    try:
        manager = kms.describe_key(KeyId=key_id)["KeyMetadata"].get("KeyManager")
    except ClientError:
        manager = None  # can't tell: treat it as the customer managed key it most likely is
    if manager == "AWS":
        return
    raise PreflightError(
        f"the account's default EBS encryption key {key_id} is customer managed, and starting the encrypted "
        "workers needs kms:CreateGrant on it: add to its key policy a statement allowing kms:CreateGrant, "
        f"kms:Decrypt and kms:GenerateDataKeyWithoutPlaintext to principals of account {account_id} with "
        f'kms:ViaService ec2.{region}.amazonaws.com (see docs/deploy.md, "Preflight checks") and pass '
        "--ebs-key-grants-ok, or reset the default (aws ec2 reset-ebs-default-kms-key-id)"
    )


def image_root_device(ssm: Any, ec2: Any, image_parameter: str) -> str:
    """The root device name of the AMI the ImageId parameter names (an SSM parameter, or an AMI id)."""
    image_id = image_parameter
    if not image_parameter.startswith("ami-"):
        try:
            image_id = ssm.get_parameter(Name=image_parameter)["Parameter"]["Value"]
        except ClientError as error:
            if error.response["Error"]["Code"] == "ParameterNotFound":
                raise PreflightError(
                    f"SSM parameter {image_parameter} does not exist in this region: check --param ImageId"
                ) from error
            raise
    try:
        images = ec2.describe_images(ImageIds=[image_id])["Images"]
    except ClientError as error:
        if not error.response["Error"]["Code"].startswith("InvalidAMIID"):
            raise
        images = []
    if not images or not images[0].get("RootDeviceName"):
        raise PreflightError(
            f"image {image_id} (ImageId {image_parameter}) is not available in this region: "
            "pass --param ImageId=<an SSM parameter naming an AMI here>"
        )
    return str(images[0]["RootDeviceName"])


# ------------------------------------------------------------------------------------------ all
def run(
    session: Any,
    template: Mapping[str, Any],
    parameters: Mapping[str, str],
    stack_name: str,
    account_id: str,
    progress: Progress,
    *,
    artifacts_bucket: str,
    updating: bool,
    ebs_key_grants_ok: bool = False,
) -> dict[str, str]:
    """Every check, in order; the parameters the checks found (RootDeviceName). PreflightError on the
    first that fails."""
    region = session.region_name
    ec2, ssm = session.client("ec2"), session.client("ssm")
    values = evaluator(template, parameters, stack_name, account_id, region)
    check_bucket_names([artifacts_bucket, *bucket_names(values)], stack_name)
    check_subnet_public_ip(ec2, parameters)
    found = {"RootDeviceName": image_root_device(ssm, ec2, parameters["ImageId"])}
    emulated = not _is_aws(ec2)
    for name, check in (
        (
            "Lambda concurrency",
            lambda: check_concurrency(
                session.client("lambda"), reserved_concurrency(values), updating=updating
            ),
        ),
        (
            "EBS default key",
            lambda: check_ebs_default_key(
                ec2, session.client("kms"), account_id, region, grants_ok=ebs_key_grants_ok
            ),
        ),
    ):
        try:
            check()
        except Unsupported as error:
            if not emulated:
                raise PreflightError(f"{name}: the endpoint does not implement {error}") from error
            progress(f"preflight: skipped the {name} check (the emulator does not implement {error})")
    return found


def _is_aws(client: Any) -> bool:
    host = client.meta.endpoint_url.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
    return host.endswith((".amazonaws.com", ".amazonaws.com.cn", ".api.aws"))
