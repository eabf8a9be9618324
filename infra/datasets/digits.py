"""Handwritten digits: scikit-learn's bundled 8x8 digits (1,797 images, 10 classes) as an ImageFolder.

``write_digits`` validates the request, reuses or refuses an existing ``out`` (see ``common``), splits the
images with a seeded permutation (about 1,300 train, 250 validation, 250 test), upscales each to
``size`` x ``size`` RGB and writes, records and installs them through the shared pipeline. The images
ship inside scikit-learn, so this needs no network: a small *real* dataset for recipe tests, where the
synthetic shapes are too easy to show a recipe that does not learn.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from infra.datasets.common import (
    SPLITS,
    DatasetError,
    DatasetInfo,
    Progress,
    _normalise,
    _pool,
    _reuse_or_refuse,
    _silent,
    _staging,
    _write_metadata,
    _write_split,
)

DIGITS_CLASSES: tuple[str, ...] = tuple(str(d) for d in range(10))
DIGITS_IMAGES = 1797


def write_digits(
    out: Path,
    *,
    seed: int = 0,
    val_images: int = 250,
    test_images: int = 250,
    size: int = 32,
    force: bool = False,
    progress: Progress | None = None,
) -> DatasetInfo:
    """Write scikit-learn's digits into ``out``; the rest after validation and test is the train split."""
    started = time.perf_counter()
    say = progress or _silent
    if val_images < 10 or test_images < 10 or val_images + test_images > DIGITS_IMAGES - 100:
        raise DatasetError(
            f"validation and test need 10 or more images each and must leave 100 for train "
            f"(of {DIGITS_IMAGES}), got {val_images} and {test_images}"
        )
    if not 8 <= size <= 512:
        raise DatasetError(f"image size must be between 8 and 512 pixels, got {size}")
    if seed < 0:
        raise DatasetError(f"seed must be a non-negative integer, got {seed}")
    try:
        from sklearn.datasets import load_digits
    except ImportError as exc:
        raise DatasetError("the digits dataset needs scikit-learn: pip install -e '.[dev]'") from exc

    out = _normalise(out)
    parameters: dict[str, Any] = {
        "seed": seed,
        "val_images": val_images,
        "test_images": test_images,
        "size": size,
    }
    reused = _reuse_or_refuse(out, "digits", parameters, force=force, started=started, say=say)
    if reused is not None:
        return reused

    digits = load_digits()
    pixels: np.ndarray = digits.images  # (N, 8, 8) float, 0..16
    labels: np.ndarray = digits.target
    order = np.random.default_rng(seed).permutation(len(labels))
    chosen = {
        "test": order[:test_images],
        "validation": order[test_images : test_images + val_images],
        "train": order[test_images + val_images :],
    }
    say(f"writing digits dataset ({len(labels)} images of {size}x{size}) to {out}")
    names = list(DIGITS_CLASSES)
    with _staging(out, force) as tmp, _pool() as pool:
        for split in SPLITS:
            jobs: list[tuple[str, Callable[[], np.ndarray]]] = [
                (f"{split}/{labels[i]}/{i:05d}.png", _digit_job(pixels[i], size)) for i in chosen[split]
            ]
            _write_split(tmp, split, classes=names, jobs=jobs, pool=pool, say=say)
        counts = {split: len(chosen[split]) for split in SPLITS}
        _write_metadata(
            tmp, "digits", parameters=parameters, seed=seed, classes=names, counts=counts, say=say
        )
    return DatasetInfo(out, "digits", sorted(names), counts, True, time.perf_counter() - started)


def _digit_job(image: np.ndarray, size: int) -> Callable[[], np.ndarray]:
    return lambda: render_digit(image, size)


def render_digit(image: np.ndarray, size: int) -> np.ndarray:
    """An 8x8 digit (0..16) as a ``size`` x ``size`` RGB uint8 image (HWC), bilinearly upscaled."""
    gray = Image.fromarray(np.rint(image * (255 / 16)).astype(np.uint8))
    return np.asarray(gray.resize((size, size), Image.Resampling.BILINEAR).convert("RGB"), dtype=np.uint8)
