"""The AWS seam's foundation: settings with one-line errors, error translation, dry-run plans."""

import pytest
from botocore.exceptions import ClientError, NoCredentialsError

from infra.aws.errors import AwsError, NotFound, translate
from infra.aws.plan import Call, DryRunExecutor
from infra.aws.session import AwsSettings, tags
from infra.errors import UsageError


def test_settings_come_from_the_environment():
    s = AwsSettings.from_env(
        "proj",
        {
            "AWS_REGION": "eu-west-1",
            "MLOPS_BUCKET": "b",
            "GITHUB_ACTOR": "octo",
            "GITHUB_EVENT_NAME": "workflow_dispatch",
        },
    )
    assert (s.project, s.region, s.bucket, s.owner, s.trigger) == (
        "proj",
        "eu-west-1",
        "b",
        "octo",
        "workflow_dispatch",
    )


def test_missing_settings_are_named_with_their_variable_and_purpose():
    with pytest.raises(UsageError) as err:
        AwsSettings.from_env("proj", {}).require("region", "bucket", "role_arn")
    message = str(err.value)
    assert "AWS_REGION" in message and "MLOPS_BUCKET" in message and "MLOPS_SAGEMAKER_ROLE_ARN" in message
    assert "\n" not in message


def test_missing_credentials_become_a_usage_error_that_names_the_fix():
    error = translate(NoCredentialsError(), "uploading")
    assert isinstance(error, UsageError) and "aws configure" in str(error) and "OIDC" in str(error)


def test_client_errors_keep_the_code_and_add_a_hint():
    exc = ClientError({"Error": {"Code": "AccessDeniedException", "Message": "no"}}, "CreateTrainingJob")
    error = translate(exc, "starting the training job")
    assert isinstance(error, AwsError) and error.code == "AccessDeniedException"
    assert "starting the training job: CreateTrainingJob failed with AccessDeniedException" in str(error)
    assert "IAM role" in str(error)
    missing = ClientError(
        {"Error": {"Code": "ValidationException", "Message": "Endpoint x does not exist."}},
        "DescribeEndpoint",
    )
    assert isinstance(translate(missing, "x"), NotFound)


def test_a_dry_run_prints_mutating_requests_and_calls_nothing():
    lines = []
    executor = DryRunExecutor(emit=lines.append)
    assert executor(Call("sagemaker", "CreateTrainingJob", {"TrainingJobName": "j"}, why="train")) == {}
    assert executor(Call("sagemaker", "DescribeTrainingJob", {"TrainingJobName": "j"})) == {}
    assert len(lines) == 1 and lines[0].startswith("sagemaker.CreateTrainingJob  # train")
    assert '"TrainingJobName": "j"' in lines[0]


def test_resources_are_tagged_for_cleanup():
    found = {
        t["Key"]: t["Value"]
        for t in tags(AwsSettings("p", owner="o", trigger="push"), git_sha="abc", expiry_days=1, now=0)
    }
    assert found == {
        "mlops:project": "p",
        "mlops:git-sha": "abc",
        "mlops:trigger": "push",
        "mlops:owner": "o",
        "mlops:expires": "1970-01-02",
    }
