"""The documented AWS commands, run from a shell against a moto server on 127.0.0.1 (AWS_ENDPOINT_URL).

moto completes a training job at once without running it, so the model a SageMaker job would leave is
trained for real by the local trainer first and placed where SageMaker puts it
(`<S3OutputPath>/<job>/output/model.tar.gz`). moto answers InvokeEndpoint from a queue we fill, since it
runs no container; the answers are what our server would say.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import boto3
import pytest

from infra.datasets import make_synthetic
from tests.conftest import free_port
from tests.harness.sagemaker import reset_moto

pytestmark = pytest.mark.e2e

SHA = "0123456789ab"
ROLE = "arn:aws:iam::123456789012:role/sagemaker-execution"
SECRET = "arn:aws:secretsmanager:us-east-1:123456789012:secret:wandb-api-key-AbCdEf"
CONFIG = """
[project]
name = "demo"
[gate]
version = 3
min = { test_accuracy = 0.3 }
compare = ["test_accuracy"]
tolerance = 0.05
[train]
hyperparameters = { arch = "smallcnn", epochs = "2", batch_size = "32", learning_rate = "0.05" }
[local]
hyperparameters = { arch = "smallcnn", epochs = "2", batch_size = "32", learning_rate = "0.05" }
smoke_images = 4
verify_images = 4
[aws]
bake_seconds = 60
"""
MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {
            "mediaType": "application/vnd.docker.container.image.v1+json",
            "size": 7023,
            "digest": "sha256:" + "a" * 64,
        },
        "layers": [
            {
                "mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip",
                "size": 32654,
                "digest": "sha256:" + "b" * 64,
            }
        ],
    }
)


@pytest.fixture(scope="module")
def moto_env(tmp_path_factory):
    from moto.sagemakerruntime.responses import SageMakerRuntimeResponse
    from moto.server import ThreadedMotoServer

    # moto's server decodes every request body as UTF-8 unless the handler asks for raw bytes, and its
    # sagemaker-runtime handler then JSON-encodes the body: InvokeEndpoint with a PNG body fails inside
    # moto. Raw bytes in, base64 text to its handler.
    original = SageMakerRuntimeResponse.invoke_endpoint

    def invoke_endpoint(self):
        if isinstance(self.body, bytes):
            self.body = base64.b64encode(self.body).decode()
        return original(self)

    SageMakerRuntimeResponse.use_raw_body = True
    SageMakerRuntimeResponse.invoke_endpoint = invoke_endpoint
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    reset_moto(f"http://127.0.0.1:{port}")  # another module's moto server may have left state behind
    root = tmp_path_factory.mktemp("aws-e2e")
    (root / "mlops.toml").write_text(CONFIG)
    data = root / "data"
    make_synthetic(data, classes=3, train_per_class=20, val_per_class=5, test_per_class=5)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLOPS_"))},
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_CONFIG_FILE": str(root / "no-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(root / "no-creds"),
        "MLOPS_HOME": str(root / "home"),
        "MLOPS_CONFIG": str(root / "mlops.toml"),
        "MLOPS_BUCKET": "demo-bucket",
        "MLOPS_SAGEMAKER_ROLE_ARN": ROLE,
        "MLOPS_WANDB_SECRET_ARN": SECRET,
        "MLOPS_CODE_VERSION": SHA,
        "MLOPS_ENDPOINT_PORT": str(free_port()),
        "COLUMNS": "200",
        "WANDB_MODE": "offline",
    }
    session = boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )

    def client(service):
        return session.client(service, endpoint_url=env["AWS_ENDPOINT_URL"])

    client("s3").create_bucket(Bucket="demo-bucket")
    # What `mlops images publish` leaves on a GitHub runner (no Docker engine here): tagged images in ECR.
    for image in ("train", "serve"):
        client("ecr").create_repository(
            repositoryName=f"demo-{image}",
            imageTagMutability="IMMUTABLE",
            imageScanningConfiguration={"scanOnPush": True},
        )
        client("ecr").put_image(repositoryName=f"demo-{image}", imageManifest=MANIFEST, imageTag=SHA)
    yield {"env": env, "data": data, "root": root, "port": port, "client": client}
    server.stop()
    SageMakerRuntimeResponse.invoke_endpoint = original
    SageMakerRuntimeResponse.use_raw_body = False


def mlops(env, *args, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", "infra.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def queue_endpoint_answers(port: int, label: str, count: int) -> None:
    body = json.dumps({"predictions": [{"top_k": [{"label": label, "probability": 0.9}]}], "model": {}})
    results = [
        {
            "Body": body,
            "ContentType": "application/json",
            "InvokedProductionVariant": "AllTraffic",
            "CustomAttributes": "",
        }
        for _ in range(count)
    ]
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/moto-api/static/sagemaker/endpoint-results",
        data=json.dumps({"results": results}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status in (200, 201)


def place_trained_model(env: dict[str, str], data: Path, *, project: str, job: str) -> None:
    """What a SageMaker job leaves behind: a model trained for real (by the local trainer, under the same
    contract), tarred at `<S3OutputPath>/<job>/output/model.tar.gz`, where moto's job says it is."""
    from infra.aws.plan import LiveExecutor
    from infra.aws.session import Aws, AwsSettings
    from infra.aws.storage import upload_model

    twin = mlops(env, "train", "--local", "--data", str(data), "--job-name", f"{job}-twin")
    assert twin.returncode == 0, twin.stdout + twin.stderr
    session = boto3.Session(
        aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1"
    )
    aws = Aws(
        AwsSettings(project=project, region="us-east-1", endpoint_url=env["AWS_ENDPOINT_URL"]),
        session=session,
    )
    model_dir = Path(env["MLOPS_HOME"]) / "jobs" / f"{job}-twin" / "model"
    upload_model(
        aws,
        model_dir,
        f"s3://demo-bucket/{project}/models/{job}/output/model.tar.gz",
        LiveExecutor(aws.client),
    )


def test_documented_aws_commands_run_against_a_moto_server(moto_env):
    env, data, client = moto_env["env"], moto_env["data"], moto_env["client"]

    upload = mlops(env, "data", "upload", "--data", str(data))
    assert upload.returncode == 0, upload.stdout + upload.stderr
    assert "uploaded" in upload.stdout and "s3://demo-bucket/demo/datasets/" in upload.stdout
    again = mlops(env, "data", "upload", "--data", str(data))
    assert again.returncode == 0 and " 0 uploaded" in again.stdout  # content-addressed: nothing new

    publish = mlops(env, "images", "publish", "--dry-run")
    assert publish.returncode == 0, publish.stdout + publish.stderr

    # The model SageMaker would produce: trained for real, placed where SageMaker writes it.
    job = "demo-e2e-job-1"
    place_trained_model(env, data, project="demo", job=job)

    train = mlops(env, "train", "--data", str(data), "--job-name", job)
    assert train.returncode == 0, train.stdout + train.stderr
    assert f"job {job}: Completed" in train.stdout and "test_accuracy=" in train.stdout
    request = client("sagemaker").describe_training_job(TrainingJobName=job)
    assert request["EnableManagedSpotTraining"] is True  # (moto keeps no Environment; the dry run shows it)
    assert "@sha256:" in request["AlgorithmSpecification"]["TrainingImage"]

    register = mlops(env, "register", "--job", job)
    assert register.returncode == 0, register.stdout + register.stderr
    assert "registered v1" in register.stdout and "Approved" in register.stdout

    queue_endpoint_answers(moto_env["port"], "circle", 10)
    deploy = mlops(env, "deploy", "--version", "1", "--data", str(data))
    assert deploy.returncode == 0, deploy.stdout + deploy.stderr
    history = mlops(env, "history")
    assert history.returncode == 0, history.stdout + history.stderr
    assert "v1" in history.stdout and "now (serving)" in history.stdout
    untested = mlops(env, "deploy", "--version", "1", "--data", str(moto_env["root"] / "no-such-data"))
    assert untested.returncode == 2 and "--allow-untested" in untested.stderr  # refused, nothing changed

    status = mlops(env, "endpoint", "status")
    assert status.returncode == 0, status.stdout + status.stderr
    assert "InService" in status.stdout and "v1" in status.stdout

    cleanup = mlops(env, "cleanup")
    assert cleanup.returncode == 0, cleanup.stdout + cleanup.stderr

    planned = mlops(env, "endpoint", "delete", "--dry-run")
    assert planned.returncode == 0 and "sagemaker.DeleteEndpoint" in planned.stdout
    assert (
        client("sagemaker").describe_endpoint(EndpointName="demo-endpoint")["EndpointStatus"] == "InService"
    )
    deleted = mlops(env, "endpoint", "delete")
    assert deleted.returncode == 0, deleted.stdout + deleted.stderr
    gone = mlops(env, "endpoint", "status")
    assert gone.returncode == 1 and "does not exist" in gone.stdout


def test_pipeline_dry_run_prints_the_whole_plan(moto_env):
    result = mlops(moto_env["env"], "pipeline", "--dry-run", "--data", str(moto_env["data"]))
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for needle in (
        '"EnableManagedSpotTraining": true',
        '"CheckpointConfig"',
        '"MetricDefinitions"',
        SECRET,
        '"DeploymentConfig"',
        '"AutoRollbackConfiguration"',
        "sagemaker.CreateTrainingJob",
        "sagemaker.CreateModelPackage",
        "cloudwatch.PutMetricAlarm",
    ):
        assert needle in out, needle
    assert "WANDB_API_KEY" not in out


def test_missing_settings_name_the_variable(moto_env):
    env = {k: v for k, v in moto_env["env"].items() if k != "MLOPS_BUCKET"}
    result = mlops(env, "data", "upload", "--data", str(moto_env["data"]))
    assert result.returncode == 2
    assert "MLOPS_BUCKET" in result.stderr and "Traceback" not in result.stderr


def test_the_pipeline_runs_end_to_end_on_the_aws_platform(moto_env):
    # Its own project, so its deploy is a first one: moto does not implement UpdateEndpoint (the
    # blue/green path is covered with Stubber in tests/functional/aws/test_endpoints.py).
    env = {
        **moto_env["env"],
        "MLOPS_PROJECT": "flow",
        "GITHUB_STEP_SUMMARY": str(moto_env["root"] / "summary.md"),
    }
    client, data = moto_env["client"], moto_env["data"]
    for image in ("train", "serve"):
        client("ecr").create_repository(repositoryName=f"flow-{image}", imageTagMutability="IMMUTABLE")
        client("ecr").put_image(repositoryName=f"flow-{image}", imageManifest=MANIFEST, imageTag=SHA)
    job = "flow-e2e-job-1"
    place_trained_model(env, data, project="flow", job=job)
    queue_endpoint_answers(moto_env["port"], "circle", 40)

    result = mlops(env, "pipeline", "--data", str(data), "--job-name", job)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for stage in ("data", "train", "evaluate", "register", "deploy", "verify"):
        assert f"ok {stage} (" in out, out
    assert "promoted v1 (previous production: none)" in out and "sagemaker://flow-endpoint" in out
    summary = Path(env["GITHUB_STEP_SUMMARY"]).read_text()
    assert job in summary and "**Billing:**" in summary and "spot" in summary
    assert (
        client("sagemaker").describe_endpoint(EndpointName="flow-endpoint")["EndpointStatus"] == "InService"
    )
