"""Synthetic shapes: render a deterministic, seeded dataset of simple shapes with numpy.

``make_synthetic`` validates the request, reuses or refuses an existing ``out`` (see ``common``), then
renders every image from its own seed (``render_shape``, ``_shape_mask``) and writes, records and
installs them through the shared pipeline: a given seed always gives byte-identical PNGs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

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

# Every shape is mirror-symmetric about the vertical axis: training flips images horizontally, and a
# class must not turn into another one (or into nothing recognisable) under that flip.
SYNTHETIC_CLASSES: tuple[str, ...] = (
    "circle",
    "square",
    "triangle",
    "cross",
    "ring",
    "stripes_h",
    "stripes_v",
    "checker",
    "diamond",
    "dots",
)


def make_synthetic(
    out: Path,
    *,
    seed: int = 0,
    classes: int = 8,
    train_per_class: int = 250,
    val_per_class: int = 50,
    test_per_class: int = 50,
    size: int = 32,
    force: bool = False,
    progress: Progress | None = None,
) -> DatasetInfo:
    """Render a deterministic shapes dataset (byte-identical PNGs for a given seed) into ``out``."""
    started = time.perf_counter()
    say = progress or _silent
    if not 2 <= classes <= len(SYNTHETIC_CLASSES):
        raise DatasetError(f"synthetic datasets have 2 to {len(SYNTHETIC_CLASSES)} classes, got {classes}")
    per_class = {"train": train_per_class, "validation": val_per_class, "test": test_per_class}
    for split, count in per_class.items():
        if count < 1:
            raise DatasetError(f"need at least 1 {split} image per class, got {count}")
    if not 8 <= size <= 512:
        raise DatasetError(f"image size must be between 8 and 512 pixels, got {size}")
    if seed < 0:
        raise DatasetError(f"seed must be a non-negative integer, got {seed}")

    out = _normalise(out)
    names = list(SYNTHETIC_CLASSES[:classes])
    parameters: dict[str, Any] = {
        "seed": seed,
        "classes": classes,
        "train_per_class": train_per_class,
        "val_per_class": val_per_class,
        "test_per_class": test_per_class,
        "size": size,
    }
    reused = _reuse_or_refuse(out, "synthetic", parameters, force=force, started=started, say=say)
    if reused is not None:
        return reused

    total = sum(per_class.values()) * classes
    say(f"writing synthetic dataset ({classes} classes, {total} images of {size}x{size}) to {out}")
    with _staging(out, force) as tmp, _pool() as pool:
        for split_index, split in enumerate(SPLITS):
            jobs: list[tuple[str, Callable[[], np.ndarray]]] = []
            for name in names:
                # Seeding by the class's position in SYNTHETIC_CLASSES (not in the subset) keeps a class's
                # images identical whatever the number of classes.
                class_index = SYNTHETIC_CLASSES.index(name)
                for i in range(per_class[split]):
                    key = (seed, split_index, class_index, i)
                    jobs.append((f"{split}/{name}/{i:05d}.png", _synthetic_job(name, size, key)))
            _write_split(tmp, split, classes=names, jobs=jobs, pool=pool, say=say)
        counts = {split: per_class[split] * classes for split in SPLITS}
        _write_metadata(
            tmp, "synthetic", parameters=parameters, seed=seed, classes=names, counts=counts, say=say
        )
    return DatasetInfo(out, "synthetic", sorted(names), counts, True, time.perf_counter() - started)


def _synthetic_job(shape: str, size: int, key: tuple[int, int, int, int]) -> Callable[[], np.ndarray]:
    return lambda: render_shape(shape, size, np.random.default_rng(list(key)))


def render_shape(shape: str, size: int, rng: np.random.Generator) -> np.ndarray:
    """A ``size`` x ``size`` RGB image (uint8, HWC) of ``shape``: random colours, noise and placement."""
    background = rng.integers(0, 256, 3).astype(np.float64)
    # Colours are uninformative by design; a minimum contrast keeps every image solvable.
    foreground = rng.integers(0, 256, 3).astype(np.float64)
    for _ in range(64):
        if np.linalg.norm(foreground - background) >= 120:
            break
        foreground = rng.integers(0, 256, 3).astype(np.float64)
    radius = rng.uniform(0.26, 0.40) * size
    aspect = rng.uniform(0.85, 1.15)
    rx, ry = radius * aspect, radius / aspect
    cx = rng.uniform(0.9 * rx, size - 0.9 * rx)
    cy = rng.uniform(0.9 * ry, size - 0.9 * ry)
    noise = rng.uniform(3.0, 14.0)

    # Supersampling gives anti-aliased edges, so small shapes keep their outline instead of aliasing.
    ss = 2 if size <= 128 else 1
    coords = (np.arange(size * ss, dtype=np.float64) + 0.5) / ss
    u = (coords[None, :] - cx) / rx
    v = (coords[:, None] - cy) / ry
    mask = np.broadcast_to(_shape_mask(shape, u, v), (size * ss, size * ss))
    alpha = mask.reshape(size, ss, size, ss).mean(axis=(1, 3))[..., None]
    pixels = background * (1.0 - alpha) + foreground * alpha + rng.normal(0.0, noise, (size, size, 3))
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def _shape_mask(shape: str, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Boolean mask in shape coordinates (u right, v down, the shape spans roughly [-1, 1])."""
    au, av = np.abs(u), np.abs(v)
    rr = u * u + v * v
    patch = (au <= 0.9) & (av <= 0.9)

    def dots() -> np.ndarray:
        du = u - 0.6 * np.clip(np.rint(u / 0.6), -1, 1)
        dv = v - 0.6 * np.clip(np.rint(v / 0.6), -1, 1)
        return patch & (du * du + dv * dv <= 0.25**2)

    masks: dict[str, Callable[[], np.ndarray]] = {
        "circle": lambda: rr <= 1.0,
        "ring": lambda: (rr <= 1.0) & (rr >= 0.5**2),
        "square": lambda: (au <= 0.85) & (av <= 0.85),
        "diamond": lambda: au + av <= 1.05,
        # Apex up, base down: symmetric left/right, unlike a triangle pointing sideways.
        "triangle": lambda: (v >= -0.95) & (v <= 0.8) & (au <= (v + 0.95) / 1.75),
        "cross": lambda: ((au <= 0.28) & (av <= 1.0)) | ((av <= 0.28) & (au <= 1.0)),
        # 1.8 / 0.36 = 5 bands (bar, gap, bar, gap, bar): an odd count keeps the pattern its own mirror image.
        "stripes_h": lambda: patch & (np.floor((v + 0.9) / 0.36) % 2 == 0),
        "stripes_v": lambda: patch & (np.floor((u + 0.9) / 0.36) % 2 == 0),
        # A 4x4 board mirrors into the opposite phase, which is still a checkerboard.
        "checker": lambda: patch & ((np.floor((u + 0.9) / 0.45) + np.floor((v + 0.9) / 0.45)) % 2 == 0),
        "dots": dots,
    }
    if shape not in masks:
        raise DatasetError(f"unknown synthetic class {shape!r}; known: {', '.join(SYNTHETIC_CLASSES)}")
    return masks[shape]()
