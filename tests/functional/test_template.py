"""The rendered template is valid CloudFormation (cfn-lint) and wires what the pipeline relies on."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from sumpipe import keys
from sumpipe.ops import deploy

ROOT = Path(__file__).resolve().parents[2]
# Reviewed cfn-lint warnings, each with the reason it is accepted. Errors always fail.
IGNORED_WARNINGS = {
    # VpcId and SubnetId default to "" (= the stack creates the network) and are only used when given.
    ("W1030", "{'Ref': 'VpcId'}"): "empty default means 'create the VPC'",
    ("W1030", "{'Ref': 'SubnetId'}"): "empty default means 'create the subnet'",
    # The API's layer keys default to "" (= no API); the layers exist only under the HasApi condition.
    ("W1030", "{'Ref': 'ApiLayerKey'}"): "used only when the API is deployed",
    ("W1030", "{'Ref': 'GloveLayerKey'}"): "used only when the API is deployed",
}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return deploy.render_template()


def test_cfn_lint_has_no_errors(template: dict[str, Any], tmp_path: Path) -> None:
    rendered = tmp_path / "template.json"
    rendered.write_text(json.dumps(template, indent=1))
    result = subprocess.run(
        # The venv's cfn-lint (a dev dependency), whatever PATH says.
        [str(Path(sys.executable).with_name("cfn-lint")), "--format", "parseable", "--", str(rendered)],
        capture_output=True,
        text=True,
        check=False,
    )
    # parseable format: path:line:col:end_line:end_col:RULE:message
    findings = [line.split(":", 6)[5:] for line in result.stdout.splitlines() if line.strip()]
    errors = [f for f in findings if f[0].startswith("E")]
    reviewed = [f for f in findings if any(f[0] == r and f[1].startswith(ref) for r, ref in IGNORED_WARNINGS)]
    unreviewed = [f for f in findings if f not in errors and f not in reviewed]
    assert result.returncode == 0 or findings, f"cfn-lint did not run: {result.stderr}"
    assert not errors, "\n".join(map(str, errors))
    assert not unreviewed, "review these cfn-lint warnings:\n" + "\n".join(map(str, unreviewed))


def test_every_role_gets_its_iam_document(template: dict[str, Any]) -> None:
    roles = {k: r for k, r in template["Resources"].items() if r["Type"] == "AWS::IAM::Role"}
    used = set()
    for logical_id, role in roles.items():
        (policy,) = role["Properties"]["Policies"]
        document = json.loads((ROOT / "iam" / f"{policy['PolicyName']}.json").read_text())
        assert policy["PolicyDocument"] == document, logical_id
        used.add(policy["PolicyName"])
    assert used == {p.stem for p in (ROOT / "iam").glob("*.json")}


def test_user_data_is_the_bootstrap_script(template: dict[str, Any]) -> None:
    script = (ROOT / "deploy" / "bootstrap.sh").read_text()
    parts = template["Resources"]["WorkerInstance1"]["Properties"]["UserData"]["Fn::Base64"]["Fn::Join"][1]
    assert parts[0] == "#!/bin/bash\n" and parts[-1] == script


def test_output_writes_never_reach_the_trigger(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    output_queues = {
        c["Queue"]["Fn::GetAtt"][0]
        for c in resources["OutputBucket"]["Properties"]["NotificationConfiguration"]["QueueConfigurations"]
    }
    assert output_queues == {"OutputEventsQueue"}
    assert resources["TriggerEventSource"]["Properties"]["EventSourceArn"] == {
        "Fn::GetAtt": ["InputEventsQueue", "Arn"]
    }
    assert resources["StopEventSource"]["Properties"]["EventSourceArn"] == {
        "Fn::GetAtt": ["OutputEventsQueue", "Arn"]
    }


def test_the_output_bucket_notifies_exactly_the_files_that_finish_a_job(template: dict[str, Any]) -> None:
    configurations = template["Resources"]["OutputBucket"]["Properties"]["NotificationConfiguration"]
    suffixes = []
    for configuration in configurations["QueueConfigurations"]:
        rules = {rule["Name"]: rule["Value"] for rule in configuration["Filter"]["S3Key"]["Rules"]}
        assert rules["prefix"] == keys.JOBS_PREFIX
        suffixes.append(rules["suffix"])
    assert sorted(suffixes) == sorted(keys.FINISHING_FILES)


def test_feedback_exports_expire_and_finish_no_job(template: dict[str, Any]) -> None:
    """An export holds every decision and is written for one download of minutes: none is kept."""
    assert not keys.EXPORTS_PREFIX.startswith(keys.JOBS_PREFIX)  # so no job event comes of one
    rules = template["Resources"]["OutputBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    assert rules == [
        {
            "Id": "ExpireFeedbackExports",
            "Status": "Enabled",
            "Prefix": keys.EXPORTS_PREFIX,
            "ExpirationInDays": 1,
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
        }
    ]


def test_queue_visibility_outlasts_the_consumer(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    for mapping in (r for r in resources.values() if r["Type"] == "AWS::Lambda::EventSourceMapping"):
        queue = resources[mapping["Properties"]["EventSourceArn"]["Fn::GetAtt"][0]]["Properties"]
        function = resources[mapping["Properties"]["FunctionName"]["Ref"]]["Properties"]
        assert queue["VisibilityTimeout"] >= 6 * function["Timeout"]
        assert 3 <= queue["RedrivePolicy"]["maxReceiveCount"] <= 5
        assert mapping["Properties"]["FunctionResponseTypes"] == ["ReportBatchItemFailures"]


def test_lambda_environment_is_exactly_the_settings(template: dict[str, Any]) -> None:
    from sumpipe.settings import API_SETTINGS, INSTANCE_SETTINGS, Settings

    pipeline = set(Settings.model_fields) - INSTANCE_SETTINGS - API_SETTINGS
    expected = {f"SUMPIPE_{name.upper()}" for name in pipeline}
    for name in ("TriggerFunction", "WorkerFunction", "StopFunction"):
        variables = set(template["Resources"][name]["Properties"]["Environment"]["Variables"])
        assert variables - {"POWERTOOLS_SERVICE_NAME"} == expected, name
    # The API keeps the page's decisions in the stack's table, not in a file of its own.
    api = template["Resources"]["ApiFunction"]["Properties"]["Environment"]["Variables"]
    assert api["SUMPIPE_FEEDBACK_TABLE"] == {"Ref": "FeedbackTable"} and "SUMPIPE_FEEDBACK_DB" not in api


def test_workers_are_reached_at_the_address_they_have(template: dict[str, Any]) -> None:
    """Public IP -> the Lambdas (outside the VPC) connect to it; none -> the private IP."""
    public_ip = template["Conditions"]["PublicIp"]
    assert public_ip == {"Fn::Equals": [{"Ref": "AssignPublicIp"}, "true"]}
    subnet = template["Resources"]["Subnet"]["Properties"]
    assert subnet["MapPublicIpOnLaunch"] == {"Fn::If": ["PublicIp", True, False]}
    for name in ("TriggerFunction", "WorkerFunction", "StopFunction"):
        variables = template["Resources"][name]["Properties"]["Environment"]["Variables"]
        assert variables["SUMPIPE_WORKER_ADDRESS"] == {"Fn::If": ["PublicIp", "public", "private"]}, name


def test_ssh_is_the_only_way_in(template: dict[str, Any]) -> None:
    (ingress,) = template["Resources"]["WorkerSecurityGroup"]["Properties"]["SecurityGroupIngress"]
    assert (ingress["IpProtocol"], ingress["FromPort"], ingress["ToPort"]) == ("tcp", 22, 22)
    script = (ROOT / "deploy" / "bootstrap.sh").read_text()
    assert 'restrict,command="%s/job-runner"' in script


def test_tls_only_bucket_policies_can_be_turned_off_only_by_parameter(template: dict[str, Any]) -> None:
    resources = template["Resources"]
    assert template["Parameters"]["EnforceTls"]["Default"] == "true"
    for name in ("InputBucketPolicy", "OutputBucketPolicy"):
        assert resources[name]["Condition"] == "EnforceTlsOn"
        (statement,) = resources[name]["Properties"]["PolicyDocument"]["Statement"]
        assert statement["Effect"] == "Deny"
        assert statement["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}


def test_the_api_app_owns_routing(template: dict[str, Any]) -> None:
    """Every request goes to the app ($default, and the page's two open GET routes, to the same
    integration): the app's own 404/405, /docs and /openapi.json work through API Gateway."""
    routes = [r for r in template["Resources"].values() if r["Type"] == "AWS::ApiGatewayV2::Route"]
    keys = sorted(r["Properties"]["RouteKey"] for r in routes)
    assert keys == ["$default", "GET /", "GET /static/{proxy+}"]
    assert {json.dumps(r["Properties"]["Target"]) for r in routes} == {
        json.dumps({"Fn::Sub": "integrations/${HttpApiIntegration}"})
    }
    (stage,) = [r for r in template["Resources"].values() if r["Type"] == "AWS::ApiGatewayV2::Stage"]
    assert stage["Properties"]["StageName"] == "$default" and stage["Properties"]["AutoDeploy"] is True
    api = template["Resources"]["ApiFunction"]["Properties"]
    assert api["Environment"]["Variables"]["SUMPIPE_GLOVE"] == "/opt/glove"


def test_the_api_is_never_open_but_for_the_pages_files(template: dict[str, Any]) -> None:
    """No route without authorization but GET / and GET /static/{proxy+}, the page and its files,
    which carry no data: everything else ($default) takes a JWT (the default) or SigV4."""
    routes = {
        r["Properties"]["RouteKey"]: r["Properties"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::ApiGatewayV2::Route"
    }
    open_routes = {key for key, route in routes.items() if route["AuthorizationType"] == "NONE"}
    assert open_routes == {"GET /", "GET /static/{proxy+}"}
    assert all("AuthorizerId" not in routes[key] for key in open_routes)
    route = routes["$default"]
    assert route["AuthorizationType"] == {"Fn::If": ["ApiJwt", "JWT", "AWS_IAM"]}
    authorizer = {"Ref": "HttpApiJwtAuthorizer"}
    assert route["AuthorizerId"] == {"Fn::If": ["ApiJwt", authorizer, {"Ref": "AWS::NoValue"}]}
    (statement,) = template["Resources"]["ApiInvokePolicy"]["Properties"]["PolicyDocument"]["Statement"]
    assert statement["Action"] == "execute-api:Invoke" and "${HttpApi}/*" in statement["Resource"]["Fn::Sub"]


def test_the_api_takes_the_stacks_own_reviewers_by_default(template: dict[str, Any]) -> None:
    """ApiAuth defaults to jwt, and with no ApiJwtIssuer the stack's own user pool issues the tokens:
    the authorizer's issuer and audience are the pool's and its page client's, and the function is
    told the same (the page signs reviewers in with them)."""
    parameters, conditions, resources = template["Parameters"], template["Conditions"], template["Resources"]
    assert parameters["ApiAuth"]["Default"] == "jwt"
    assert parameters["ApiAuth"]["AllowedValues"] == ["iam", "jwt"]
    assert parameters["ApiJwtIssuer"]["Default"] == parameters["ApiJwtAudience"]["Default"] == ""
    assert {"Fn::Equals": [{"Ref": "ApiAuth"}, "jwt"]} in conditions["ApiJwt"]["Fn::And"]
    assert conditions["CreateReviewerPool"] == {
        "Fn::And": [{"Condition": "ApiJwt"}, {"Fn::Equals": [{"Ref": "ApiJwtIssuer"}, ""]}]
    }
    pool_issuer = {"Fn::Sub": "https://cognito-idp.${AWS::Region}.${AWS::URLSuffix}/${ReviewerPool}"}
    pool_client = {"Ref": "ReviewerPoolClient"}
    authorizer = resources["HttpApiJwtAuthorizer"]
    assert authorizer["Condition"] == "ApiJwt"
    jwt = authorizer["Properties"]["JwtConfiguration"]
    assert jwt["Issuer"] == {"Fn::If": ["CreateReviewerPool", pool_issuer, {"Ref": "ApiJwtIssuer"}]}
    assert jwt["Audience"] == [{"Fn::If": ["CreateReviewerPool", pool_client, {"Ref": "ApiJwtAudience"}]}]
    variables = resources["ApiFunction"]["Properties"]["Environment"]["Variables"]
    assert variables["SUMPIPE_AUTH_ISSUER"] == {
        "Fn::If": ["CreateReviewerPool", pool_issuer, {"Fn::If": ["ApiJwt", {"Ref": "ApiJwtIssuer"}, ""]}]
    }
    assert variables["SUMPIPE_AUTH_CLIENT_ID"] == {
        "Fn::If": ["CreateReviewerPool", pool_client, {"Fn::If": ["ApiJwt", {"Ref": "ApiJwtAudience"}, ""]}]
    }
    for name in ("ReviewerPool", "ReviewerPoolClient"):
        assert resources[name]["Condition"] == "CreateReviewerPool", name
    for name in ("ReviewerPoolId", "ReviewerPoolClientId"):
        assert template["Outputs"][name]["Condition"] == "CreateReviewerPool", name


def test_another_issuer_needs_its_audience(template: dict[str, Any]) -> None:
    """An issuer given (Auth0, another pool...) replaces the stack's pool, and the template's rule
    refuses it without the audience its tokens carry: API Gateway would otherwise accept any."""
    rule = template["Rules"]["IssuerNeedsItsAudience"]
    assert rule["RuleCondition"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "ApiJwtIssuer"}, ""]}]}
    [assertion] = rule["Assertions"]
    assert assertion["Assert"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "ApiJwtAudience"}, ""]}]}
    assert "JwtNeedsItsIssuer" not in template["Rules"]


def test_reviewers_are_made_by_an_administrator_and_the_page_keeps_no_secret(
    template: dict[str, Any],
) -> None:
    """No sign-up: only `sumpipe reviewers add` (AdminCreateUser) makes a reviewer. The page's client
    has no secret (a browser can't keep one), signs in with a password only, and its tokens last an
    hour."""
    pool = template["Resources"]["ReviewerPool"]["Properties"]
    assert pool["AdminCreateUserConfig"] == {"AllowAdminCreateUserOnly": True}
    assert pool["UserPoolName"] == {"Fn::Sub": "${AWS::StackName}-reviewers"}
    policy = pool["Policies"]["PasswordPolicy"]
    assert policy["MinimumLength"] >= 12
    assert policy["RequireLowercase"] and policy["RequireUppercase"] and policy["RequireNumbers"]
    client = template["Resources"]["ReviewerPoolClient"]["Properties"]
    assert client["UserPoolId"] == {"Ref": "ReviewerPool"}
    assert client["GenerateSecret"] is False
    assert set(client["ExplicitAuthFlows"]) == {"ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"}
    assert "AllowedOAuthFlows" not in client and "CallbackURLs" not in client
    assert (client["AccessTokenValidity"], client["TokenValidityUnits"]["AccessToken"]) == (1, "hours")
    assert (client["IdTokenValidity"], client["TokenValidityUnits"]["IdToken"]) == (1, "hours")


def test_every_function_has_reserved_concurrency_so_none_starves_another(template: dict[str, Any]) -> None:
    functions = {
        name: resource["Properties"]
        for name, resource in template["Resources"].items()
        if resource["Type"] == "AWS::Lambda::Function"
    }
    assert set(functions) == {"TriggerFunction", "WorkerFunction", "StopFunction", "ApiFunction"}
    for name, properties in functions.items():
        parameter = "ApiReservedConcurrency" if name == "ApiFunction" else "PipelineReservedConcurrency"
        condition = "ReserveApi" if name == "ApiFunction" else "ReservePipeline"
        assert properties["ReservedConcurrentExecutions"] == {
            "Fn::If": [condition, {"Ref": parameter}, {"Ref": "AWS::NoValue"}]
        }, name
    # Zero means "no reservation", never "throttle everything".
    assert template["Conditions"]["ReservePipeline"] == {
        "Fn::Not": [{"Fn::Equals": [{"Ref": "PipelineReservedConcurrency"}, 0]}]
    }


@pytest.mark.parametrize("script", sorted((ROOT / "deploy").glob("*.sh")), ids=lambda p: p.name)
def test_deploy_scripts_are_shellcheck_clean(script: Path) -> None:
    shellcheck = shutil.which("shellcheck")
    if shellcheck is None:
        pytest.skip("shellcheck not installed (scripts/setup installs it)")
    result = subprocess.run(
        [shellcheck, "-s", "bash", str(script)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout


def test_dead_letters_take_five_receives_and_each_raises_an_alarm(template: dict[str, Any]) -> None:
    """Rendered template: every event-source queue dead-letters only after 5 receives (AWS's advice:
    throttled deliveries count as receives), and every dead-letter queue has an alarm on any visible
    message, notifying the optional AlarmTopicArn."""
    resources = template["Resources"]
    dead_letter_queues = set()
    for mapping in (r for r in resources.values() if r["Type"] == "AWS::Lambda::EventSourceMapping"):
        queue = resources[mapping["Properties"]["EventSourceArn"]["Fn::GetAtt"][0]]["Properties"]
        assert queue["RedrivePolicy"]["maxReceiveCount"] >= 5
        dead_letter_queues.add(queue["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0])
    assert "InputEventsDeadLetterQueue" in dead_letter_queues  # the trigger's
    alarmed = {}
    for resource in resources.values():
        if resource["Type"] == "AWS::CloudWatch::Alarm":
            properties = resource["Properties"]
            [dimension] = properties["Dimensions"]
            alarmed[dimension["Value"]["Fn::GetAtt"][0]] = properties
    assert set(alarmed) == dead_letter_queues
    topic = {"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]}
    for properties in alarmed.values():
        metric = (properties["Namespace"], properties["MetricName"])
        assert metric == ("AWS/SQS", "ApproximateNumberOfMessagesVisible")
        assert (properties["ComparisonOperator"], properties["Threshold"]) == ("GreaterThanThreshold", 0)
        assert properties["AlarmActions"] == topic
    assert template["Parameters"]["AlarmTopicArn"]["Default"] == ""


def test_no_hard_coded_partition(template: dict[str, Any]) -> None:
    """Rendered template: every ARN is built with ${AWS::Partition} (aws-cn, aws-us-gov work too)."""
    assert "arn:aws:" not in json.dumps(template)
    for name in ("InputEventsQueuePolicy", "OutputEventsQueuePolicy"):
        [statement] = template["Resources"][name]["Properties"]["PolicyDocument"]["Statement"]
        arn = statement["Condition"]["ArnEquals"]["aws:SourceArn"]["Fn::Join"][1]
        assert arn[:3] == ["arn:", {"Ref": "AWS::Partition"}, ":s3:::"]


def test_the_instance_pins_the_artifacts_buckets_owner(template: dict[str, Any]) -> None:
    """Rendered template: the user data hands the bootstrap the stack's account as the artifacts
    bucket's expected owner, and its fetch sends it (S3 refuses the request for another's bucket)."""
    user_data = json.dumps(template["Resources"]["WorkerInstance1"]["Properties"]["UserData"])
    assert '"ARTIFACTS_BUCKET_OWNER=\'", {"Ref": "AWS::AccountId"}' in user_data
    assert "x-amz-expected-bucket-owner" in user_data


def test_no_root_device_is_assumed_outside_the_template() -> None:
    """The root device's name depends on the image (/dev/xvda on Amazon Linux, /dev/sda1 on Ubuntu):
    nothing but the template's block device mapping may name one."""
    sources = [ROOT / "deploy" / "bootstrap.sh", *ROOT.glob("sumpipe/**/*.py"), *ROOT.glob("lambdas/**/*.py")]
    for path in sources:
        text = path.read_text(encoding="utf-8")
        assert "/dev/xvd" not in text and "/dev/sda" not in text and "/dev/nvme" not in text, path
