"""Detection and segmentation datasets in Ultralytics YOLO layout.

    data.yaml                   train/val/test paths relative to this file (no `path`), names by id
    images/<split>/<n>.png      split in train, val, test
    labels/<split>/<n>.txt      one line per object: `class cx cy w h` or `class x1 y1 x2 y2 ...`
    dataset.json                how it was made, counts and the content fingerprint

``make_synthetic_yolo`` renders it from a seed: 1-3 non-overlapping convex shapes per image, one class
and one colour per shape, on a noisy grey background. Every shape is rasterised from the very polygon
its label holds (pixel centres inside the polygon are filled, no anti-aliasing), so a box is the exact
pixel extent of its shape and a polygon is its exact outline. Stages as in ``common``: decide (reuse or
refuse ``out``), write (a thread pool into a hidden sibling), record (``dataset.json``), install.

``prepare_yolo`` validates a user's dataset with ``train.yolo_data`` (the check the training program
runs on its channel) and optionally copies it into a normalised tree like the one above, whose relative
paths survive an S3 upload and download.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from infra.datasets.common import (
    GENERATOR_VERSION,
    METADATA_FILE,
    DatasetError,
    DatasetInfo,
    Progress,
    _check_target,
    _is_empty_dir,
    _normalise,
    _pool,
    _silent,
    _staging,
    fingerprint,
    read_metadata,
)
from train.yolo_data import DATA_YAML, YoloDataError, YoloReport, image_files, label_path, validate

YOLO_SPLITS: tuple[str, ...] = ("train", "val", "test")
YOLO_TASKS: tuple[str, ...] = ("detection", "segmentation")
# One colour per shape, far from each other and from the grey background (levels 70-170).
YOLO_SHAPES: dict[str, tuple[int, int, int]] = {
    "circle": (220, 40, 40),
    "square": (40, 190, 60),
    "triangle": (40, 90, 235),
    "diamond": (235, 205, 30),
}
SYNTHETIC_YOLO = "synthetic-yolo"
_NOISE = 4.0  # sigma of the pixel noise, small enough that a shape's colour stays unmistakable
_CIRCLE_SIDES = 24


@dataclass
class YoloDatasetInfo(DatasetInfo):
    report: YoloReport | None  # what the validator found (prepare_yolo), None for synthetic datasets


def make_synthetic_yolo(
    out: Path,
    *,
    task: str = "detection",
    seed: int = 0,
    classes: int = 3,
    train: int = 120,
    val: int = 30,
    test: int = 30,
    size: int = 64,
    force: bool = False,
    progress: Progress | None = None,
) -> DatasetInfo:
    """Render a deterministic shapes dataset in YOLO layout (byte-identical files for a given seed)."""
    started = time.perf_counter()
    say = progress or _silent
    if task not in YOLO_TASKS:
        raise DatasetError(f"task must be one of {', '.join(YOLO_TASKS)}, got {task!r}")
    if not 1 <= classes <= len(YOLO_SHAPES):
        raise DatasetError(f"synthetic YOLO datasets have 1 to {len(YOLO_SHAPES)} classes, got {classes}")
    counts = {"train": train, "val": val, "test": test}
    for split, count in counts.items():
        if count < 1:
            raise DatasetError(f"need at least 1 {split} image, got {count}")
    if not 32 <= size <= 1024:
        raise DatasetError(f"image size must be between 32 and 1024 pixels, got {size}")
    if seed < 0:
        raise DatasetError(f"seed must be a non-negative integer, got {seed}")

    out = _normalise(out)
    names = list(YOLO_SHAPES)[:classes]
    parameters: dict[str, Any] = {"task": task, "seed": seed, "classes": classes, **counts, "size": size}
    reused = _reuse_or_refuse(out, parameters, force=force, started=started, say=say)
    if reused is not None:
        return reused

    say(f"writing synthetic {task} dataset ({classes} classes, {sum(counts.values())} images) to {out}")
    with _staging(out, force) as tmp, _pool() as pool:
        for split_index, split in enumerate(YOLO_SPLITS):
            (tmp / "images" / split).mkdir(parents=True)
            (tmp / "labels" / split).mkdir(parents=True)
            keys = [(seed, split_index, i) for i in range(counts[split])]
            # list() drains the map, so the first failure surfaces here and the pool cancels the rest.
            write = partial(_write_image, tmp=tmp, split=split, task=task, classes=classes, size=size)
            list(pool.map(write, keys))
            say(f"writing {split}: {counts[split]}/{counts[split]}")
        (tmp / DATA_YAML).write_text(_data_yaml(names, YOLO_SPLITS), encoding="utf-8")
        _write_metadata(tmp, SYNTHETIC_YOLO, task=task, parameters=parameters, classes=names, counts=counts)
    return YoloDatasetInfo(out, SYNTHETIC_YOLO, names, counts, True, time.perf_counter() - started, None)


def prepare_yolo(
    path: Path,
    out: Path | None = None,
    *,
    task: str | None = None,
    force: bool = False,
    progress: Progress | None = None,
) -> YoloDatasetInfo:
    """Validate the YOLO dataset at ``path`` (its directory or its data.yaml); with ``out``, copy it there
    as images/<split>, labels/<split> and a data.yaml with relative paths. DatasetError on any problem,
    listing the validator's file:line errors."""
    started = time.perf_counter()
    say = progress or _silent
    say(f"validating {path}")
    try:
        report = validate(Path(path), task=task)
    except YoloDataError as exc:
        raise DatasetError(str(exc)) from None
    counts = report.counts
    if out is None:
        return YoloDatasetInfo(report.root, "yolo", report.names, counts, False, _since(started), report)

    out = _normalise(out)
    source = report.root.resolve()
    if out.resolve() == source or source in out.resolve().parents:
        raise DatasetError(f"--out {out} lies inside the dataset {source}: choose a directory outside it")
    _check_target(out, force)
    say(f"copying {sum(counts.values())} images to {out}")
    with _staging(out, force) as tmp:
        for split, dirs in report.split_dirs.items():
            _copy_split(tmp, split, dirs)
        (tmp / DATA_YAML).write_text(_data_yaml(report.names, tuple(report.splits)), encoding="utf-8")
        parameters = {"source": str(report.yaml_path.resolve())}
        _write_metadata(
            tmp, "yolo", task=report.task, parameters=parameters, classes=report.names, counts=counts
        )
    return YoloDatasetInfo(out, "yolo", report.names, counts, True, _since(started), report)


# --- decide --------------------------------------------------------------------------------------------


def _reuse_or_refuse(
    out: Path, parameters: dict[str, Any], *, force: bool, started: float, say: Progress
) -> DatasetInfo | None:
    """``common._reuse_or_refuse`` for the YOLO layout (images/<split> instead of <split>/<class>)."""
    if not (out.exists() or out.is_symlink()) or _is_empty_dir(out):
        return None
    meta = read_metadata(out) if out.is_dir() else None
    same_kind = meta is not None and meta.get("name") == SYNTHETIC_YOLO
    if (
        same_kind
        and not force
        and meta is not None
        and meta.get("generator_version") == GENERATOR_VERSION
        and meta.get("parameters") == parameters
    ):
        counts = {split: int(parameters[split]) for split in YOLO_SPLITS}
        on_disk = {split: len(image_files(out / "images" / split)) for split in YOLO_SPLITS}
        if on_disk != counts or not (out / DATA_YAML).is_file():
            raise DatasetError(
                f"{out} holds an incomplete {SYNTHETIC_YOLO} dataset ({on_disk} images, dataset.json says "
                f"{counts}); pass --force to rebuild it"
            )
        say(f"reusing the existing {SYNTHETIC_YOLO} dataset at {out}")
        names = [str(name) for name in meta.get("classes", [])]
        return YoloDatasetInfo(out, SYNTHETIC_YOLO, names, counts, False, _since(started), None)
    if same_kind and not force and meta is not None:
        raise DatasetError(
            f"{out} holds a {SYNTHETIC_YOLO} dataset built with different parameters "
            f"({meta.get('parameters')}); pass --force to replace it or choose another directory"
        )
    _check_target(out, force)
    return None


# --- render --------------------------------------------------------------------------------------------


def render_scene(
    size: int, classes: int, rng: np.random.Generator
) -> tuple[np.ndarray, list[tuple[int, np.ndarray, tuple[int, int, int, int]]]]:
    """An RGB image (uint8, HWC) and its objects: (class id, polygon vertices in pixels, box x1 y1 x2 y2).

    The box is the exact pixel extent of the filled shape (x2, y2 exclusive).
    """
    grey = float(rng.integers(70, 171))
    pixels = np.full((size, size, 3), grey)
    centres = (
        (np.arange(size, dtype=np.float64) + 0.5)[None, :],
        (np.arange(size, dtype=np.float64) + 0.5)[:, None],
    )
    objects: list[tuple[int, np.ndarray, tuple[int, int, int, int]]] = []
    placed: list[tuple[float, float, float]] = []
    for _ in range(int(rng.integers(1, 4))):
        class_id = int(rng.integers(0, classes))
        radius = float(rng.uniform(0.12, 0.2)) * size
        for _attempt in range(50):
            cx, cy = (float(v) for v in rng.uniform(radius + 1, size - radius - 1, 2))
            # Every shape lies inside its circle of `radius`; 2 px between circles keeps boxes apart too.
            if all(math.hypot(cx - x, cy - y) > radius + r + 2 for x, y, r in placed):
                break
        else:
            continue  # no room left: fewer objects in this image
        placed.append((cx, cy, radius))
        polygon = _polygon(list(YOLO_SHAPES)[class_id], cx, cy, radius)
        mask = _inside(polygon, *centres)
        rows, cols = np.nonzero(mask)
        pixels[mask] = YOLO_SHAPES[list(YOLO_SHAPES)[class_id]]
        box = (int(cols.min()), int(rows.min()), int(cols.max()) + 1, int(rows.max()) + 1)
        objects.append((class_id, polygon, box))
    pixels += rng.normal(0.0, _NOISE, pixels.shape)
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8), objects


def _polygon(shape: str, cx: float, cy: float, radius: float) -> np.ndarray:
    """Convex outline vertices (N, 2) in pixels, clockwise on screen (y grows downwards)."""
    if shape == "circle":
        angles = np.arange(_CIRCLE_SIDES) * (2 * math.pi / _CIRCLE_SIDES)
        unit = np.stack([np.cos(angles), np.sin(angles)], axis=1)
    elif shape == "square":
        half = 0.7  # corners at 0.99 radius: inside the placement circle
        unit = np.array([[-half, -half], [half, -half], [half, half], [-half, half]])
    elif shape == "triangle":
        unit = np.array([[0.0, -1.0], [math.sqrt(3) / 2, 0.5], [-math.sqrt(3) / 2, 0.5]])
    elif shape == "diamond":
        unit = np.array([[0.0, -1.0], [0.7, 0.0], [0.0, 1.0], [-0.7, 0.0]])
    else:
        raise DatasetError(f"unknown shape {shape!r}; known: {', '.join(YOLO_SHAPES)}")
    return np.asarray(unit * radius + np.array([cx, cy]), dtype=np.float64)


def _inside(polygon: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Points (broadcast x, y) on or inside a convex polygon whose vertices run clockwise on screen."""
    inside = np.ones(np.broadcast_shapes(x.shape, y.shape), dtype=bool)
    for (ax, ay), (bx, by) in zip(polygon, np.roll(polygon, -1, axis=0), strict=True):
        inside &= (bx - ax) * (y - ay) - (by - ay) * (x - ax) >= 0
    return inside


def _label_lines(
    objects: list[tuple[int, np.ndarray, tuple[int, int, int, int]]], task: str, size: int
) -> str:
    lines = []
    for class_id, polygon, (x1, y1, x2, y2) in objects:
        if task == "detection":
            values = [(x1 + x2) / 2 / size, (y1 + y2) / 2 / size, (x2 - x1) / size, (y2 - y1) / size]
        else:
            values = [float(v) for v in np.clip(polygon / size, 0.0, 1.0).ravel()]
        lines.append(" ".join([str(class_id), *(f"{v:.6f}" for v in values)]))
    return "".join(f"{line}\n" for line in lines)


def _write_image(
    key: tuple[int, int, int], *, tmp: Path, split: str, task: str, classes: int, size: int
) -> None:
    image, objects = render_scene(size, classes, np.random.default_rng(list(key)))
    stem = f"{key[2]:05d}"
    # Fixed encoder settings and no metadata chunks: the same pixels always give the same bytes.
    Image.fromarray(image).save(tmp / "images" / split / f"{stem}.png", format="PNG", compress_level=6)
    (tmp / "labels" / split / f"{stem}.txt").write_text(_label_lines(objects, task, size), encoding="utf-8")


# --- copy and record -----------------------------------------------------------------------------------


def _copy_split(tmp: Path, split: str, dirs: list[Path]) -> None:
    for directory in dirs:
        for image in image_files(directory):
            relative = image.relative_to(directory)
            target = tmp / "images" / split / relative
            if target.exists():
                raise DatasetError(
                    f"two {split} images would both be copied to images/{split}/{relative.as_posix()}: "
                    f"rename one of them"
                )
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(image, target)
            labels = label_path(image)
            if labels.is_file():
                destination = label_path(target)
                destination.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(labels, destination)


def _data_yaml(names: list[str], splits: tuple[str, ...]) -> str:
    import yaml  # PyYAML comes with Ultralytics

    # No `path` key: Ultralytics then resolves the splits against this file's directory, wherever the
    # dataset lands (a relative `path` would be read against its own datasets directory instead).
    config: dict[str, Any] = {split: f"images/{split}" for split in splits}
    config["nc"] = len(names)
    config["names"] = dict(enumerate(names))
    return str(yaml.safe_dump(config, sort_keys=False, allow_unicode=True))


def _write_metadata(
    tmp: Path,
    name: str,
    *,
    task: str,
    parameters: dict[str, Any],
    classes: list[str],
    counts: dict[str, int],
) -> None:
    meta = {
        "name": name,
        "task": task,
        "generator_version": GENERATOR_VERSION,
        "parameters": parameters,
        "classes": classes,  # in class-id order, as data.yaml lists them (not sorted)
        "counts": counts,
        "layout": "yolo: images/<split>/<file>, labels/<split>/<file>.txt, data.yaml",
        "fingerprint": fingerprint(tmp),
    }
    # No timestamp: two runs with the same parameters produce byte-identical trees, dataset.json included.
    (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _since(started: float) -> float:
    return time.perf_counter() - started


__all__ = [
    "SYNTHETIC_YOLO",
    "YOLO_SHAPES",
    "YOLO_SPLITS",
    "YOLO_TASKS",
    "YoloDatasetInfo",
    "make_synthetic_yolo",
    "prepare_yolo",
    "render_scene",
]
