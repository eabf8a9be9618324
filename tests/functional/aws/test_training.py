"""Training jobs: the CreateTrainingJob request, the wait loop through every lifecycle, logs, listing.

SageMaker lifecycles (InProgress -> Completed/Failed/Stopped, spot interruptions) run against botocore's
Stubber, which checks every request and response against the real service model; moto shows that the
request also works end to end and serves CloudWatch Logs.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import botocore.session
import pytest
from botocore.stub import Stubber

from infra.aws import costs
from infra.aws.plan import DryRunExecutor, LiveExecutor
from infra.aws.session import Aws, tags
from infra.aws.training import (
    CHECKPOINT_LOCAL_PATH,
    JobSpec,
    describe,
    list_jobs,
    start,
    stop,
    training_job_call,
)
from infra.aws.watch import LOG_GROUP, log_lines, wait
from infra.errors import UsageError
from tests.functional.aws.conftest import REGION, ROLE, SECRET, FakeSleep, settings
from train.metrics import sagemaker_metric_definitions

JOB = "demo-20250101-120000-ab12"
ARN = f"arn:aws:sagemaker:{REGION}:123456789012:training-job/{JOB}"
IMAGE = f"123456789012.dkr.ecr.{REGION}.amazonaws.com/demo-train@sha256:{'a' * 64}"
WANDB_KEY = "0123456789abcdef0123456789abcdef01234567"  # what a W&B API key looks like: 40 hex
T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def job_spec(**overrides: Any) -> JobSpec:
    values: dict[str, Any] = {
        "job_name": JOB,
        "image_uri": IMAGE,
        "role_arn": ROLE,
        "hyperparameters": {"arch": "resnet18", "epochs": "30", "batch_size": "128", "learning_rate": "0.1"},
        "channels": {
            c: f"s3://demo-bucket/demo/datasets/abc123/{c}/" for c in ("train", "validation", "test")
        },
        "output_uri": "s3://demo-bucket/demo/models/",
        "checkpoint_uri": f"s3://demo-bucket/demo/checkpoints/{JOB}/",
        "instance_type": "ml.g5.xlarge",
        "instance_count": 1,
        "spot": True,
        "max_runtime_seconds": 7200,
        "max_wait_seconds": 14400,
        "volume_size_gb": 50,
        "wandb_secret_arn": SECRET,
        "code_version": "abc123def456",
        "tags": tags(settings(), git_sha="abc123def456", expiry_days=14, now=0),
    }
    values.update(overrides)
    return JobSpec(**values)


@dataclass
class Stubs:
    aws: Aws
    sleep: FakeSleep
    sagemaker: Stubber
    logs: Stubber


@functools.cache
def _botocore_session() -> botocore.session.Session:
    # Shared so the large SageMaker service model is parsed once per run, not once per test.
    return botocore.session.get_session()


def stubbed() -> Iterator[Stubs]:
    """Real boto3 clients (fake credentials from the root conftest) with every call stubbed; at the
    end, every queued response must have been used."""
    sleep = FakeSleep()
    session = boto3.Session(region_name=REGION, botocore_session=_botocore_session())
    aws = Aws(settings(), session=session, sleep=sleep)
    sagemaker, logs = Stubber(aws.client("sagemaker")), Stubber(aws.client("logs"))
    with sagemaker, logs:
        yield Stubs(aws, sleep, sagemaker, logs)
    sagemaker.assert_no_pending_responses()
    logs.assert_no_pending_responses()


@pytest.fixture
def stubs() -> Iterator[Stubs]:
    yield from stubbed()


def transition(status: str, message: str, minute: int) -> dict[str, Any]:
    return {"Status": status, "StartTime": T0 + timedelta(minutes=minute), "StatusMessage": message}


def described(status: str, secondary: str, transitions: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    """A DescribeTrainingJob response for a spot job on one ml.g5.xlarge."""
    return {
        "TrainingJobName": JOB,
        "TrainingJobArn": ARN,
        "ModelArtifacts": {"S3ModelArtifacts": ""},
        "TrainingJobStatus": status,
        "SecondaryStatus": secondary,
        "StoppingCondition": {"MaxRuntimeInSeconds": 7200, "MaxWaitTimeInSeconds": 14400},
        "CreationTime": T0,
        "ResourceConfig": {"InstanceType": "ml.g5.xlarge", "InstanceCount": 1, "VolumeSizeInGB": 50},
        "EnableManagedSpotTraining": True,
        "CheckpointConfig": {"S3Uri": f"s3://demo-bucket/demo/checkpoints/{JOB}/"},
        "SecondaryStatusTransitions": copy.deepcopy(transitions),
        **extra,
    }


def expect_describe(stubs: Stubs, response: dict[str, Any]) -> None:
    stubs.sagemaker.add_response("describe_training_job", response, expected_params={"TrainingJobName": JOB})


STARTING = transition("Starting", "Preparing the instances for training", 0)
DOWNLOADING = transition("Downloading", "Downloading input data", 3)
TRAINING = transition("Training", "Training image download completed. Training in progress.", 5)
UPLOADING = transition("Uploading", "Uploading generated training model", 50)
COMPLETED = transition("Completed", "Training job completed", 52)
FINAL_METRICS = [
    {"MetricName": "test:accuracy", "Value": 0.91, "Timestamp": T0},
    {"MetricName": "test:loss", "Value": 0.28, "Timestamp": T0},
    {"MetricName": "validation:accuracy", "Value": 0.9, "Timestamp": T0},
    {"MetricName": "ObjectiveMetric", "Value": 0.9, "Timestamp": T0},  # not ours: dropped
]


# ---------------------------------------------------------------------------------------------------
# The request


def test_the_request_passes_the_service_model_and_carries_spot_checkpoints_and_metrics(stubs: Stubs):
    call = training_job_call(job_spec())
    stubs.sagemaker.add_response("create_training_job", {"TrainingJobArn": ARN}, expected_params=call.params)

    assert start(stubs.aws, job_spec(), LiveExecutor(stubs.aws.client)) == JOB

    params = call.params
    assert params["EnableManagedSpotTraining"] is True
    assert params["StoppingCondition"] == {"MaxRuntimeInSeconds": 7200, "MaxWaitTimeInSeconds": 14400}
    assert params["CheckpointConfig"] == {
        "S3Uri": f"s3://demo-bucket/demo/checkpoints/{JOB}/",
        "LocalPath": CHECKPOINT_LOCAL_PATH,
    }
    assert params["AlgorithmSpecification"] == {
        "TrainingImage": IMAGE,
        "TrainingInputMode": "File",
        "MetricDefinitions": sagemaker_metric_definitions(),
    }
    assert [c["ChannelName"] for c in params["InputDataConfig"]] == ["train", "validation", "test"]
    assert params["InputDataConfig"][0]["DataSource"]["S3DataSource"] == {
        "S3DataType": "S3Prefix",
        "S3Uri": "s3://demo-bucket/demo/datasets/abc123/train/",
        "S3DataDistributionType": "FullyReplicated",
    }
    assert params["InputDataConfig"][0]["ContentType"] == "application/x-image"
    assert all(isinstance(v, str) for v in params["HyperParameters"].values())
    assert params["Environment"] == {
        "MLOPS_WANDB_SECRET_ARN": SECRET,
        "MLOPS_CODE_VERSION": "abc123def456",
        "WANDB_PROJECT": "demo",
        # For the W&B run's group and tags (train/tracking.py): where and how it ran, and why.
        "MLOPS_INSTANCE_TYPE": "ml.g5.xlarge",
        "MLOPS_SPOT": "true",
        "MLOPS_TRIGGER": "test",
    }
    assert {"Key": "mlops:project", "Value": "demo"} in params["Tags"]


def test_no_secret_value_appears_anywhere_in_the_request():
    rendered = training_job_call(job_spec()).render()
    assert SECRET in rendered
    assert "WANDB_API_KEY" not in rendered and WANDB_KEY not in rendered


def test_on_demand_jobs_have_no_max_wait_and_distributed_jobs_keep_their_count():
    params = training_job_call(job_spec(spot=False, max_wait_seconds=60, instance_count=4)).params
    assert params["EnableManagedSpotTraining"] is False
    assert params["StoppingCondition"] == {"MaxRuntimeInSeconds": 7200}
    assert params["ResourceConfig"]["InstanceCount"] == 4


def test_every_host_of_a_distributed_spot_job_gets_the_whole_dataset(stubs: Stubs):
    spec = job_spec(instance_count=2)
    call = training_job_call(spec)
    stubs.sagemaker.add_response("create_training_job", {"TrainingJobArn": ARN}, expected_params=call.params)
    assert start(stubs.aws, spec, LiveExecutor(stubs.aws.client)) == JOB  # the service model accepts it
    params = call.params
    assert params["ResourceConfig"]["InstanceCount"] == 2 and params["EnableManagedSpotTraining"] is True
    # The trainer shards the data itself: each host needs all of it.
    assert {c["DataSource"]["S3DataSource"]["S3DataDistributionType"] for c in params["InputDataConfig"]} == {
        "FullyReplicated"
    }
    assert params["EnableInterContainerTrafficEncryption"] is False


def test_a_spot_wait_shorter_than_the_runtime_is_refused_before_any_call(stubs: Stubs):
    # No response is queued: any call to SageMaker would fail the test with UnStubbedResponseError.
    spec = job_spec(max_runtime_seconds=7200, max_wait_seconds=3600)
    with pytest.raises(UsageError) as err:
        start(stubs.aws, spec, LiveExecutor(stubs.aws.client))
    assert "3600" in str(err.value) and "7200" in str(err.value)


def test_a_tag_only_image_is_refused(stubs: Stubs):
    tagged = f"123456789012.dkr.ecr.{REGION}.amazonaws.com/demo-train:latest"
    with pytest.raises(UsageError, match="by digest"):
        start(stubs.aws, job_spec(image_uri=tagged), LiveExecutor(stubs.aws.client))


def test_an_image_from_another_region_is_refused(stubs: Stubs):
    elsewhere = IMAGE.replace(REGION, "eu-west-1")
    with pytest.raises(UsageError, match="same region"):
        start(stubs.aws, job_spec(image_uri=elsewhere), LiveExecutor(stubs.aws.client))


@pytest.mark.parametrize(
    ("overrides", "needle"),
    [
        ({"environment": {"WANDB_API_KEY": "anything"}}, "WANDB_API_KEY"),
        ({"environment": {"HF_TOKEN": "x"}}, "HF_TOKEN"),
        ({"environment": {"DB_PASSWORD": "x"}}, "DB_PASSWORD"),
        ({"environment": {"SOMETHING": WANDB_KEY}}, "SOMETHING"),
        ({"environment": {"AWS_KEY_ID": "AKIAABCDEFGHIJKLMNOP"}}, "AWS_KEY_ID"),
        ({"hyperparameters": {"epochs": "3", "_wandb_api_key": "x"}}, "_wandb_api_key"),
        ({"hyperparameters": {"epochs": "3", "_note": WANDB_KEY}}, "_note"),
        ({"wandb_secret_arn": WANDB_KEY}, "ARN"),
    ],
)
def test_secret_looking_values_are_refused(overrides: dict[str, Any], needle: str):
    with pytest.raises(UsageError) as err:
        training_job_call(job_spec(**overrides))
    assert needle in str(err.value)
    assert WANDB_KEY not in str(err.value)  # the refusal never echoes the secret


def test_a_full_git_sha_is_a_code_version_not_a_secret():
    sha = "0123456789abcdef0123456789abcdef01234567"
    assert training_job_call(job_spec(code_version=sha)).params["Environment"]["MLOPS_CODE_VERSION"] == sha


@pytest.mark.parametrize(
    ("hyperparameters", "needle"),
    [({"epochs": "zero"}, "epochs"), ({"learning_rat": "0.1"}, "learning_rate"), ({"arch": "vgg"}, "arch")],
)
def test_bad_hyperparameters_are_refused(hyperparameters: dict[str, str], needle: str):
    with pytest.raises(UsageError, match=needle):
        training_job_call(job_spec(hyperparameters=hyperparameters))


@pytest.mark.parametrize("name", ["a" * 64, "-demo", "demo_1", "demo-", "", "demo job"])
def test_job_names_outside_sagemakers_pattern_are_refused(name: str):
    with pytest.raises(UsageError, match="63"):
        training_job_call(job_spec(job_name=name))


def test_a_63_character_job_name_is_accepted():
    assert training_job_call(job_spec(job_name="a" * 63)).params["TrainingJobName"] == "a" * 63


def test_a_dry_run_prints_the_request_and_calls_nothing(stubs: Stubs):
    lines: list[str] = []
    assert start(stubs.aws, job_spec(), DryRunExecutor(emit=lines.append)) == JOB
    assert len(lines) == 1 and lines[0].startswith("sagemaker.CreateTrainingJob")
    assert '"EnableManagedSpotTraining": true' in lines[0]


# ---------------------------------------------------------------------------------------------------
# Waiting: every lifecycle


def test_a_spot_job_that_completes_reports_metrics_savings_and_cost(stubs: Stubs):
    expect_describe(stubs, described("InProgress", "Starting", [STARTING]))
    stubs.logs.add_client_error(
        "describe_log_streams", service_error_code="ResourceNotFoundException", http_status_code=400
    )
    expect_describe(stubs, described("InProgress", "Training", [STARTING, DOWNLOADING, TRAINING]))
    stream = f"{JOB}/algo-1-1735732800"
    stubs.logs.add_response(
        "describe_log_streams",
        {"logStreams": [{"logStreamName": stream}]},
        expected_params={"logGroupName": LOG_GROUP, "logStreamNamePrefix": f"{JOB}/"},
    )
    stubs.logs.add_response(
        "get_log_events",
        {
            "events": [
                {"timestamp": 1, "message": "epoch=1 epochs=30 train_loss=1.2000", "ingestionTime": 2},
                {"timestamp": 2, "message": "epoch=2 epochs=30 train_loss=0.9000", "ingestionTime": 3},
            ],
            "nextForwardToken": "f/2",
            "nextBackwardToken": "b/1",
        },
        expected_params={"logGroupName": LOG_GROUP, "logStreamName": stream, "startFromHead": True},
    )
    stubs.logs.add_response(
        "get_log_events",
        {"events": [], "nextForwardToken": "f/2", "nextBackwardToken": "b/1"},
        expected_params={
            "logGroupName": LOG_GROUP,
            "logStreamName": stream,
            "startFromHead": True,
            "nextToken": "f/2",
        },
    )
    expect_describe(
        stubs,
        described(
            "Completed",
            "Completed",
            [STARTING, DOWNLOADING, TRAINING, UPLOADING, COMPLETED],
            ModelArtifacts={"S3ModelArtifacts": f"s3://demo-bucket/demo/models/{JOB}/output/model.tar.gz"},
            FinalMetricDataList=FINAL_METRICS,
            TrainingTimeInSeconds=3000,
            BillableTimeInSeconds=900,
        ),
    )
    stubs.logs.add_response(
        "describe_log_streams",
        {"logStreams": [{"logStreamName": stream}]},
        expected_params={"logGroupName": LOG_GROUP, "logStreamNamePrefix": f"{JOB}/"},
    )
    stubs.logs.add_response(
        "get_log_events",
        {
            "events": [{"timestamp": 3, "message": "final test_accuracy=0.9100", "ingestionTime": 4}],
            "nextForwardToken": "f/3",
            "nextBackwardToken": "b/2",
        },
        expected_params={
            "logGroupName": LOG_GROUP,
            "logStreamName": stream,
            "startFromHead": True,
            "nextToken": "f/2",
        },
    )
    stubs.logs.add_response(
        "get_log_events",
        {"events": [], "nextForwardToken": "f/3", "nextBackwardToken": "b/2"},
        expected_params=None,
    )

    lines: list[str] = []
    outcome = wait(stubs.aws, JOB, on_event=lines.append, poll_seconds=30)

    assert lines[:-1] == [
        "Starting: Preparing the instances for training",
        f"{JOB}: InProgress",
        "Downloading: Downloading input data",
        "Training: Training image download completed. Training in progress.",
        "epoch=1 epochs=30 train_loss=1.2000",
        "epoch=2 epochs=30 train_loss=0.9000",
        "Uploading: Uploading generated training model",
        "Completed: Training job completed",
        f"{JOB}: Completed",
        "final test_accuracy=0.9100",
    ]
    assert "billable 900 s" in lines[-1] and "spot savings 70%" in lines[-1] and "$" in lines[-1]
    assert stubs.sleep.calls == [30, 30]  # two waits, both through the fake
    assert outcome.succeeded and outcome.status == "Completed"
    assert outcome.metrics == {"test_accuracy": 0.91, "test_loss": 0.28, "val_accuracy": 0.9}
    assert outcome.model_artifact_uri == f"s3://demo-bucket/demo/models/{JOB}/output/model.tar.gz"
    assert (outcome.training_seconds, outcome.billable_seconds) == (3000, 900)
    assert outcome.spot_savings == pytest.approx(0.7)
    # Billable seconds of a spot job are already discounted: priced at the on-demand rate.
    assert outcome.estimated_cost == pytest.approx(costs.PRICES["ml.g5.xlarge"][0] * 900 / 3600)
    assert outcome.transitions == ["Starting", "Downloading", "Training", "Uploading", "Completed"]
    assert outcome.failure_reason is None


def test_a_failed_job_surfaces_its_failure_reason(stubs: Stubs):
    expect_describe(stubs, described("InProgress", "Training", [STARTING, TRAINING]))
    failed = transition("Failed", "Training job failed", 9)
    reason = "AlgorithmError: hyperparameter 'epochs': 'x' is not an integer"
    expect_describe(
        stubs,
        described(
            "Failed", "Failed", [STARTING, TRAINING, failed], FailureReason=reason, TrainingTimeInSeconds=240
        ),
    )
    lines: list[str] = []
    outcome = wait(stubs.aws, JOB, on_event=lines.append, stream_logs=False)

    assert lines[-3:-1] == ["Failed: Training job failed", f"{JOB}: Failed"]
    assert reason in lines[-1]
    assert outcome.status == "Failed" and not outcome.succeeded
    assert outcome.failure_reason == reason
    assert outcome.model_artifact_uri is None
    # No billable time reported yet: the wall-clock time of a spot job is priced at the spot rate.
    assert outcome.estimated_cost == pytest.approx(costs.PRICES["ml.g5.xlarge"][1] * 240 / 3600)
    assert stubs.sleep.calls == [30]


def test_a_spot_interruption_and_resume_are_each_reported(stubs: Stubs):
    interrupted = transition("Interrupted", "Training interrupted: spot capacity reclaimed", 20)
    restarting = transition("Starting", "Preparing the instances for training", 22)
    resumed = transition("Training", "Training image download completed. Training in progress.", 25)
    history = [STARTING, TRAINING, interrupted, restarting, resumed, UPLOADING, COMPLETED]
    for count, (status, secondary) in zip(
        (2, 3, 4, 5, 7),
        [
            ("InProgress", "Training"),
            ("InProgress", "Interrupted"),
            ("InProgress", "Starting"),
            ("InProgress", "Training"),
            ("Completed", "Completed"),
        ],
        strict=True,
    ):
        extra = (
            {"TrainingTimeInSeconds": 3000, "BillableTimeInSeconds": 1200} if status == "Completed" else {}
        )
        expect_describe(stubs, described(status, secondary, history[:count], **extra))

    lines: list[str] = []
    outcome = wait(stubs.aws, JOB, on_event=lines.append, stream_logs=False, poll_seconds=60)

    shown = [line.split(":")[0] for line in lines if not line.startswith(JOB)]
    assert shown == [
        "Starting",
        "Training",
        "Interrupted",
        "Starting",
        "Training",
        "Uploading",
        "Completed",
    ]
    interruption = next(line for line in lines if line.startswith("Interrupted"))
    assert "spot capacity reclaimed" in interruption and "resumes from its last checkpoint" in interruption
    assert outcome.status == "Completed"
    assert outcome.transitions == [t["Status"] for t in history]
    assert outcome.spot_savings == pytest.approx(0.6)
    assert stubs.sleep.calls == [60, 60, 60, 60]


def test_running_out_of_spot_wait_time_is_surfaced_clearly(stubs: Stubs):
    expect_describe(stubs, described("InProgress", "Starting", [STARTING]))
    exceeded = transition("MaxWaitTimeExceeded", "Job stopped: it exceeded the maximum wait time", 240)
    expect_describe(
        stubs,
        described(
            "Stopped",
            "MaxWaitTimeExceeded",
            [STARTING, exceeded],
            TrainingTimeInSeconds=7000,
            BillableTimeInSeconds=2100,
        ),
    )
    lines: list[str] = []
    outcome = wait(stubs.aws, JOB, on_event=lines.append, stream_logs=False)

    exceeded_line = next(line for line in lines if line.startswith("MaxWaitTimeExceeded"))
    assert "MaxWaitTimeInSeconds" in exceeded_line
    assert outcome.status == "Stopped" and outcome.secondary_status == "MaxWaitTimeExceeded"
    assert outcome.failure_reason is not None
    assert outcome.failure_reason.startswith("MaxWaitTimeExceeded")
    assert "MaxWaitTimeInSeconds=14400" in outcome.failure_reason
    assert f"s3://demo-bucket/demo/checkpoints/{JOB}/" in outcome.failure_reason
    assert outcome.failure_reason in lines[-1]


class InterruptOnce(FakeSleep):
    """A fake sleep that raises KeyboardInterrupt on its first call, as Ctrl-C during a wait would."""

    def __call__(self, seconds: float) -> None:
        super().__call__(seconds)
        if len(self.calls) == 1:
            raise KeyboardInterrupt


def test_ctrl_c_stops_the_job_and_waits_until_it_has_stopped(stubs: Stubs):
    stubs.aws.sleep = sleep = InterruptOnce()
    expect_describe(stubs, described("InProgress", "Training", [STARTING, TRAINING]))
    stubs.sagemaker.add_response("stop_training_job", {}, expected_params={"TrainingJobName": JOB})
    stopping = transition("Stopping", "Stopping the training job", 12)
    expect_describe(stubs, described("InProgress", "Stopping", [STARTING, TRAINING, stopping]))
    stopped = transition("Stopped", "Training job stopped", 13)
    expect_describe(
        stubs,
        described("Stopped", "Stopped", [STARTING, TRAINING, stopping, stopped], TrainingTimeInSeconds=700),
    )
    lines: list[str] = []
    outcome = wait(stubs.aws, JOB, on_event=lines.append, stream_logs=False, poll_seconds=30)

    assert any(line.startswith(f"interrupted: stopping {JOB} (StopTrainingJob)") for line in lines)
    assert "Stopping: Stopping the training job" in lines
    assert f"{JOB}: Stopped" in lines
    assert outcome.status == "Stopped" and outcome.secondary_status == "Stopped"
    assert outcome.failure_reason is None
    assert sleep.calls == [30, 30]


def test_ctrl_c_without_stop_on_interrupt_leaves_the_job_running(stubs: Stubs):
    stubs.aws.sleep = InterruptOnce()
    expect_describe(stubs, described("InProgress", "Training", [STARTING, TRAINING]))
    lines: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        wait(stubs.aws, JOB, on_event=lines.append, stream_logs=False, stop_on_interrupt=False)
    assert "keeps running" in lines[-1]  # and no StopTrainingJob: none was stubbed


def test_stop_sends_stop_training_job(stubs: Stubs):
    stubs.sagemaker.add_response("stop_training_job", {}, expected_params={"TrainingJobName": JOB})
    stop(stubs.aws, JOB, LiveExecutor(stubs.aws.client))


def test_list_jobs_asks_for_the_newest_jobs_of_the_project(stubs: Stubs):
    summaries = [
        {
            "TrainingJobName": f"demo-{i}",
            "TrainingJobArn": f"{ARN}-{i}",
            "CreationTime": T0 + timedelta(hours=i),
            "TrainingJobStatus": "Completed",
        }
        for i in (3, 2, 1)
    ]
    stubs.sagemaker.add_response(
        "list_training_jobs",
        {"TrainingJobSummaries": summaries[:2], "NextToken": "next"},
        expected_params={
            "NameContains": "demo",
            "SortBy": "CreationTime",
            "SortOrder": "Descending",
            "MaxResults": 3,
        },
    )
    stubs.sagemaker.add_response(
        "list_training_jobs",
        {"TrainingJobSummaries": summaries[2:]},
        expected_params={
            "NameContains": "demo",
            "SortBy": "CreationTime",
            "SortOrder": "Descending",
            "MaxResults": 3,
            "NextToken": "next",
        },
    )
    assert [j["TrainingJobName"] for j in list_jobs(stubs.aws, "demo", max_results=3)] == [
        "demo-3",
        "demo-2",
        "demo-1",
    ]


# ---------------------------------------------------------------------------------------------------
# moto: the request end to end, listing, CloudWatch Logs


def test_a_job_started_against_moto_can_be_described(aws: Aws):
    start(aws, job_spec(), LiveExecutor(aws.client))
    outcome = describe(aws, JOB)
    assert outcome.status == "Completed"  # moto completes jobs at once
    assert outcome.model_artifact_uri == f"s3://demo-bucket/demo/models/{JOB}/output/model.tar.gz"
    assert (outcome.instance_type, outcome.instance_count, outcome.spot) == ("ml.g5.xlarge", 1, True)
    assert outcome.billable_seconds is None and outcome.spot_savings is None
    assert outcome.metrics == {}  # moto's dummy metric is not one the trainer prints


def test_list_jobs_on_moto_finds_the_projects_jobs(aws: Aws):
    for name in ("demo-a", "demo-b", "other-c"):
        start(aws, job_spec(job_name=name), LiveExecutor(aws.client))
    assert {j["TrainingJobName"] for j in list_jobs(aws, "demo")} == {"demo-a", "demo-b"}
    assert len(list_jobs(aws, "demo", max_results=1)) == 1


def put_events(aws: Aws, stream: str, messages: list[str], start_ms: int) -> None:
    logs = aws.client("logs")
    logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=stream)
    events = [{"timestamp": start_ms + i, "message": m} for i, m in enumerate(messages)]
    logs.put_log_events(logGroupName=LOG_GROUP, logStreamName=stream, logEvents=events)


def test_log_lines_returns_the_jobs_lines_in_order_and_then_only_new_ones(aws: Aws):
    now = int(datetime.now(UTC).timestamp() * 1000)
    aws.client("logs").create_log_group(logGroupName=LOG_GROUP)
    put_events(aws, f"{JOB}/algo-1-1735732800", ["starting", "epoch=1", "epoch=2"], now)
    put_events(aws, "another-job/algo-1-1735732800", ["not ours"], now)

    page = log_lines(aws, JOB)
    assert [line.message for line in page.lines] == ["starting", "epoch=1", "epoch=2"]
    assert list(page) == ["starting", "epoch=1", "epoch=2"]
    assert {line.host for line in page.lines} == {"algo-1"}

    aws.client("logs").put_log_events(
        logGroupName=LOG_GROUP,
        logStreamName=f"{JOB}/algo-1-1735732800",
        logEvents=[{"timestamp": now + 10, "message": "final test_accuracy=0.9"}],
    )
    later = log_lines(aws, JOB, start_from=page.cursor)
    assert [line.message for line in later.lines] == ["final test_accuracy=0.9"]
    assert log_lines(aws, JOB, start_from=later.cursor).lines == []


def test_log_lines_of_several_instances_are_interleaved_by_time(aws: Aws):
    now = int(datetime.now(UTC).timestamp() * 1000)
    aws.client("logs").create_log_group(logGroupName=LOG_GROUP)
    put_events(aws, f"{JOB}/algo-1-1735732800", ["a1", "a2"], now)
    put_events(aws, f"{JOB}/algo-2-1735732800", ["b1"], now + 1)
    page = log_lines(aws, JOB)
    assert [(line.host, line.message) for line in page.lines] == [
        ("algo-1", "a1"),
        ("algo-1", "a2"),
        ("algo-2", "b1"),
    ]
    assert list(page) == ["[algo-1] a1", "[algo-1] a2", "[algo-2] b1"]  # as `mlops jobs logs` prints them


def test_no_log_group_yet_means_no_lines_and_no_error(aws: Aws):
    page = log_lines(aws, JOB, start_from={"x": "f/1"})
    assert page.lines == [] and page.cursor == {"x": "f/1"}
