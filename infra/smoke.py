"""Smoke tests and verification: real held-out images sent through whatever answers invocations.

Platform-neutral: the local endpoint sends over HTTP, the AWS platform through the SageMaker runtime
API; both hand `smoke_test` a `send(body, content_type) -> (status, json)` function.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.errors import MlopsError


@dataclass
class Sample:
    body: bytes
    content_type: str
    label: str


IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}


def held_out_samples(data_dir: Path | None, count: int, classes: list[str]) -> list[Sample]:
    """Up to `count` test images, taken round-robin across classes so every class is exercised (an
    ImageFolder dataset), or the first `count` test images of a YOLO dataset (data.yaml), each labelled
    with the first object of its label file ("" for a background image)."""
    if data_dir is not None and (data_dir / "data.yaml").is_file():
        return _yolo_samples(data_dir, count, classes)
    test = data_dir / "test" if data_dir else None
    if test is None or not test.is_dir():
        return []
    per_class = {
        c: sorted(p for p in (test / c).iterdir() if p.suffix.lower() in IMAGE_TYPES)
        for c in classes
        if (test / c).is_dir()
    }
    samples: list[Sample] = []
    row = 0
    while len(samples) < count and any(row < len(files) for files in per_class.values()):
        for cls, files in per_class.items():
            if row < len(files) and len(samples) < count:
                path = files[row]
                samples.append(Sample(path.read_bytes(), IMAGE_TYPES[path.suffix.lower()], cls))
        row += 1
    return samples


def _yolo_samples(root: Path, count: int, classes: list[str]) -> list[Sample]:
    split = next((root / "images" / s for s in ("test", "val") if (root / "images" / s).is_dir()), None)
    if split is None:
        return []
    samples: list[Sample] = []
    for path in sorted(p for p in split.iterdir() if p.suffix.lower() in IMAGE_TYPES)[:count]:
        labels = root / "labels" / split.name / f"{path.stem}.txt"
        first = labels.read_text().split()[:1] if labels.is_file() else []
        index = int(first[0]) if first and first[0].isdigit() else -1
        label = classes[index] if 0 <= index < len(classes) else ""
        samples.append(Sample(path.read_bytes(), IMAGE_TYPES[path.suffix.lower()], label))
    return samples


def _top_label(prediction: Any) -> str | None:
    """The label a prediction ranks first: top-k for a classifier, the best box for a detector (None
    when it found nothing). KeyError/IndexError/TypeError on a malformed answer."""
    if "boxes" in prediction:
        boxes = prediction["boxes"]
        for box in boxes:
            if len(box["box"]) != 4 or not 0.0 <= float(box["score"]) <= 1.0:
                raise TypeError("a box needs 4 coordinates and a score in [0, 1]")
        return str(max(boxes, key=lambda b: float(b["score"]))["label"]) if boxes else None
    return str(prediction["top_k"][0]["label"])


Send = Callable[[bytes, str], tuple[int, dict[str, Any]]]


def smoke_test(send: Send, samples: list[Sample], classes: list[str] | None = None) -> dict[str, Any]:
    """Send each sample; ok when every answer is a 200 with labels the model knows."""
    latencies, correct, errors = [], 0, []
    for sample in samples:
        tick = time.perf_counter()
        try:
            status, payload = send(sample.body, sample.content_type)
        except (OSError, MlopsError) as exc:
            errors.append(f"request failed: {exc}")
            continue
        latencies.append((time.perf_counter() - tick) * 1000)
        if status != 200:
            errors.append(f"HTTP {status}: {payload.get('error', payload)}")
            continue
        try:
            top = _top_label(payload["predictions"][0])
        except (KeyError, IndexError, TypeError, ValueError):
            errors.append(f"malformed answer: {str(payload)[:200]}")
            continue
        if top is not None and classes is not None and top not in classes:
            errors.append(f"unknown label {top!r}")
        correct += (top or "") == sample.label  # a detector finding nothing on a background is right
    latencies.sort()
    return {
        "ok": not errors and bool(samples),
        "images": len(samples),
        "errors": errors[:5],
        "accuracy": correct / len(samples) if samples else 0.0,
        "p50_ms": latencies[len(latencies) // 2] if latencies else None,
        "max_ms": latencies[-1] if latencies else None,
    }
