"""The champion's numbers for champion/challenger: measured on the challenger's test set.

Recorded test metrics compare like for like only when both models were scored on the same images. So:
same test-set fingerprint -> production's recorded metrics; a different test set -> production is
re-evaluated on the candidate's test split (`python -m train evaluate`, the training job's own
evaluation code, across the process boundary; a YOLO model with Ultralytics' validation on the
candidate's YOLO dataset); different classes -> no comparison is possible, and the
gate decides on its thresholds alone, saying so.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from artifact.manifest import ArtifactError, load_manifest
from infra.errors import MlopsError
from infra.platform import ModelVersion, Platform, TrainingResult

Evaluator = Callable[[Path, Path], dict[str, Any]]


class EvaluationFailed(MlopsError):
    exit_code = 3


def evaluate_in_subprocess(model_dir: Path, split: Path) -> dict[str, Any]:
    """Score `model_dir` on `split` with `python -m train evaluate`; the metrics report as a dict."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "evaluation.json"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "train",
                "evaluate",
                "--model-dir",
                str(model_dir),
                "--data",
                str(split),
                "--output",
                str(out),
            ],
            capture_output=True,
            text=True,
            timeout=3600,
            check=False,
        )
        if done.returncode != 0 or not out.is_file():
            detail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise EvaluationFailed(f"re-evaluating {model_dir} on {split} failed: {detail[0]}")
        report: dict[str, Any] = json.loads(out.read_text())
        return report


def _test_fingerprint(dataset: dict[str, Any] | None) -> str | None:
    test = (dataset or {}).get("test") or {}
    return test.get("fingerprint")


def champion_metrics(
    platform: Platform,
    production: ModelVersion,
    candidate: TrainingResult,
    data: Path,
    evaluate: Evaluator = evaluate_in_subprocess,
) -> tuple[dict[str, float] | None, list[str]]:
    """(production's metrics to compare against, or None when no comparison is possible; notes)."""
    if candidate.model_dir is None:
        return production.metrics, []
    try:
        challenger = load_manifest(candidate.model_dir)
        champion_dir = platform.model_dir(production)
        champion = load_manifest(champion_dir)
    except (ArtifactError, MlopsError) as exc:
        return production.metrics, [
            f"production {production.label}'s model could not be read ({exc}); "
            "compared with its recorded metrics"
        ]
    if champion.task != challenger.task:
        return None, [
            f"production {production.label} is a {champion.task} model and the candidate a "
            f"{challenger.task} one: no like-for-like comparison, regression check skipped"
        ]
    if champion.classes != challenger.classes:
        return None, [
            f"production {production.label} predicts other classes ({len(champion.classes)} vs "
            f"{len(challenger.classes)}): no like-for-like comparison, regression check skipped"
        ]
    if _test_fingerprint(champion.dataset) == _test_fingerprint(challenger.dataset) is not None:
        return production.metrics, []
    # A classifier is scored on the test split (ImageFolder); a YOLO model on the dataset (its data.yaml
    # names the splits, and the test split, else val, is scored).
    report = evaluate(champion_dir, data / "test" if challenger.task == "classification" else data)
    metrics = {k: float(v) for k, v in report["metrics"].items()}
    return metrics, [
        f"production {production.label} re-evaluated on the candidate's test set "
        f"({report.get('images', '?')} images): its recorded metrics came from a different test set"
    ]
