"""The bootstrap stack's template (infra/cloudformation/bootstrap.yaml) read as data: who may assume the
GitHub role, what it may pass and touch, how the bucket and the repositories are locked down, and that
cfn-lint passes on it. No AWS: the template is parsed here with a loader that keeps !Sub/!Ref/!GetAtt as
{"Fn::Sub": ...} dicts, and parameters are substituted where a test needs concrete values."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.aws.stack import TEMPLATE_PATH, summary

OWNER, REPO = "octo-org", "cv-mlops"
PARAMS = {
    "ProjectName": "cv-mlops",
    "GitHubOwner": OWNER,
    "GitHubRepo": REPO,
    "AWS::AccountId": "123456789012",
    "AWS::Region": "us-east-1",
    "AWS::Partition": "aws",
}
AUD = "token.actions.githubusercontent.com:aud"
SUB = "token.actions.githubusercontent.com:sub"


class CfnLoader(yaml.SafeLoader):
    """SafeLoader plus CloudFormation's short-form tags, each mapped to its long form."""


def _construct(loader: CfnLoader, suffix: str, node: yaml.Node) -> dict[str, Any]:
    name = "Ref" if suffix == "Ref" else f"Fn::{suffix}"
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
        if suffix == "GetAtt":
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {name: value}


CfnLoader.add_multi_constructor("!", _construct)


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return yaml.load(TEMPLATE_PATH.read_text(encoding="utf-8"), Loader=CfnLoader)


def sub(value: Any) -> Any:
    """Resolve !Sub strings and !Ref parameters with PARAMS; other intrinsics stay as they are."""
    if isinstance(value, dict) and set(value) == {"Fn::Sub"} and isinstance(value["Fn::Sub"], str):
        return re.sub(r"\$\{([^}]+)\}", lambda m: PARAMS.get(m.group(1), m.group(0)), value["Fn::Sub"])
    if isinstance(value, dict) and set(value) == {"Ref"} and value["Ref"] in PARAMS:
        return PARAMS[value["Ref"]]
    if isinstance(value, dict):
        return {k: sub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [sub(v) for v in value]
    return value


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def statements(template: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(logical id, statement) for every policy statement in the template: roles' inline policies and
    trust policies, managed policies, bucket policies."""
    found = []
    for logical, resource in template["Resources"].items():
        props = resource.get("Properties", {})
        documents = [props.get("PolicyDocument"), props.get("AssumeRolePolicyDocument")]
        documents += [p.get("PolicyDocument") for p in props.get("Policies", [])]
        for document in documents:
            if document:
                found += [(logical, s) for s in as_list(document["Statement"])]
    return found


def resources_of(template: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == kind}


def test_the_github_role_trusts_only_the_oidc_provider_with_exact_audience_and_subjects(template):
    role = template["Resources"]["GitHubRole"]["Properties"]
    (trust,) = as_list(role["AssumeRolePolicyDocument"]["Statement"])
    assert trust["Effect"] == "Allow"
    assert trust["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert set(trust["Principal"]) == {"Federated"}
    federated = trust["Principal"]["Federated"]["Fn::If"]
    assert federated[0] == "CreateOidc"
    assert federated[1] == {"Ref": "GitHubOidcProvider"}
    assert sub(federated[2]) == (
        "arn:aws:iam::123456789012:oidc-provider/token.actions.githubusercontent.com"
    )
    assert set(trust["Condition"]) == {"StringEquals"}
    condition = sub(trust["Condition"]["StringEquals"])
    assert condition == {
        AUD: "sts.amazonaws.com",
        SUB: [
            f"repo:{OWNER}/{REPO}:environment:training",
            f"repo:{OWNER}/{REPO}:environment:production",
            f"repo:{OWNER}/{REPO}:ref:refs/heads/main",
        ],
    }
    assert not any("*" in s or "?" in s for s in condition[SUB])
    assert role["MaxSessionDuration"] == 43200


def test_the_oidc_provider_is_githubs_for_sts_and_optional(template):
    provider = template["Resources"]["GitHubOidcProvider"]
    assert provider["Type"] == "AWS::IAM::OIDCProvider"
    assert provider["Condition"] == "CreateOidc"
    assert provider["Properties"]["Url"] == "https://token.actions.githubusercontent.com"
    assert provider["Properties"]["ClientIdList"] == ["sts.amazonaws.com"]
    assert template["Conditions"]["CreateOidc"] == {"Fn::Equals": [{"Ref": "CreateOidcProvider"}, "true"]}


def test_pass_role_only_passes_the_execution_role_only_to_sagemaker(template):
    passing = [(logical, s) for logical, s in statements(template) if "iam:PassRole" in as_list(s["Action"])]
    assert len(passing) == 1
    _, statement = passing[0]
    assert as_list(statement["Action"]) == ["iam:PassRole"]
    assert statement["Resource"] == {"Fn::GetAtt": ["SageMakerExecutionRole", "Arn"]}
    assert statement["Condition"] == {"StringEquals": {"iam:PassedToService": "sagemaker.amazonaws.com"}}


def test_no_statement_allows_every_action_or_every_sagemaker_action(template):
    for logical, statement in statements(template):
        actions = as_list(statement.get("Action", []))
        assert "*" not in actions, logical
        assert not [a for a in actions if a.lower() in ("sagemaker:*", "iam:*", "s3:*")] or (
            statement["Effect"] == "Deny"
        ), logical
        assert "NotAction" not in statement, logical


def test_sagemaker_actions_are_limited_to_the_project_prefix(template):
    allowed = [
        s
        for _, s in statements(template)
        if s["Effect"] == "Allow" and any(a.startswith("sagemaker:") for a in as_list(s["Action"]))
    ]
    for statement in allowed:
        resources = [sub(r) for r in as_list(statement["Resource"])]
        if resources == ["*"]:  # only List* actions, which have no resource form
            assert all(a.startswith("sagemaker:List") for a in as_list(statement["Action"]))
            assert "sagemaker:ListTrainingJobsForHyperParameterTuningJob" not in statement["Action"]
            continue
        kinds = [
            re.match(r"arn:aws:sagemaker:us-east-1:123456789012:([a-z-]+)/cv-mlops\*$", r) for r in resources
        ]
        assert all(kinds), resources
        assert {k.group(1) for k in kinds if k} == {
            "training-job",
            "hyper-parameter-tuning-job",
            "model",
            "endpoint-config",
            "endpoint",
            "model-package-group",
            "model-package",
        }


def test_the_bucket_is_private_versioned_encrypted_retained_and_tls_only(template):
    bucket = template["Resources"]["Bucket"]
    props = bucket["Properties"]
    assert bucket["DeletionPolicy"] == "Retain"
    assert bucket["UpdateReplacePolicy"] == "Retain"
    assert sub(props["BucketName"]) == "cv-mlops-123456789012-us-east-1"
    assert props["VersioningConfiguration"] == {"Status": "Enabled"}
    (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"]["SSEAlgorithm"] in ("AES256", "aws:kms")
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    rules = {r["Id"]: sub(r) for r in props["LifecycleConfiguration"]["Rules"]}
    assert rules["expire-checkpoints"]["Prefix"] == "cv-mlops/checkpoints/"
    assert rules["expire-checkpoints"]["ExpirationInDays"] == 30
    assert rules["expire-noncurrent-versions"]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 30}

    (policy,) = resources_of(template, "AWS::S3::BucketPolicy").values()
    assert policy["Properties"]["Bucket"] == {"Ref": "Bucket"}
    (deny,) = as_list(policy["Properties"]["PolicyDocument"]["Statement"])
    assert deny["Effect"] == "Deny"
    assert deny["Principal"] == "*"
    assert deny["Action"] == "s3:*"
    assert deny["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert {"Fn::GetAtt": ["Bucket", "Arn"]} in deny["Resource"]


def test_s3_grants_name_only_our_bucket(template):
    for logical, statement in statements(template):
        if statement["Effect"] != "Allow" or not any(
            a.startswith("s3:") for a in as_list(statement["Action"])
        ):
            continue
        for resource in as_list(statement["Resource"]):
            text = str(resource)
            assert "Bucket.Arn" in text or resource == {"Fn::GetAtt": ["Bucket", "Arn"]}, (logical, resource)


def test_ecr_repositories_are_immutable_scanned_and_expire_old_images(template):
    import json

    repos = resources_of(template, "AWS::ECR::Repository")
    assert {sub(r["Properties"]["RepositoryName"]) for r in repos.values()} == {
        "cv-mlops-train",
        "cv-mlops-serve",
    }
    for repo in repos.values():
        props = repo["Properties"]
        assert props["ImageTagMutability"] == "IMMUTABLE"
        assert props["ImageScanningConfiguration"] == {"ScanOnPush": True}
        rules = json.loads(props["LifecyclePolicy"]["LifecyclePolicyText"])["rules"]
        selections = [r["selection"] for r in rules]
        assert {
            "tagStatus": "untagged",
            "countType": "sinceImagePushed",
            "countUnit": "days",
            "countNumber": 7,
        } in (selections)
        assert {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 30} in selections


def test_the_wandb_secret_holds_no_value(template):
    (secret,) = resources_of(template, "AWS::SecretsManager::Secret").values()
    props = secret["Properties"]
    assert sub(props["Name"]) == "cv-mlops/wandb-api-key"
    assert "SecretString" not in props
    assert "put-secret-value" in props["Description"]
    generated = props["GenerateSecretString"]
    assert generated["SecretStringTemplate"] == '{"WANDB_API_KEY": ""}'
    # Nothing that looks like a W&B key (40 hex characters) anywhere in the file.
    assert not re.search(r"\b[0-9a-f]{40}\b", TEMPLATE_PATH.read_text(encoding="utf-8"))


@pytest.mark.parametrize(
    ("role", "sid"),
    [("SageMakerExecutionRole", "ReadWandbKey"), ("GitHubRole", "ReadWandbKeyToAliasTheServingModel")],
)
def test_each_role_reads_only_the_wandb_secret(template, role, sid):
    """The job reads the key to log; the workflows' role to move W&B's `production` alias on a deploy."""
    props = template["Resources"][role]["Properties"]
    reads = [
        s
        for p in props["Policies"]
        for s in p["PolicyDocument"]["Statement"]
        if any(a.startswith("secretsmanager:") for a in as_list(s["Action"]))
    ]
    assert reads == [
        {
            "Sid": sid,
            "Effect": "Allow",
            "Action": "secretsmanager:GetSecretValue",
            "Resource": {"Ref": "WandbSecret"},
        }
    ]
    if role == "SageMakerExecutionRole":
        (trust,) = props["AssumeRolePolicyDocument"]["Statement"]
        assert trust["Principal"] == {"Service": "sagemaker.amazonaws.com"}


def test_put_metric_data_of_the_github_role_is_narrowed_to_our_namespace(template):
    (policy,) = [
        p["PolicyDocument"]
        for p in template["Resources"]["GitHubRole"]["Properties"]["Policies"]
        if p["PolicyName"] == "support"
    ]
    (statement,) = [s for s in policy["Statement"] if "cloudwatch:PutMetricData" in as_list(s["Action"])]
    assert statement["Condition"] == {"StringEquals": {"cloudwatch:namespace": "MLOps"}}


def test_the_budget_alerts_at_80_percent_actual_and_100_percent_forecasted(template):
    budget = template["Resources"]["Budget"]
    assert budget["Condition"] == "HasBudgetEmail"
    props = budget["Properties"]
    assert props["Budget"]["BudgetType"] == "COST"
    assert props["Budget"]["TimeUnit"] == "MONTHLY"
    assert props["Budget"]["BudgetLimit"] == {"Amount": {"Ref": "MonthlyBudgetUsd"}, "Unit": "USD"}
    notes = {
        (n["Notification"]["NotificationType"], n["Notification"]["Threshold"])
        for n in props["NotificationsWithSubscribers"]
    }
    assert notes == {("ACTUAL", 80), ("FORECASTED", 100)}


def test_the_github_roles_inline_policies_fit_iams_size_limit(template):
    # IAM counts the policies of a role together, without whitespace: at most 10,240 characters.
    import json

    policies = sub(template["Resources"]["GitHubRole"]["Properties"]["Policies"])
    size = sum(len(json.dumps(p["PolicyDocument"], separators=(",", ":"))) for p in policies)
    assert size < 10_240 * 0.8, size


def test_the_outputs_are_what_the_cli_prints(template):
    assert set(template["Outputs"]) == {
        "GitHubRoleArn",
        "SageMakerRoleArn",
        "BucketName",
        "WandbSecretArn",
        "TrainRepositoryUri",
        "ServeRepositoryUri",
        "Region",
    }


def test_the_summary_reads_every_resource_by_type(template):
    by_type = summary(TEMPLATE_PATH.read_text(encoding="utf-8"))
    expected: dict[str, list[str]] = {}
    for logical, resource in template["Resources"].items():
        expected.setdefault(resource["Type"], []).append(logical)
    assert by_type == expected


def test_cfn_lint_passes_without_errors_or_warnings():
    cfn_lint = Path(sys.executable).parent / "cfn-lint"
    assert cfn_lint.exists(), "cfn-lint is a dev dependency: pip install -e '.[dev]'"
    result = subprocess.run(
        [str(cfn_lint), "--format", "parseable", "--", str(TEMPLATE_PATH)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
