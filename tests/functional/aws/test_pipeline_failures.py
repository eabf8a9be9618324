"""The pipeline's failure paths on the AWS platform itself: `run_pipeline` drives a real `AwsPlatform`
whose SageMaker and SageMaker-runtime clients are scripted with botocore Stubber (every request checked
against the service model, every answer shaped as SageMaker shapes it), while S3, CloudWatch and
Application Auto Scaling run on moto. Only the training job is replaced: its model is a real artifact
(training on SageMaker is covered in test_training.py).

What SageMaker does and moto does not: a new endpoint config serves as soon as the endpoint is InService,
whatever our smoke test says; an automatic rollback leaves the endpoint InService on the old config.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber

from infra.aws import images
from infra.aws.plan import LiveExecutor
from infra.aws.platform import AwsPlatform
from infra.errors import UsageError
from infra.history import intervals
from infra.pipeline import run_pipeline
from infra.platform import TrainingResult, TrainingSpec
from infra.settings import Config
from tests.factories import make_model_artifact, png_bytes

ACCOUNT = "123456789012"
GROUP = "demo-classification"
ENDPOINT = "demo-endpoint"
WHEN = datetime(2023, 11, 14, tzinfo=UTC)
NOW = 1_700_000_000.0  # resource names: <project>-v<N>-20231114-221320
OLD = "demo-v1-20231101-090000"  # the config v1 served on before the run
NEW = "demo-v2-20231114-221320"  # the candidate's config
BACK = "demo-v1-20231114-221320"  # v1 deployed again by a rollback
IMAGE = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/demo-serve@sha256:" + "a" * 64
CLASSES = ("circle", "square", "triangle")
FINGERPRINT = "sha256:same-test-set"
CONFIG = Config.from_mapping(
    {
        "project": {"name": "demo"},
        "gate": {
            "version": 1,
            "min": {"test_accuracy": 0.5},
            "compare": ["test_accuracy"],
            "tolerance": 0.05,
        },
        "local": {"smoke_images": 2, "verify_images": 2},
    }
)


def arn(version: int) -> str:
    return f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:model-package/{GROUP}/{version}"


class SageMaker:
    """The SageMaker side of a run, scripted call by call in the order the platform makes them."""

    def __init__(self, sagemaker: Stubber, runtime: Stubber) -> None:
        self.sm, self.rt = sagemaker, runtime

    # reads
    def endpoint(self, config: str, status: str = "InService", **extra: Any) -> None:
        body = {
            "EndpointName": ENDPOINT,
            "EndpointArn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:endpoint/{ENDPOINT}",
            "EndpointConfigName": config,
            "EndpointStatus": status,
            "CreationTime": WHEN,
            "LastModifiedTime": WHEN,
            "ProductionVariants": [{"VariantName": "AllTraffic", "CurrentInstanceCount": 1}],
            **extra,
        }
        self.sm.add_response("describe_endpoint", body, {"EndpointName": ENDPOINT})

    def baking(self, config: str) -> None:
        """Updating, with the green fleet baking (traffic on it, the blue fleet kept)."""
        pending = {
            "EndpointConfigName": NEW,
            "StartTime": WHEN,
            "ProductionVariants": [
                {"VariantName": "AllTraffic", "VariantStatus": [{"Status": "Baking", "StartTime": WHEN}]}
            ],
        }
        self.endpoint(config, "Updating", PendingDeploymentSummary=pending)

    def missing(self) -> None:
        self.sm.add_client_error(
            "describe_endpoint", "ValidationException", f'Could not find endpoint "{ENDPOINT}".', 400
        )

    def chain(self, config: str, version: int, status: str = "InService") -> None:
        """endpoints.describe: the endpoint, its config, its model (pointing at a registry version)."""
        self.endpoint(config, status)
        self.sm.add_response(
            "describe_endpoint_config",
            {
                "EndpointConfigName": config,
                "EndpointConfigArn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:endpoint-config/{config}",
                "ProductionVariants": [
                    {
                        "VariantName": "AllTraffic",
                        "ModelName": config,
                        "InstanceType": "ml.m5.large",
                        "InitialInstanceCount": 1,
                    }
                ],
                "CreationTime": WHEN,
            },
            {"EndpointConfigName": config},
        )
        self.sm.add_response(
            "describe_model",
            {
                "ModelName": config,
                "PrimaryContainer": {"ModelPackageName": arn(version)},
                "CreationTime": WHEN,
                "ModelArn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:model/{config}",
            },
            {"ModelName": config},
        )

    def package(self, version: int, status: str = "Approved") -> None:
        self.sm.add_response(
            "describe_model_package",
            {
                "ModelPackageName": GROUP,
                "ModelPackageGroupName": GROUP,
                "ModelPackageVersion": version,
                "ModelPackageArn": arn(version),
                "CreationTime": WHEN,
                "ModelPackageStatus": "Completed",
                "ModelPackageStatusDetails": {"ValidationStatuses": [], "ImageScanStatuses": []},
                "ModelApprovalStatus": status,
                "InferenceSpecification": {
                    "Containers": [
                        {"Image": IMAGE, "ModelDataUrl": f"s3://demo-bucket/demo/models/job-{version}.tar.gz"}
                    ],
                    "SupportedContentTypes": ["image/png"],
                    "SupportedResponseMIMETypes": ["application/json"],
                },
                "CustomerMetadataProperties": {
                    "metric:test_accuracy": "0.9",
                    "training_job": f"job-{version}",
                },
            },
            {"ModelPackageName": arn(version)},
        )

    def production(self, config: str, version: int, status: str = "Approved") -> None:
        self.chain(config, version)
        self.package(version, status)

    def endpoint_status(self, config: str, version: int, status: str = "Approved") -> None:
        self.chain(config, version)
        self.production(config, version, status)

    def get_version(self, version: int, total: int, status: str = "Approved") -> None:
        summaries = [
            {
                "ModelPackageArn": arn(n),
                "ModelPackageVersion": n,
                "CreationTime": WHEN,
                "ModelPackageStatus": "Completed",
                "ModelPackageGroupName": GROUP,
            }
            for n in range(1, total + 1)
        ]
        self.sm.add_response("list_model_packages", {"ModelPackageSummaryList": summaries})
        self.package(version, status)

    # writes
    def register(self, version: int) -> None:
        self.sm.add_response(
            "describe_model_package_group",
            {
                "ModelPackageGroupName": GROUP,
                "ModelPackageGroupArn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:model-package-group/{GROUP}",
                "CreationTime": WHEN,
                "CreatedBy": {},
                "ModelPackageGroupStatus": "Completed",
            },
        )
        self.sm.add_response("create_model_package", {"ModelPackageArn": arn(version)})
        self.package(version)

    def mark_failed(self, version: int, total: int, stage: str) -> None:
        self.get_version(version, total)
        expected = {
            "ModelPackageArn": arn(version),
            "ModelApprovalStatus": "Rejected",
            "ApprovalDescription": ANY,
            "CustomerMetadataProperties": {"failed_stage": stage, "failed_at": ANY},
        }
        self.sm.add_response("update_model_package", {"ModelPackageArn": arn(version)}, expected)

    def deploy_requests(self, name: str, *, create: bool = False) -> None:
        self.sm.add_response("create_model", {"ModelArn": f"arn:aws:sagemaker:::model/{name}"})
        self.sm.add_response(
            "create_endpoint_config", {"EndpointConfigArn": f"arn:aws:sagemaker:::ec/{name}"}
        )
        operation = "create_endpoint" if create else "update_endpoint"
        self.sm.add_response(operation, {"EndpointArn": f"arn:aws:sagemaker:::endpoint/{ENDPOINT}"})

    # the runtime
    def answers(self, count: int, *, ok: bool = True) -> None:
        body = json.dumps({"predictions": [{"top_k": [{"label": "circle", "probability": 0.9}]}]}).encode()
        for _ in range(count):
            if ok:
                self.rt.add_response(
                    "invoke_endpoint",
                    {"Body": StreamingBody(io.BytesIO(body), len(body)), "ContentType": "application/json"},
                )
            else:
                self.rt.add_client_error(
                    "invoke_endpoint",
                    "ModelError",
                    "Received server error (500) from primary",
                    424,
                    modeled_fields={
                        "OriginalStatusCode": 500,
                        "OriginalMessage": '{"error": "internal error"}',
                    },
                )


@pytest.fixture
def world(aws, tmp_path, monkeypatch):
    monkeypatch.setattr("infra.aws.endpoints.time.time", lambda: NOW)
    sagemaker, runtime = Stubber(aws.client("sagemaker")), Stubber(aws.client("sagemaker-runtime"))
    data = tmp_path / "data"
    for cls in CLASSES:
        (data / "test" / cls).mkdir(parents=True)
        (data / "test" / cls / "0.png").write_bytes(png_bytes(seed=1))
    platform = AwsPlatform(
        aws,
        CONFIG,
        LiveExecutor(aws.client),
        git_sha="0123456789ab",
        cache=tmp_path / "cache",
        smoke_data=data,
        on_event=lambda _line: None,
        poll_seconds=30,
    )
    platform._images["serve"] = images.ImageRef(
        "serve", IMAGE.split("@", maxsplit=1)[0], "0123456789ab", "sha256:" + "a" * 64, False
    )
    # Production's model is already in the cache, scored on the same test set as the candidate's.
    make_model_artifact(tmp_path / "cache" / "versions" / "v1", classes=CLASSES, test_fingerprint=FINGERPRINT)
    candidate = tmp_path / "cache" / "job-2"
    make_model_artifact(
        candidate, classes=CLASSES, metrics={"test_accuracy": 0.93}, test_fingerprint=FINGERPRINT
    )

    def train(spec: TrainingSpec, on_line: Any) -> TrainingResult:
        return TrainingResult(
            "job-2",
            "Completed",
            candidate,
            {"test_accuracy": 0.93},
            60.0,
            model_uri="s3://demo-bucket/job-2.tar.gz",
        )

    platform.train = train  # type: ignore[method-assign]
    with sagemaker, runtime:
        yield platform, SageMaker(sagemaker, runtime), data
    sagemaker.assert_no_pending_responses()
    runtime.assert_no_pending_responses()


class Observer:
    def started(self, name: str) -> None:
        pass

    def finished(self, stage: Any) -> None:
        pass


def pipeline(platform: AwsPlatform, data: Path) -> Any:
    return run_pipeline(
        platform,
        CONFIG,
        TrainingSpec("job-2", {}, data, "0123456789ab"),
        on_line=lambda _line: None,
        observer=Observer(),
        ensure_data=lambda: "ready",
    )


def stage(report: Any, name: str) -> Any:
    return next(s for s in report.stages if s.name == name)


def history(platform: AwsPlatform) -> list[tuple[int | None, str]]:
    return [(e.version, e.action) for e in platform.history()]


def until_deploy(sm: SageMaker) -> None:
    """evaluate (production v1 on OLD), register v2, then the guard and the platform read the endpoint."""
    sm.production(OLD, 1)  # evaluate
    sm.register(2)
    sm.endpoint_status(OLD, 1)  # the guard: what serves before
    sm.get_version(2, total=2)  # AwsPlatform.deploy
    sm.production(OLD, 1)
    sm.chain(OLD, 1)  # rollout: the endpoint as it is


def rollback_to_v1(sm: SageMaker, *, from_config: str) -> None:
    """The guard's rollback: deploy v1 again (new model and config), smoke-tested."""
    sm.get_version(1, total=2)
    sm.production(from_config, 2, status="Rejected")
    sm.chain(from_config, 2)
    sm.deploy_requests(BACK)
    sm.endpoint(from_config, "Updating")
    sm.endpoint(BACK)
    sm.answers(2)  # its smoke test
    sm.production(BACK, 1)


def test_a_candidate_failing_its_smoke_test_in_the_bake_is_rolled_back_by_sagemaker(world, aws):
    platform, sm, data = world
    until_deploy(sm)
    sm.deploy_requests(NEW)
    sm.baking(OLD)
    sm.answers(2, ok=False)  # the smoke test during the bake fails: the smoke alarm is raised
    sm.endpoint(OLD)  # ...and SageMaker rolled the update back: InService on the old config
    sm.production(OLD, 1)  # AwsPlatform.deploy: what serves afterwards
    sm.mark_failed(2, total=2, stage="deploy")
    sm.endpoint_status(OLD, 1)  # the guard: v1 serves, nothing more to do

    report = pipeline(platform, data)

    assert report.exit_code == 5
    assert report.outcome == "deploy of v2 failed; v1 is serving"
    detail = stage(report, "deploy").detail
    assert "rolled back automatically" in detail and "its smoke test during the bake failed" in detail
    assert "v2 is marked Rejected (deploy failed) in the registry" in detail
    assert stage(report, "verify").status == "skipped"
    metrics = aws.client("cloudwatch").list_metrics(Namespace="MLOps")["Metrics"]
    assert [m["MetricName"] for m in metrics] == ["SmokeTestFailures"]
    assert history(platform) == []  # v2 never ended up serving


def test_a_candidate_failing_its_smoke_test_after_the_switch_is_rolled_back_by_the_pipeline(world):
    platform, sm, data = world
    until_deploy(sm)
    sm.deploy_requests(NEW)
    sm.endpoint(OLD, "Updating")
    sm.endpoint(NEW)  # InService on the candidate's config: SageMaker serves it
    sm.answers(2, ok=False)  # its smoke test fails
    sm.production(NEW, 2)
    sm.mark_failed(2, total=2, stage="deploy")
    sm.endpoint_status(NEW, 2, status="Rejected")  # the guard: the failed candidate serves
    rollback_to_v1(sm, from_config=NEW)

    report = pipeline(platform, data)

    assert report.exit_code == 5
    assert report.outcome == "deploy of v2 failed; rolled back: v1 is serving"
    assert "rolled back to v1, which serves again" in stage(report, "deploy").detail
    assert history(platform) == [(2, "deploy"), (1, "rollback")]


def test_a_failed_verification_rolls_back_to_the_version_that_served_before(world):
    platform, sm, data = world
    until_deploy(sm)
    sm.deploy_requests(NEW)
    sm.endpoint(OLD, "Updating")
    sm.endpoint(NEW)
    sm.answers(2)  # the deploy's smoke test passes
    sm.production(NEW, 2)
    sm.answers(2, ok=False)  # verification fails
    sm.mark_failed(2, total=2, stage="verify")
    sm.endpoint_status(NEW, 2, status="Rejected")
    rollback_to_v1(sm, from_config=NEW)
    sm.endpoint_status(BACK, 1)

    report = pipeline(platform, data)

    assert report.exit_code == 5
    assert report.outcome == "verification of v2 failed; rolled back: v1 is serving"
    assert "v2 is marked Rejected (verify failed)" in stage(report, "verify").detail
    assert history(platform) == [(2, "deploy"), (1, "rollback")]
    spans = intervals(platform.history())
    assert [(s.version, s.end is None) for s in spans] == [(2, False), (1, True)]


def test_a_failed_rollback_says_the_failed_version_still_serves(world):
    platform, sm, data = world
    until_deploy(sm)
    sm.deploy_requests(NEW)
    sm.endpoint(OLD, "Updating")
    sm.endpoint(NEW)
    sm.answers(2)
    sm.production(NEW, 2)
    sm.answers(2, ok=False)  # verification fails
    sm.mark_failed(2, total=2, stage="verify")
    sm.endpoint_status(NEW, 2, status="Rejected")
    sm.get_version(1, total=2)  # the rollback...
    sm.production(NEW, 2, status="Rejected")
    sm.chain(NEW, 2)
    sm.sm.add_response("create_model", {"ModelArn": "arn:aws:sagemaker:::model/x"})
    sm.sm.add_response("create_endpoint_config", {"EndpointConfigArn": "arn:aws:sagemaker:::ec/x"})
    sm.sm.add_client_error("update_endpoint", "ThrottlingException", "Rate exceeded", 400)  # ...fails
    sm.endpoint_status(NEW, 2, status="Rejected")  # still the failed candidate
    sm.endpoint_status(NEW, 2, status="Rejected")  # the pipeline: the endpoint's URL

    report = pipeline(platform, data)

    assert report.exit_code == 7
    assert report.outcome.startswith("verification of v2 failed; v2 is serving; production needs attention")
    assert "v2 STILL SERVES: the rollback to v1 failed" in report.outcome
    assert "ThrottlingException" in report.outcome


def test_an_aws_error_reading_production_ends_the_run_at_evaluate(world):
    platform, sm, data = world
    sm.sm.add_client_error(
        "describe_endpoint", "AccessDeniedException", "not authorized to DescribeEndpoint", 400
    )

    report = pipeline(platform, data)

    assert report.exit_code == 6
    assert report.outcome.startswith("failed: evaluate (whatever served is unchanged): ")
    assert "AccessDeniedException" in report.outcome
    assert [s.status for s in report.stages[-3:]] == ["skipped", "skipped", "skipped"]


def test_a_failed_first_deployment_is_taken_out_of_service(world, aws):
    platform, sm, data = world
    sm.missing()  # evaluate: no endpoint, no production
    sm.register(2)
    sm.missing()  # the guard: nothing serves
    sm.get_version(2, total=2)
    sm.missing()  # AwsPlatform.deploy: production before
    sm.missing()  # rollout
    sm.deploy_requests(NEW, create=True)
    sm.endpoint(NEW, "Creating")
    sm.endpoint(NEW)
    sm.answers(2, ok=False)  # its smoke test fails, and it serves (InService)
    sm.production(NEW, 2)
    sm.mark_failed(2, total=2, stage="deploy")
    sm.endpoint_status(NEW, 2, status="Rejected")  # the guard: the failed candidate serves
    sm.production(NEW, 2, status="Rejected")  # take_down: what it takes down
    sm.chain(NEW, 2)  # endpoints.delete
    sm.sm.add_response("delete_endpoint", {}, {"EndpointName": ENDPOINT})

    report = pipeline(platform, data)

    assert report.exit_code == 5
    assert report.outcome == "deploy of v2 failed; nothing is serving"
    assert "nothing served before it, so it was taken out of service (endpoint demo-endpoint deleted" in (
        stage(report, "deploy").detail
    )
    assert history(platform) == [(2, "deploy"), (None, "down")]
    assert aws.client("cloudwatch").describe_alarms()["MetricAlarms"] == []  # its alarms went with it


def test_a_deploy_without_test_images_is_refused_before_anything_changes(world, tmp_path):
    platform, sm, _data = world
    platform.smoke_data = tmp_path / "nowhere"
    sm.get_version(2, total=2)  # the only call: any other would find no stubbed answer

    with pytest.raises(UsageError, match=r"cannot be smoke-tested; pass --data DIR .*or --allow-untested"):
        platform.deploy(2)


def test_an_untested_deploy_goes_ahead_only_when_asked_and_says_so(world, tmp_path):
    platform, sm, _data = world
    platform.smoke_data = tmp_path / "nowhere"
    sm.get_version(2, total=2)
    sm.production(OLD, 1)
    sm.chain(OLD, 1)
    sm.deploy_requests(NEW)
    sm.endpoint(OLD, "Updating")
    sm.endpoint(NEW)
    sm.production(NEW, 2)

    result = platform.deploy(2, allow_untested=True)

    assert result.ok and not result.tested and result.version == 2
    assert (
        result.message == "v2 is serving on demo-endpoint; NOT smoke-tested (deployed with --allow-untested)"
    )
    assert history(platform) == [(2, "deploy")]
