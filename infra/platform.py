"""The platform protocol the pipeline is written against, and the data that crosses it.

`infra/local` implements it with processes and files; `infra/aws` with boto3. The pipeline never knows
which one it drives. A platform provides mechanisms and reports facts (what serves now); the policy of
what to do when a deploy or verification fails lives once, in `infra.guard`.

    deploy       put a version on the endpoint, smoke-tested; report what serves afterwards
    mark_failed  record in the registry that a version failed its deploy or verification (it is then
                 Rejected, so nothing picks it by default again)
    history      the production events (`infra.history`): what served from when to when
    take_down    stop serving altogether (a failed first deployment has nothing to go back to)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from infra.history import ProductionEvent

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
    failure: dict[str, str] | None = None  # {stage, reason, at} when its deploy or verification failed

    @property
    def label(self) -> str:
        return f"v{self.version}"

    @property
    def state(self) -> str:
        """The status as a person reads it: `Rejected (verify failed)` rather than just `Rejected`."""
        return f"{self.status} ({self.failure['stage']} failed)" if self.failure else self.status


@dataclass
class DeployResult:
    """What one platform deploy did. `version` is a fact read back from the endpoint, not the target: a
    failed deploy may leave the candidate serving (SageMaker serves a new config once it is InService,
    whatever its smoke test said), the previous version, or nothing. `infra.guard` acts on it."""

    ok: bool
    version: int | None  # what the endpoint serves afterwards
    url: str | None
    message: str
    smoke: dict[str, Any] | None = None
    previous_version: int | None = None
    tested: bool = True  # False when deployed without a smoke test (--allow-untested)


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
    def deploy(
        self, version: int, *, action: str = "deploy", allow_untested: bool = False
    ) -> DeployResult: ...
    def mark_failed(self, version: int, stage: str, reason: str) -> None: ...
    def history(self) -> list[ProductionEvent]: ...
    def take_down(self, reason: str) -> str: ...
    def endpoint_status(self) -> EndpointStatus: ...
    def invoke(self, body: bytes, content_type: str) -> tuple[int, dict[str, Any]]: ...
