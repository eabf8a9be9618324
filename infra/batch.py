"""Batch predictions, the part both platforms share: which files count as images, the JSON line written
for each image, the run's summary, and the crash-safe write of the JSON Lines file.

One line per image, sorted by its path relative to the input folder or S3 prefix:
    {"image": "cats/a.png", "predictions": [...], "model": {...}}      scored
    {"image": "cats/b.png", "error": "...", "status": 400}              refused (status: HTTP, or null)
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from infra.local.files import write_atomic
from infra.smoke import IMAGE_TYPES

IMAGE_SUFFIXES = tuple(IMAGE_TYPES)  # .png .jpg .jpeg: what the serve program decodes as an image file


def is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_SUFFIXES)


def scored(image: str, answer: Mapping[str, Any]) -> dict[str, Any]:
    return {"image": image, "predictions": answer["predictions"], "model": answer.get("model")}


def failed(image: str, error: str, status: int | None) -> dict[str, Any]:
    return {"image": image, "error": error, "status": status}


def from_answer(image: str, status: int, answer: Any) -> dict[str, Any]:
    """The line for one image from the serve program's answer (HTTP status and parsed JSON body)."""
    if status == 200 and isinstance(answer, dict) and isinstance(answer.get("predictions"), list):
        return scored(image, answer)
    if status == 200:
        return failed(image, f"unexpected answer: {str(answer)[:200]}", status)
    message = answer.get("error") if isinstance(answer, dict) else None
    return failed(image, str(message or answer)[:500], status)


@dataclass
class BatchSummary:
    records: list[dict[str, Any]]
    seconds: float
    skipped: list[str] = field(default_factory=list)  # files that are not images, never sent

    @property
    def total(self) -> int:
        return len(self.records)

    @property
    def failed(self) -> int:
        return sum(1 for r in self.records if "error" in r)

    @property
    def scored(self) -> int:
        return self.total - self.failed

    @property
    def rate(self) -> float:
        return self.total / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        return (
            f"scored {self.scored}, failed {self.failed} of {self.total} images in {self.seconds:.1f}s "
            f"({self.rate:.1f} images/s)"
        )


def write_jsonl_atomic(path: Path, records: Iterable[Mapping[str, Any]]) -> None:
    """One JSON line per record, written by `infra.local.files.write_atomic`: an interrupted run leaves
    the old file (or none), never a short one that looks complete."""

    def fill(fh: TextIO) -> None:
        for record in records:
            fh.write(json.dumps(record) + "\n")

    write_atomic(path, fill)
