"""Local training jobs: a job directory in the SageMaker layout and `python -m train` as a subprocess.

    <home>/jobs/<job-name>/
        input/config/hyperparameters.json, inputdataconfig.json, resourceconfig.json
        input/data/{train,validation,test} -> symlinks to the dataset's splits
        checkpoints/   model/   output/{data,failure}   train.log

The child runs under the same contract as the container (`SAGEMAKER_BASE_DIR` points at the job dir);
its output is streamed line by line to the caller and to train.log. Ctrl-C forwards SIGTERM, exactly as
SageMaker's StopTrainingJob does, so the job can be resumed from its last checkpoint.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from infra.channels import channel_dirs, is_yolo
from infra.errors import UsageError
from infra.local.files import read_json, write_json_atomic
from infra.platform import LineSink, TrainingResult, TrainingSpec
from train.metrics import parse_line

CHANNELS = ("train", "validation", "test")
_RESUMED = "resumed from checkpoint"


def check_dataset(data: Path) -> None:
    if is_yolo(data):
        return  # the trainer validates a YOLO dataset (every label line) before it trains
    for channel in CHANNELS:
        if not (data / channel).is_dir():
            raise UsageError(
                f"dataset {data} has no {channel}/ split; "
                "create one with `mlops data synthetic` or `mlops data cifar10`"
            )


def prepare_job_dir(jobs_root: Path, spec: TrainingSpec) -> Path:
    check_dataset(spec.data)
    job_dir = jobs_root / spec.job_name
    config_dir = job_dir / "input" / "config"
    config_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(config_dir / "hyperparameters.json", spec.hyperparameters)
    write_json_atomic(
        config_dir / "inputdataconfig.json",
        {
            c: {"ContentType": "application/x-image", "TrainingInputMode": "File"}
            for c in channel_dirs(spec.data)
        },
    )
    write_json_atomic(
        config_dir / "resourceconfig.json",
        {"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "lo"},
    )
    data_dir = job_dir / "input" / "data"
    data_dir.mkdir(parents=True, exist_ok=True)
    for channel in CHANNELS:  # a job dir reused for another dataset keeps no stale channel
        stale = data_dir / channel
        if stale.is_symlink():
            stale.unlink()
    for channel, source in channel_dirs(spec.data).items():
        (data_dir / channel).symlink_to(source.resolve(), target_is_directory=True)
    write_json_atomic(
        job_dir / "job.json",
        {"job_name": spec.job_name, "data": str(spec.data.resolve()), "code_version": spec.code_version},
    )
    return job_dir


def run_job(
    job_dir: Path, spec: TrainingSpec, on_line: LineSink, env: Mapping[str, str] | None = None
) -> TrainingResult:
    child_env = dict(os.environ if env is None else env)
    child_env.update(
        {
            "SAGEMAKER_BASE_DIR": str(job_dir),
            "MLOPS_JOB_NAME": spec.job_name,
            "MLOPS_CODE_VERSION": spec.code_version,
            "PYTHONUNBUFFERED": "1",
        }
    )
    if not child_env.get("WANDB_API_KEY"):
        child_env.setdefault("WANDB_MODE", "offline")
    failure = job_dir / "output" / "failure"
    failure.unlink(missing_ok=True)
    started = time.monotonic()
    metrics: dict[str, float] = {}
    resumed: int | None = None
    stopped = False
    with (job_dir / "train.log").open("a") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "train", "train"],
            env=child_env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        assert proc.stdout is not None
        try:
            for raw in proc.stdout:
                line = raw.rstrip("\n")
                log.write(line + "\n")
                log.flush()
                if line.startswith("final "):
                    metrics.update(parse_line(line))
                elif line.startswith(_RESUMED):
                    resumed = int(line.rsplit(" at epoch ", 1)[1].split("/")[0])
                on_line(line)
            code = proc.wait()
        except KeyboardInterrupt:
            stopped = True
            proc.send_signal(signal.SIGTERM)  # what StopTrainingJob sends: the trainer stops cleanly
            try:
                code = proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()
                code = proc.wait()
    seconds = time.monotonic() - started
    reason = failure.read_text().strip() if failure.is_file() else None
    if stopped or code == 143:
        status, reason = "Stopped", reason or "stopped; `mlops train --local --resume <job>` continues it"
    elif code == 0:
        status = "Completed"
    else:
        status, reason = "Failed", reason or f"training exited with code {code}; see {job_dir / 'train.log'}"
    model_dir = job_dir / "model"
    manifest = read_json(model_dir / "manifest.json", None) if status == "Completed" else None
    return TrainingResult(
        job_name=spec.job_name,
        status=status,
        model_dir=model_dir if manifest else None,
        metrics=manifest["metrics"] if manifest else metrics,
        seconds=seconds,
        failure_reason=reason,
        wandb=manifest.get("wandb") if manifest else None,
        log=job_dir / "train.log",
        resumed_from_epoch=resumed,
    )


def load_result(jobs_root: Path, job_name: str) -> TrainingResult:
    """A finished local job, read back from its directory (for `mlops evaluate/register --job`)."""
    job_dir = jobs_root / job_name
    if not (job_dir / "job.json").is_file():
        known = (
            sorted(p.name for p in jobs_root.iterdir() if (p / "job.json").is_file())
            if jobs_root.is_dir()
            else []
        )
        hint = f"; recent: {', '.join(known[-5:])}" if known else ""
        raise UsageError(f"no local training job named {job_name!r} under {jobs_root}{hint}")
    manifest = read_json(job_dir / "model" / "manifest.json", None)
    failure = job_dir / "output" / "failure"
    if manifest is None:
        reason = failure.read_text().strip() if failure.is_file() else "it has not finished"
        return TrainingResult(
            job_name, "Failed", None, {}, 0.0, failure_reason=reason, log=job_dir / "train.log"
        )
    return TrainingResult(
        job_name,
        "Completed",
        job_dir / "model",
        manifest["metrics"],
        0.0,
        wandb=manifest.get("wandb"),
        log=job_dir / "train.log",
    )
