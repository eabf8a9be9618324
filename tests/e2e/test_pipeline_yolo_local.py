"""`mlops pipeline --local --task detection|segmentation` end to end: the synthetic YOLO dataset made on
demand, Ultralytics training under the training contract, the gate on mAP, the registry, a real endpoint
answering with boxes (and polygons), its smoke test and verification; then a second candidate compared
with the first one in production."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port

pytestmark = pytest.mark.e2e

# A few epochs at 64 px: the shapes are barely learnt (FACTS: tiny data learns slowly), so the gate here
# only asks for the metrics to be there; tests/functional/test_yolo_training.py covers the trainer.
CONFIG = """
[project]
name = "yolo-e2e"
[gate]
version = 3
min = {{ test_accuracy = 0.5 }}
[gate.{task}]
min = {{ {metric} = 0.0 }}
compare = ["{metric}"]
tolerance = 1.0
[local]
hyperparameters = {{ epochs = "3", batch_size = "16", imgsz = "64" }}
smoke_images = 4
verify_images = 6
"""
METRIC = {"detection": "test_map50", "segmentation": "test_mask_map50"}


@pytest.mark.parametrize("task", ["detection", "segmentation"])
def test_a_yolo_candidate_goes_through_the_whole_local_pipeline(tmp_path: Path, task: str):
    config = tmp_path / "mlops.toml"
    config.write_text(CONFIG.format(task=task, metric=METRIC[task]))
    port = free_port()
    env = {
        **os.environ,
        "MLOPS_HOME": str(tmp_path / "home"),
        "MLOPS_CONFIG": str(config),
        "MLOPS_ENDPOINT_PORT": str(port),
        "COLUMNS": "200",
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
    }

    def mlops(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "infra.cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )

    try:
        first = mlops("pipeline", "--local", "--task", task)
        assert first.returncode == 0, first.stdout + first.stderr
        for stage in ("data", "train", "evaluate", "register", "deploy", "verify"):
            assert f"ok {stage} (" in first.stdout, first.stdout
        assert f"synthetic {task} dataset" in first.stdout and "promoted v1" in first.stdout
        summary = (tmp_path / "summary.md").read_text()
        assert f"| {METRIC[task]} | threshold |" in summary

        image = sorted((tmp_path / "home" / "data" / f"synthetic-{task}" / "images" / "test").glob("*.png"))[
            0
        ]
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations?conf=0.001&max_det=5",
            data=image.read_bytes(),
            headers={"Content-Type": "image/png"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            answer = json.loads(response.read())
        assert answer["model"]["task"] == task
        boxes = answer["predictions"][0]["boxes"]
        assert 0 < len(boxes) <= 5 and all(b["label"] in ("circle", "square", "triangle") for b in boxes)
        assert all(0 <= c <= 64 for b in boxes for c in b["box"])
        assert ("polygon" in boxes[0]) == (task == "segmentation")

        second = mlops("pipeline", "--local", "--task", task, "--hp", "seed=1")
        assert second.returncode == 0, second.stdout + second.stderr
        # Champion/challenger on mAP: the second candidate is compared with v1 in production.
        assert f"| {METRIC[task]} | regression |" in (tmp_path / "summary.md").read_text()
        assert "(previous production: v1)" in second.stdout or "kept v1 in production" in second.stdout
        compared = mlops("runs", "compare", "--local", "--candidate", "2", "--against", "1")
        assert compared.returncode == 0 and METRIC[task] in compared.stdout, compared.stdout + compared.stderr
    finally:
        mlops("endpoint", "stop", "--local")
        state = tmp_path / "home" / "endpoint" / "state.json"
        if state.is_file():  # the stop failed: never leave a server behind
            with contextlib.suppress(ProcessLookupError):
                os.kill(json.loads(state.read_text())["pid"], signal.SIGKILL)
