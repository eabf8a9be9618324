"""Batch transform on SageMaker: the CreateModel + CreateTransformJob requests checked by botocore's
Stubber against the real service model, the job lifecycle (InProgress -> Completed/Failed/Stopped)
scripted with Stubber (moto completes a transform job at once and runs no container), and S3 on moto,
where the test writes the `.out` objects a job's containers would write."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.stub import ANY, Stubber

from infra.aws import transform
from infra.aws.plan import DryRunExecutor, LiveExecutor
from infra.aws.platform import AwsPlatform
from infra.aws.session import Aws
from infra.errors import UsageError
from tests.factories import png_bytes
from tests.functional.aws.conftest import ROLE

ACCOUNT = "123456789012"
BUCKET = "demo-bucket"
GROUP = "demo-classification"
NOW = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
NAME = "demo-batch-v2-20231114-221320"
TAGS = [{"Key": "mlops:project", "Value": "demo"}]
T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
IMAGES = ("cats/a.png", "cats/b.jpg", "z.png")


def package_arn(version: int) -> str:
    return f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:model-package/{GROUP}/{version}"


def answer_for(label: str) -> bytes:
    """A `.out` object: what the serve program answered for one image."""
    body = {
        "predictions": [{"top_k": [{"label": label, "probability": 0.9}]}],
        "model": {"architecture": "smallcnn", "version": "abc123def456"},
    }
    return json.dumps(body).encode()


def put_inputs(aws: Aws, prefix: str = "batch/in/", names: tuple[str, ...] = IMAGES) -> None:
    for i, name in enumerate(names):
        aws.client("s3").put_object(Bucket=BUCKET, Key=f"{prefix}{name}", Body=png_bytes(seed=i))


def keys(aws: Aws, prefix: str) -> list[str]:
    page = aws.client("s3").list_objects_v2(Bucket=BUCKET, Prefix=prefix)
    return [item["Key"] for item in page.get("Contents", [])]


def job_answer(status: str, *, output: str, reason: str | None = None, seconds: int = 600) -> dict[str, Any]:
    """A DescribeTransformJob answer, as SageMaker shapes it."""
    body: dict[str, Any] = {
        "TransformJobName": NAME,
        "TransformJobArn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:transform-job/{NAME}",
        "TransformJobStatus": status,
        "ModelName": NAME,
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/batch/in/"}}
        },
        "TransformOutput": {"S3OutputPath": output},
        "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
        "CreationTime": T0,
    }
    if status != "InProgress":
        body["TransformStartTime"] = T0 + timedelta(seconds=60)
        body["TransformEndTime"] = T0 + timedelta(seconds=60 + seconds)
    if reason:
        body["FailureReason"] = reason
    return body


class Job:
    """Stands in for the transform job's containers: at its first wait it writes the `.out` objects of
    `scored` under the output path of the job that was created, as SageMaker would while InProgress."""

    def __init__(self, aws: Aws, scored: tuple[str, ...] = IMAGES) -> None:
        self.aws = aws
        self.scored = list(scored)
        self.output: str | None = None
        self.sleeps: list[float] = []
        self.interrupt_at: int | None = None

    def __call__(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        if self.interrupt_at == len(self.sleeps):
            raise KeyboardInterrupt
        assert self.output is not None
        prefix = self.output.removeprefix(f"s3://{BUCKET}/")
        for name in self.scored:
            label = "cat" if name.startswith("cats/") else "other"
            self.aws.client("s3").put_object(Bucket=BUCKET, Key=f"{prefix}{name}.out", Body=answer_for(label))
        self.scored = []


@pytest.fixture
def sagemaker(aws: Aws):
    with Stubber(aws.client("sagemaker")) as stubber:
        yield stubber
        stubber.assert_no_pending_responses()


def stub_version(sm: Stubber, version: int = 2, total: int = 2, status: str = "Approved") -> None:
    """registry.get_version: the group's list, then the package."""
    summaries = [
        {
            "ModelPackageArn": package_arn(n),
            "ModelPackageVersion": n,
            "CreationTime": T0,
            "ModelPackageStatus": "Completed",
            "ModelPackageGroupName": GROUP,
        }
        for n in range(1, total + 1)
    ]
    sm.add_response("list_model_packages", {"ModelPackageSummaryList": summaries})
    if version > total:
        return
    sm.add_response(
        "describe_model_package",
        {
            "ModelPackageName": GROUP,
            "ModelPackageGroupName": GROUP,
            "ModelPackageVersion": version,
            "ModelPackageArn": package_arn(version),
            "CreationTime": T0,
            "ModelPackageStatus": "Completed",
            "ModelPackageStatusDetails": {"ValidationStatuses": [], "ImageScanStatuses": []},
            "ModelApprovalStatus": status,
            "InferenceSpecification": {
                "Containers": [
                    {
                        "Image": f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/demo-serve@sha256:{'a' * 64}",
                        "ModelDataUrl": f"s3://{BUCKET}/demo/models/job-{version}/output/model.tar.gz",
                    }
                ],
                "SupportedContentTypes": ["image/png"],
                "SupportedResponseMIMETypes": ["application/json"],
            },
        },
        {"ModelPackageName": package_arn(version)},
    )


def stub_creates(sm: Stubber, job: Job, *, output_base: str = f"s3://{BUCKET}/batch/out/") -> None:
    """CreateModel from the package and CreateTransformJob, each with the request the CLI must send."""
    sm.add_response(
        "create_model",
        {"ModelArn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:model/x"},
        {
            "ModelName": ANY,
            "PrimaryContainer": {"ModelPackageName": package_arn(2)},
            "ExecutionRoleArn": ROLE,
            "Tags": ANY,
        },
    )
    expected = {
        "TransformJobName": ANY,
        "ModelName": ANY,
        "MaxConcurrentTransforms": 2,  # ml.m5.large: 2 vCPUs, as /execution-parameters would answer
        "MaxPayloadInMB": 6,
        "BatchStrategy": "SingleRecord",
        "Environment": {"MLOPS_MAX_CONCURRENCY": "2", "MLOPS_MAX_PAYLOAD_BYTES": str(6 * 1024 * 1024)},
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": f"s3://{BUCKET}/batch/in/"}},
            "ContentType": "application/x-image",
            "CompressionType": "None",
            "SplitType": "None",
        },
        "TransformOutput": {"S3OutputPath": ANY, "Accept": "application/json", "AssembleWith": "None"},
        "TransformResources": {"InstanceType": "ml.m5.large", "InstanceCount": 1},
        "Tags": ANY,
    }
    sm.add_response(
        "create_transform_job",
        {"TransformJobArn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:transform-job/{NAME}"},
        expected,
    )
    job.output = f"{output_base}{NAME}/"


def cli(aws: Aws, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., int]:
    """`mlops batch-predict` on the AWS platform, its clients the test's (moto S3, stubbed SageMaker);
    the job name is fixed so the test knows where the job writes."""
    from infra.cli import main

    def platform(ctx: Any) -> AwsPlatform:
        executor: Any = DryRunExecutor(emit=print) if ctx.dry_run else LiveExecutor(aws.client)
        return AwsPlatform(aws, ctx.config, executor, git_sha="abc123def456", cache=tmp_path / "cache")

    monkeypatch.setattr("infra.cli.aws.aws_platform", platform)
    monkeypatch.setattr(transform, "job_name", lambda project, version, now=None: NAME)
    return lambda *argv: main(["batch-predict", *argv])


# --- the requests -------------------------------------------------------------------------------------


def test_the_transform_job_request_is_exactly_what_sagemaker_takes(aws: Aws, sagemaker: Stubber):
    """The whole request, written out: Stubber checks it against the service model and that it arrives."""
    name = transform.job_name("demo", 2, NOW)
    assert name == NAME
    spec = transform.TransformSpec(
        name,
        name,
        "s3://demo-bucket/batch/in/",
        f"s3://demo-bucket/batch/out/{name}/",
        transform.resources("ml.m5.xlarge", 2),
        TAGS,
    )
    sagemaker.add_response(
        "create_model",
        {"ModelArn": "arn:aws:sagemaker:us-east-1:123456789012:model/m"},
        {
            "ModelName": NAME,
            "PrimaryContainer": {"ModelPackageName": package_arn(2)},
            "ExecutionRoleArn": ROLE,
            "Tags": TAGS,
        },
    )
    sagemaker.add_response(
        "create_transform_job",
        {"TransformJobArn": "arn:aws:sagemaker:us-east-1:123456789012:transform-job/j"},
        {
            "TransformJobName": NAME,
            "ModelName": NAME,
            "MaxConcurrentTransforms": 4,
            "MaxPayloadInMB": 6,
            "BatchStrategy": "SingleRecord",
            "Environment": {"MLOPS_MAX_CONCURRENCY": "4", "MLOPS_MAX_PAYLOAD_BYTES": "6291456"},
            "TransformInput": {
                "DataSource": {
                    "S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": "s3://demo-bucket/batch/in/"}
                },
                "ContentType": "application/x-image",
                "CompressionType": "None",
                "SplitType": "None",
            },
            "TransformOutput": {
                "S3OutputPath": f"s3://demo-bucket/batch/out/{NAME}/",
                "Accept": "application/json",
                "AssembleWith": "None",
            },
            "TransformResources": {"InstanceType": "ml.m5.xlarge", "InstanceCount": 2},
            "Tags": TAGS,
        },
    )
    transform.start(spec, package_arn=package_arn(2), role_arn=ROLE, executor=LiveExecutor(aws.client))


def test_limits_default_to_the_serve_program_within_the_100_mb_bound():
    assert transform.resources("ml.m5.large", 1) == transform.Resources("ml.m5.large", 1, 2, 6)
    assert transform.resources("ml.c5.4xlarge", 1).max_concurrent == 16  # 16 vCPUs: 16 x 6 MB = 96 MB
    assert transform.resources("ml.m5.24xlarge", 1).max_concurrent == 16  # 96 vCPUs, but 100 // 6 MB
    assert transform.resources("ml.m5.24xlarge", 1, payload_mb=1).max_concurrent == 64  # the server's limit
    assert transform.resources("ml.g5.xlarge", 3, concurrency=8, payload_mb=12).max_concurrent == 8
    with pytest.raises(UsageError, match="cannot run batch transform"):
        transform.resources("ml.t2.medium", 1)  # an endpoint type, not a transform type
    with pytest.raises(UsageError, match=r"--concurrency 20 x --max-payload-mb 6 is 120 MB"):
        transform.resources("ml.m5.large", 1, concurrency=20)
    with pytest.raises(UsageError, match="--max-payload-mb must be between 1 and 100"):
        transform.resources("ml.m5.large", 1, payload_mb=101)
    with pytest.raises(UsageError, match="--instance-count must be at least 1"):
        transform.resources("ml.m5.large", 0)


def test_s3_prefixes_are_normalised_and_anything_else_is_refused():
    assert transform.prefix_uri("s3://demo-bucket/batch/in", "--input") == "s3://demo-bucket/batch/in/"
    assert transform.prefix_uri(" s3://demo-bucket/batch/in// ", "--input") == "s3://demo-bucket/batch/in/"
    assert transform.prefix_uri("s3://demo-bucket", "--output") == "s3://demo-bucket/"
    for bad in ("/data/images", "images/", "s3://Bad_Bucket/x/", "https://demo-bucket/x/"):
        with pytest.raises(UsageError, match="must be an S3 prefix"):
            transform.prefix_uri(bad, "--input")
    with pytest.raises(UsageError, match="is inside --input"):
        transform.check_locations("s3://demo-bucket/batch/", "s3://demo-bucket/batch/out/")
    transform.check_locations("s3://demo-bucket/batch/in/", "s3://demo-bucket/batch/in-results/")


def test_the_input_listing_refuses_what_would_fail_the_job(aws: Aws):
    put_inputs(aws)
    aws.client("s3").put_object(Bucket=BUCKET, Key="batch/in/cats/", Body=b"")  # a console "folder"
    listing = transform.list_input(aws, f"s3://{BUCKET}/batch/in/")
    assert [key for key, _ in listing.images] == sorted(IMAGES) and listing.others == []
    transform.check_input(listing, 6)

    aws.client("s3").put_object(Bucket=BUCKET, Key="batch/in/labels.csv", Body=b"a,b")
    with pytest.raises(UsageError, match=r"1 object\(s\) that are not .png/.jpg/.jpeg \(labels.csv\)"):
        transform.check_input(transform.list_input(aws, f"s3://{BUCKET}/batch/in/"), 6)
    aws.client("s3").put_object(Bucket=BUCKET, Key="big/huge.png", Body=b"x" * (1024 * 1024 + 1))
    with pytest.raises(UsageError, match=r"exceed MaxPayloadInMB=1 .*huge\.png"):
        transform.check_input(transform.list_input(aws, f"s3://{BUCKET}/big/"), 1)
    with pytest.raises(UsageError, match="no images"):
        transform.check_input(transform.list_input(aws, f"s3://{BUCKET}/nothing/"), 6)


# --- waiting and results ------------------------------------------------------------------------------


def test_the_wait_reports_progress_and_the_billed_cost(aws: Aws, sagemaker: Stubber):
    output = f"s3://{BUCKET}/batch/out/{NAME}/"
    job = Job(aws)
    job.output = output
    aws.sleep = job
    for status in ("InProgress", "InProgress", "Completed"):
        sagemaker.add_response(
            "describe_transform_job", job_answer(status, output=output), {"TransformJobName": NAME}
        )
    events: list[str] = []

    outcome = transform.wait(aws, NAME, output_uri=output, total=3, on_event=events.append, poll_seconds=30)

    assert outcome.status == "Completed" and outcome.seconds == 600
    assert outcome.cost == pytest.approx(0.115 * 600 / 3600)  # ml.m5.large, 10 billed minutes
    assert [e.split(", ")[1] for e in events] == ["0/3 images written", "3/3 images written"]
    assert all(e.startswith(f"{NAME}: InProgress") and e.endswith("elapsed") for e in events)
    assert job.sleeps == [30, 30]
    assert "billed 600 s, cost $0.02" in outcome.line()


def test_ctrl_c_stops_the_job_and_waits_until_it_has_stopped(aws: Aws, sagemaker: Stubber):
    output = f"s3://{BUCKET}/batch/out/{NAME}/"
    job = Job(aws)
    job.output, job.interrupt_at = output, 1
    aws.sleep = job
    sagemaker.add_response("describe_transform_job", job_answer("InProgress", output=output))
    sagemaker.add_response("stop_transform_job", {}, {"TransformJobName": NAME})
    sagemaker.add_response("describe_transform_job", job_answer("Stopping", output=output))
    sagemaker.add_response("describe_transform_job", job_answer("Stopped", output=output, seconds=90))
    events: list[str] = []

    outcome = transform.wait(aws, NAME, output_uri=output, total=3, on_event=events.append)

    assert outcome.status == "Stopped" and outcome.seconds == 90
    assert any("stopping" in e and "StopTransformJob" in e for e in events)


def test_results_are_read_back_in_order_and_a_missing_output_is_an_error_line(aws: Aws):
    put_inputs(aws)
    output = f"s3://{BUCKET}/batch/out/{NAME}/"
    job = Job(aws, scored=("cats/a.png", "z.png"))
    job.output = output
    job(0)
    aws.client("s3").put_object(Bucket=BUCKET, Key=f"batch/out/{NAME}/cats/b.jpg.out", Body=b"<html>")
    listing = transform.list_input(aws, f"s3://{BUCKET}/batch/in/")

    records = transform.collect(aws, listing, output)

    assert [r["image"] for r in records] == ["cats/a.png", "cats/b.jpg", "z.png"]
    assert records[0]["predictions"][0]["top_k"][0]["label"] == "cat"
    assert records[0]["model"]["architecture"] == "smallcnn"
    assert "is not JSON" in records[1]["error"] and records[1]["status"] is None
    aws.client("s3").delete_object(Bucket=BUCKET, Key=f"batch/out/{NAME}/z.png.out")
    missing = transform.collect(aws, listing, output, why_missing="no output (the job ended Failed first)")
    assert missing[2] == {
        "image": "z.png",
        "error": f"no output (the job ended Failed first): s3://{BUCKET}/batch/out/{NAME}/z.png.out "
        "does not exist",
        "status": None,
    }


# --- the command --------------------------------------------------------------------------------------


def test_batch_predict_on_sagemaker_writes_one_line_per_image(aws, sagemaker, tmp_path, monkeypatch, capsys):
    put_inputs(aws)
    job = Job(aws)
    aws.sleep = job
    stub_version(sagemaker)
    stub_creates(sagemaker, job)
    output = f"s3://{BUCKET}/batch/out/{NAME}/"
    for status in ("InProgress", "InProgress", "Completed"):
        sagemaker.add_response("describe_transform_job", job_answer(status, output=output))
    sagemaker.add_response("delete_model", {}, {"ModelName": NAME})
    jsonl = tmp_path / "results.jsonl"

    code = cli(aws, tmp_path, monkeypatch)(
        "--input", f"s3://{BUCKET}/batch/in", "--output", f"s3://{BUCKET}/batch/out/", "--version", "2",
        "--jsonl", str(jsonl),
    )  # fmt: skip

    out = capsys.readouterr().out
    assert code == 0, out
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert [r["image"] for r in records] == list(IMAGES)
    assert [r["predictions"][0]["top_k"][0]["label"] for r in records] == ["cat", "cat", "other"]
    assert f"3 images under s3://{BUCKET}/batch/in/ -> {output}" in out
    assert "1 x ml.m5.large at $0.12/h each; about 5 min" in out and "estimated" in out  # before
    assert "billed 600 s, cost $0.02" in out  # after
    assert "3/3 images written" in out
    assert "scored 3, failed 0 of 3 images" in out


def test_a_failed_job_reports_its_reason_keeps_what_it_wrote_and_exits_1(
    aws, sagemaker, tmp_path, monkeypatch, capsys
):
    put_inputs(aws)
    job = Job(aws, scored=("cats/a.png",))
    aws.sleep = job
    stub_version(sagemaker)
    stub_creates(sagemaker, job)
    output = f"s3://{BUCKET}/batch/out/{NAME}/"
    reason = "ClientError: See job logs for more information"
    sagemaker.add_response("describe_transform_job", job_answer("InProgress", output=output))
    sagemaker.add_response("describe_transform_job", job_answer("Failed", output=output, reason=reason))
    sagemaker.add_response("delete_model", {}, {"ModelName": NAME})
    jsonl = tmp_path / "results.jsonl"

    code = cli(aws, tmp_path, monkeypatch)(
        "--input", f"s3://{BUCKET}/batch/in/", "--output", f"s3://{BUCKET}/batch/out/", "--version", "2",
        "--jsonl", str(jsonl),
    )  # fmt: skip

    err = capsys.readouterr().err
    assert code == 1
    assert f"transform job {NAME} ended Failed: {reason}" in err
    records = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert "predictions" in records[0]
    assert [("error" in r) for r in records] == [False, True, True]
    assert "the job ended Failed first" in records[1]["error"]


def test_the_dry_run_prints_the_plan_with_its_cost_and_creates_nothing(
    aws, sagemaker, tmp_path, monkeypatch, capsys
):
    put_inputs(aws)
    stub_version(sagemaker)  # reads still run; Stubber fails on any call not scripted here

    code = cli(aws, tmp_path, monkeypatch)(
        "--input", f"s3://{BUCKET}/batch/in/", "--output", f"s3://{BUCKET}/batch/out/", "--version", "2",
        "--instance-type", "ml.c5.xlarge", "--instance-count", "2", "--dry-run",
    )  # fmt: skip

    out = capsys.readouterr().out
    assert code == 0, out
    assert "sagemaker.CreateModel" in out and "sagemaker.CreateTransformJob" in out
    assert '"InstanceType": "ml.c5.xlarge"' in out and '"InstanceCount": 2' in out
    assert '"S3Uri": "s3://demo-bucket/batch/in/"' in out
    assert "2 x ml.c5.xlarge at $0.20/h each" in out and "estimated" in out
    assert "dry run: nothing was created" in out
    assert keys(aws, "batch/out/") == []


IN, OUT = ("--input", "s3://demo-bucket/in/"), ("--output", "s3://demo-bucket/o/")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--input", "/data/images", *OUT], "must be an S3 prefix"),
        ([*IN, "--output", "out.jsonl"], "--output 'out.jsonl' must be an S3"),
        ([*IN, *OUT, "--instance-type", "ml.t2.medium"], "cannot run batch transform"),
        ([*IN, *OUT, "--concurrency", "50"], "SageMaker allows at most 100 MB in flight"),
        ([*IN, *OUT, "--max-payload-mb", "0"], "--max-payload-mb must be between 1 and 100"),
        (["--input", "s3://demo-bucket/", *OUT], "is inside --input"),
        ([*IN, *OUT, "--no-wait", "--jsonl", "x"], "--jsonl needs the results"),
    ],
)
def test_bad_input_is_refused_before_any_aws_call(monkeypatch, capsys, argv, message):
    from infra.cli import main

    def no_aws(ctx: Any) -> None:
        raise AssertionError("an AWS platform was made for input that should have been refused")

    monkeypatch.setattr("infra.cli.aws.aws_platform", no_aws)
    assert main(["batch-predict", *argv]) == 2
    assert message in capsys.readouterr().err


def test_a_prefix_with_other_objects_or_an_unknown_version_is_refused_before_anything_is_created(
    aws, sagemaker, tmp_path, monkeypatch, capsys
):
    run = cli(aws, tmp_path, monkeypatch)
    argv = ("--input", f"s3://{BUCKET}/batch/in/", "--output", f"s3://{BUCKET}/batch/out/", "--version")
    put_inputs(aws)
    aws.client("s3").put_object(Bucket=BUCKET, Key="batch/in/manifest.json", Body=b"{}")
    stub_version(sagemaker)
    assert run(*argv, "2") == 2
    assert "not .png/.jpg/.jpeg (manifest.json)" in capsys.readouterr().err
    stub_version(sagemaker, version=5, total=2)
    assert run(*argv, "5") == 2
    assert "model version v5 is not in the registry group demo-classification (known: v1, v2)" in (
        capsys.readouterr().err
    )


def test_without_a_version_the_one_in_production_is_used_and_none_is_a_clear_error(
    aws, sagemaker, tmp_path, monkeypatch, capsys
):
    put_inputs(aws)
    sagemaker.add_client_error(
        "describe_endpoint", "ValidationException", 'Could not find endpoint "demo-endpoint".', 400
    )
    code = cli(aws, tmp_path, monkeypatch)(
        "--input", f"s3://{BUCKET}/batch/in/", "--output", f"s3://{BUCKET}/batch/out/"
    )
    assert code == 2
    assert "nothing serves in production (endpoint demo-endpoint); name a registered version" in (
        capsys.readouterr().err
    )


def test_no_wait_starts_the_job_and_returns(aws, sagemaker, tmp_path, monkeypatch, capsys):
    put_inputs(aws)
    job = Job(aws)
    stub_version(sagemaker)
    stub_creates(sagemaker, job)  # and nothing after: no DescribeTransformJob, no DeleteModel

    code = cli(aws, tmp_path, monkeypatch)(
        "--input", f"s3://{BUCKET}/batch/in/", "--output", f"s3://{BUCKET}/batch/out/", "--version", "2",
        "--no-wait",
    )  # fmt: skip

    assert code == 0
    assert f"started transform job {NAME}; its .out objects appear under s3://{BUCKET}/batch/out/{NAME}/" in (
        capsys.readouterr().out
    )
    assert not (Path(os.environ["MLOPS_HOME"]) / "batch").exists()  # no results were waited for
