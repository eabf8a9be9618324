"""Metric lines: the trainer prints them, SageMaker and the local platform parse them, with one regex each.

    epoch=3 epochs=10 train_loss=0.4100 train_accuracy=0.8620 val_loss=0.3900 val_accuracy=0.8700 ...
    final test_accuracy=0.9100 test_loss=0.2800 test_min_class_accuracy=0.8000 best_val_accuracy=...

`sagemaker_metric_definitions()` builds CreateTrainingJob's `MetricDefinitions` from the same table the
trainer formats its lines with, so the two cannot drift. Pure Python: the CLI imports it without torch.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

_NUMBER = r"(-?[0-9]+(?:\.[0-9]+)?(?:[eE][-+]?[0-9]+)?)"


@dataclass(frozen=True)
class MetricDef:
    key: str  # as printed: key=value
    name: str  # SageMaker metric name (MetricDefinitions[].Name)
    goal: str  # "maximize" or "minimize": what a tuner or a gate should want
    final: bool  # printed on the final line rather than per epoch

    @property
    def regex(self) -> str:
        return rf"(?:^|\s){self.key}={_NUMBER}"


METRICS: tuple[MetricDef, ...] = (
    MetricDef("train_loss", "train:loss", "minimize", final=False),
    MetricDef("train_accuracy", "train:accuracy", "maximize", final=False),
    MetricDef("val_loss", "validation:loss", "minimize", final=False),
    MetricDef("val_accuracy", "validation:accuracy", "maximize", final=False),
    MetricDef("lr", "train:lr", "minimize", final=False),
    MetricDef("epoch_seconds", "train:epoch_seconds", "minimize", final=False),
    MetricDef("test_accuracy", "test:accuracy", "maximize", final=True),
    MetricDef("test_loss", "test:loss", "minimize", final=True),
    MetricDef("test_min_class_accuracy", "test:min_class_accuracy", "maximize", final=True),
    MetricDef("best_val_accuracy", "validation:best_accuracy", "maximize", final=True),
    # Detection and segmentation (train/yolo.py): box metrics, and mask metrics for segmentation.
    MetricDef("val_precision", "validation:precision", "maximize", final=False),
    MetricDef("val_recall", "validation:recall", "maximize", final=False),
    MetricDef("val_map50", "validation:map50", "maximize", final=False),
    MetricDef("val_map50_95", "validation:map50_95", "maximize", final=False),
    MetricDef("val_mask_map50", "validation:mask_map50", "maximize", final=False),
    MetricDef("val_mask_map50_95", "validation:mask_map50_95", "maximize", final=False),
    MetricDef("test_precision", "test:precision", "maximize", final=True),
    MetricDef("test_recall", "test:recall", "maximize", final=True),
    MetricDef("test_map50", "test:map50", "maximize", final=True),
    MetricDef("test_map50_95", "test:map50_95", "maximize", final=True),
    MetricDef("test_mask_map50", "test:mask_map50", "maximize", final=True),
    MetricDef("test_mask_map50_95", "test:mask_map50_95", "maximize", final=True),
)
BY_KEY = {m.key: m for m in METRICS}
_PATTERNS = {m.key: re.compile(m.regex) for m in METRICS}
_EPOCH = re.compile(r"^epoch=([0-9]+)(?:\s+epochs=([0-9]+))?\b")


def _fmt(value: float) -> str:
    return f"{value:.6g}" if abs(value) < 1e-3 and value != 0 else f"{value:.4f}"


def format_epoch_line(epoch: int, epochs: int, values: Mapping[str, float]) -> str:
    parts = [f"epoch={epoch}", f"epochs={epochs}"]
    parts += [f"{k}={_fmt(values[k])}" for k in BY_KEY if k in values and not BY_KEY[k].final]
    return " ".join(parts)


def format_final_line(values: Mapping[str, float]) -> str:
    return " ".join(["final"] + [f"{k}={_fmt(values[k])}" for k in BY_KEY if k in values and BY_KEY[k].final])


def parse_line(line: str) -> dict[str, float]:
    """Every known metric on a log line (empty for ordinary lines)."""
    if "=" not in line:
        return {}
    found = {}
    for key, pattern in _PATTERNS.items():
        match = pattern.search(line)
        if match:
            found[key] = float(match.group(1))
    return found


def parse_epoch(line: str) -> tuple[int, int | None] | None:
    """(epoch, total epochs) for an epoch line, else None."""
    match = _EPOCH.match(line.strip())
    if not match:
        return None
    return int(match.group(1)), int(match.group(2)) if match.group(2) else None


def sagemaker_metric_definitions() -> list[dict[str, str]]:
    return [{"Name": m.name, "Regex": m.regex} for m in METRICS]
