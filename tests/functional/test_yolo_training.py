"""YOLO detection and segmentation on the training contract: a real process over a SageMaker job directory.

Each job runs `train.yolo.run_yolo` in its own process (Ultralytics sets OMP_NUM_THREADS and its own
settings at import, which must not leak into the test session), with the exit codes train/main.py gives
its errors. Tiny data learns slowly (FACTS): the tests assert files, lines and metric presence, not mAP.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from artifact.manifest import verify
from infra.datasets import make_synthetic_yolo
from train.config import ConfigError, parse_hyperparameters
from train.main import EXIT_DATA, EXIT_STOPPED
from train.metrics import (
    format_epoch_line,
    format_final_line,
    parse_epoch,
    parse_line,
    sagemaker_metric_definitions,
)

FAST = {"epochs": "2", "batch_size": "16", "imgsz": "64", "seed": "0"}
BOX_KEYS = {"test_precision", "test_recall", "test_map50", "test_map50_95"}
MASK_KEYS = {"test_mask_map50", "test_mask_map50_95"}

# What train/main.py does with a YOLO task: run_yolo, its errors mapped to the program's exit codes.
# STOP_AFTER_FIRST_SAVE stands in for a SIGTERM arriving once the first epoch is checkpointed.
RUNNER = """
import os, sys
from train.checkpoint import CheckpointMismatch
from train.config import ConfigError, parse_hyperparameters
from train.contract import JobPaths, read_hyperparameters, write_failure
from train.data import DataError
from train.main import EXIT_DATA, EXIT_STOPPED, StopFlag
from train.yolo import LAST, run_yolo

paths = JobPaths.from_env()
config = parse_hyperparameters(read_hyperparameters(paths))
flag = StopFlag()
flag.install()
if os.environ.get("STOP_AFTER_FIRST_SAVE"):
    stop = lambda: flag() or (paths.checkpoints / LAST).is_file()
else:
    stop = flag
try:
    outcome = run_yolo(config, paths, stop)
except (DataError, CheckpointMismatch, ConfigError) as exc:
    write_failure(paths, str(exc))
    sys.exit(EXIT_DATA)
sys.exit(EXIT_STOPPED if outcome.stopped else 0)
"""


def make_job(base: Path, data: Path, hyperparameters: dict[str, str]) -> Path:
    (base / "input" / "config").mkdir(parents=True)
    (base / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    (base / "input" / "data").mkdir(parents=True)
    (base / "input" / "data" / "train").symlink_to(data)
    return base


def run_job(base: Path, repo_root: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, "SAGEMAKER_BASE_DIR": str(base), "PYTHONUNBUFFERED": "1", **env}
    return subprocess.run(
        [sys.executable, "-c", RUNNER],
        cwd=repo_root,
        env=environment,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def epochs_printed(stdout: str) -> list[int]:
    found = (parse_epoch(line) for line in stdout.splitlines())
    return [epoch[0] for epoch in found if epoch is not None]


def final_metrics(stdout: str) -> dict[str, float]:
    lines = [line for line in stdout.splitlines() if line.startswith("final ")]
    assert len(lines) == 1, stdout
    return parse_line(lines[0])


def epoch_metrics(stdout: str) -> list[dict[str, float]]:
    return [parse_line(line) for line in stdout.splitlines() if parse_epoch(line)]


@pytest.fixture(scope="module")
def detection_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("yolo") / "detection"
    make_synthetic_yolo(root, task="detection", train=40, val=10, test=10, size=64)
    return root


@pytest.fixture(scope="module")
def segmentation_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("yolo") / "segmentation"
    make_synthetic_yolo(root, task="segmentation", train=40, val=10, test=10, size=64)
    return root


@pytest.fixture(scope="module")
def detection_job(
    tmp_path_factory: pytest.TempPathFactory, detection_data: Path
) -> tuple[Path, subprocess.CompletedProcess[str]]:
    """One detection job, W&B offline as a local run has it; several tests read what it left."""
    repo_root = Path(__file__).resolve().parents[2]
    base = make_job(tmp_path_factory.mktemp("det") / "job", detection_data, {"task": "detection", **FAST})
    return base, run_job(base, repo_root)


def test_detection_job_writes_a_verified_artifact_and_parseable_metric_lines(
    detection_job: tuple[Path, subprocess.CompletedProcess[str]], detection_data: Path
) -> None:
    base, result = detection_job
    assert result.returncode == 0, result.stdout + result.stderr

    assert epochs_printed(result.stdout) == [1, 2]
    for values in epoch_metrics(result.stdout):
        assert {"train_loss", "val_map50", "val_map50_95", "val_precision", "val_recall"} <= set(values)
    assert set(final_metrics(result.stdout)) == BOX_KEYS

    manifest = verify(base / "model")
    assert (manifest.task, manifest.architecture) == ("detection", "yolov8n")
    assert manifest.classes == ["circle", "square", "triangle"]
    assert manifest.weights == "model.pt" and set(manifest.files) == {"model.pt", "evaluation.json"}
    assert manifest.input_size == 64 and manifest.config["imgsz"] == 64
    assert set(manifest.metrics) == BOX_KEYS
    assert manifest.dataset is not None and manifest.dataset["train"]["images"] == 40
    assert manifest.dataset["test"]["fingerprint"].startswith("sha256:")
    assert manifest.wandb is not None and manifest.wandb["mode"] == "offline"
    evaluation = json.loads((base / "output" / "data" / "evaluation.json").read_text())
    assert [h["epoch"] for h in evaluation["history"]] == [1, 2]
    assert set(evaluation["per_class_map50_95"]) == set(manifest.classes)
    rows = evaluation["per_class_ap"]
    assert [r["class"] for r in rows] == manifest.classes
    assert set(rows[0]) == {"class", "precision", "recall", "ap50", "ap50_95"}
    # The offline W&B run holds the per-class AP table and one sample row per test image (10).
    (run,) = (base / "output" / "data" / "wandb").glob("offline-run-*")
    media = run / "files" / "media" / "table" / "test"
    (ap_table,) = media.glob("per_class_ap_*.table.json")
    ap = json.loads(ap_table.read_text())
    assert ap["columns"] == list(rows[0]) and [r[0] for r in ap["data"]] == manifest.classes
    (samples_table,) = media.glob("samples_*.table.json")
    samples = json.loads(samples_table.read_text())
    assert samples["columns"] == ["image", "objects", "detections", "top_score"]
    assert len(samples["data"]) == 10
    assert all(row[1] >= 1 for row in samples["data"])  # every synthetic image has a labelled object
    assert (base / "checkpoints" / "yolo-last.pt").is_file()
    assert not (base / "output" / "failure").exists()
    # Ultralytics' label caches went to the job's work tree, not into the (shared) channel.
    assert not list(detection_data.rglob("*.cache"))


def test_a_yolo_artifact_is_re_scored_by_the_same_validation_and_a_champion_on_the_challengers_data(
    detection_job: tuple[Path, subprocess.CompletedProcess[str]], detection_data: Path, tmp_path: Path
) -> None:
    import shutil

    from infra.champion import champion_metrics
    from infra.platform import ModelVersion, TrainingResult

    base, result = detection_job
    assert result.returncode == 0, result.stdout + result.stderr
    manifest = verify(base / "model")
    out = tmp_path / "evaluation.json"
    command = [sys.executable, "-m", "train", "evaluate", "--model-dir", str(base / "model")]
    done = subprocess.run(
        [*command, "--data", str(detection_data), "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    again = json.loads(out.read_text())
    assert set(again["metrics"]) == BOX_KEYS and again["images"] == 10 and again["split"] == "test"
    for key in BOX_KEYS:  # the saved weights, the job's validation, the same images: the job's numbers
        assert abs(again["metrics"][key] - manifest.metrics[key]) < 1e-4, key
    assert manifest.dataset is not None and again["fingerprint"] == manifest.dataset["test"]["fingerprint"]

    # Production scored on another test set is re-scored on the challenger's dataset, not compared by
    # numbers from other images.
    other = tmp_path / "other"
    make_synthetic_yolo(other, task="detection", seed=7, train=4, val=4, test=6, size=64)
    challenger = tmp_path / "challenger"
    shutil.copytree(base / "model", challenger)
    recorded = json.loads((challenger / "manifest.json").read_text())
    recorded["dataset"]["test"]["fingerprint"] = "sha256:the-challengers-test-set"
    (challenger / "manifest.json").write_text(json.dumps(recorded))

    class Registry:
        def model_dir(self, version: ModelVersion) -> Path:
            return version.model_dir

    production = ModelVersion(1, "Approved", {"test_map50": 0.99}, base / "model", "then", "job-1", "sha")
    candidate = TrainingResult("job-2", "Completed", challenger, {}, 1.0)
    metrics, notes = champion_metrics(Registry(), production, candidate, other)  # type: ignore[arg-type]
    assert metrics is not None and set(metrics) == BOX_KEYS and metrics["test_map50"] != 0.99
    assert notes == [
        "production v1 re-evaluated on the candidate's test set (6 images): "
        "its recorded metrics came from a different test set"
    ]

    # A dataset of other classes is refused, naming both lists (exit 3).
    wrong = tmp_path / "wrong"
    make_synthetic_yolo(wrong, task="detection", classes=2, train=2, val=2, test=2, size=64)
    refused = subprocess.run(
        [*command, "--data", str(wrong)], capture_output=True, text=True, timeout=300, check=False
    )
    assert refused.returncode == 3 and "the model predicts ['circle', 'square', 'triangle']" in refused.stderr


def test_weights_in_the_weights_channel_start_the_run_and_must_match_the_task(
    tmp_path: Path,
    detection_job: tuple[Path, subprocess.CompletedProcess[str]],
    segmentation_data: Path,
    detection_data: Path,
    repo_root: Path,
) -> None:
    trained = detection_job[0] / "model"
    base = make_job(tmp_path / "job", detection_data, {"task": "detection", **FAST, "epochs": "1"})
    (base / "input" / "data" / "weights").symlink_to(trained)
    result = run_job(base, repo_root, WANDB_MODE="disabled")
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"starting from weights {base / 'input' / 'data' / 'weights' / 'model.pt'}" in result.stdout
    assert verify(base / "model").architecture == "yolov8n"

    other = make_job(tmp_path / "seg", segmentation_data, {"task": "segmentation", **FAST})
    (other / "input" / "data" / "weights").symlink_to(trained)
    refused = run_job(other, repo_root, WANDB_MODE="disabled")
    assert refused.returncode == EXIT_DATA, refused.stdout + refused.stderr
    assert "is a YOLO detect model, but task is 'segmentation'" in (other / "output" / "failure").read_text()
    assert epochs_printed(refused.stdout) == []


def test_segmentation_job_reports_mask_metrics(
    tmp_path: Path, segmentation_data: Path, repo_root: Path
) -> None:
    base = make_job(tmp_path / "job", segmentation_data, {"task": "segmentation", **FAST, "epochs": "1"})
    result = run_job(base, repo_root, WANDB_MODE="disabled")
    assert result.returncode == 0, result.stdout + result.stderr

    assert epochs_printed(result.stdout) == [1]
    assert {"val_mask_map50", "val_mask_map50_95"} <= set(epoch_metrics(result.stdout)[0])
    assert set(final_metrics(result.stdout)) == BOX_KEYS | MASK_KEYS
    manifest = verify(base / "model")
    assert (manifest.task, manifest.architecture) == ("segmentation", "yolov8n-seg")
    assert manifest.classes == ["circle", "square", "triangle"]
    assert set(manifest.metrics) == BOX_KEYS | MASK_KEYS


def test_a_bad_label_fails_before_training_naming_its_file_and_line(tmp_path: Path, repo_root: Path) -> None:
    data = tmp_path / "data"
    make_synthetic_yolo(data, task="detection", train=4, val=2, test=2, size=32)
    bad = sorted((data / "labels" / "train").glob("*.txt"))[1]
    bad.write_text("7 0.5 0.5 0.2 0.2\n" + bad.read_text())
    base = make_job(tmp_path / "job", data, {"task": "detection", **FAST})
    result = run_job(base, repo_root, WANDB_MODE="disabled")

    assert result.returncode == EXIT_DATA, result.stdout + result.stderr
    failure = (base / "output" / "failure").read_text()
    assert f"{bad.name}:1: class id 7 is out of range" in failure
    assert epochs_printed(result.stdout) == []
    assert not (base / "model" / "manifest.json").exists()
    assert not (base / "checkpoints").exists()


def test_a_stopped_job_leaves_a_checkpoint_and_its_restart_continues_from_the_next_epoch(
    tmp_path: Path, detection_data: Path, repo_root: Path
) -> None:
    base = make_job(tmp_path / "job", detection_data, {"task": "detection", **FAST})
    stopped = run_job(base, repo_root, WANDB_MODE="disabled", STOP_AFTER_FIRST_SAVE="1")
    assert stopped.returncode == EXIT_STOPPED, stopped.stdout + stopped.stderr
    assert epochs_printed(stopped.stdout) == [1]
    assert (base / "checkpoints" / "yolo-last.pt").is_file()
    assert not (base / "model" / "manifest.json").exists()

    resumed = run_job(base, repo_root, WANDB_MODE="disabled")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resumed from checkpoint" in resumed.stdout
    assert epochs_printed(resumed.stdout) == [2]
    assert set(final_metrics(resumed.stdout)) == BOX_KEYS
    manifest = verify(base / "model")
    assert manifest.task == "detection"
    evaluation = json.loads((base / "model" / "evaluation.json").read_text())
    assert [h["epoch"] for h in evaluation["history"]] == [1, 2]


# --- no process: the YOLO hyperparameters and metric keys -----------------------------------------------


def test_yolo_hyperparameters_parse_and_round_trip_through_the_sagemaker_string_form() -> None:
    config = parse_hyperparameters(
        {"task": "segmentation", "model": "yolo11n-seg.yaml", "imgsz": "320", "lr0": "0.002", "patience": "0"}
    )
    assert (config.model, config.imgsz, config.lr0, config.patience) == ("yolo11n-seg.yaml", 320, 0.002, 0)
    assert parse_hyperparameters(config.to_hyperparameters()) == config
    # arch is the classifier's: a detection job accepts and ignores it.
    assert parse_hyperparameters({"task": "detection", "arch": "resnet18"}).model == "auto"


@pytest.mark.parametrize(
    ("hyperparameters", "expected"),
    [
        ({"model": "yolov8n.onnx"}, "'model': 'yolov8n.onnx' is not auto"),
        ({"model": "../models/yolov8n.yaml"}, "is not auto"),
        ({"base_weights": "weights.bin"}, "'base_weights': 'weights.bin' is not auto, none"),
        ({"model": "a.pt", "base_weights": "b.pt"}, "both name weights to start from"),
        ({"imgsz": "100"}, "'imgsz': 100 is not a multiple of 32"),
        ({"task": "segmentation", "model": "yolov8n.yaml"}, "does not build a segmentation model"),
        ({"task": "detection", "model": "yolov8n-seg.yaml"}, "does not build a detection model"),
    ],
)
def test_bad_yolo_hyperparameters_are_refused_before_any_work(
    hyperparameters: dict[str, str], expected: str
) -> None:
    with pytest.raises(ConfigError, match=re.escape(expected)):
        parse_hyperparameters(hyperparameters)


def test_yolo_metric_keys_round_trip_and_feed_sagemaker_definitions() -> None:
    line = format_epoch_line(1, 2, {"val_map50": 0.5, "val_map50_95": 0.25, "val_mask_map50": 0.125})
    final = format_final_line({"test_map50": 0.5, "test_map50_95": 0.25, "test_mask_map50_95": 0.0625})
    assert parse_line(line) == {"val_map50": 0.5, "val_map50_95": 0.25, "val_mask_map50": 0.125}
    assert parse_line(final) == {"test_map50": 0.5, "test_map50_95": 0.25, "test_mask_map50_95": 0.0625}
    names = {d["Name"]: d["Regex"] for d in sagemaker_metric_definitions()}
    found = {name: float(m.group(1)) for name, regex in names.items() if (m := re.search(regex, final))}
    assert found == {"test:map50": 0.5, "test:map50_95": 0.25, "test:mask_map50_95": 0.0625}
