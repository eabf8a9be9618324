"""Spot-safe training: a job stopped mid-epoch resumes at the next step and ends bit for bit where an
uninterrupted job with the same seed ends (weights, optimiser state, history totals), in the same W&B
run, and a kill while the checkpoint is written never costs the last good one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from infra.datasets import make_synthetic
from tests.jobs import sigterm_training
from train import checkpoint
from train.config import parse_hyperparameters
from train.contract import JobPaths
from train.main import run

# 120 training images in batches of 8: 15 steps an epoch, augmentation on, a cosine schedule.
HYPERPARAMETERS = {
    "arch": "smallcnn",
    "epochs": "3",
    "batch_size": "8",
    "learning_rate": "0.05",
    "seed": "7",
    "scheduler": "cosine",
}
STEPS_PER_EPOCH = 15


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "synthetic"
    make_synthetic(root, classes=3, train_per_class=40, val_per_class=8, test_per_class=8)
    return root


def job(base: Path, data: Path) -> Path:
    (base / "input" / "config").mkdir(parents=True)
    (base / "input" / "config" / "hyperparameters.json").write_text(json.dumps(HYPERPARAMETERS))
    (base / "input" / "data").mkdir(parents=True)
    for channel in ("train", "validation", "test"):
        (base / "input" / "data" / channel).symlink_to(data / channel)
    return base


class StopAfter:
    """A stop flag that turns true before training step `steps` (counted over the whole job)."""

    def __init__(self, steps: int) -> None:
        self.left = steps

    def __call__(self) -> bool:
        self.left -= 1
        return self.left < 0


def weights(base: Path) -> dict[str, torch.Tensor]:
    return load_file(str(base / "model" / "model.safetensors"))


def assert_bitwise_equal(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name, tensor in a.items():
        assert torch.equal(tensor, b[name]), f"{name} differs"


def run_program(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`python -m train train` as SageMaker starts it, to the end."""
    command = [sys.executable, "-m", "train", "train"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)


def run_in_process(base: Path, stop) -> object:
    paths = JobPaths(base, {"WANDB_MODE": "disabled"})
    return run(parse_hyperparameters(HYPERPARAMETERS), paths, stop)


@pytest.mark.parametrize("stop_at", [STEPS_PER_EPOCH + 6, 1, 2 * STEPS_PER_EPOCH])
def test_a_job_stopped_mid_epoch_resumes_at_the_next_step_and_ends_bitwise_equal(tmp_path, dataset, stop_at):
    straight = job(tmp_path / "straight", dataset)
    assert not run_in_process(straight, lambda: False).stopped

    stopped = job(tmp_path / "stopped", dataset)
    assert run_in_process(stopped, StopAfter(stop_at)).stopped
    saved = checkpoint.load(stopped / "checkpoints")
    assert saved is not None
    done_epochs, step = divmod(stop_at, STEPS_PER_EPOCH)
    assert saved["epoch"] == done_epochs and (saved["progress"] or {}).get("step", 0) == step
    assert not (stopped / "model" / "model.safetensors").exists()
    assert not run_in_process(stopped, lambda: False).stopped

    assert_bitwise_equal(weights(straight), weights(stopped))
    history = [
        json.loads((b / "model" / "evaluation.json").read_text())["history"] for b in (straight, stopped)
    ]
    for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"):
        assert [h[key] for h in history[0]] == [h[key] for h in history[1]], key
    final = [checkpoint.load(b / "checkpoints") for b in (straight, stopped)]
    states = [f["optimizer"]["state"].values() for f in final]
    for group_a, group_b in zip(*states, strict=True):
        assert torch.equal(group_a["momentum_buffer"], group_b["momentum_buffer"])


def test_sigterm_mid_epoch_saves_within_a_step_and_the_same_wandb_run_continues(tmp_path, dataset):
    """The real signal on the real program: wherever it lands, the resumed job ends where an uninterrupted
    one does, and W&B (offline) keeps one run across the restart."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "WANDB_MODE": "offline"}
    straight = job(tmp_path / "straight", dataset)
    done = run_program({**env, "SAGEMAKER_BASE_DIR": str(straight)})
    assert done.returncode == 0, done.stdout + done.stderr

    base = job(tmp_path / "interrupted", dataset)
    stopped = sigterm_training({**env, "SAGEMAKER_BASE_DIR": str(base)}, at="epoch=1 ", timeout=60)
    assert stopped.code == 143, stopped.before + stopped.after
    assert "stopped at step" in stopped.after and "checkpoint" in stopped.after, stopped.after
    assert stopped.seconds < 30  # a step and a checkpoint, well inside SageMaker's two minutes
    saved = checkpoint.load(base / "checkpoints")
    assert saved is not None and saved["wandb_id"]

    resumed = run_program({**env, "SAGEMAKER_BASE_DIR": str(base)})
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resumed from checkpoint" in resumed.stdout
    assert_bitwise_equal(weights(straight), weights(base))
    manifest = json.loads((base / "model" / "manifest.json").read_text())
    assert manifest["wandb"]["id"] == saved["wandb_id"]  # the same run, continued: no duplicate
    runs = list((base / "output" / "data" / "wandb").glob("offline-run-*"))
    assert {r.name.rsplit("-", 1)[-1] for r in runs} == {saved["wandb_id"]}


def test_a_kill_while_the_checkpoint_is_written_leaves_the_last_good_one(tmp_path):
    directory = tmp_path / "checkpoints"
    checkpoint.save(directory, {"epoch": 1, "weights": torch.ones(3)})
    # What a kill mid-write leaves behind: a half-written temporary file next to the good checkpoint.
    (directory / f".{checkpoint.LAST}.tmp").write_bytes(b"\x80\x02truncated")
    state = checkpoint.load(directory)
    assert state is not None and state["epoch"] == 1 and torch.equal(state["weights"], torch.ones(3))
    checkpoint.save(directory, {"epoch": 2, "weights": torch.zeros(3)})  # the next save replaces both
    assert checkpoint.load(directory)["epoch"] == 2
    assert not (directory / f".{checkpoint.LAST}.tmp").exists()
