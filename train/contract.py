"""The SageMaker training contract: where the job's files are, rooted at $SAGEMAKER_BASE_DIR (/opt/ml).

SageMaker hands a bring-your-own container files, not variables. `SM_*` variables exist only where the
sagemaker-training toolkit runs: honoured when present, never required.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_BASE = "/opt/ml"


@dataclass(frozen=True)
class JobPaths:
    base: Path
    env: Mapping[str, str]

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> JobPaths:
        env = os.environ if env is None else env
        return cls(Path(env.get("SAGEMAKER_BASE_DIR", DEFAULT_BASE)), dict(env))

    @property
    def config_dir(self) -> Path:
        return self.base / "input" / "config"

    @property
    def hyperparameters(self) -> Path:
        return self.config_dir / "hyperparameters.json"

    @property
    def resource_config(self) -> Path:
        return self.config_dir / "resourceconfig.json"

    def channel(self, name: str) -> Path:
        override = self.env.get(f"SM_CHANNEL_{name.upper()}")
        return Path(override) if override else self.base / "input" / "data" / name

    @property
    def model_dir(self) -> Path:
        return Path(self.env.get("SM_MODEL_DIR") or self.base / "model")

    @property
    def output_dir(self) -> Path:
        return self.base / "output"

    @property
    def output_data(self) -> Path:
        return Path(self.env.get("SM_OUTPUT_DATA_DIR") or self.output_dir / "data")

    @property
    def failure(self) -> Path:
        return self.output_dir / "failure"

    @property
    def checkpoints(self) -> Path:
        # CheckpointConfig.LocalPath defaults to /opt/ml/checkpoints; the platform may choose another.
        if self.env.get("MLOPS_CHECKPOINT_DIR"):
            return Path(self.env["MLOPS_CHECKPOINT_DIR"])
        # Trials of a tuning job may share one CheckpointConfig.S3Uri: a per-job subdirectory keeps a trial
        # from resuming another's checkpoint, while a restarted spot job (same name) still finds its own.
        job = self.env.get("TRAINING_JOB_NAME")
        return self.base / "checkpoints" / job if job else self.base / "checkpoints"


def read_json(path: Path, default: Any) -> Any:
    if not path.is_file():
        return default
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from exc


def read_hyperparameters(paths: JobPaths) -> dict[str, Any]:
    data = read_json(paths.hyperparameters, {})
    if not isinstance(data, dict):
        raise ValueError(f"{paths.hyperparameters} must hold a JSON object of name -> string")
    return data


def host_info(paths: JobPaths) -> tuple[str, list[str]]:
    """(current host, all hosts) from resourceconfig.json; one local host when absent."""
    data = read_json(paths.resource_config, {})
    hosts = list(data.get("hosts") or ["algo-1"])
    return str(data.get("current_host") or hosts[0]), hosts


def write_failure(paths: JobPaths, message: str) -> None:
    """SageMaker shows output/failure as the job's FailureReason; stderr is for the log."""
    print(f"ERROR: {message}", file=sys.stderr, flush=True)
    try:
        paths.output_dir.mkdir(parents=True, exist_ok=True)
        paths.failure.write_text(message[:1024] + "\n")
    except OSError as exc:  # a read-only or missing base dir must not hide the original error
        print(f"ERROR: could not write {paths.failure}: {exc}", file=sys.stderr, flush=True)
