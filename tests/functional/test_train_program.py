"""`python -m train` as SageMaker runs it: a real process over a job directory in the SageMaker layout."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from artifact.manifest import verify
from infra.datasets import make_synthetic

FAST = {"arch": "smallcnn", "epochs": "2", "batch_size": "32", "learning_rate": "0.05"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "synthetic"
    make_synthetic(root, classes=3, train_per_class=40, val_per_class=10, test_per_class=10)
    return root


def make_job(
    base: Path, data: Path, hyperparameters: dict[str, str], channels=("train", "validation", "test")
) -> Path:
    (base / "input" / "config").mkdir(parents=True)
    (base / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    (base / "input" / "data").mkdir(parents=True)
    for channel in channels:
        (base / "input" / "data" / channel).symlink_to(data / channel)
    return base


def run_train(base: Path, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(base), "PYTHONUNBUFFERED": "1"}
    return subprocess.run(
        [sys.executable, "-m", "train", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_training_job_writes_a_verified_artifact_metrics_and_an_offline_wandb_run(tmp_path, dataset):
    base = make_job(tmp_path / "job", dataset, {**FAST, "_tuning_objective_metric": "validation:accuracy"})
    result = run_train(base, "train")
    assert result.returncode == 0, result.stdout + result.stderr
    epoch_lines = [line for line in result.stdout.splitlines() if line.startswith("epoch=")]
    assert [line.split()[0] for line in epoch_lines] == ["epoch=1", "epoch=2"]
    assert any(line.startswith("final test_accuracy=") for line in result.stdout.splitlines())

    manifest = verify(base / "model")
    assert manifest.architecture == "smallcnn" and manifest.classes == ["circle", "square", "triangle"]
    assert manifest.input_size == 32 and len(manifest.mean) == 3 and len(manifest.std) == 3
    assert set(manifest.files) == {"model.safetensors", "evaluation.json"}
    assert manifest.config["epochs"] == 2 and 0.0 <= manifest.metrics["test_accuracy"] <= 1.0
    assert manifest.wandb["mode"] == "offline" and Path(manifest.wandb["dir"]).is_dir()
    assert manifest.dataset["train"]["images"] == 120

    evaluation = json.loads((base / "output" / "data" / "evaluation.json").read_text())
    assert len(evaluation["confusion_matrix"]) == 3 and set(evaluation["per_class_accuracy"]) == set(
        manifest.classes
    )
    assert sum(map(sum, evaluation["confusion_matrix"])) == 30
    assert (base / "checkpoints" / "last.pt").is_file()
    assert not (base / "output" / "failure").exists()

    # The gate's champion re-evaluation uses the same code: it reproduces the job's own test metrics.
    out = base / "re-evaluation.json"
    scored = subprocess.run(
        [
            sys.executable,
            "-m",
            "train",
            "evaluate",
            "--model-dir",
            str(base / "model"),
            "--data",
            str(dataset / "test"),
            "--output",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert scored.returncode == 0, scored.stderr
    again = json.loads(out.read_text())
    assert again["images"] == 30 and again["fingerprint"] == manifest.dataset["test"]["fingerprint"]
    for key in ("test_accuracy", "test_loss", "test_min_class_accuracy"):
        assert abs(again["metrics"][key] - manifest.metrics[key]) < 1e-4, key


@pytest.mark.parametrize(
    ("hyperparameters", "expected"),
    [
        ({"lerning_rate": "0.1"}, "unknown hyperparameter 'lerning_rate' (did you mean 'learning_rate'?)"),
        ({"epochs": "-1"}, "hyperparameter 'epochs': -1 is out of range"),
        ({"optimizer": "rmsprop"}, "'rmsprop' is not one of: sgd, adamw"),
        ({"task": "keypoints"}, "'keypoints' is not one of: classification, detection, segmentation"),
        ({"task": "detection", "imgsz": "100"}, "multiple of 32"),
    ],
)
def test_bad_hyperparameters_stop_the_job_before_any_work(tmp_path, dataset, hyperparameters, expected):
    base = make_job(tmp_path / "job", dataset, hyperparameters)
    result = run_train(base)
    assert result.returncode == 2
    assert expected in result.stderr
    assert expected in (base / "output" / "failure").read_text()
    assert not (base / "model").exists() and not (base / "checkpoints").exists()


def test_a_missing_channel_is_named(tmp_path, dataset):
    base = make_job(tmp_path / "job", dataset, FAST, channels=("train", "validation"))
    result = run_train(base)
    assert result.returncode == 3
    assert "channel 'test' is missing" in (base / "output" / "failure").read_text()


def test_corrupt_images_are_skipped_and_reported(tmp_path, dataset):
    data = tmp_path / "data"
    subprocess.run(["cp", "-r", str(dataset), str(data)], check=True)
    (data / "train" / "circle" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    base = make_job(tmp_path / "job", data, {**FAST, "epochs": "1"})
    result = run_train(base)
    assert result.returncode == 0, result.stderr
    assert "channel train: skipped 1 unreadable image(s): circle/broken.png" in result.stdout
    assert verify(base / "model").dataset["train"]["skipped"] == 1


def test_sigterm_stops_at_a_checkpoint_and_a_restart_resumes_from_it(tmp_path, dataset):
    base = make_job(tmp_path / "job", dataset, {**FAST, "epochs": "8"})
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(base), "PYTHONUNBUFFERED": "1"}
    with subprocess.Popen(
        [sys.executable, "-m", "train"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        try:
            seen = []
            deadline = time.monotonic() + 120
            assert proc.stdout is not None
            for line in proc.stdout:
                seen.append(line)
                if line.startswith("epoch=2 "):
                    proc.send_signal(signal.SIGTERM)  # what a spot reclaim or StopTrainingJob sends
                    break
                assert time.monotonic() < deadline, "".join(seen)
            rest = proc.stdout.read()
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert code == 143, "".join(seen) + rest
    assert "received SIGTERM" in rest
    assert not (base / "model" / "manifest.json").exists()

    resumed = run_train(base, "train")
    assert resumed.returncode == 0, resumed.stderr
    epochs = [
        int(line.split()[0].split("=")[1])
        for line in resumed.stdout.splitlines()
        if line.startswith("epoch=")
    ]
    assert "resumed from checkpoint" in resumed.stdout
    start = epochs[0]
    assert start in (3, 4)  # epoch 2 was checkpointed; epoch 3 may have finished before the signal landed
    assert epochs == list(range(start, 9))
    manifest = verify(base / "model")
    assert manifest.wandb is not None
    history = json.loads((base / "model" / "evaluation.json").read_text())["history"]
    assert [h["epoch"] for h in history] == list(range(1, 9))  # one history across both runs


def test_a_checkpoint_of_another_model_is_refused(tmp_path, dataset):
    base = make_job(tmp_path / "job", dataset, {**FAST, "epochs": "1"})
    assert run_train(base).returncode == 0
    (base / "input" / "config" / "hyperparameters.json").write_text(json.dumps({**FAST, "arch": "resnet18"}))
    result = run_train(base)
    assert result.returncode == 3
    assert "belongs to a different model (arch: checkpoint 'smallcnn' vs job 'resnet18')" in result.stderr


def test_a_checkpoint_with_other_optimizer_groups_is_refused_with_a_clear_message(tmp_path, dataset):
    """A checkpoint of the trainer before the classifier had its own learning rate (two groups, not four)."""
    import torch

    base = make_job(tmp_path / "job", dataset, {**FAST, "epochs": "2"})
    assert run_train(base).returncode == 0
    last = base / "checkpoints" / "last.pt"
    state = torch.load(last, weights_only=False)
    state["epoch"] = 1
    state["optimizer"]["param_groups"] = state["optimizer"]["param_groups"][:2]
    torch.save(state, last)
    result = run_train(base)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "written by a trainer with other optimizer parameter groups" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_describes_the_contract_and_every_hyperparameter():
    result = subprocess.run(
        [sys.executable, "-m", "train", "--help"], capture_output=True, text=True, check=True
    )
    assert "SAGEMAKER_BASE_DIR" in result.stdout and "label_smoothing" in result.stdout
