"""The SageMaker Model Registry on moto: groups, numbered versions, metrics and metadata, approval."""

from __future__ import annotations

import pytest

from infra.aws import registry
from infra.aws.errors import NotFound
from infra.aws.plan import DryRunExecutor, LiveExecutor
from infra.aws.session import Aws
from infra.errors import UsageError

GROUP = "demo-classification"
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/demo-serve@sha256:" + "ab" * 32
MODEL = "s3://demo-bucket/demo/models/job-1/output/model.tar.gz"
TAGS = [{"Key": "mlops:project", "Value": "demo"}]
METADATA = {
    "git_sha": "0123abc",
    "training_job": "demo-job-1",
    "wandb_run": "run-1",
    "wandb_url": "https://wandb.ai/team/demo/runs/run-1",
    "dataset": "s3://demo-bucket/demo/datasets/sha256-ab12",
    "gate": "v1 passed",
}


def register(aws: Aws, status: str, metrics: dict[str, float], **extra: object) -> registry.PackageVersion:
    args: dict = {
        "image_uri": IMAGE,
        "model_data_uri": MODEL,
        "metrics": metrics,
        "metadata": METADATA,
        "status": status,
        "description": "demo-job-1: gate passed",
        "executor": LiveExecutor(aws.client),
    }
    args.update(extra)
    return registry.register(aws, GROUP, **args)


def test_group_names_fit_sagemaker_names():
    assert registry.group_name("demo") == "demo-classification"
    assert registry.group_name("demo", "detection") == "demo-detection"
    assert registry.group_name("demo", "seg_mentation") == "demo-seg-mentation"
    assert len(registry.group_name("p" * 60)) <= 63


def test_ensure_group_creates_the_group_once(aws):
    executor = LiveExecutor(aws.client)
    registry.ensure_group(aws, GROUP, executor, TAGS)
    registry.ensure_group(aws, GROUP, executor, TAGS)
    assert [c.operation for c in executor.executed] == ["CreateModelPackageGroup"]
    group = aws.client("sagemaker").describe_model_package_group(ModelPackageGroupName=GROUP)
    assert group["ModelPackageGroupName"] == GROUP


def test_versions_round_trip_metrics_and_metadata(aws):
    registry.ensure_group(aws, GROUP, LiveExecutor(aws.client), TAGS)
    first = register(aws, "Approved", {"test_accuracy": 0.91, "test_loss": 0.25})
    second = register(aws, "Rejected", {"test_accuracy": 0.42, "test_loss": 1.5e-05})

    assert (first.version, second.version) == (1, 2)
    versions = registry.list_versions(aws, GROUP)
    assert [(v.version, v.status) for v in versions] == [(1, "Approved"), (2, "Rejected")]
    assert versions[0].metrics == {"test_accuracy": 0.91, "test_loss": 0.25}
    assert versions[1].metrics == {"test_accuracy": 0.42, "test_loss": 1.5e-05}
    assert all(isinstance(v, float) for v in versions[1].metrics.values())
    assert versions[0].metadata == METADATA
    assert (versions[0].image_uri, versions[0].model_data_uri) == (IMAGE, MODEL)
    assert versions[0].created and versions[0].arn == first.arn

    fetched = registry.get_version(aws, GROUP, 2)
    assert fetched.arn == second.arn and fetched.status == "Rejected"
    assert fetched.metrics["test_accuracy"] == 0.42


def test_realtime_instance_types_are_registered_when_given(aws):
    registry.ensure_group(aws, GROUP, LiveExecutor(aws.client), TAGS)
    version = register(aws, "Approved", {"test_accuracy": 0.9}, instance_types=["ml.m5.large"])
    package = aws.client("sagemaker").describe_model_package(ModelPackageName=version.arn)
    spec = package["InferenceSpecification"]
    assert spec["SupportedRealtimeInferenceInstanceTypes"] == ["ml.m5.large"]
    assert "image/png" in spec["SupportedContentTypes"]
    assert spec["SupportedResponseMIMETypes"] == ["application/json"]


def test_set_status_approves_with_a_one_line_reason(aws):
    registry.ensure_group(aws, GROUP, LiveExecutor(aws.client), TAGS)
    pending = register(aws, "PendingManualApproval", {"test_accuracy": 0.9})
    executor = LiveExecutor(aws.client)

    registry.set_status(aws, pending.arn, "Approved", executor, reason="reviewed by octo\nlooks good")

    approved = registry.get_version(aws, GROUP, pending.version)
    assert approved.status == "Approved"
    assert approved.approval_description == "reviewed by octo looks good"
    # Not asserted: metadata after the update. moto 5.2.5's UpdateModelPackage drops
    # CustomerMetadataProperties when the request omits them; SageMaker keeps them.


def test_unknown_status_is_a_usage_error(aws):
    with pytest.raises(UsageError, match="Approved, Rejected, PendingManualApproval"):
        registry.set_status(aws, "arn:x", "Deployed", LiveExecutor(aws.client))


def test_unknown_version_names_the_known_ones(aws):
    registry.ensure_group(aws, GROUP, LiveExecutor(aws.client), TAGS)
    register(aws, "Approved", {"test_accuracy": 0.9})
    register(aws, "Rejected", {"test_accuracy": 0.5})
    with pytest.raises(NotFound) as err:
        registry.get_version(aws, GROUP, 7)
    assert "v7" in str(err.value) and "known: v1, v2" in str(err.value)


def test_a_group_without_versions_lists_none(aws):
    assert registry.list_versions(aws, "never-created") == []
    with pytest.raises(NotFound, match="known: none"):
        registry.get_version(aws, "never-created", 1)


def test_dry_run_registers_nothing_and_prints_the_request(aws):
    registry.ensure_group(aws, GROUP, LiveExecutor(aws.client), TAGS)
    lines: list[str] = []
    planned = register(aws, "Approved", {"test_accuracy": 0.91}, executor=DryRunExecutor(emit=lines.append))

    assert (planned.version, planned.arn) == (0, "<dry-run>")
    assert planned.metrics == {"test_accuracy": 0.91} and planned.metadata == METADATA
    assert len(lines) == 1 and lines[0].startswith("sagemaker.CreateModelPackage")
    assert '"metric:test_accuracy": "0.91"' in lines[0] and '"ModelApprovalStatus": "Approved"' in lines[0]
    assert registry.list_versions(aws, GROUP) == []


def test_dry_run_shows_the_group_it_would_create(aws):
    lines: list[str] = []
    registry.ensure_group(aws, GROUP, DryRunExecutor(emit=lines.append), TAGS)
    assert len(lines) == 1 and lines[0].startswith("sagemaker.CreateModelPackageGroup")
    assert aws.client("sagemaker").list_model_package_groups()["ModelPackageGroupSummaryList"] == []


def test_metadata_is_fitted_to_the_api_limits():
    properties = registry.customer_metadata(
        {"test_accuracy": 1},
        {
            "gate": "test_accuracy 0.7000 >= 0.8000 (FAILED); test_loss 0.3 <= 1.0 (ok)",
            "json": '{"passed": true}',
            "note": "x" * 300,
            "empty": "",
            "wandb_url": "https://wandb.ai/a/b",
        },
    )
    assert properties["metric:test_accuracy"] == "1.0"
    # Outside the API's alphabet: comparisons become words, anything else a space.
    assert properties["gate"] == "test_accuracy 0.7000 ge 0.8000 FAILED test_loss 0.3 le 1.0 ok"
    assert properties["json"] == "passed : true"
    assert len(properties["note"]) == 256
    assert "empty" not in properties  # values must be at least one character
    assert properties["wandb_url"] == "https://wandb.ai/a/b"


def test_metadata_that_cannot_fit_is_refused():
    with pytest.raises(UsageError, match="reserved for metrics"):
        registry.customer_metadata({}, {"metric:x": "1"})
    with pytest.raises(UsageError, match="at most 50"):
        registry.customer_metadata({f"m{i}": float(i) for i in range(51)}, {})
    with pytest.raises(UsageError, match="does not fit"):
        registry.customer_metadata({}, {"bad{key}": "1"})


def test_descriptions_lose_their_line_breaks_and_excess():
    call = registry.register_call(
        GROUP,
        image_uri=IMAGE,
        model_data_uri=MODEL,
        metrics={},
        metadata={},
        status="Rejected",
        description="line one\nline two" + "y" * 2000,
    )
    description = call.params["ModelPackageDescription"]
    assert description.startswith("line one line two") and len(description) == 1024
    assert "CustomerMetadataProperties" not in call.params  # the API rejects an empty map
