"""What a reviewer finds on a W&B run: named after the job, grouped by git SHA, tagged with the trigger,
instance and spot, linked to the SageMaker job, and the model aliased `candidate`."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from typing import Any

from train.tracking import Tracker, run_context

SAGEMAKER = {
    "MLOPS_CODE_VERSION": "0123456789abcdef",
    "MLOPS_TRIGGER": "pipeline-workflow",
    "MLOPS_INSTANCE_TYPE": "ml.g5.xlarge",
    "MLOPS_SPOT": "true",
    "TRAINING_JOB_NAME": "cv-20261203-abcd",
    "AWS_REGION": "eu-west-1",
    "WANDB_MODE": "offline",
}


def test_a_sagemaker_run_carries_sha_trigger_instance_spot_and_a_console_link():
    context = run_context(SAGEMAKER)
    assert context["group"] == "git-0123456789ab"
    assert context["tags"] == [
        "git:0123456789ab",
        "trigger:pipeline-workflow",
        "instance:ml.g5.xlarge",
        "spot",
    ]
    assert context["config"]["mlops/sagemaker_job"] == (
        "https://eu-west-1.console.aws.amazon.com/sagemaker/home?region=eu-west-1#/jobs/cv-20261203-abcd"
    )


def test_a_local_run_says_local_and_has_no_console_link():
    context = run_context({"MLOPS_SPOT": "false"})
    assert context["tags"] == ["git:unknown", "trigger:cli", "instance:local", "on-demand"]
    assert "mlops/sagemaker_job" not in context["config"]


class FakeRun:
    def __init__(self, **kwargs: Any) -> None:
        self.init = kwargs
        self.id = kwargs.get("id") or "run123"
        self.dir = "/tmp/wandb/run/files"
        self.url = "https://wandb.example/run123"
        self.summary: dict[str, Any] = {}
        self.artifacts: list[tuple[Any, list[str]]] = []

    def log_artifact(self, artifact: Any, aliases: list[str]) -> None:
        self.artifacts.append((artifact, aliases))

    def finish(self, exit_code: int = 0) -> None:
        pass


def fake_wandb(monkeypatch) -> types.SimpleNamespace:
    runs: list[FakeRun] = []

    class Artifact:
        def __init__(self, name: str, type: str, metadata: dict[str, Any]) -> None:
            self.name, self.dirs = name, []

        def add_dir(self, path: str) -> None:
            self.dirs.append(path)

    def init(**kwargs: Any) -> FakeRun:
        runs.append(FakeRun(**kwargs))
        return runs[-1]

    module = types.SimpleNamespace(init=init, Settings=lambda **kw: kw, Artifact=Artifact, runs=runs)
    monkeypatch.setitem(sys.modules, "wandb", module)
    return module


def test_the_run_is_started_with_the_context_and_the_model_is_the_candidate(monkeypatch, tmp_path: Path):
    wandb = fake_wandb(monkeypatch)
    tracker = Tracker(
        tmp_path / "wandb", project="cv", name="cv-20261203-abcd", config={"epochs": 3}, env=SAGEMAKER
    )
    tracker.start()
    (run,) = wandb.runs
    assert run.init["name"] == "cv-20261203-abcd" and run.init["group"] == "git-0123456789ab"
    assert "trigger:pipeline-workflow" in run.init["tags"] and "spot" in run.init["tags"]
    assert run.init["config"]["epochs"] == 3 and run.init["config"]["mlops/instance_type"] == "ml.g5.xlarge"
    assert run.init["notes"].endswith("#/jobs/cv-20261203-abcd") and run.init["resume"] == "allow"
    tracker.log_model(tmp_path, {"metrics": {}})
    (_artifact, aliases) = run.artifacts[0]
    assert aliases == ["latest", "candidate", "cv-20261203-abcd"]


def test_the_sample_table_holds_each_image_with_its_label_and_the_models_answer(monkeypatch, tmp_path: Path):
    import torch

    from artifact.architectures import build
    from train.engine import sample_predictions

    torch.manual_seed(0)
    images = torch.randint(0, 256, (20, 3, 32, 32), dtype=torch.uint8)
    labels = torch.tensor([i % 3 for i in range(20)])
    rows = sample_predictions(
        build("smallcnn", 3), images, labels, CLASSES, mean=[0.5] * 3, std=[0.25] * 3, count=16
    )
    assert len(rows) == 16
    image, label, predicted, prob = rows[4]
    assert image.shape == (32, 32, 3) and label == "square" and predicted in CLASSES and 0 < prob <= 1

    wandb = fake_wandb(monkeypatch)
    logged: list[dict[str, Any]] = []
    wandb.Image = lambda array: ("image", array.shape)
    wandb.Table = lambda columns, data: {"columns": columns, "data": data}
    tracker = Tracker(tmp_path, project="cv", name="job", config={}, env=SAGEMAKER)
    tracker.start()
    wandb.runs[0].log = logged.append
    tracker.log_samples(rows)
    table = logged[0]["test/samples"]
    assert table["columns"] == ["image", "label", "predicted", "probability"]
    assert table["data"][4][:2] == [("image", (32, 32, 3)), "square"]


CLASSES = ["circle", "square", "triangle"]


def test_detection_samples_carry_the_models_boxes_and_the_labelled_ones(monkeypatch, tmp_path: Path):
    wandb = fake_wandb(monkeypatch)
    logged: list[dict[str, Any]] = []
    wandb.Image = lambda array, boxes: ("image", array.shape, boxes)
    wandb.Table = lambda columns, data: {"columns": columns, "data": data}
    tracker = Tracker(tmp_path, project="cv", name="job", config={}, env=SAGEMAKER)
    tracker.start()
    wandb.runs[0].log = logged.append
    import numpy as np

    sample = {
        "image": np.zeros((48, 64, 3), dtype=np.uint8),
        "predicted": [(4.0, 5.0, 30.0, 40.0, 1, 0.87), (10.0, 2.0, 20.0, 12.0, 2, 0.3)],
        "truth": [(1, 0.05, 0.1, 0.5, 0.8)],
    }
    tracker.log_detections([sample], CLASSES)
    table = logged[0]["test/samples"]
    assert table["columns"] == ["image", "objects", "detections", "top_score"]
    (_, shape, boxes), objects, detections, top = table["data"][0]
    assert shape == (48, 64, 3) and (objects, detections, top) == (1, 2, 0.87)
    first = boxes["predictions"]["box_data"][0]
    assert first["position"] == {"minX": 4.0, "maxX": 30.0, "minY": 5.0, "maxY": 40.0}
    assert first["domain"] == "pixel" and first["box_caption"] == "square 0.87"
    (truth,) = boxes["ground_truth"]["box_data"]
    assert truth["position"] == {"minX": 0.05, "maxX": 0.5, "minY": 0.1, "maxY": 0.8}
    assert "domain" not in truth  # W&B's default: coordinates relative to the image
    assert boxes["ground_truth"]["class_labels"] == {0: "circle", 1: "square", 2: "triangle"}
