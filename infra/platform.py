"""The platform protocol the pipeline is written against, and the data that crosses it.

`infra/local` implements it with processes and files; `infra/aws` (next) with boto3. The pipeline never
knows which one it drives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

LineSink = Callable[[str], None]


@dataclass
class TrainingSpec:
    job_name: str
    hyperparameters: dict[str, str]
    data: Path  # holds train/ validation/ test/ (local path; an S3 prefix on AWS)
    code_version: str


@dataclass
class TrainingResult:
    job_name: str
    status: str  # Completed | Failed | Stopped
    model_dir: Path | None
    metrics: dict[str, float]
    seconds: float
    failure_reason: str | None = None
    wandb: dict[str, Any] | None = None
    log: Path | None = None
    resumed_from_epoch: int | None = None
    model_uri: str | None = None  # s3://.../model.tar.gz on AWS
    billing: dict[str, Any] | None = None  # AWS: instance, training/billable seconds, spot savings, cost


@dataclass
class ModelVersion:
    version: int
    status: str  # Approved | Rejected | PendingManualApproval (SageMaker's vocabulary)
    metrics: dict[str, float]
    model_dir: Path
    created_at: str
    source_job: str
    code_version: str
    wandb: dict[str, Any] | None = None
    gate: dict[str, Any] | None = None
    files: dict[str, str] = field(default_factory=dict)
    uri: str | None = None  # AWS: the model package ARN

    @property
    def label(self) -> str:
        return f"v{self.version}"


@dataclass
class DeployResult:
    ok: bool
    version: int | None  # what the endpoint serves afterwards
    url: str | None
    message: str
    smoke: dict[str, Any] | None = None
    previous_version: int | None = None


@dataclass
class EndpointStatus:
    running: bool
    healthy: bool
    version: int | None
    url: str | None
    pid: int | None = None
    log: Path | None = None
    detail: str = ""


class Platform(Protocol):
    name: str

    def train(self, spec: TrainingSpec, on_line: LineSink) -> TrainingResult: ...
    def register(self, result: TrainingResult, decision: dict[str, Any]) -> ModelVersion: ...
    def versions(self) -> list[ModelVersion]: ...
    def production(self) -> ModelVersion | None: ...
    def model_dir(self, version: ModelVersion) -> Path: ...
    def deploy(self, version: int, *, action: str = "deploy") -> DeployResult: ...
    def rollback(self, to: int | None = None) -> DeployResult: ...
    def endpoint_status(self) -> EndpointStatus: ...
    def invoke(self, body: bytes, content_type: str) -> tuple[int, dict[str, Any]]: ...
