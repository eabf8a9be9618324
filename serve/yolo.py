"""A verified Ultralytics YOLO artifact (detection or segmentation), loaded for inference.

Stages: the caller has verified every file's sha256 (serve/predictor.py `load`) -> point Ultralytics at
an offline, private config directory -> load the `.pt` checkpoint with Ultralytics' restricted
`weights_only` unpickler -> check it against the manifest (task, class count) -> one warm-up pass.
`predict` then letterboxes each image to the trained size and maps boxes and polygons back to the input
image's pixels (Ultralytics does both), best score first.

Call `load` and `predict` from the same thread, as with the classifier (see shared FACTS).
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from artifact.manifest import ArtifactError, Manifest

# The manifest's task names -> Ultralytics' own.
YOLO_TASKS = {"detection": "detect", "segmentation": "segment"}
# Bounds the activations of one forward pass when MLOPS_MAX_BATCH is raised far above the default.
_CHUNK = 16


@dataclass(frozen=True)
class DetectOptions:
    """Per-request settings; the defaults are Ultralytics' own except a smaller max_det."""

    conf: float = 0.25
    iou: float = 0.7
    max_det: int = 100


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in the input image's pixels
    score: float
    class_id: int
    polygon: list[tuple[float, float]] | None = None  # segmentation only, input image pixels


def prepare_offline(environ: MutableMapping[str, str] | None = None) -> Path:
    """Make Ultralytics work with no network and a read-only code tree; call before importing it.

    Ultralytics writes settings.json into its config dir and, before drawing labels, downloads
    Arial.ttf unless the file is already there (that check ignores YOLO_OFFLINE). The container runs
    as a user that owns nothing, so the directory is a fresh private one under the temp dir, removed
    at exit. ULTRALYTICS_SAFE_LOAD makes it unpickle checkpoints with torch's weights_only loader and
    an allow-list of model classes: a second guard behind the manifest's hashes.
    """
    env = os.environ if environ is None else environ
    config_dir = Path(tempfile.mkdtemp(prefix="serve-ultralytics-"))
    atexit.register(shutil.rmtree, config_dir, ignore_errors=True)
    font = _bundled_font()
    if font is not None:
        (config_dir / "Ultralytics").mkdir()
        shutil.copyfile(font, config_dir / "Ultralytics" / "Arial.ttf")
    env["YOLO_CONFIG_DIR"] = str(config_dir)
    env["YOLO_OFFLINE"] = "1"
    env["ULTRALYTICS_SAFE_LOAD"] = "1"
    return config_dir


def _bundled_font() -> Path | None:
    """matplotlib's DejaVuSans (Ultralytics depends on matplotlib), found without importing it."""
    spec = importlib.util.find_spec("matplotlib")
    for location in (spec.submodule_search_locations or []) if spec else []:
        font = Path(location) / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
        if font.is_file():
            return font
    return None


@contextlib.contextmanager
def _pil_open_untouched() -> Iterator[None]:
    """Undo Ultralytics' process-wide patch of `PIL.Image.open` (ultralytics/utils/patches.py).

    On a file PIL cannot identify, the patched opener runs `check_requirements("pi-heif")`, which may
    try to pip-install it, and raises ModuleNotFoundError where it is absent: a corrupt upload would
    become a 500 (and a network call) instead of the codecs' 400. The server hands Ultralytics decoded
    arrays only, so it never needs that opener.
    """
    from PIL import Image

    pil_open = Image.open
    try:
        yield
    finally:
        Image.open = pil_open


class Detector:
    """Boxes (and, for segmentation, polygons) from an Ultralytics model, labelled by the manifest."""

    def __init__(self, manifest: Manifest, model: Any) -> None:
        self.manifest = manifest
        self.model = model
        self.classes = list(manifest.classes)
        self.input_size = manifest.input_size
        self.segments = manifest.task == "segmentation"

    @classmethod
    def load(cls, model_dir: Path, manifest: Manifest) -> Detector:
        """Load an artifact whose hashes `verify` has already checked; problems raise ArtifactError."""
        expected_task = YOLO_TASKS.get(manifest.task)
        if expected_task is None:
            raise ArtifactError(f"task {manifest.task!r} is not a YOLO task ({', '.join(YOLO_TASKS)})")
        weights = model_dir / manifest.weights
        problems = []
        if weights.suffix != ".pt":
            problems.append(f"weights must be an Ultralytics .pt file, got {manifest.weights}")
        if not manifest.classes:
            problems.append("lists no classes")
        if manifest.input_size < 1:
            problems.append(f"input_size must be positive, is {manifest.input_size}")
        if problems:
            raise ArtifactError("manifest is unusable: " + "; ".join(problems))
        if "ultralytics" not in sys.modules:  # its settings and flags are read at import
            prepare_offline()
        with _pil_open_untouched():
            from ultralytics import YOLO

            try:
                model = YOLO(str(weights))
            except Exception as exc:  # Ultralytics reports a refused or damaged checkpoint in many types
                detail = " ".join(str(exc).split())[:500] or type(exc).__name__
                raise ArtifactError(f"cannot load {weights} with Ultralytics: {detail}") from exc
        if model.task != expected_task:
            raise ArtifactError(
                f"{weights} holds an Ultralytics {model.task!r} model, "
                f"but the manifest says {manifest.task!r}"
            )
        if len(model.names) != len(manifest.classes):
            raise ArtifactError(
                f"{weights} predicts {len(model.names)} classes, but the manifest lists "
                f"{len(manifest.classes)}: {', '.join(manifest.classes)}"
            )
        detector = cls(manifest, model)
        with _pil_open_untouched():
            detector.warm_up()
        return detector

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def warm_up(self) -> None:
        """The first predict call sets Ultralytics' predictor up (seconds); pay for it before serving.

        The low threshold makes the second pass find boxes, so NMS and mask-to-polygon run too.
        """
        blank = np.zeros((self.input_size, self.input_size, 3), dtype=np.uint8)
        self.predict([blank], DetectOptions())
        self.predict([blank], DetectOptions(conf=1e-4, max_det=10))

    def predict(self, images: list[np.ndarray], options: DetectOptions) -> list[list[Detection]]:
        """(H, W, 3) uint8 RGB images -> per image, its detections, best score first."""
        answers: list[list[Detection]] = []
        for start in range(0, len(images), _CHUNK):
            # Ultralytics reads numpy images as OpenCV does, BGR; the codecs decode to RGB.
            batch = [np.ascontiguousarray(image[..., ::-1]) for image in images[start : start + _CHUNK]]
            results = self.model.predict(
                batch,
                imgsz=self.input_size,
                conf=options.conf,
                iou=options.iou,
                max_det=options.max_det,
                verbose=False,
                save=False,
            )
            answers.extend(self._detections(result) for result in results)
        return answers

    def _detections(self, result: Any) -> list[Detection]:
        rows = result.boxes.data.cpu().numpy().astype(np.float64)  # x1, y1, x2, y2, conf, cls
        polygons = result.masks.xy if self.segments and result.masks is not None else None
        detections = []
        for index in np.argsort(-rows[:, 4], kind="stable"):
            x1, y1, x2, y2, score, class_id = rows[index].tolist()
            polygon = None
            if polygons is not None:
                polygon = [(round(float(x), 2), round(float(y), 2)) for x, y in polygons[index]]
            detections.append(
                Detection(
                    box=(round(x1, 2), round(y1, 2), round(x2, 2), round(y2, 2)),
                    score=round(score, 6),
                    class_id=int(class_id),
                    polygon=polygon,
                )
            )
        return detections
