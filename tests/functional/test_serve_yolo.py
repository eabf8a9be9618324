"""`python -m serve` with a YOLO detection or segmentation artifact, as a real process over real HTTP.

The artifacts are untrained Ultralytics models built from their yaml (what the trainer writes, minus
training), made in a subprocess so this test process never imports Ultralytics and its settings. An
untrained model's boxes score low, so the requests ask for `conf=0.0001`.
"""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from artifact.manifest import load_manifest, write_manifest
from tests.functional.test_serve_http import REPO, Server, launch, refused_start, server_env, stop

CLASSES = ["circle", "square", "triangle"]
INPUT_SIZE = 64
WIDTH, HEIGHT = 100, 60  # neither square nor the trained size: the server letterboxes
LOW = {"conf": "0.0001"}
PIXELS = np.random.default_rng(3).integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)


def build_artifacts(root: str) -> None:
    """Run in a subprocess: write root/detection and root/segmentation, and Ultralytics' own answer
    for PIXELS (given as a PIL image, its documented RGB input) next to the detection model."""
    from copy import deepcopy

    from serve.yolo import prepare_offline

    prepare_offline()
    import torch
    from ultralytics import YOLO, __version__
    from ultralytics.nn.tasks import DetectionModel, SegmentationModel

    from artifact.manifest import Manifest

    for task, yaml, kind in (
        ("detection", "yolov8n.yaml", DetectionModel),
        ("segmentation", "yolov8n-seg.yaml", SegmentationModel),
    ):
        model_dir = Path(root) / task
        model_dir.mkdir(parents=True)
        torch.manual_seed(0)
        net = kind(yaml, nc=len(CLASSES), verbose=False)
        net.names = dict(enumerate(CLASSES))
        # The checkpoint as Ultralytics' trainer saves it (save_model), minus optimizer and EMA state.
        ultralytics_task = "segment" if task == "segmentation" else "detect"
        checkpoint = {
            "model": deepcopy(net).half(),
            "ema": None,
            "train_args": {"task": ultralytics_task, "imgsz": INPUT_SIZE, "model": yaml},
            "version": __version__,
        }
        torch.save(checkpoint, model_dir / "model.pt")
        manifest = Manifest(
            task=task,
            architecture=yaml,
            classes=CLASSES,
            input_size=INPUT_SIZE,
            mean=[0.0, 0.0, 0.0],
            std=[1.0, 1.0, 1.0],
            weights="model.pt",
            metrics={"map50": 0.0},
            code_version="test",
        )
        write_manifest(model_dir, manifest)
    results: Any = YOLO(str(Path(root) / "detection" / "model.pt")).predict(
        Image.fromarray(PIXELS), imgsz=INPUT_SIZE, conf=0.0001, verbose=False
    )
    (Path(root) / "reference.json").write_text(json.dumps(results[0].boxes.data.tolist()))


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("yolo-artifacts")
    code = "import sys; from tests.functional.test_serve_yolo import build_artifacts as b; b(sys.argv[1])"
    subprocess.run(
        [sys.executable, "-c", code, str(root)],
        cwd=REPO,
        env=server_env(),
        check=True,
        capture_output=True,
        timeout=180,
    )
    return root


def yolo_env(home: Path) -> dict[str, str]:
    """No Ultralytics variables from the caller, and a HOME of our own to see that nothing lands there."""
    env = {
        k: v for k, v in server_env(MLOPS_TORCH_THREADS="1").items() if not k.startswith(("YOLO_", "ULTRA"))
    }
    home.mkdir(exist_ok=True)
    return {**env, "HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}


def serving(model_dir: Path, log_dir: Path) -> Iterator[Server]:
    args = ["--model-dir", str(model_dir), "--host", "127.0.0.1"]
    running = launch(args, log_dir, yolo_env(log_dir / "home"))
    try:
        yield running
    finally:
        stop(running)


@pytest.fixture(scope="module")
def detector(artifacts: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    yield from serving(artifacts / "detection", tmp_path_factory.mktemp("detector"))


@pytest.fixture(scope="module")
def client(detector: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=detector.url, timeout=60) as http:
        yield http


def png(pixels: np.ndarray = PIXELS) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def boxes_of(response: httpx.Response) -> list[list[dict[str, Any]]]:
    assert response.status_code == 200, response.text
    return [prediction["boxes"] for prediction in response.json()["predictions"]]


def detect(
    client: httpx.Client, body: bytes = b"", content_type: str = "image/png", **kwargs: Any
) -> httpx.Response:
    headers = {"Content-Type": content_type, **kwargs.pop("headers", {})}
    return client.post("/invocations", content=body or png(), headers=headers, **kwargs)


def assert_within(boxes: list[dict[str, Any]], width: int, height: int) -> None:
    for box in boxes:
        x1, y1, x2, y2 = box["box"]
        assert 0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height, box
        assert 0 < box["score"] <= 1
        assert box["label"] == CLASSES[box["class_id"]]
    scores = [box["score"] for box in boxes]
    assert scores == sorted(scores, reverse=True)


def test_ping_answers_once_the_detector_is_loaded(client: httpx.Client) -> None:
    assert client.get("/ping").status_code == 200


def test_boxes_are_in_input_pixels_sorted_by_score(client: httpx.Client, artifacts: Path) -> None:
    response = detect(client, params=LOW)
    [boxes] = boxes_of(response)
    assert boxes
    assert_within(boxes, WIDTH, HEIGHT)
    assert all("polygon" not in box for box in boxes)
    model = response.json()["model"]
    assert (model["task"], model["architecture"], model["num_classes"]) == ("detection", "yolov8n.yaml", 3)
    assert model["version"] == load_manifest(artifacts / "detection").files["model.pt"][:12]
    # Same boxes as Ultralytics' own predict on the RGB image: channel order and letterbox agree.
    reference = sorted(json.loads((artifacts / "reference.json").read_text()), key=lambda r: -r[4])
    assert len(boxes) == len(reference)
    served = np.array([[*b["box"], b["score"], b["class_id"]] for b in boxes])
    np.testing.assert_allclose(served, np.array(reference), atol=0.02)


def test_max_det_caps_the_boxes_and_conf_one_finds_none(client: httpx.Client) -> None:
    assert 1 <= len(boxes_of(detect(client, params={**LOW, "max_det": 3}))[0]) <= 3
    assert boxes_of(detect(client, params={"conf": "1.0"})) == [[]]


def test_settings_from_custom_attributes_and_json_parameters(client: httpx.Client) -> None:
    header = {"X-Amzn-SageMaker-Custom-Attributes": "conf=0.0001, max_det=1"}
    assert len(boxes_of(detect(client, headers=header))[0]) == 1
    small = PIXELS[:30, :45]
    body = {
        "instances": [base64.b64encode(png()).decode(), base64.b64encode(png(small)).decode()],
        "parameters": {"conf": 0.0001, "max_det": 2},
    }
    first, second = boxes_of(detect(client, json.dumps(body).encode(), "application/json"))
    assert 1 <= len(first) <= 2 and 1 <= len(second) <= 2
    assert_within(first, WIDTH, HEIGHT)
    assert_within(second, 45, 30)
    # The query string wins over the body.
    assert (
        len(boxes_of(detect(client, json.dumps(body).encode(), "application/json", params={"max_det": 1}))[0])
        == 1
    )


def test_lossless_encodings_give_the_same_boxes(client: httpx.Client) -> None:
    buf = io.BytesIO()
    np.save(buf, PIXELS)
    assert boxes_of(detect(client, buf.getvalue(), "application/x-npy", params=LOW)) == boxes_of(
        detect(client, params=LOW)
    )


@pytest.mark.parametrize(
    ("params", "body", "needle"),
    [
        ({"conf": "0"}, None, "conf must be greater than 0 and at most 1, got '0'"),
        ({"conf": "1.5"}, None, "conf must be greater than 0 and at most 1"),
        ({"conf": "high"}, None, "conf must be a number, got 'high'"),
        ({"iou": "0"}, None, "iou must be greater than 0 and at most 1"),
        ({"max_det": "0"}, None, "max_det must be between 1 and 1000, got 0"),
        ({"max_det": "1001"}, None, "max_det must be between 1 and 1000"),
        ({"max_det": "2.5"}, None, "max_det must be an integer, got '2.5'"),
        ({}, {"conf": True}, "conf must be a number, got True"),
        ({}, {"confidence": 0.5}, 'unknown "parameters": confidence; this model takes conf, iou, max_det'),
    ],
    ids=[
        "conf-zero",
        "conf-above-one",
        "conf-text",
        "iou-zero",
        "max-det-zero",
        "max-det-big",
        "max-det-float",
        "json-bool",
        "json-unknown",
    ],
)
def test_bad_setting_is_a_400_that_names_it(
    client: httpx.Client, params: dict[str, str], body: dict[str, Any] | None, needle: str
) -> None:
    if body is None:
        response = detect(client, params=params)
    else:
        payload = {"instances": [base64.b64encode(png()).decode()], "parameters": body}
        response = detect(client, json.dumps(payload).encode(), "application/json", params=params)
    assert response.status_code == 400, response.text
    assert needle in response.json()["error"]


def test_corrupt_image_is_still_a_400(client: httpx.Client) -> None:
    response = detect(client, b"\x89PNG\r\n\x1a\n" + bytes(64), params=LOW)
    assert response.status_code == 400
    assert "PNG or JPEG" in response.json()["error"]


def test_ultralytics_runs_offline_without_the_callers_help(detector: Server, client: httpx.Client) -> None:
    home = detector.log_path.parent / "home"
    assert list(home.iterdir()) == []  # no settings written under the (read-only, in a container) home
    log = detector.log().lower()
    assert "download" not in log and "traceback" not in log


def test_segmentation_adds_polygons_in_input_pixels(artifacts: Path, tmp_path: Path) -> None:
    for server in serving(artifacts / "segmentation", tmp_path):
        with httpx.Client(base_url=server.url, timeout=60) as http:
            response = detect(http, params={**LOW, "max_det": 20})
        [boxes] = boxes_of(response)
        assert boxes and response.json()["model"]["task"] == "segmentation"
        assert_within(boxes, WIDTH, HEIGHT)
        assert any(box["polygon"] for box in boxes)
        for box in boxes:
            for x, y in box["polygon"]:
                assert 0 <= x <= WIDTH and 0 <= y <= HEIGHT


# --- refusals to start: the hashes are checked before anything is unpickled ------------------------


def copy_artifact(source: Path, target: Path) -> Path:
    target.mkdir()
    for path in source.iterdir():
        (target / path.name).write_bytes(path.read_bytes())
    return target


class _Trap:
    """Unpickling this creates `marker`: proof that a file was unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.makedirs, (str(self.marker),))


def test_one_changed_byte_in_model_pt_refuses_to_start(artifacts: Path, tmp_path: Path) -> None:
    model_dir = copy_artifact(artifacts / "detection", tmp_path / "model")
    data = bytearray((model_dir / "model.pt").read_bytes())
    data[len(data) // 2] ^= 0x01
    (model_dir / "model.pt").write_bytes(bytes(data))
    result = refused_start(model_dir)
    assert "failed verification" in result.stderr
    assert "model.pt does not match its sha256" in result.stderr


def test_a_swapped_checkpoint_is_never_unpickled(artifacts: Path, tmp_path: Path) -> None:
    import torch

    model_dir = copy_artifact(artifacts / "detection", tmp_path / "model")
    marker = tmp_path / "unpickled"
    torch.save({"model": _Trap(marker)}, model_dir / "model.pt")
    assert "model.pt does not match its sha256" in refused_start(model_dir).stderr
    assert not marker.exists()
    # Even with its hash re-recorded, Ultralytics' restricted unpickler refuses the foreign global.
    write_manifest(model_dir, load_manifest(model_dir))
    assert "cannot load" in refused_start(model_dir).stderr
    assert not marker.exists()
