"""A verified model artifact, loaded for inference.

Stages: verify every file's sha256 against the manifest (before anything is parsed) -> dispatch on the
manifest's task: a classifier here, a YOLO detector or segmenter in serve/yolo.py. For a classifier:
build the named architecture -> load the safetensors weights strictly (never pickle) -> eval mode ->
one warm-up pass -> pick the memory layout (channels-last or contiguous) that runs faster here, when
asked to. `predict` then resizes, normalises and batches RGB images and returns the top-k
classes of each.

Call `load` and `predict` from the same thread: on CPU a model built in one thread and run from another
gets a second OpenMP pool and its batch-1 latency doubles (see shared FACTS).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from artifact.architectures import build
from artifact.manifest import ArtifactError, Manifest, verify

if TYPE_CHECKING:
    from serve.yolo import Detector

SUPPORTED_TASKS = ("classification", "detection", "segmentation")
# Bounds the activations of one forward pass when MLOPS_MAX_BATCH is raised far above the default.
_CHUNK = 64

Prediction = list[tuple[str, float]]
# Memory layouts a classifier can run in; "auto" times both on this machine at startup.
LAYOUTS = ("auto", "channels_last", "contiguous")
_FORMATS = {"channels_last": torch.channels_last, "contiguous": torch.contiguous_format}


def load(model_dir: Path) -> Predictor | Detector:
    """Verify the artifact's hashes, then load it for its task; any problem raises ArtifactError.

    Nothing in `model_dir` is parsed, let alone unpickled, before `verify` has matched every file.
    """
    manifest = verify(model_dir)
    if manifest.task == "classification":
        return Predictor.from_verified(model_dir, manifest)
    if manifest.task in SUPPORTED_TASKS:
        from serve.yolo import Detector  # imports Ultralytics' settings only where a YOLO model is served

        return Detector.load(model_dir, manifest)
    raise ArtifactError(
        f"serving task {manifest.task!r} is not implemented; this server supports "
        f"{', '.join(SUPPORTED_TASKS)}"
    )


class Predictor:
    """Top-k classification with the preprocessing the trainer used (PIL bilinear resize, mean/std)."""

    def __init__(self, manifest: Manifest, model: nn.Module) -> None:
        self.manifest = manifest
        self.model = model
        self.classes = list(manifest.classes)
        self.input_size = manifest.input_size
        self._mean = torch.tensor(manifest.mean, dtype=torch.float32).view(1, 3, 1, 1)
        self._std = torch.tensor(manifest.std, dtype=torch.float32).view(1, 3, 1, 1)
        self.layout = "contiguous"

    @classmethod
    def load(cls, model_dir: Path) -> Predictor:
        """Verify, build, load and warm a classifier; any problem with the artifact raises ArtifactError."""
        return cls.from_verified(model_dir, verify(model_dir))

    @classmethod
    def from_verified(cls, model_dir: Path, manifest: Manifest) -> Predictor:
        """Build, load and warm a classifier whose files `verify` has matched to `manifest`."""
        if manifest.task != "classification":
            raise ArtifactError(f"{model_dir} holds a {manifest.task!r} model, not a classifier")
        _check_manifest(manifest)
        try:
            model = build(manifest.architecture, len(manifest.classes), manifest.architecture_revision)
        except ValueError as exc:
            raise ArtifactError(f"cannot build the model in {model_dir}: {exc}") from exc
        weights = model_dir / manifest.weights
        try:
            model.load_state_dict(load_file(str(weights)), strict=True)
        except (SafetensorError, RuntimeError, OSError) as exc:
            # RuntimeError is load_state_dict's way of naming missing, unexpected or misshapen tensors.
            detail = " ".join(str(exc).split())[:500] or type(exc).__name__
            hint = (
                "; the artifact records no architecture revision, so it may predate a change of the "
                "architecture: retrain it"
                if manifest.architecture_revision is None
                else ""
            )
            raise ArtifactError(
                f"cannot load {weights} into {manifest.architecture}: {detail}{hint}"
            ) from exc
        model.eval()
        predictor = cls(manifest, model)
        predictor.warm_up()
        return predictor

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def warm_up(self) -> None:
        """One pass per batch shape the first requests are likely to use, so they do not pay for it."""
        blank = np.zeros((self.input_size, self.input_size, 3), dtype=np.uint8)
        self.predict([blank], top_k=1)
        self.predict([blank] * 8, top_k=1)

    def use_layout(self, layout: str) -> str:
        """Run in `layout` (one of LAYOUTS); "auto" keeps whichever runs a batch of 8 faster here.

        oneDNN's convolutions prefer channels-last (NHWC) on most x86 CPUs (measured here: smallcnn
        about 1.9x faster at batch 32), but not for every model and core, so "auto" measures it."""
        if layout not in LAYOUTS:
            raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
        if layout == "auto":
            seconds = {name: self._time_layout(name) for name in _FORMATS}
            layout = min(seconds, key=seconds.__getitem__)
        self.model = self.model.to(memory_format=_FORMATS[layout])
        self.layout = layout
        return layout

    def _time_layout(self, layout: str) -> float:
        self.use_layout(layout)
        blank = [np.zeros((self.input_size, self.input_size, 3), dtype=np.uint8)] * 8
        self.predict(blank, top_k=1)  # the first pass in a layout builds its kernels
        best = float("inf")
        for _ in range(3):
            tick = time.perf_counter()
            self.predict(blank, top_k=1)
            best = min(best, time.perf_counter() - tick)
        return best

    def predict(self, images: list[np.ndarray], top_k: int) -> list[Prediction]:
        """(H, W, 3) uint8 RGB images -> per image, the `top_k` (label, probability) pairs, best first."""
        if not 1 <= top_k <= self.num_classes:
            raise ValueError(f"top_k must be between 1 and {self.num_classes}, got {top_k}")
        results: list[Prediction] = []
        for start in range(0, len(images), _CHUNK):
            probabilities, indices = self._top_k(images[start : start + _CHUNK], top_k)
            results.extend(
                [(self.classes[i], p) for i, p in zip(row_i, row_p, strict=True)]
                for row_i, row_p in zip(indices, probabilities, strict=True)
            )
        return results

    def _top_k(self, images: list[np.ndarray], top_k: int) -> tuple[list[list[float]], list[list[int]]]:
        batch = torch.from_numpy(np.stack([self._resize(image) for image in images]))
        with torch.inference_mode():
            x = batch.permute(0, 3, 1, 2).float().div_(255).sub_(self._mean).div_(self._std)
            x = x.contiguous(memory_format=_FORMATS[self.layout])
            probabilities = torch.softmax(self.model(x), dim=1)
            values, indices = probabilities.topk(top_k, dim=1)
        return values.tolist(), indices.tolist()

    def _resize(self, image: np.ndarray) -> np.ndarray:
        size = self.input_size
        if image.shape[:2] == (size, size):
            return image
        # Same resampling as train/data.py so served inputs match what the model was trained on.
        resized = Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(resized, dtype=np.uint8)


def _check_manifest(manifest: Manifest) -> None:
    problems = []
    if len(manifest.classes) < 2:
        problems.append(f"needs at least 2 classes, has {len(manifest.classes)}")
    if manifest.input_size < 1:
        problems.append(f"input_size must be positive, is {manifest.input_size}")
    if len(manifest.mean) != 3 or len(manifest.std) != 3:
        problems.append("mean and std must have 3 values (R, G, B)")
    elif any(s <= 0 for s in manifest.std):
        problems.append(f"std values must be positive, are {manifest.std}")
    if problems:
        raise ArtifactError("manifest is unusable: " + "; ".join(problems))
