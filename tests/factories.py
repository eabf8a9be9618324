"""Builders for test inputs that tests across tiers share (real files, no mocks)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from artifact.manifest import Manifest, write_manifest


def make_model_artifact(
    model_dir: Path,
    classes: tuple[str, ...] = ("circle", "square", "triangle"),
    architecture: str = "smallcnn",
    input_size: int = 32,
    metrics: dict[str, float] | None = None,
    seed: int = 0,
    test_fingerprint: str | None = None,
) -> Manifest:
    """A real, loadable model artifact with random weights (what `train` would write, minus training)."""
    import torch
    from safetensors.torch import save_file

    from artifact.architectures import REVISIONS, build

    torch.manual_seed(seed)
    model_dir.mkdir(parents=True, exist_ok=True)
    model = build(architecture, len(classes))
    save_file(model.state_dict(), str(model_dir / "model.safetensors"))
    manifest = Manifest(
        task="classification",
        architecture=architecture,
        classes=list(classes),
        input_size=input_size,
        mean=[0.5, 0.5, 0.5],
        std=[0.25, 0.25, 0.25],
        metrics=dict(metrics or {"test_accuracy": 0.9, "test_loss": 0.3}),
        config={"arch": architecture},
        code_version="test",
        architecture_revision=REVISIONS[architecture],
        dataset={"test": {"images": 10, "fingerprint": test_fingerprint}} if test_fingerprint else None,
    )
    return write_manifest(model_dir, manifest)


def png_bytes(size: int = 32, color: tuple[int, int, int] = (200, 30, 30), seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.clip(rng.normal(0, 20, (size, size, 3)) + np.array(color), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()
