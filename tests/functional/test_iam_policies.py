"""Every IAM policy in iam/ obeys the project's least-privilege rules, so a change can't widen them
silently. The documents are read as the template uses them (CloudFormation intrinsics included)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sumpipe import keys

IAM_DIR = Path(__file__).resolve().parents[2] / "iam"
POLICY_FILES = sorted(IAM_DIR.glob("*.json"))
# Actions AWS can't scope to a resource (no resource-level permissions): the only ones allowed on "*".
UNSCOPABLE_ACTIONS = {"ec2:DescribeInstances", "ec2:DescribeInstanceStatus"}
TAG_CONDITION = "aws:ResourceTag/sumpipe:role"
STACK_CONDITION = "aws:ResourceTag/aws:cloudformation:stack-name"
EXPORTS = "arn:${AWS::Partition}:s3:::${OutputBucket}/" + keys.EXPORTS_PREFIX


def statements(path: Path) -> list[dict[str, Any]]:
    return json.loads(path.read_text())["Statement"]


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def resource_texts(statement: dict[str, Any]) -> list[str]:
    """Each resource as text: a literal ARN or the template of its Fn::Sub."""
    texts = []
    for resource in as_list(statement["Resource"]):
        if isinstance(resource, str):
            texts.append(resource)
        elif "Fn::Sub" in resource:
            texts.append(resource["Fn::Sub"])
        elif "Fn::GetAtt" in resource:
            texts.append("GetAtt:" + ".".join(resource["Fn::GetAtt"]))
        else:
            raise AssertionError(f"unexpected resource form {resource}")
    return texts


def test_there_is_one_policy_per_role() -> None:
    assert {p.stem for p in POLICY_FILES} == {"trigger", "worker", "stop_ec2", "api", "instance"}


@pytest.mark.parametrize("path", POLICY_FILES, ids=lambda p: p.stem)
def test_policy_is_least_privilege(path: Path) -> None:
    for statement in statements(path):
        sid = statement.get("Sid", "?")
        assert statement["Effect"] == "Allow", f"{path.name}/{sid}: only Allow statements are expected"
        assert "NotAction" not in statement and "NotResource" not in statement, f"{path.name}/{sid}"
        actions = as_list(statement["Action"])
        for action in actions:
            assert "*" not in action, f"{path.name}/{sid}: wildcard action {action}"
        resources = resource_texts(statement)
        if "*" in resources:
            assert set(actions) <= UNSCOPABLE_ACTIONS, f"{path.name}/{sid}: Resource * for {actions}"
        for action in actions:
            service = action.split(":")[0]
            for resource in resources:
                if resource == "*":
                    continue
                if action == "s3:ListBucket":
                    # Only so that a missing input or job file reads as missing (404, not 403:
                    # S3 answers 403 for a missing key to a caller that may not list the bucket).
                    # On the input bucket, whose every key the role may read anyway; on the output
                    # bucket only under jobs/.
                    assert actions == ["s3:ListBucket"], f"{path.name}/{sid}"
                    if resource == "arn:${AWS::Partition}:s3:::${InputBucket}":
                        assert path.stem in ("trigger", "instance"), f"{path.name}/{sid}"
                    else:
                        assert resource == "arn:${AWS::Partition}:s3:::${OutputBucket}", f"{path.name}/{sid}"
                        assert statement.get("Condition") == {
                            "StringLike": {"s3:prefix": [keys.JOBS_PREFIX + "*"]}
                        }, f"{path.name}/{sid}: listing the output bucket outside jobs/"
                elif service == "s3":
                    assert resource.startswith(
                        (
                            "arn:${AWS::Partition}:s3:::${InputBucket}/",
                            "arn:${AWS::Partition}:s3:::${OutputBucket}/jobs/",
                            "arn:${AWS::Partition}:s3:::${ArtifactsBucket}/${AWS::StackName}/",
                            EXPORTS,
                        )
                    ), f"{path.name}/{sid}: S3 outside the pipeline's buckets and prefixes: {resource}"
                    if resource.startswith(EXPORTS):
                        # The review page's feedback exports: the API writes each and signs its
                        # download (sumpipe/api/feedback_download.py); no other role touches them.
                        assert (path.stem, resource) == ("api", EXPORTS + "*"), f"{path.name}/{sid}"
                        assert action in ("s3:PutObject", "s3:GetObject"), f"{path.name}/{sid}: {action}"
                elif service == "secretsmanager":
                    assert resource.endswith(":secret:${AWS::StackName}/worker-ssh-key-??????"), resource
                elif service == "ssm":
                    assert resource.endswith(":parameter/${AWS::StackName}/worker/known-hosts"), resource
                elif service == "dynamodb":
                    # The job table, or (Query only) its sparse index of active jobs; the API's
                    # feedback table, only to add decisions, export them and count each
                    # reviewer's (UpdateItem, only of the quota counters' keys).
                    index = "${JobTable.Arn}/index/active-by-deadline"
                    table = resource == "GetAtt:JobTable.Arn"
                    feedback = resource == "GetAtt:FeedbackTable.Arn" and path.stem == "api"
                    assert table or (resource, action) == (index, "dynamodb:Query") or feedback, resource
                    if feedback:
                        assert action in ("dynamodb:PutItem", "dynamodb:Scan", "dynamodb:UpdateItem"), action
                    if feedback and action == "dynamodb:UpdateItem":
                        assert statement["Condition"] == {
                            "ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["rate#*"]}
                        }, sid
                elif service == "sqs":
                    assert resource.startswith("GetAtt:") and resource.endswith("Queue.Arn"), resource
                elif service == "logs":
                    assert resource.startswith("GetAtt:") and resource.endswith("LogGroup.Arn"), resource


@pytest.mark.parametrize("path", POLICY_FILES, ids=lambda p: p.stem)
def test_start_and_stop_need_the_worker_tag(path: Path) -> None:
    for statement in statements(path):
        actions = set(as_list(statement["Action"]))
        if actions & {"ec2:StartInstances", "ec2:StopInstances", "ec2:TerminateInstances"}:
            assert actions <= {"ec2:StartInstances", "ec2:StopInstances"}, statement["Sid"]
            condition = statement["Condition"]["StringEquals"]
            assert condition[TAG_CONDITION] == {"Fn::Sub": "${WorkerTagValue}"}
            # ...of this stack: two stacks in one account never start or stop each other's workers.
            assert condition[STACK_CONDITION] == {"Fn::Sub": "${AWS::StackName}"}
            instances = "arn:${AWS::Partition}:ec2:${AWS::Region}:${AWS::AccountId}:instance/*"
            assert resource_texts(statement) == [instances]


def test_each_role_has_only_the_powers_its_part_needs() -> None:
    def actions(name: str) -> set[str]:
        return {a for s in statements(IAM_DIR / f"{name}.json") for a in as_list(s["Action"])}

    # The trigger and the worker start an instance that isn't running; every function that can
    # finish a job (each of them fails jobs) stops the instance that job left idle.
    for name in ("trigger", "worker"):
        assert {"ec2:StartInstances", "ec2:StopInstances"} <= actions(name)
    assert "ec2:StopInstances" in actions("stop_ec2") and "ec2:StartInstances" not in actions("stop_ec2")
    assert "secretsmanager:GetSecretValue" in actions("worker")
    assert not any(a.startswith("secretsmanager:") for a in actions("trigger") | actions("stop_ec2"))
    assert not any(a.startswith(("secretsmanager:", "ec2:Start", "ec2:Stop")) for a in actions("instance"))
    # The API: its logs, the feedback table, and what the page's batch section signs or reads.
    assert actions("api") == {
        "logs:CreateLogStream", "logs:PutLogEvents", "dynamodb:PutItem", "dynamodb:Scan", "dynamodb:GetItem",
        "dynamodb:UpdateItem",
        "s3:PutObject", "s3:GetObject", "s3:ListBucket", "logs:FilterLogEvents",
    }  # fmt: skip
    # Listing (for honest 404s) only where a missing key is an answer: the input for the trigger
    # and the runner, the job files for the API; never for the worker or stop_ec2.
    assert "s3:ListBucket" in actions("trigger") & actions("instance")
    assert "s3:ListBucket" not in actions("worker") | actions("stop_ec2")


def test_the_rules_catch_a_widened_policy(tmp_path: Path) -> None:
    """The checks above must fail on a widened document (guards against a test that can't fail)."""
    widened = json.loads((IAM_DIR / "worker.json").read_text())
    widened["Statement"].append({"Sid": "Oops", "Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"})
    path = tmp_path / "worker.json"
    path.write_text(json.dumps(widened))
    with pytest.raises(AssertionError, match="Resource"):
        test_policy_is_least_privilege(path)


@pytest.mark.parametrize(
    ("role", "action", "resource"),
    [
        ("worker", "s3:GetObject", EXPORTS + "*"),  # another role reading everyone's decisions
        ("api", "s3:DeleteObject", EXPORTS + "*"),
        ("api", "s3:PutObject", "arn:${AWS::Partition}:s3:::${OutputBucket}/*"),
        ("worker", "s3:ListBucket", "arn:${AWS::Partition}:s3:::${InputBucket}"),
        ("stop_ec2", "s3:ListBucket", "arn:${AWS::Partition}:s3:::${OutputBucket}"),  # unconditioned
    ],
)
def test_the_exports_prefix_is_the_apis_alone(tmp_path: Path, role: str, action: str, resource: str) -> None:
    widened = json.loads((IAM_DIR / f"{role}.json").read_text())
    widened["Statement"].append(
        {"Sid": "Oops", "Effect": "Allow", "Action": action, "Resource": {"Fn::Sub": resource}}
    )
    path = tmp_path / f"{role}.json"
    path.write_text(json.dumps(widened))
    with pytest.raises(AssertionError, match="Oops"):
        test_policy_is_least_privilege(path)


@pytest.mark.parametrize("path", POLICY_FILES, ids=lambda p: p.stem)
def test_the_emulators_form_keeps_every_action_and_every_s3_resource(path: Path) -> None:
    """The local stack enforces `moto_evaluable(policy)`: nothing may be lost but what moto can't
    evaluate (non-S3 resources, conditions), which the tests above check on the real document."""
    from sumpipe.local.resources import moto_evaluable

    document = json.loads(path.read_text())
    evaluable = moto_evaluable(document)
    assert len(evaluable["Statement"]) == len(document["Statement"])
    for real, emulated in zip(document["Statement"], evaluable["Statement"], strict=True):
        assert set(as_list(real["Action"])) <= set(emulated["Action"])
        assert set(emulated["Action"]) - set(as_list(real["Action"])) <= {"dynamodb:TransactWriteItems"}
        assert "Condition" not in emulated
        if all(a.startswith("s3:") for a in as_list(real["Action"])):
            assert emulated["Resource"] == real["Resource"]
        else:
            assert emulated["Resource"] == "*"
