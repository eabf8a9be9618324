"""Settings: the environment (`MLOPS_*`) plus the versioned config file `mlops.toml`.

`Settings` is what varies per machine (where state lives, which port, which config file); `Config` is
what the team reviews (gate thresholds, default hyperparameters). Both accept plain mappings so tests
pass dicts instead of patching `os.environ`.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from infra.errors import UsageError

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MLOPS_", extra="ignore")

    home: Path = Field(default=Path(".mlops"), description="local state: data, jobs, registry, endpoint")
    config: Path | None = Field(default=None, description="path to mlops.toml")
    project: str | None = Field(default=None, description="overrides [project].name")
    endpoint_port: int | None = Field(default=None, ge=1, le=65535, description="local endpoint port")
    endpoint_host: str = "127.0.0.1"
    code_version: str | None = None
    aws_poll_seconds: float = Field(default=30.0, gt=0, description="how often AWS waits poll for status")

    @classmethod
    def load(cls, env: Mapping[str, str] | None = None) -> Settings:
        source = os.environ if env is None else env
        values = {k[len("MLOPS_") :].lower(): v for k, v in source.items() if k.startswith("MLOPS_")}
        try:
            return cls.model_validate(values)
        except ValidationError as exc:
            first = exc.errors()[0]
            name = "MLOPS_" + str(first["loc"][0]).upper() if first["loc"] else "MLOPS_*"
            raise UsageError(f"setting {name}: {first['msg']}") from None

    def config_path(self) -> Path:
        if self.config is not None:
            return self.config
        local = Path("mlops.toml")
        return local if local.is_file() else REPO_ROOT / "mlops.toml"


def _known_metrics(value: Any) -> Any:
    from train.metrics import BY_KEY

    names = value if isinstance(value, list) else list(value)
    unknown = [n for n in names if n not in BY_KEY or not BY_KEY[n].final]
    if unknown:
        known = ", ".join(k for k, m in BY_KEY.items() if m.final)
        raise ValueError(f"unknown metric(s) {', '.join(unknown)}; the gate knows: {known}")
    return value


class TaskGate(BaseModel):
    """The thresholds of one task family (`[gate.detection]`, `[gate.segmentation]`): detection and
    segmentation are judged on mAP, not accuracy. The gate's version covers them all."""

    model_config = ConfigDict(extra="forbid")

    min: dict[str, float] = Field(default_factory=dict)
    max: dict[str, float] = Field(default_factory=dict)
    compare: list[str] = Field(default_factory=list)
    tolerance: float = Field(default=0.0, ge=0.0)

    @field_validator("min", "max", "compare")
    @classmethod
    def _known(cls, value: Any) -> Any:
        return _known_metrics(value)


class GateConfig(BaseModel):
    """`[gate]`: the thresholds of classification, and per other task a `[gate.<task>]` table."""

    model_config = ConfigDict(extra="forbid")

    version: int = Field(ge=1)
    min: dict[str, float] = Field(default_factory=dict)
    max: dict[str, float] = Field(default_factory=dict)
    compare: list[str] = Field(default_factory=list)
    tolerance: float = Field(default=0.0, ge=0.0)
    detection: TaskGate | None = None
    segmentation: TaskGate | None = None

    @field_validator("min", "max", "compare")
    @classmethod
    def _known(cls, value: Any) -> Any:
        return _known_metrics(value)

    def for_task(self, task: str) -> GateConfig:
        """The gate a candidate of `task` is judged by (same version); classification is the top level.
        A task without its own table is refused rather than judged on metrics it does not have."""
        if task == "classification":
            return self
        table = getattr(self, task, None) if task in ("detection", "segmentation") else None
        if table is None:
            from infra.errors import UsageError

            raise UsageError(
                f"mlops.toml has no [gate.{task}] table: a {task} candidate is judged on its own metrics "
                f"(e.g. min = {{ test_map50 = 0.5 }}); add one"
            )
        return GateConfig(version=self.version, **table.model_dump())


class ProjectConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[a-zA-Z0-9](-*[a-zA-Z0-9])*$", max_length=32)


def _strings(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in value.items()}
    return value


class TrainDefaults(BaseModel):
    """Default hyperparameters of a run; `detection` and `segmentation` add their own over them (YOLO
    takes an image size, an lr0 and epochs of its own; the classifier's values are ignored or wrong)."""

    model_config = ConfigDict(extra="forbid")
    hyperparameters: dict[str, str] = Field(default_factory=dict)
    detection: dict[str, str] = Field(default_factory=dict)
    segmentation: dict[str, str] = Field(default_factory=dict)

    @field_validator("hyperparameters", "detection", "segmentation", mode="before")
    @classmethod
    def _as_strings(cls, value: Any) -> Any:
        return _strings(value)

    def for_task(self, task: str) -> dict[str, str]:
        if task in ("detection", "segmentation"):
            return {**self.hyperparameters, **getattr(self, task)}
        return dict(self.hyperparameters)


class LocalConfig(TrainDefaults):
    dataset: str = "synthetic"
    endpoint_port: int = Field(default=8080, ge=1, le=65535)
    smoke_images: int = Field(default=16, ge=1, le=1000)
    verify_images: int = Field(default=64, ge=1, le=10000)


class AutoscalingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min_instances: int = Field(default=1, ge=1)
    max_instances: int = Field(default=2, ge=1)
    invocations_per_instance: float = Field(default=100.0, gt=0)


class AlarmConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_5xx_errors: float = Field(default=5.0, ge=0)
    max_model_latency_ms: float = Field(default=1000.0, gt=0)


class TuningConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    strategy: str = Field(default="Bayesian", pattern="^(Bayesian|Random|Hyperband|Grid)$")
    objective: str = "validation:accuracy"
    max_jobs: int = Field(default=12, ge=1, le=500)
    max_parallel_jobs: int = Field(default=3, ge=1, le=100)
    ranges: dict[str, dict[str, Any]] = Field(default_factory=dict)

    @field_validator("objective")
    @classmethod
    def _known_objective(cls, value: str) -> str:
        from train.metrics import METRICS

        names = [m.name for m in METRICS]
        if value not in names:
            raise ValueError(
                f"objective {value!r} is not a metric the trainer prints; known: {', '.join(names)}"
            )
        return value


class AwsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    train_instance_type: str = "ml.g5.xlarge"
    train_instance_count: int = Field(default=1, ge=1)
    spot: bool = True
    max_runtime_seconds: int = Field(default=7200, ge=60)
    max_wait_seconds: int = Field(default=14400, ge=60)
    volume_size_gb: int = Field(default=50, ge=1)
    endpoint_instance_type: str = "ml.m5.large"
    endpoint_instance_count: int = Field(default=1, ge=1)
    # realtime | serverless | async (infra.aws.modes); `mlops deploy --mode` and its knobs override these.
    endpoint_mode: str = "realtime"
    serverless_memory_mb: int = 2048
    serverless_max_concurrency: int = 10
    async_output: str | None = None  # None: s3://<bucket>/<project>/async-output/
    async_max_concurrent_invocations: int = 4
    async_min_instances: int = Field(default=1, ge=0)  # 0: an empty queue scales the fleet to zero
    async_backlog_per_instance: float = Field(default=5.0, gt=0)
    bake_seconds: int = Field(default=300, ge=0, le=3600)
    canary_percent: int = Field(default=10, ge=1, le=99)
    job_budget_hours: float = Field(default=4.0, gt=0)
    idle_endpoint_days: float = Field(default=7.0, gt=0)
    expiry_days: int = Field(default=14, ge=1)
    autoscaling: AutoscalingConfig = Field(default_factory=AutoscalingConfig)
    alarms: AlarmConfig = Field(default_factory=AlarmConfig)
    tuning: TuningConfig = Field(default_factory=TuningConfig)

    @model_validator(mode="after")
    def _spot_wait_covers_runtime(self) -> AwsConfig:
        # SageMaker rejects spot jobs whose MaxWaitTimeInSeconds is below MaxRuntimeInSeconds; say so here.
        if self.spot and self.max_wait_seconds < self.max_runtime_seconds:
            raise ValueError(
                f"max_wait_seconds ({self.max_wait_seconds}) must be >= max_runtime_seconds "
                f"({self.max_runtime_seconds}) for spot training"
            )
        if self.autoscaling.max_instances < self.autoscaling.min_instances:
            raise ValueError("autoscaling.max_instances must be >= autoscaling.min_instances")
        if self.autoscaling.max_instances < max(self.async_min_instances, 1):
            raise ValueError("autoscaling.max_instances must be >= async_min_instances")
        from infra.aws.modes import problems_of

        # The deploy settings are checked when mlops.toml is read, not when a deploy reaches them after
        # an hour of training; infra.aws.rollout checks them again with what only a deploy knows (the image).
        found = problems_of(self)
        if found:
            raise ValueError(f"{found[0].setting}: {found[0].message}")
        return self


class Config(BaseModel):
    model_config = ConfigDict(extra="forbid")

    project: ProjectConfig
    gate: GateConfig
    train: TrainDefaults = Field(default_factory=TrainDefaults)
    local: LocalConfig = Field(default_factory=LocalConfig)
    aws: AwsConfig = Field(default_factory=AwsConfig)
    source: str = ""

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], source: str = "<mapping>") -> Config:
        try:
            config = cls.model_validate({**data, "source": source})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise UsageError(f"{source}: [{where}] {first['msg']}") from None
        from train.config import ConfigError, parse_hyperparameters

        for section, table in (("train", config.train), ("local", config.local)):
            try:
                parse_hyperparameters(table.hyperparameters)
            except ConfigError as exc:
                raise UsageError(f"{source}: [{section}.hyperparameters] {exc}") from None
        return config

    @classmethod
    def load(cls, path: Path) -> Config:
        if not path.is_file():
            raise UsageError(
                f"config file {path} not found; set MLOPS_CONFIG or run from the repository root"
            )
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise UsageError(f"{path} is not valid TOML: {exc}") from None
        return cls.from_mapping(data, source=str(path))


def load(env: Mapping[str, str] | None = None) -> tuple[Settings, Config]:
    settings = Settings.load(env)
    config = Config.load(settings.config_path())
    if settings.project:
        try:
            config.project = ProjectConfig(name=settings.project)
        except ValidationError as exc:
            raise UsageError(f"setting MLOPS_PROJECT: {exc.errors()[0]['msg']}") from None
    return settings, config
