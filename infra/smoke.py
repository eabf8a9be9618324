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
    """Up to `count` test images, taken round-robin across classes so every class is exercised."""
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
            top = payload["predictions"][0]["top_k"][0]["label"]
        except (KeyError, IndexError, TypeError):
            errors.append(f"malformed answer: {str(payload)[:200]}")
            continue
        if classes is not None and top not in classes:
            errors.append(f"unknown label {top!r}")
        correct += top == sample.label
    latencies.sort()
    return {
        "ok": not errors and bool(samples),
        "images": len(samples),
        "errors": errors[:5],
        "accuracy": correct / len(samples) if samples else 0.0,
        "p50_ms": latencies[len(latencies) // 2] if latencies else None,
        "max_ms": latencies[-1] if latencies else None,
    }
