"""The bootstrap stack on moto: planned as a change set, executed, read back, found up to date, deleted
(refused while an endpoint of the project serves); and `mlops bootstrap` end to end through the CLI.

moto's CloudFormation creates the roles, policies, bucket and repositories, and skips what it does not
emulate (OIDC provider, secret, bucket policy, budget) with a UserWarning each: ignored here, since the
template's content is checked in tests/unit/test_bootstrap_template.py.
"""

from __future__ import annotations

import io
import json

import boto3
import pytest
from moto import mock_aws

from infra.aws import stack
from infra.aws.plan import DryRunExecutor, LiveExecutor
from infra.cli import main
from infra.errors import UsageError
from tests.functional.aws.conftest import REGION, ROLE

pytestmark = pytest.mark.filterwarnings("ignore:Tried to parse AWS:UserWarning")

PROJECT = "cv-mlops"
STACK = "cv-mlops-bootstrap"
TEMPLATE = stack.TEMPLATE_PATH.read_text(encoding="utf-8")
PARAMETERS = stack.render_parameters(
    stack.BootstrapParameters(project=PROJECT, github_owner="octo-org", github_repo="cv-mlops")
)
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/cv-mlops-serve:abc"


@pytest.fixture(autouse=True)
def _moto_outputs_after_change_sets(monkeypatch):
    """moto 5.2.5 builds a stack's outputs when the stack is created, and a stack made by CreateChangeSet
    starts from an empty template (moto/cloudformation/models.py, `create_change_set`): after
    ExecuteChangeSet it answers no Outputs at all. CloudFormation answers the template's outputs: make
    moto rebuild them when a change set is applied."""
    from moto.cloudformation.models import ChangeSet
    from moto.cloudformation.parsing import OutputMap

    original = ChangeSet.apply

    def apply(self):
        original(self)
        self.stack.template_dict = self.template_dict
        self.stack.output_map = OutputMap(self.stack.resource_map, self.template_dict, self.stack.stack_id)

    monkeypatch.setattr(ChangeSet, "apply", apply)


def create(aws, events=None):
    planned = stack.plan(aws, STACK, TEMPLATE, PARAMETERS, LiveExecutor(aws.client))
    status = stack.execute(
        aws, planned, LiveExecutor(aws.client), on_event=(events if events is not None else []).append
    )
    return planned, status


def serve(aws, name):
    sm = aws.client("sagemaker")
    sm.create_model(ModelName=f"{name}-model", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": IMAGE})
    sm.create_endpoint_config(
        EndpointConfigName=f"{name}-config",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": f"{name}-model",
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
            }
        ],
    )
    sm.create_endpoint(EndpointName=name, EndpointConfigName=f"{name}-config")


def test_a_first_plan_creates_a_change_set_that_adds_every_resource(aws):
    live = LiveExecutor(aws.client)
    planned = stack.plan(aws, STACK, TEMPLATE, PARAMETERS, live)
    assert planned.change_set_type == "CREATE"
    (request,) = [c for c in live.executed if c.operation == "CreateChangeSet"]
    assert request.params["Capabilities"] == ["CAPABILITY_NAMED_IAM"]
    assert request.params["ChangeSetType"] == "CREATE"
    assert not planned.up_to_date and not planned.dry_run
    added = {(c.action, c.logical_id, c.resource_type) for c in planned.changes}
    assert ("Add", "GitHubRole", "AWS::IAM::Role") in added
    assert ("Add", "Bucket", "AWS::S3::Bucket") in added
    assert ("Add", "TrainRepository", "AWS::ECR::Repository") in added
    assert {c.action for c in planned.changes} == {"Add"}
    cf = aws.client("cloudformation")
    # Planning changes nothing: the stack only awaits review.
    assert cf.describe_stacks(StackName=STACK)["Stacks"][0]["StackStatus"] == "REVIEW_IN_PROGRESS"
    assert aws.client("ecr").describe_repositories()["repositories"] == []


def test_execute_creates_the_stack_and_its_outputs_are_read_back(aws):
    events: list[str] = []
    _, status = create(aws, events)
    assert status == "CREATE_COMPLETE"
    assert any("CREATE_COMPLETE" in line for line in events)
    out = stack.outputs(aws, STACK)
    assert out["GitHubRoleArn"] == "arn:aws:iam::123456789012:role/cv-mlops-github-actions"
    assert out["SageMakerRoleArn"] == "arn:aws:iam::123456789012:role/cv-mlops-sagemaker-execution"
    assert out["BucketName"] == "cv-mlops-123456789012-us-east-1"
    assert out["TrainRepositoryUri"] == "123456789012.dkr.ecr.us-east-1.amazonaws.com/cv-mlops-train"
    assert out["ServeRepositoryUri"] == "123456789012.dkr.ecr.us-east-1.amazonaws.com/cv-mlops-serve"
    assert out["Region"] == REGION
    repos = {r["repositoryName"]: r for r in aws.client("ecr").describe_repositories()["repositories"]}
    assert set(repos) == {"cv-mlops-train", "cv-mlops-serve"}
    assert {r["imageTagMutability"] for r in repos.values()} == {"IMMUTABLE"}
    trust = aws.client("iam").get_role(RoleName="cv-mlops-github-actions")["Role"]
    assert trust["MaxSessionDuration"] == 43200
    aws.client("s3").head_bucket(Bucket="cv-mlops-123456789012-us-east-1")


def test_a_second_plan_without_changes_says_up_to_date_and_leaves_no_change_set(aws):
    create(aws)
    again = stack.plan(aws, STACK, TEMPLATE, PARAMETERS, LiveExecutor(aws.client))
    assert again.change_set_type == "UPDATE"
    assert again.up_to_date and again.changes == []
    listed = aws.client("cloudformation").list_change_sets(StackName=STACK)["Summaries"]
    assert again.change_set_id not in {s["ChangeSetId"] for s in listed}
    assert stack.execute(aws, again, LiveExecutor(aws.client)) == "UNCHANGED"


def test_a_dry_run_plan_prints_the_request_and_creates_nothing(aws):
    lines: list[str] = []
    planned = stack.plan(
        aws, STACK, TEMPLATE, PARAMETERS, DryRunExecutor(emit=lines.append, clients=aws.client)
    )
    assert planned.dry_run and planned.change_set_type == "CREATE"
    assert [line.split("  #")[0] for line in lines] == ["cloudformation.CreateChangeSet"]
    request = json.loads(lines[0].split("\n", 1)[1])
    assert request["Capabilities"] == ["CAPABILITY_NAMED_IAM"]
    assert request["ChangeSetType"] == "CREATE"
    assert {p["ParameterKey"]: p["ParameterValue"] for p in request["Parameters"]}[
        "GitHubOwner"
    ] == "octo-org"
    assert {c.logical_id for c in planned.changes} >= {"GitHubRole", "Bucket", "WandbSecret"}
    assert aws.client("cloudformation").list_stacks()["StackSummaries"] == []


def test_delete_is_refused_while_an_endpoint_of_the_project_serves_and_proceeds_with_force(aws):
    create(aws)
    serve(aws, "cv-mlops-endpoint")
    with pytest.raises(UsageError, match=r"cv-mlops-endpoint.*--force"):
        stack.delete(aws, STACK, LiveExecutor(aws.client), project=PROJECT)
    cf = aws.client("cloudformation")
    assert cf.describe_stacks(StackName=STACK)["Stacks"][0]["StackStatus"] == "CREATE_COMPLETE"

    kept = stack.delete(aws, STACK, LiveExecutor(aws.client), project=PROJECT, force=True)
    assert kept == "cv-mlops-123456789012-us-east-1"
    assert stack.describe_stack(aws, STACK) is None


def test_delete_without_serving_endpoints_needs_no_force(aws):
    create(aws)
    serve(aws, "other-project-endpoint")  # not ours: no reason to refuse
    stack.delete(aws, STACK, LiveExecutor(aws.client), project=PROJECT)
    assert stack.describe_stack(aws, STACK) is None


def test_a_failed_change_set_raises_with_its_reason_and_is_deleted(aws):
    class Failing:
        """Answers DescribeChangeSet with a FAILED status that is not "no changes"."""

        def __init__(self, client):
            self.client = client

        def __getattr__(self, name):
            return getattr(self.client, name)

        def describe_change_set(self, **params):
            answer = self.client.describe_change_set(**params)
            return {**answer, "Status": "FAILED", "StatusReason": "Template format error: nope"}

    real = aws.client("cloudformation")
    aws._clients["cloudformation"] = Failing(real)
    with pytest.raises(stack.StackFailed, match="Template format error: nope"):
        stack.plan(aws, STACK, TEMPLATE, PARAMETERS, LiveExecutor(aws.client))
    assert real.list_change_sets(StackName=STACK)["Summaries"] == []


# --- the command line ------------------------------------------------------------------------------


@pytest.fixture
def moto_cli(monkeypatch):
    """`mlops bootstrap` against moto: the CLI opens its own session inside mock_aws."""
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.delenv("MLOPS_PROJECT", raising=False)
    with mock_aws():
        yield boto3.client("cloudformation", region_name=REGION)


def test_cli_dry_run_prints_the_change_set_request_and_creates_nothing(moto_cli, capsys):
    assert main(["bootstrap", "--dry-run", "--github-repo", "o/r"]) == 0
    out = capsys.readouterr().out
    assert "cloudformation.CreateChangeSet" in out
    assert '"ChangeSetType": "CREATE"' in out
    assert '"StackName": "cv-mlops-bootstrap"' in out
    assert "AWS::IAM::Role" in out and "AWS::ECR::Repository" in out
    assert "nothing was created" in out
    assert moto_cli.list_stacks()["StackSummaries"] == []


def test_cli_refuses_without_yes_when_stdin_is_not_a_terminal(moto_cli, capsys, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    assert main(["bootstrap", "--github-repo", "o/r"]) == 2
    assert "not a terminal" in capsys.readouterr().err
    assert moto_cli.list_stacks()["StackSummaries"] == []


@pytest.mark.parametrize("repo", ["no-slash", "o/", "/r", "o/r/x", "bad owner/r", "o/.."])
def test_cli_rejects_a_malformed_github_repo(moto_cli, capsys, repo):
    assert main(["bootstrap", "--yes", "--github-repo", repo]) == 2
    assert "--github-repo" in capsys.readouterr().err


def test_cli_rejects_a_malformed_budget_email(moto_cli, capsys):
    assert main(["bootstrap", "--yes", "--github-repo", "o/r", "--budget-email", "nobody"]) == 2
    assert "--budget-email" in capsys.readouterr().err


def test_cli_with_yes_applies_and_prints_the_github_commands(moto_cli, capsys):
    assert main(["bootstrap", "--yes", "--github-repo", "octo-org/cv-mlops"]) == 0
    out = capsys.readouterr().out
    assert "is CREATE_COMPLETE" in out
    for variable in (
        "AWS_ROLE_ARN",
        "AWS_REGION",
        "MLOPS_PROJECT",
        "MLOPS_BUCKET",
        "MLOPS_SAGEMAKER_ROLE_ARN",
        "MLOPS_WANDB_SECRET_ARN",
    ):
        assert f"gh variable set {variable} --repo octo-org/cv-mlops --body " in out
    assert "--body arn:aws:iam::123456789012:role/cv-mlops-github-actions" in out
    assert "gh api --method PUT repos/octo-org/cv-mlops/environments/training" in out
    assert "gh api --method PUT repos/octo-org/cv-mlops/environments/production" in out
    assert "aws secretsmanager put-secret-value --region us-east-1 --secret-id " in out
    assert '--secret-string "$WANDB_API_KEY"' in out
    assert "gh secret" not in out

    # Again: nothing to change, and the same next steps.
    assert main(["bootstrap", "--yes", "--github-repo", "octo-org/cv-mlops"]) == 0
    again = capsys.readouterr().out
    assert "is up to date" in again
    assert "gh variable set AWS_ROLE_ARN" in again


def test_cli_on_a_terminal_asks_and_a_no_discards_the_change_set(moto_cli, capsys, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr("sys.stdin", Terminal(""))
    asked: list[str] = []
    monkeypatch.setattr("builtins.input", lambda prompt: asked.append(prompt) or "n")
    assert main(["bootstrap", "--github-repo", "o/r"]) == 1
    assert asked and asked[0].startswith("Apply these ") and asked[0].endswith(" changes? [y/N] ")
    assert "not applied" in capsys.readouterr().err
    assert moto_cli.list_change_sets(StackName="cv-mlops-bootstrap")["Summaries"] == []


def test_cli_delete_refuses_while_serving_then_deletes_with_force(moto_cli, capsys):
    assert main(["bootstrap", "--yes", "--github-repo", "o/r"]) == 0
    sm = boto3.client("sagemaker", region_name=REGION)
    sm.create_model(ModelName="m", ExecutionRoleArn=ROLE, PrimaryContainer={"Image": IMAGE})
    sm.create_endpoint_config(
        EndpointConfigName="c",
        ProductionVariants=[
            {
                "VariantName": "AllTraffic",
                "ModelName": "m",
                "InitialInstanceCount": 1,
                "InstanceType": "ml.m5.large",
            }
        ],
    )
    sm.create_endpoint(EndpointName="cv-mlops-endpoint", EndpointConfigName="c")
    capsys.readouterr()
    assert main(["bootstrap", "--delete", "--yes"]) == 2
    assert "still serve" in capsys.readouterr().err
    assert main(["bootstrap", "--delete", "--yes", "--force"]) == 0
    assert "cv-mlops-123456789012-us-east-1 is retained" in capsys.readouterr().out


def test_force_without_delete_is_a_usage_error(moto_cli, capsys):
    assert main(["bootstrap", "--github-repo", "o/r", "--force", "--yes"]) == 2
    assert "--force only goes with --delete" in capsys.readouterr().err


def test_a_rolled_back_creation_raises_with_the_failed_resources_reasons(sleep):
    """moto never fails a stack: a Stubber plays CloudFormation's answers (checked against its model)."""
    from datetime import UTC, datetime

    from botocore.stub import Stubber

    from infra.aws.session import Aws
    from tests.functional.aws.conftest import settings

    client = boto3.client("cloudformation", region_name=REGION)
    aws = Aws(settings(), session=boto3.Session(region_name=REGION), sleep=sleep)
    aws._clients["cloudformation"] = client
    stack_id = f"arn:aws:cloudformation:{REGION}:123456789012:stack/{STACK}/1"
    now = datetime.now(UTC)

    def event(n, logical, kind, status, reason=None):
        found = {
            "StackId": stack_id,
            "EventId": f"e{n}",
            "StackName": STACK,
            "LogicalResourceId": logical,
            "ResourceType": kind,
            "ResourceStatus": status,
            "Timestamp": now,
        }
        return found | ({"ResourceStatusReason": reason} if reason else {})

    def described(status):
        return {
            "Stacks": [{"StackName": STACK, "StackId": stack_id, "StackStatus": status, "CreationTime": now}]
        }

    started = event(1, STACK, "AWS::CloudFormation::Stack", "CREATE_IN_PROGRESS", "User Initiated")
    failed = event(2, "GitHubRole", "AWS::IAM::Role", "CREATE_FAILED", "Policy has invalid action")
    cancelled = event(3, "Bucket", "AWS::S3::Bucket", "CREATE_FAILED", "Resource creation cancelled")
    rolled_back = event(4, STACK, "AWS::CloudFormation::Stack", "ROLLBACK_COMPLETE")
    with Stubber(client) as stub:
        stub.add_response("describe_stack_events", {"StackEvents": []}, {"StackName": STACK})
        stub.add_response("execute_change_set", {}, {"ChangeSetName": "cs-arn", "StackName": STACK})
        stub.add_response("describe_stack_events", {"StackEvents": [started]}, {"StackName": STACK})
        stub.add_response("describe_stacks", described("CREATE_IN_PROGRESS"), {"StackName": STACK})
        stub.add_response(
            "describe_stack_events",
            {"StackEvents": [rolled_back, cancelled, failed, started]},
            {"StackName": STACK},
        )
        stub.add_response("describe_stacks", described("ROLLBACK_COMPLETE"), {"StackName": STACK})
        planned = stack.Plan(
            STACK, "cs", "CREATE", [stack.Change("Add", "GitHubRole", "AWS::IAM::Role")], "cs-arn"
        )
        lines: list[str] = []
        with pytest.raises(stack.StackFailed) as raised:
            stack.execute(aws, planned, LiveExecutor(aws.client), on_event=lines.append, poll_seconds=7)
        stub.assert_no_pending_responses()
    message = str(raised.value)
    assert message.startswith(f"the stack {STACK} ended ROLLBACK_COMPLETE: GitHubRole (AWS::IAM::Role) ")
    assert "CREATE_FAILED: Policy has invalid action; Bucket" in message  # the cause before the cancelled
    assert "mlops bootstrap --delete" in message
    assert [line.split(" ", 1)[1] for line in lines] == [
        f"{STACK} (AWS::CloudFormation::Stack) CREATE_IN_PROGRESS: User Initiated",
        "GitHubRole (AWS::IAM::Role) CREATE_FAILED: Policy has invalid action",
        "Bucket (AWS::S3::Bucket) CREATE_FAILED: Resource creation cancelled",
        f"{STACK} (AWS::CloudFormation::Stack) ROLLBACK_COMPLETE",
    ]
    assert sleep.calls == [7]
