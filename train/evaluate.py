"""`python -m train evaluate`: score a model artifact on an ImageFolder split (a YOLO artifact: on a YOLO
dataset, `train.yolo_evaluation`) with the training job's own evaluation code, so a champion and a
challenger are measured by the same ruler on the same images.

Stages: verify the artifact (hashes) -> build the architecture and load the safetensors weights ->
decode the split with the artifact's classes, input size and normalisation -> evaluate -> print the
`final ...` metric line and write the metrics as JSON.

Exit codes: 0 done; 3 the artifact or the data cannot be used (message on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

EXIT_DATA = 3


def evaluate_artifact(model_dir: Path, split: Path, *, batch_size: int = 256) -> dict[str, Any]:
    import torch
    from safetensors.torch import load_file

    from artifact.architectures import build
    from artifact.manifest import ArtifactError, verify
    from train import engine
    from train.data import batches, load_channel

    manifest = verify(model_dir)
    data = load_channel(split, manifest.input_size, list(manifest.classes), name=split.name)
    try:
        model = build(manifest.architecture, len(manifest.classes), manifest.architecture_revision)
    except ValueError as exc:
        raise ArtifactError(str(exc)) from exc
    model.load_state_dict(load_file(str(model_dir / manifest.weights)), strict=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    engine.place(model, device)
    result = engine.evaluate(
        model,
        batches(data, batch_size, mean=manifest.mean, std=manifest.std, device=device),
        len(manifest.classes),
    )
    return {
        "metrics": {
            "test_accuracy": result.accuracy,
            "test_loss": result.loss,
            "test_min_class_accuracy": result.min_class_accuracy,
        },
        "images": len(data),
        "skipped": len(data.skipped),
        "fingerprint": data.fingerprint,
        "classes": list(manifest.classes),
        "per_class_accuracy": dict(zip(manifest.classes, result.per_class, strict=True)),
        "confusion_matrix": result.confusion,
    }


def _evaluate(model_dir: Path, data: Path) -> dict[str, Any]:
    """By the artifact's task: a classifier on an ImageFolder split, a YOLO model on a YOLO dataset."""
    from artifact.manifest import load_manifest

    if load_manifest(model_dir).task in ("detection", "segmentation"):
        from train.yolo_evaluation import evaluate_artifact as evaluate_yolo

        return evaluate_yolo(model_dir, data)
    return evaluate_artifact(model_dir, data)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m train evaluate",
        description="Score a model artifact: a classifier on an ImageFolder split, a detection or "
        "segmentation model on the test split (else val) of a YOLO dataset.",
    )
    parser.add_argument("--model-dir", required=True, type=Path, help="a model artifact directory")
    parser.add_argument(
        "--data",
        required=True,
        type=Path,
        help="an ImageFolder split (e.g. <dataset>/test), or a YOLO dataset (its directory or data.yaml)",
    )
    parser.add_argument("--output", type=Path, help="write the metrics here as JSON")
    args = parser.parse_args(argv)
    from artifact.manifest import ArtifactError
    from train.data import DataError
    from train.metrics import format_final_line

    try:
        report = _evaluate(args.model_dir, args.data)
    except (ArtifactError, DataError, RuntimeError) as exc:
        print(f"ERROR: {exc}", file=sys.stderr, flush=True)
        return EXIT_DATA
    print(format_final_line(report["metrics"]), flush=True)
    if args.output:
        args.output.write_text(json.dumps(report, indent=2) + "\n")
    return 0
