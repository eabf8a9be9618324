"""Endpoint modes against the fake SageMaker (tests/harness/sagemaker.py): a moto server whose endpoints
are answered by the real serving program. An async deploy is smoke-tested through S3 and
InvokeEndpointAsync end to end; a serverless endpoint's container gets the 4 MB payload cap, and its own
413 says so; a broken async candidate is reported serving with its failure, for infra.guard."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import pytest

from infra.aws import endpoints, registry, rollout
from infra.aws.plan import LiveExecutor
from infra.aws.session import Aws, AwsSettings
from infra.settings import AwsConfig
from infra.smoke import Sample
from tests.factories import make_model_artifact, png_bytes
from tests.harness.sagemaker import ACCOUNT, REGION, FakeSageMaker

pytestmark = pytest.mark.e2e

ROLE = f"arn:aws:iam::{ACCOUNT}:role/sagemaker-execution"
IMAGE = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/demo-serve@sha256:" + "a" * 64
CLASSES = ["circle", "square", "triangle"]
TAGS = [{"Key": "mlops:project", "Value": "demo"}]


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    root = tmp_path_factory.mktemp("modes")
    with FakeSageMaker(root) as server:
        server.client("s3").create_bucket(Bucket="demo-bucket")
        yield server


def handle(fake: FakeSageMaker) -> Aws:
    settings = AwsSettings(
        project="demo", region=REGION, bucket="demo-bucket", role_arn=ROLE, endpoint_url=fake.url
    )
    return Aws(settings, session=fake.session, sleep=lambda seconds: None)


def package(fake: FakeSageMaker, aws: Aws, tmp_path: Path, job: str) -> str:
    """A registered Approved version whose model.tar.gz is a real (untrained) artifact."""
    model = tmp_path / job
    make_model_artifact(model)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        for path in sorted(model.rglob("*")):
            tar.add(path, arcname=path.relative_to(model).as_posix())
    key = f"demo/models/{job}/output/model.tar.gz"
    fake.client("s3").put_object(Bucket="demo-bucket", Key=key, Body=archive.getvalue())
    executor = LiveExecutor(aws.client)
    registry.ensure_group(aws, "demo-classification", executor, TAGS)
    version = registry.register(
        aws,
        "demo-classification",
        image_uri=IMAGE,
        model_data_uri=f"s3://demo-bucket/{key}",
        metrics={"test_accuracy": 0.9},
        metadata={"training_job": job},
        status="Approved",
        description=f"{job}: gate passed",
        executor=executor,
    )
    return version.arn


def deploy(aws: Aws, arn: str, config: AwsConfig, project: str) -> rollout.DeployOutcome:
    events: list[str] = []
    samples = [Sample(png_bytes(seed=i), "image/png", "circle") for i in range(2)]
    return rollout.deploy(
        aws,
        project=project,
        package_arn=arn,
        version=1,
        role_arn=ROLE,
        config=config,
        executor=LiveExecutor(aws.client),
        tags=TAGS,
        samples=samples,
        classes=CLASSES,
        on_event=events.append,
        poll_seconds=0.01,
        image_uri=IMAGE,
    )


def listing(aws: Aws, prefix: str) -> list[str]:
    answer: dict[str, Any] = aws.client("s3").list_objects_v2(Bucket="demo-bucket", Prefix=prefix)
    return [o["Key"] for o in answer.get("Contents", [])]


def test_an_async_endpoint_is_smoke_tested_through_s3_by_the_real_server(fake, tmp_path):
    aws = handle(fake)
    arn = package(fake, aws, tmp_path, "job-async")

    outcome = deploy(aws, arn, AwsConfig(endpoint_mode="async"), "demoasync")

    assert outcome.ok and outcome.smoke is not None and outcome.smoke["ok"], outcome.message
    assert outcome.smoke["images"] == 2
    # an async endpoint takes only asynchronous invocations, as on SageMaker
    status, payload = endpoints.invoke(aws, "demoasync-endpoint", png_bytes(), "image/png")
    assert status == 400 and "use InvokeEndpointAsync" in payload["error"]
    # through the platform's sender, an answer of the real program, read back from S3
    send = rollout.platform_sender(aws, "demoasync", AwsConfig(endpoint_mode="async"))
    status, payload = send(png_bytes(seed=7), "image/png")
    assert status == 200 and payload["predictions"][0]["top_k"][0]["label"] in CLASSES
    assert listing(aws, "demoasync/async-output/") == []  # requests and answers cleaned up


def test_a_serverless_container_refuses_what_the_serverless_front_door_would(fake, tmp_path):
    aws = handle(fake)
    arn = package(fake, aws, tmp_path, "job-serverless")

    outcome = deploy(aws, arn, AwsConfig(endpoint_mode="serverless"), "demoserverless")

    assert outcome.ok, outcome.message
    # 5 MB: under real-time's 6 MB, over serverless's 4 MB; the container was told the 4 MB
    status, payload = endpoints.invoke(aws, "demoserverless-endpoint", b"\0" * (5 * 1024 * 1024), "image/png")
    assert status == 413, payload


def test_a_broken_async_candidate_is_reported_serving_with_its_failure(fake, tmp_path):
    aws = handle(fake)
    arn = package(fake, aws, tmp_path, "job-broken")
    fake.broken.add("/job-broken/")

    outcome = deploy(aws, arn, AwsConfig(endpoint_mode="async"), "demobroken")

    assert not outcome.ok and outcome.serving_candidate  # infra.guard takes it down: nothing served before
    assert outcome.smoke is not None
    assert outcome.smoke["errors"][0].startswith("HTTP 500: Received server error (500)")
