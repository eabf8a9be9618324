"""SageMaker training jobs: build the request, start it, report what it cost.

Stages:
1. `training_job_call(spec)` checks the spec before anything reaches AWS (job name, image pinned by
   digest, S3 URIs, spot wait >= runtime, hyperparameters the trainer accepts, no secrets in
   HyperParameters or Environment) and builds one CreateTrainingJob `Call`: spot, checkpoints synced
   to S3, MetricDefinitions generated from the trainer's own metric table.
2. `start` hands the call to an executor (live, or a dry run that prints it); `stop` sends
   StopTrainingJob.
3. `describe` turns DescribeTrainingJob into a `TrainingOutcome`: metrics keyed as the trainer prints
   them, billable seconds, spot savings and an estimated cost.

Following a job to its end (status changes, CloudWatch logs, Ctrl-C) is `infra.aws.watch`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from infra.aws import costs
from infra.aws.errors import aws_errors
from infra.aws.plan import Call, Executor
from infra.aws.session import Aws
from infra.errors import UsageError
from train.config import ConfigError, parse_hyperparameters
from train.metrics import METRICS, sagemaker_metric_definitions

CHECKPOINT_LOCAL_PATH = "/opt/ml/checkpoints"
CONTENT_TYPE = "application/x-image"
TERMINAL = ("Completed", "Failed", "Stopped")

# SageMaker's TrainingJobName pattern (63 characters at most); botocore does not check patterns.
_JOB_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_DIGEST = re.compile(r"^[^\s@]+@sha256:[0-9a-f]{64}$")
_ECR_REGION = re.compile(r"^\d{12}\.dkr\.ecr(?:-fips)?\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/")
_S3_URI = re.compile(r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$")
_SECRETS_ARN = re.compile(r"^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:.+$")

# Names and values that look like credentials. HyperParameters and Environment are returned in clear
# by DescribeTrainingJob (and shown in the console) to anyone with read access: secrets travel as a
# Secrets Manager ARN and are fetched inside the container.
_SECRET_NAME = re.compile(r"API_?KEY|SECRET|TOKEN|PASSWORD|PASSWD|CREDENTIAL|PRIVATE_?KEY", re.IGNORECASE)
_SECRET_VALUES = (
    re.compile(r"^[0-9a-fA-F]{40}$"),  # a W&B API key (and many other tokens)
    re.compile(r"^(AKIA|ASIA)[0-9A-Z]{16}$"),  # an AWS access key id
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
)
# A full git SHA is 40 hex characters too, and it is the code version by design.
_NOT_SECRET_VALUES = ("MLOPS_CODE_VERSION",)

_KEY_BY_NAME = {m.name: m.key for m in METRICS}


@dataclass
class JobSpec:
    job_name: str
    image_uri: str  # pinned by digest: "<repo>@sha256:<64 hex>"
    role_arn: str
    hyperparameters: dict[str, str]
    channels: dict[str, str]  # channel name (train, validation, test) -> S3 prefix
    output_uri: str  # s3://bucket/project/models/
    checkpoint_uri: str
    instance_type: str
    instance_count: int  # more than one: DDP over the hosts (train.distributed); data fully replicated
    spot: bool
    max_runtime_seconds: int
    max_wait_seconds: int  # used only for spot
    volume_size_gb: int
    wandb_secret_arn: str | None
    code_version: str
    tags: list[dict[str, str]]
    environment: dict[str, str] = field(default_factory=dict)
    wandb_project: str | None = None  # None: the value of the mlops:project tag


# ---------------------------------------------------------------------------------------------------
# The request


def check_job_name(name: str, *, what: str = "training job name", limit: int = 63) -> None:
    if len(name) > limit or not _JOB_NAME.match(name):
        raise UsageError(
            f"{what} {name!r} is not valid: SageMaker allows 1-{limit} letters, digits and hyphens, "
            "starting and ending with a letter or digit"
        )


def _check_s3(what: str, uri: str) -> None:
    if not _S3_URI.match(uri):
        raise UsageError(f"{what} {uri!r} is not an S3 URI (s3://bucket/prefix)")


def _check_no_secrets(where: str, values: Mapping[str, str]) -> None:
    for key, value in values.items():
        text = str(value)
        if key.upper().endswith("_ARN"):
            # The one sanctioned way to name a secret: its ARN, never the value itself.
            if _SECRET_NAME.search(key) and not text.startswith("arn:"):
                raise UsageError(
                    f"{where} {key} must be a Secrets Manager ARN (arn:aws:secretsmanager:...), "
                    "not the secret itself"
                )
            continue
        if _SECRET_NAME.search(key):
            raise UsageError(
                f"refusing to send {key} in {where}: it is visible to anyone who can call "
                "DescribeTrainingJob; store the value in Secrets Manager and pass its ARN instead "
                "(MLOPS_WANDB_SECRET_ARN for the W&B key)"
            )
        if key not in _NOT_SECRET_VALUES and any(p.search(text) for p in _SECRET_VALUES):
            raise UsageError(
                f"refusing to send {where} {key}: its value looks like a secret (an API key or access "
                "key), and it would be visible to anyone who can call DescribeTrainingJob; pass a "
                "Secrets Manager ARN instead"
            )


def _environment(spec: JobSpec) -> dict[str, str]:
    env = dict(spec.environment)
    env["MLOPS_CODE_VERSION"] = spec.code_version
    # What a reviewer filters W&B runs by (train/tracking.py run_context): none of it is secret.
    env["MLOPS_INSTANCE_TYPE"] = spec.instance_type
    env["MLOPS_SPOT"] = str(spec.spot).lower()
    trigger = next((t["Value"] for t in spec.tags if t.get("Key") == "mlops:trigger"), None)
    if trigger:
        env.setdefault("MLOPS_TRIGGER", trigger)
    project = spec.wandb_project or next(
        (t["Value"] for t in spec.tags if t.get("Key") == "mlops:project"), None
    )
    if project and "WANDB_PROJECT" not in env:
        env["WANDB_PROJECT"] = project
    if spec.wandb_secret_arn:
        if not _SECRETS_ARN.match(spec.wandb_secret_arn):
            raise UsageError(
                "MLOPS_WANDB_SECRET_ARN must be a Secrets Manager secret ARN "
                "(arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME), not the key itself"
            )
        env["MLOPS_WANDB_SECRET_ARN"] = spec.wandb_secret_arn
    return env


def check_spec(spec: JobSpec) -> None:
    """Everything SageMaker would reject late (or accept and regret), refused before any call."""
    check_job_name(spec.job_name)
    if not _DIGEST.match(spec.image_uri):
        raise UsageError(
            f"image {spec.image_uri!r} is not pinned by digest: train and deploy by digest "
            "(<repository>@sha256:<digest>, as printed when the image was pushed), so the job runs "
            "exactly the image that was tested"
        )
    if not spec.role_arn.startswith("arn:"):
        raise UsageError(f"role {spec.role_arn!r} is not an IAM role ARN (set MLOPS_SAGEMAKER_ROLE_ARN)")
    if not spec.channels:
        raise UsageError("a training job needs at least one input channel (train, validation, test)")
    for channel, uri in spec.channels.items():
        _check_s3(f"channel {channel!r}", uri)
    _check_s3("output_uri", spec.output_uri)
    _check_s3("checkpoint_uri", spec.checkpoint_uri)
    for what, number in (
        ("instance_count", spec.instance_count),
        ("max_runtime_seconds", spec.max_runtime_seconds),
        ("volume_size_gb", spec.volume_size_gb),
    ):
        if number < 1:
            raise UsageError(f"{what} must be at least 1, got {number}")
    if spec.spot and spec.max_wait_seconds < spec.max_runtime_seconds:
        raise UsageError(
            f"max_wait_seconds ({spec.max_wait_seconds}) must be >= max_runtime_seconds "
            f"({spec.max_runtime_seconds}) for spot training: the wait covers the runtime plus the time "
            "spent waiting for spot capacity"
        )
    try:
        parse_hyperparameters(spec.hyperparameters)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    _check_no_secrets("HyperParameters", spec.hyperparameters)
    _check_no_secrets("Environment", _environment(spec))


def training_job_call(spec: JobSpec) -> Call:
    """The CreateTrainingJob request for `spec`; raises UsageError before building anything bad."""
    check_spec(spec)
    stopping: dict[str, int] = {"MaxRuntimeInSeconds": spec.max_runtime_seconds}
    if spec.spot:
        # Only valid with EnableManagedSpotTraining; SageMaker rejects it on on-demand jobs.
        stopping["MaxWaitTimeInSeconds"] = spec.max_wait_seconds
    params: dict[str, Any] = {
        "TrainingJobName": spec.job_name,
        # SageMaker hands the container strings only (input/config/hyperparameters.json).
        "HyperParameters": {k: str(v) for k, v in spec.hyperparameters.items()},
        "AlgorithmSpecification": {
            "TrainingImage": spec.image_uri,
            "TrainingInputMode": "File",
            # Generated from the table the trainer formats its lines with: the two cannot drift.
            "MetricDefinitions": sagemaker_metric_definitions(),
        },
        "RoleArn": spec.role_arn,
        "InputDataConfig": [
            {
                "ChannelName": channel,
                "DataSource": {
                    "S3DataSource": {
                        "S3DataType": "S3Prefix",
                        "S3Uri": uri,
                        # Every host gets the whole dataset, also with InstanceCount > 1: the
                        # trainer shards each epoch's order across ranks itself (train.distributed),
                        # which ShardedByS3Key would break (each host would see a fixed subset).
                        "S3DataDistributionType": "FullyReplicated",
                    }
                },
                "ContentType": CONTENT_TYPE,
                "InputMode": "File",
            }
            for channel, uri in spec.channels.items()
        ],
        "OutputDataConfig": {"S3OutputPath": spec.output_uri},
        "ResourceConfig": {
            "InstanceType": spec.instance_type,
            "InstanceCount": spec.instance_count,
            "VolumeSizeInGB": spec.volume_size_gb,
        },
        "StoppingCondition": stopping,
        # Spot with several instances is fine: a reclaim stops the whole cluster, and it resumes from
        # the checkpoint rank 0 wrote.
        "EnableManagedSpotTraining": spec.spot,
        # Off: encrypting the DDP gradient traffic between instances slows every all-reduce and adds
        # cost; the hosts talk only inside the job's own network (EnableNetworkIsolation stays off).
        "EnableInterContainerTrafficEncryption": False,
        # Synced to S3 while training and restored when a reclaimed spot job restarts.
        "CheckpointConfig": {"S3Uri": spec.checkpoint_uri, "LocalPath": CHECKPOINT_LOCAL_PATH},
        "Environment": _environment(spec),
        "Tags": list(spec.tags),
    }
    kind = "spot" if spec.spot else "on-demand"
    return Call(
        "sagemaker",
        "CreateTrainingJob",
        params,
        why=f"start training job {spec.job_name} ({spec.instance_count} x {spec.instance_type}, {kind})",
    )


def start(aws: Aws, spec: JobSpec, executor: Executor) -> str:
    """Start the job (or print the request on a dry run); returns the job name to wait on."""
    call = training_job_call(spec)
    match = _ECR_REGION.match(spec.image_uri)
    if match and match.group(1) != aws.region:
        # SageMaker pulls training images only from ECR in the job's own region.
        raise UsageError(
            f"image {spec.image_uri} is in {match.group(1)} but the job would run in {aws.region}; "
            "push the image to ECR in the same region"
        )
    executor(call)
    return spec.job_name


def stop(aws: Aws, job_name: str, executor: Executor) -> None:
    """StopTrainingJob: SageMaker sends SIGTERM, waits up to 120 s, then uploads what is in /opt/ml/model."""
    executor(
        Call(
            "sagemaker",
            "StopTrainingJob",
            {"TrainingJobName": job_name},
            why=f"stop training job {job_name}",
        )
    )


# ---------------------------------------------------------------------------------------------------
# What happened


@dataclass
class TrainingOutcome:
    job_name: str
    status: str  # Completed | Failed | Stopped | InProgress | Stopping
    secondary_status: str  # e.g. Training, Interrupted, MaxWaitTimeExceeded
    failure_reason: str | None
    model_artifact_uri: str | None
    metrics: dict[str, float]  # keyed as the trainer prints them: test_accuracy, val_loss, ...
    training_seconds: int | None
    billable_seconds: int | None
    spot_savings: float | None  # 0.7 means 70% saved
    estimated_cost: float | None  # dollars; None when the instance type has no price
    instance_type: str
    instance_count: int
    spot: bool
    transitions: list[str]  # secondary statuses in order, from SecondaryStatusTransitions

    @property
    def succeeded(self) -> bool:
        return self.status == "Completed"

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL

    def billing(self) -> dict[str, Any]:
        """What the job cost, as the pipeline summary and `mlops jobs describe` report it."""
        return {
            "instance_type": self.instance_type,
            "instance_count": self.instance_count,
            "training_seconds": self.training_seconds,
            "billable_seconds": self.billable_seconds,
            "spot": self.spot,
            "spot_savings": self.spot_savings,
            "estimated_cost": self.estimated_cost,
        }

    def summary(self) -> str:
        """One line for logs and the GitHub job summary."""

        def seconds(value: int | None) -> str:
            return "unknown" if value is None else f"{value} s"

        savings = "n/a" if self.spot_savings is None else f"{self.spot_savings:.0%}"
        text = (
            f"{self.job_name}: {self.status} ({self.secondary_status}); "
            f"{self.instance_count} x {self.instance_type} {'spot' if self.spot else 'on-demand'}, "
            f"training {seconds(self.training_seconds)}, billable {seconds(self.billable_seconds)}, "
            f"spot savings {savings}, estimated cost {costs.format_cost(self.estimated_cost)}"
        )
        return text + (f"; {self.failure_reason}" if self.failure_reason else "")


def _describe_raw(aws: Aws, job_name: str) -> dict[str, Any]:
    with aws_errors(f"describing training job {job_name}"):
        response: dict[str, Any] = aws.client("sagemaker").describe_training_job(TrainingJobName=job_name)
    return response


def _failure_reason(desc: Mapping[str, Any]) -> str | None:
    reason = desc.get("FailureReason")
    secondary = desc.get("SecondaryStatus", "")
    stopping = desc.get("StoppingCondition", {})
    explained = None
    if secondary == "MaxWaitTimeExceeded":
        checkpoints = desc.get("CheckpointConfig", {}).get("S3Uri")
        explained = (
            f"MaxWaitTimeExceeded: spot capacity and training did not fit in MaxWaitTimeInSeconds="
            f"{stopping.get('MaxWaitTimeInSeconds', '?')}; raise max_wait_seconds or train on demand"
            + (f"; checkpoints in {checkpoints} let the next job resume" if checkpoints else "")
        )
    elif secondary == "MaxRuntimeExceeded":
        explained = (
            f"MaxRuntimeExceeded: training ran past MaxRuntimeInSeconds="
            f"{stopping.get('MaxRuntimeInSeconds', '?')}; raise max_runtime_seconds or train for fewer epochs"
        )
    if explained and reason:
        return f"{explained} ({reason})"
    return explained or reason


def outcome_from(desc: Mapping[str, Any]) -> TrainingOutcome:
    """A TrainingOutcome from a DescribeTrainingJob response."""
    resources = desc.get("ResourceConfig", {})
    instance_type = str(resources.get("InstanceType", ""))
    instance_count = int(resources.get("InstanceCount", 1))
    spot = bool(desc.get("EnableManagedSpotTraining", False))
    training = desc.get("TrainingTimeInSeconds")
    billable = desc.get("BillableTimeInSeconds")
    savings = None
    if spot and training and billable is not None:
        savings = max(0.0, 1.0 - billable / training)
    if billable is not None:
        # BillableTimeInSeconds already carries the spot discount; it is billed at the on-demand rate.
        cost = costs.job_cost(instance_type, instance_count, billable, spot=False)
    elif training is not None:
        cost = costs.job_cost(instance_type, instance_count, training, spot=spot)
    else:
        cost = None
    metrics = {
        _KEY_BY_NAME[m["MetricName"]]: float(m["Value"])
        for m in desc.get("FinalMetricDataList", [])
        if m.get("MetricName") in _KEY_BY_NAME and "Value" in m
    }
    return TrainingOutcome(
        job_name=str(desc["TrainingJobName"]),
        status=str(desc.get("TrainingJobStatus", "")),
        secondary_status=str(desc.get("SecondaryStatus", "")),
        failure_reason=_failure_reason(desc),
        # Present (and empty) even on failed jobs: the response shape requires it.
        model_artifact_uri=desc.get("ModelArtifacts", {}).get("S3ModelArtifacts") or None,
        metrics=metrics,
        training_seconds=training,
        billable_seconds=billable,
        spot_savings=savings,
        estimated_cost=cost,
        instance_type=instance_type,
        instance_count=instance_count,
        spot=spot,
        transitions=[t["Status"] for t in desc.get("SecondaryStatusTransitions", [])],
    )


def describe(aws: Aws, job_name: str) -> TrainingOutcome:
    return outcome_from(_describe_raw(aws, job_name))


def list_jobs(aws: Aws, project: str, max_results: int = 20) -> list[dict[str, Any]]:
    """The newest training jobs whose name contains `project` (ListTrainingJobs summaries)."""
    found: list[dict[str, Any]] = []
    token: str | None = None
    client = aws.client("sagemaker")
    while len(found) < max_results:
        params: dict[str, Any] = {
            "NameContains": project,
            "SortBy": "CreationTime",
            "SortOrder": "Descending",
            "MaxResults": min(100, max_results),
        }
        if token:
            params["NextToken"] = token
        with aws_errors("listing training jobs"):
            page = client.list_training_jobs(**params)
        found.extend(page.get("TrainingJobSummaries", []))
        token = page.get("NextToken")
        if not token:
            break
    # Sorted again here: the request asks for newest first, but not every emulator honours SortOrder.
    found.sort(key=lambda s: s["CreationTime"], reverse=True)
    return found[:max_results]
