"""The local stack's AWS resources: `deploy/template.yaml` deployed into moto, plus what moto drops.

The same rendered template as `sumpipe deploy` is created through moto's CloudFormation, so local and
cloud resources can't drift. moto's CloudFormation skips resource types it doesn't implement and
ignores some properties; those are applied here by API, from the same template:

- the SSH key's AWS::SecretsManager::Secret is created by API (in `sumpipe.ops.deploy.deploy`) instead;
- AWS::SQS::QueuePolicy: put on the queues;
- the buckets' NotificationConfiguration, VersioningConfiguration and PublicAccessBlockConfiguration
  (moto ignores them on AWS::S3::Bucket): put on the buckets;
- the realtime API (HasApi; see `apply_api_resources`): moto's CloudFormation has no AWS::Cognito::*
  nor AWS::ApiGatewayV2::* (references to them resolve to nothing), so the reviewers' user pool and
  its client, the HTTP API with its integration, routes, JWT authorizer and stage are created by
  API, and the API function's environment is put again with what moto left unresolved (the issuer,
  the client id, the page's public URL: the local API front's, sumpipe/local/http_api.py, which
  serves the API from what is created here);
- the roles' inline policies: moto's CloudFormation stores them in a form its own IAM enforcement
  can't read (every check of such a role fails with an internal error), so each is put again by
  API, as moto's CloudFormation resolved it, in the form moto can evaluate (`moto_evaluable`).

Emulator parameters (`emulator_parameters`): the worker network (a VPC and subnet made by API, see
ensure_local_network), the workers' private IPs pinned (the local hosts live there), no public IP
(so the functions connect to the private IP), the SQS event source mappings created disabled (moto
would otherwise consume the queues itself and try to run the functions in Docker; the local runtime
polls them), no TLS-only bucket policies (EnforceTls=false: moto enforces aws:SecureTransport and
the emulator's endpoint is plain HTTP on loopback), and the machine's Python for the workers (the local
hosts run the machine's python3, as an instance runs its distribution's).
"""

from __future__ import annotations

import ast
import functools
import ipaddress
import json
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sumpipe.local import image
from sumpipe.local.hosts import DEFAULT_SUBNET, FIRST_HOST_OFFSET
from sumpipe.ops import deploy, package

# The template supports 1 to 3 worker instances.
MAX_WORKERS = 3
# The API function's reserved concurrency locally: the local front's pool of execution environments.
API_CONCURRENCY = 2


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
        if "Condition" in value and len(value) == 1:
            return refs[f"Condition:{value['Condition']}"]
        if "Fn::And" in value:
            return all(_resolve(item, refs) for item in value["Fn::And"])
        if "Fn::Or" in value:
            return any(_resolve(item, refs) for item in value["Fn::Or"])
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
        "AWS::URLSuffix": "amazonaws.com",
        "AWS::NoValue": None,
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


def apply_dropped_resources(
    session: Any, stack_name: str, template: Mapping[str, Any], *, api_url: str | None = None
) -> dict[str, str]:
    """Apply by API what moto's CloudFormation drops (see the module docstring); the outputs of the
    realtime API's resources (`apply_api_resources`; none without the API). `api_url` is where the
    local front will serve the API (the function's SUMPIPE_PUBLIC_URL)."""
    s3 = session.client("s3")
    sqs = session.client("sqs")
    refs = _stack_refs(session, stack_name, template)
    _put_role_policies_again(session.client("iam"), session.client("cloudformation"), stack_name)
    for logical_id, resource in template["Resources"].items():
        properties = resource.get("Properties", {})
        kind = resource["Type"]
        if kind == "AWS::SQS::QueuePolicy":
            policy = json.dumps(_resolve(properties["PolicyDocument"], refs))
            for queue in properties["Queues"]:
                sqs.set_queue_attributes(QueueUrl=_resolve(queue, refs), Attributes={"Policy": policy})
        elif kind == "AWS::S3::Bucket":
            _apply_bucket_properties(s3, refs[logical_id], properties, refs)
    if not refs.get("Condition:HasApi"):
        return {}
    return apply_api_resources(session, template, refs, api_url=api_url)


def _enabled(resource: Mapping[str, Any], refs: Mapping[str, Any]) -> bool:
    condition = resource.get("Condition")
    return condition is None or bool(refs[f"Condition:{condition}"])


def _defined(values: Mapping[str, Any]) -> dict[str, Any]:
    """The properties that have a value (an `AWS::NoValue` resolves to None)."""
    return {name: value for name, value in values.items() if value is not None}


def apply_api_resources(
    session: Any, template: Mapping[str, Any], refs: dict[str, Any], *, api_url: str | None = None
) -> dict[str, str]:
    """The realtime API's resources moto's CloudFormation can't make, made by API from the template's
    properties, each found by its name first (a redeploy updates, never duplicates); then the API
    function's environment with what they resolve. The outputs the template would give them:
    HttpApiId, ReviewerPoolId and ReviewerPoolClientId (when the stack makes the pool),
    ApiFunctionName, and ApiUrl (`api_url`, else the URL API Gateway would give)."""
    resources = template["Resources"]
    region = refs["AWS::Region"]
    outputs: dict[str, str] = {}
    if _enabled(resources["ReviewerPool"], refs):
        pool_id = _ensure_user_pool(session.client("cognito-idp"), resources, refs)
        refs["ReviewerPool"] = pool_id
        refs["ReviewerPool.ProviderURL"] = f"https://cognito-idp.{region}.amazonaws.com/{pool_id}"
        refs["ReviewerPool.Arn"] = f"arn:aws:cognito-idp:{region}:{refs['AWS::AccountId']}:userpool/{pool_id}"
        refs["ReviewerPoolClient"] = _ensure_user_pool_client(session.client("cognito-idp"), resources, refs)
        outputs |= {"ReviewerPoolId": pool_id, "ReviewerPoolClientId": refs["ReviewerPoolClient"]}
    lambda_ = session.client("lambda")
    function = lambda_.get_function_configuration(FunctionName=refs["ApiFunction"])
    refs["ApiFunction.Arn"] = function["FunctionArn"]
    _ensure_http_api(session.client("apigatewayv2"), resources, refs)
    outputs["HttpApiId"] = refs["HttpApi"]
    public_url = api_url or _resolve(template["Outputs"]["ApiUrl"]["Value"], refs)
    outputs |= {"ApiFunctionName": function["FunctionName"], "ApiUrl": public_url}
    # The template's variables, resolved now that the API's resources exist; the page's own
    # address is the local front's.
    variables = _defined(_resolve(resources["ApiFunction"]["Properties"]["Environment"]["Variables"], refs))
    variables["SUMPIPE_PUBLIC_URL"] = public_url.rstrip("/") + "/"
    lambda_.update_function_configuration(
        FunctionName=function["FunctionName"],
        Environment={"Variables": {k: str(v) for k, v in variables.items()}},
    )
    return outputs


def _ensure_user_pool(cognito: Any, resources: Mapping[str, Any], refs: Mapping[str, Any]) -> str:
    properties = _resolve(resources["ReviewerPool"]["Properties"], refs)
    name = properties["UserPoolName"]
    for page in cognito.get_paginator("list_user_pools").paginate(MaxResults=60):
        for pool in page["UserPools"]:
            if pool["Name"] == name:
                return str(pool["Id"])
    created = cognito.create_user_pool(
        PoolName=name,
        **_defined({key: properties.get(key) for key in (
            "AdminCreateUserConfig", "UsernameConfiguration", "Policies", "AccountRecoverySetting",
            "UserPoolAddOns",
        )}),
    )  # fmt: skip
    return str(created["UserPool"]["Id"])


def _ensure_user_pool_client(cognito: Any, resources: Mapping[str, Any], refs: Mapping[str, Any]) -> str:
    properties = _resolve(resources["ReviewerPoolClient"]["Properties"], refs)
    pool_id, name = properties["UserPoolId"], properties["ClientName"]
    settings = _defined({key: properties.get(key) for key in (
        "ExplicitAuthFlows", "PreventUserExistenceErrors", "EnableTokenRevocation", "AccessTokenValidity",
        "IdTokenValidity", "RefreshTokenValidity", "TokenValidityUnits",
    )})  # fmt: skip
    for page in cognito.get_paginator("list_user_pool_clients").paginate(UserPoolId=pool_id, MaxResults=60):
        for client in page["UserPoolClients"]:
            if client["ClientName"] == name:
                cognito.update_user_pool_client(
                    UserPoolId=pool_id, ClientId=client["ClientId"], ClientName=name, **settings
                )
                return str(client["ClientId"])
    created = cognito.create_user_pool_client(
        UserPoolId=pool_id, ClientName=name, GenerateSecret=bool(properties.get("GenerateSecret")), **settings
    )
    return str(created["UserPoolClient"]["ClientId"])


def _ensure_http_api(apigateway: Any, resources: Mapping[str, Any], refs: dict[str, Any]) -> None:
    """The HttpApi, its integration, JWT authorizer, routes and stage (refs gets their ids)."""
    api = _resolve(resources["HttpApi"]["Properties"], refs)
    existing = [item for item in apigateway.get_apis()["Items"] if item["Name"] == api["Name"]]
    api_id = existing[0]["ApiId"] if existing else apigateway.create_api(**api)["ApiId"]
    refs["HttpApi"] = api_id
    integration = _resolve(resources["HttpApiIntegration"]["Properties"], refs)
    found = [
        item for item in apigateway.get_integrations(ApiId=api_id)["Items"]
        if item.get("IntegrationUri") == integration["IntegrationUri"]
    ]  # fmt: skip
    refs["HttpApiIntegration"] = (
        found[0]["IntegrationId"] if found else apigateway.create_integration(**integration)["IntegrationId"]
    )
    routes = {item["RouteKey"]: item for item in apigateway.get_routes(ApiId=api_id)["Items"]}
    if _enabled(resources["HttpApiJwtAuthorizer"], refs):
        authorizer = _resolve(resources["HttpApiJwtAuthorizer"]["Properties"], refs)
        # moto has no GetAuthorizers: an existing authorizer is found through the route using it.
        authorizer_id = routes.get("$default", {}).get("AuthorizerId")
        if authorizer_id:
            apigateway.update_authorizer(AuthorizerId=authorizer_id, **authorizer)
        else:
            authorizer_id = apigateway.create_authorizer(**authorizer)["AuthorizerId"]
        refs["HttpApiJwtAuthorizer"] = authorizer_id
    for resource in resources.values():
        if resource["Type"] != "AWS::ApiGatewayV2::Route" or not _enabled(resource, refs):
            continue
        route = _defined(_resolve(resource["Properties"], refs))
        if route["RouteKey"] in routes:
            route_id = routes[route["RouteKey"]]["RouteId"]
            apigateway.update_route(RouteId=route_id, **route)
        else:
            apigateway.create_route(**route)
    stage = _defined(_resolve(resources["HttpApiStage"]["Properties"], refs))
    stage.pop("DefaultRouteSettings", None)  # throttling: not emulated by the local front
    if not any(
        item["StageName"] == stage["StageName"] for item in apigateway.get_stages(ApiId=api_id)["Items"]
    ):
        apigateway.create_stage(**stage)


def _put_role_policies_again(iam: Any, cloudformation: Any, stack_name: str) -> None:
    paginator = cloudformation.get_paginator("list_stack_resources")
    for page in paginator.paginate(StackName=stack_name):
        for resource in page["StackResourceSummaries"]:
            if resource["ResourceType"] != "AWS::IAM::Role":
                continue
            role = resource["PhysicalResourceId"]
            for name in iam.list_role_policies(RoleName=role)["PolicyNames"]:
                document = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
                if isinstance(document, str):  # moto answers with the stored dict's Python repr
                    document = ast.literal_eval(document)
                evaluable = json.dumps(moto_evaluable(document))
                iam.put_role_policy(RoleName=role, PolicyName=name, PolicyDocument=evaluable)


def moto_evaluable(document: Mapping[str, Any]) -> dict[str, Any]:
    """A policy as the emulator can enforce it: every action as written, S3 resources as written.

    moto matches a statement's Resource against the request's resource only for S3; for any
    other service it matches against "*", so a statement scoped to a table or queue ARN would
    never allow anything. And it evaluates a Condition against the request's parameters, not
    against the resource's tags, so a tag-scoped Allow would deny. Those two parts (non-S3
    resources, conditions) are widened here and checked statically instead, against the real
    documents, by tests/functional/test_iam_policies.py.

    moto also checks a DynamoDB transaction as one action, dynamodb:TransactWriteItems, which AWS
    doesn't have: AWS checks each part's own action (our ledger's transactions are made of
    updates). So a statement allowing dynamodb:UpdateItem allows the transaction here.
    """
    statements = document["Statement"]
    widened = []
    for statement in statements if isinstance(statements, list) else [statements]:
        statement = {k: v for k, v in statement.items() if k != "Condition"}
        actions = statement.get("Action", [])
        actions = [actions] if isinstance(actions, str) else list(actions)
        if "dynamodb:UpdateItem" in actions:
            actions.append("dynamodb:TransactWriteItems")
        statement["Action"] = actions
        if not all(action.startswith("s3:") for action in actions):
            statement["Resource"] = "*"
        widened.append(statement)
    return {**document, "Statement": widened}


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
                **(
                    {"Filter": {"Key": {"FilterRules": entry["Filter"]["S3Key"]["Rules"]}}}
                    if "Filter" in entry
                    else {}
                ),
            }
            for entry in properties["NotificationConfiguration"]["QueueConfigurations"]
        ]
        s3.put_bucket_notification_configuration(
            Bucket=bucket, NotificationConfiguration={"QueueConfigurations": queues}
        )


def worker_ips(network_cidr: str, workers: int) -> list[str]:
    """The private IPs of the workers in the emulator's network: where its hosts live
    (sumpipe.local.hosts.HostNetwork.host_ip)."""
    if not 1 <= workers <= MAX_WORKERS:
        raise deploy.DeployError(f"the template supports 1 to {MAX_WORKERS} workers, got {workers}")
    network = ipaddress.IPv4Network(network_cidr)
    return [str(network.network_address + FIRST_HOST_OFFSET + i) for i in range(workers)]


def ensure_local_network(ec2: Any, network_cidr: str = DEFAULT_SUBNET) -> tuple[str, str]:
    """(vpc id, subnet id) of an emulator worker network: a VPC of `network_cidr` and, in it, the /24
    holding the hosts (<network>.1.0/24), created once per CIDR, so stacks on different networks can
    share one emulator.

    Made here rather than by the template: moto leaves a terminated instance's network interface
    "in-use", so it can never delete a VPC that held an instance and `sumpipe destroy` would fail.
    """
    network = ipaddress.IPv4Network(network_cidr)
    first_host = network.network_address + FIRST_HOST_OFFSET
    subnet_cidr = str(ipaddress.IPv4Network(f"{first_host}/24", strict=False))
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "cidr", "Values": [str(network)]}])["Vpcs"]
    vpc_id = vpcs[0]["VpcId"] if vpcs else ec2.create_vpc(CidrBlock=str(network))["Vpc"]["VpcId"]
    subnets = ec2.describe_subnets(
        Filters=[{"Name": "vpc-id", "Values": [vpc_id]}, {"Name": "cidr-block", "Values": [subnet_cidr]}]
    )["Subnets"]
    if subnets:
        return vpc_id, subnets[0]["SubnetId"]
    return vpc_id, ec2.create_subnet(VpcId=vpc_id, CidrBlock=subnet_cidr)["Subnet"]["SubnetId"]


def emulator_parameters(ec2: Any, network_cidr: str = DEFAULT_SUBNET, workers: int = 1) -> dict[str, str]:
    """The template parameters a deployment into the emulator needs (see the module docstring), whether
    the local stack deploys or a user runs `sumpipe deploy --param ...` against the emulator."""
    ips = worker_ips(network_cidr, workers)
    vpc_id, subnet_id = ensure_local_network(ec2, network_cidr)
    return {
        "VpcId": vpc_id,
        "SubnetId": subnet_id,
        "WorkerCount": str(workers),
        "WorkerPrivateIps": ",".join(ips),
        "AssignPublicIp": "false",
        "EventSourcesEnabled": "false",
        "EnforceTls": "false",
        "WorkerPython": image.machine_python(),
    }


def build_local_artifacts(
    out_dir: Path, progress: deploy.Progress, parameters: Mapping[str, str], *, api: bool = False
) -> dict[str, Path]:
    """The pipeline functions' zips and a placeholder layer (the local runtime runs the handlers
    in-process, so a Linux dependency layer, pip for another platform, ~30 s, would buy nothing), the
    project wheel the hosts install at first boot, and, unless the caller names one (a baked image
    needs none), the wheelhouse for this machine's Python that the image is baked from."""
    files = {
        parameter: package.build_function_zip(function, out_dir).path
        for function, parameter in deploy.PIPELINE_CODE_PARAMETERS.items()
    }
    layer = out_dir / "pipeline-deps.zip"
    with zipfile.ZipFile(layer, "w") as archive:
        archive.writestr("python/README", "local stack: dependencies come from the project venv\n")
    files["PipelineLayerKey"] = layer
    if api:
        # The API function's own zip (the local front runs it from this zip); its layers are
        # placeholders, as the pipeline's: the venv stands in for the dependency layer, and the
        # vectors' local cache directory for the GloVe layer (sumpipe/local/http_api.py).
        files["ApiCodeKey"] = package.build_function_zip(package.API_FUNCTION, out_dir).path
        for parameter, name in (("ApiLayerKey", "api-deps.zip"), ("GloveLayerKey", "glove-layer.zip")):
            placeholder = out_dir / name
            with zipfile.ZipFile(placeholder, "w") as archive:
                archive.writestr("python/README", "local stack: provided by the project venv\n")
            files[parameter] = placeholder
    files["WheelKey"] = package.build_wheel(out_dir / "wheel")
    if "WheelhouseKey" not in parameters:
        progress("downloading the workers' dependencies (the wheelhouse the image is baked from)")
        files["WheelhouseKey"] = package.build_wheelhouse(
            out_dir / "wheelhouse", parameters["WorkerPython"], platforms=()
        )
    return files


def deploy_local_stack(
    session: Any,
    stack_name: str = "sumpipe",
    *,
    network_cidr: str = DEFAULT_SUBNET,
    workers: int = 1,
    overrides: Mapping[str, str] | None = None,
    progress: deploy.Progress = lambda _line: None,
    api_url: str | None = None,
) -> dict[str, str]:
    """Deploy the template into moto (`session` is a boto3 Session pointed at it) through the same
    `sumpipe.ops.deploy.deploy` as AWS, then apply what moto dropped; the stack outputs. Idempotent: an
    existing stack is updated and keeps its SSH key. `overrides` are more template parameters.

    With `api_url` (where the local front will serve it) the realtime API is deployed too, with its
    JWT authorizer trusting the stack's own reviewer pool (ApiAuth=jwt, no ApiJwtIssuer), and the
    outputs hold what moto could not resolve (ApiUrl = `api_url`, ReviewerPoolId, ...)."""
    api = (
        {"ApiAuth": "jwt", "ApiJwtIssuer": "", "ApiReservedConcurrency": str(API_CONCURRENCY)}
        if api_url
        else {}
    )
    parameters = {
        **emulator_parameters(session.client("ec2"), network_cidr, workers), **api, **(overrides or {})
    }  # fmt: skip
    baked = image.image_path(parameters["WorkerPython"])
    if image.is_baked(baked):
        # The cached image is the AMI: its bake step is skipped, so no wheelhouse is needed.
        parameters["WheelhouseKey"] = f"baked-image/{baked.name}"
    build = functools.partial(build_local_artifacts, api=api_url is not None)
    outputs = deploy.deploy(session, stack_name, parameters, progress, build=build, poll_s=0.2)
    api_outputs = apply_dropped_resources(session, stack_name, deploy.render_template(), api_url=api_url)
    return {**outputs, **api_outputs}
