"""Pipeline overhead: `mlops pipeline --local` wall time minus the training job's own time.

The real CLI runs in a fresh temporary working directory with its own state (MLOPS_HOME), a free
endpoint port (never 8080) and a one-epoch recipe. Its config file is the repository's `[local]`
recipe with a gate that has no thresholds: one epoch does not reach the real gate's accuracy, and a
rejected candidate skips deploy and verify, the stages whose overhead matters most.

Stage seconds come from the pipeline's own report (the Markdown summary it appends to
$GITHUB_STEP_SUMMARY); the job's own seconds are its train stage (the `python -m train` process,
start-up included, as a SageMaker job's billable time includes its container's start); the trainer's
own clock (its "model written ... in N s" line in the job's train.log) splits that into start-up and
training. Overhead = wall - job; target: under 15 s. The endpoint is stopped at the end.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

from tests.benchmarks.common import ROOT, Result, free_port

TARGET_SECONDS = 15.0
_STAGE_ROW = re.compile(r"^\| (\w+) \| (\w+) \| ([\d.]+) \|")
_TRAINER_SECONDS = re.compile(r"model written to .* in ([\d.]+)s")


def _toml_value(value: Any) -> str:
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(str(value))  # a JSON string is a valid TOML basic string


def bench_config(path: Path, hyperparameters: dict[str, str]) -> Path:
    """The repository's project and [local] recipe, a gate without thresholds, `hyperparameters` on top."""
    repo = tomllib.loads((ROOT / "mlops.toml").read_text())
    local = dict(repo.get("local", {}))
    local["hyperparameters"] = {**local.get("hyperparameters", {}), **hyperparameters}
    lines = [
        "# written by tests/benchmarks/pipeline.py: the repository's recipe, a gate that passes anything",
        "[project]",
        f"name = {_toml_value(repo['project']['name'])}",
        "[gate]",
        f"version = {int(repo['gate']['version'])}",
        "[local]",
        *(f"{k} = {_toml_value(v)}" for k, v in local.items()),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _mlops() -> list[str]:
    script = Path(sys.executable).with_name("mlops")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "infra.cli"]


def stage_seconds(summary: Path) -> dict[str, tuple[str, float]]:
    stages = {}
    for line in summary.read_text().splitlines():
        found = _STAGE_ROW.match(line)
        if found and found.group(1) != "stage":
            stages[found.group(1)] = (found.group(2), float(found.group(3)))
    return stages


def trainer_seconds(home: Path) -> float | None:
    logs = sorted((home / "jobs").glob("*/train.log"))
    if not logs:
        return None
    found = _TRAINER_SECONDS.findall(logs[-1].read_text())
    return float(found[-1]) if found else None


def run(work: Path, *, quick: bool, epochs: int = 1) -> list[Result]:
    del quick  # one epoch of smallcnn is already short; the figure is the overhead, not the epoch
    result = Result("pipeline", "pipeline overhead: mlops pipeline --local", ["part", "seconds", "note"])
    cwd = work / "pipeline"
    cwd.mkdir()
    home, summary = cwd / ".mlops", cwd / "summary.md"
    port = free_port()
    env = {
        **os.environ,
        "MLOPS_HOME": str(home),
        "MLOPS_CONFIG": str(bench_config(cwd / "mlops.toml", {"epochs": str(epochs)})),
        "MLOPS_ENDPOINT_PORT": str(port),
        "GITHUB_STEP_SUMMARY": str(summary),
        "WANDB_MODE": "offline",
    }
    env.pop("GITHUB_ACTIONS", None)
    log = work / "pipeline.log"
    argv = [*_mlops(), "pipeline", "--local"]
    tick = time.perf_counter()
    try:
        with log.open("w") as out:
            code = subprocess.run(
                argv, cwd=cwd, env=env, stdout=out, stderr=out, timeout=900, check=False
            ).returncode
        wall = time.perf_counter() - tick
    finally:
        subprocess.run(
            [*_mlops(), "endpoint", "stop", "--local"],
            cwd=cwd, env=env, capture_output=True, timeout=120, check=False,
        )  # fmt: skip
    if code != 0:
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise RuntimeError(f"mlops pipeline --local exited {code}; its last lines:\n{tail}")
    stages = stage_seconds(summary)
    if "train" not in stages:
        raise RuntimeError(f"the pipeline's summary {summary} has no train stage")
    job = stages["train"][1]
    trainer = trainer_seconds(home)
    overhead = wall - job
    result.add("wall time", f"{wall:.1f}", "`mlops pipeline --local`, from exec to exit")
    result.add("training job", f"{job:.1f}", "its train stage: the `python -m train` process")
    if trainer is not None:
        result.add(
            "  of which trainer start-up", f"{job - trainer:.1f}", "interpreter, imports, config (in the job)"
        )
        result.add(
            "  of which training", f"{trainer:.1f}", "the trainer's own clock: data, epochs, test, artifact"
        )
    for name, (status, seconds) in stages.items():
        if name != "train":
            result.add(f"stage {name}", f"{seconds:.1f}", status)
    result.add(
        "CLI start-up and report", f"{wall - sum(s for _st, s in stages.values()):.1f}", "outside every stage"
    )
    result.add(
        "overhead",
        f"{overhead:.1f}",
        "wall - training job",
        target=f"< {TARGET_SECONDS:g} s",
        passed=overhead < TARGET_SECONDS,
    )
    skipped = [name for name, (status, _s) in stages.items() if status != "ok"]
    if skipped:
        result.notes.append(f"stages not ok: {', '.join(skipped)}; see {log}")
    if trainer is not None:
        result.notes.append(f"counting the trainer's start-up as overhead too: {wall - trainer:.1f} s")
    result.data = {
        "wall_seconds": wall,
        "job_seconds": job,
        "trainer_seconds": trainer,
        "overhead_seconds": overhead,
        "stages": {k: {"status": st, "seconds": s} for k, (st, s) in stages.items()},
        "epochs": epochs,
        "endpoint_port": port,
        "command": " ".join(argv),
    }
    return [result]
