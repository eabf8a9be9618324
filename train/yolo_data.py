"""Validate a dataset in Ultralytics YOLO layout before anything trains on it.

The layout: a ``data.yaml`` (``train``, ``val``, optional ``test`` and ``path``; ``names`` as a list or an
``{id: name}`` mapping; ``nc`` optional) next to ``images/<split>/*.png|jpg`` and
``labels/<split>/*.txt``, one label file per image (the path with its last ``images`` part replaced by
``labels``, as Ultralytics maps them). Label lines are ``class cx cy w h`` (detection) or
``class x1 y1 x2 y2 ...`` (segmentation, at least 3 points), all normalised to [0, 1].

``validate`` works in stages and reports every problem, not just the first, each naming its file (and
line): 1. the yaml (parses, names, nc, split paths), 2. per split, every image opens and every label line
parses with its class in range and its geometry inside the image, 3. label files without an image.
It returns a ``YoloReport`` or raises ``YoloDataError`` with the first ``MAX_SHOWN`` errors.

The training program imports this module to check its channel, so it depends on nothing of ``infra``
and not on Ultralytics (PyYAML comes with Ultralytics in the train image).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

DATA_YAML = "data.yaml"
METADATA_FILE = "dataset.json"  # written by `mlops data`; left out of the fingerprint
SPLIT_KEYS: tuple[str, ...] = ("train", "val", "test")
REQUIRED_SPLITS: tuple[str, ...] = ("train", "val")
TASKS: tuple[str, ...] = ("detection", "segmentation")
# Ultralytics' own list minus formats Pillow may lack codecs for (heic, mpo, pfm, dng).
IMAGE_SUFFIXES: frozenset[str] = frozenset({".bmp", ".jpeg", ".jpg", ".png", ".tif", ".tiff", ".webp"})
MAX_SHOWN = 20
# Labels written from float pixel coordinates round to a hair outside [0, 1]; Ultralytics clips those.
TOLERANCE = 1e-3


class YoloDataError(Exception):
    """A dataset that cannot be trained on; ``errors`` holds every problem found, ``str()`` the first few."""

    def __init__(self, errors: list[str], root: Path | None = None) -> None:
        self.errors = list(errors)
        self.root = root
        shown = "\n".join(f"  {error}" for error in self.errors[:MAX_SHOWN])
        more = len(self.errors) - MAX_SHOWN
        tail = f"\n  ... and {more} more" if more > 0 else ""
        where = f" at {root}" if root is not None else ""
        count = f"{len(self.errors)} error{'s' if len(self.errors) != 1 else ''}"
        super().__init__(f"the YOLO dataset{where} is invalid ({count}):\n{shown}{tail}")


@dataclass
class SplitReport:
    images: int = 0
    background: int = 0  # images without a label file or with an empty one (allowed: no objects)
    instances: int = 0
    boxes: int = 0
    polygons: int = 0


@dataclass
class YoloReport:
    root: Path  # the dataset root: data.yaml's `path`, else its directory
    yaml_path: Path
    names: list[str]  # index = class id
    splits: dict[str, SplitReport]  # train, val and test when present
    instances: dict[str, int]  # per class name, all splits together
    task: str  # "detection" or "segmentation" (what the labels hold; "detection" when there are none)
    errors: list[str] = field(default_factory=list)
    split_dirs: dict[str, list[Path]] = field(default_factory=dict)  # image directories per split

    @property
    def background(self) -> int:
        return sum(split.background for split in self.splits.values())

    @property
    def counts(self) -> dict[str, int]:
        return {name: split.images for name, split in self.splits.items()}


def validate(path: Path, *, task: str | None = None, raise_on_error: bool = True) -> YoloReport:
    """Check the dataset whose ``data.yaml`` is ``path`` (or lies in the directory ``path``).

    ``task="segmentation"`` requires polygons; ``"detection"`` accepts boxes and polygons (Ultralytics
    turns polygons into their boxes); ``None`` accepts either. With ``raise_on_error=False`` the report
    comes back with its ``errors`` filled instead of raising.
    """
    if task is not None and task not in TASKS:
        raise ValueError(f"task must be one of {', '.join(TASKS)}, not {task!r}")
    path = Path(path).expanduser()
    yaml_path = path / DATA_YAML if path.is_dir() else path
    errors: list[str] = []
    config = _read_yaml(yaml_path, errors)
    root = yaml_path.parent
    names: list[str] = []
    split_dirs: dict[str, list[Path]] = {}
    if config is not None:
        root = _root(config, yaml_path, errors)
        names = _names(config, yaml_path, errors)
        split_dirs = _split_dirs(config, root, yaml_path, errors)
    report = YoloReport(root, yaml_path, names, {}, dict.fromkeys(names, 0), "detection", errors, split_dirs)
    kinds: set[str] = set()
    if names and not errors:
        for split, dirs in split_dirs.items():
            report.splits[split] = _check_split(
                dirs, names=names, task=task, instances=report.instances, kinds=kinds, errors=errors
            )
        _orphan_labels(split_dirs, errors)
    if kinds == {"polygon"} or task == "segmentation":
        report.task = "segmentation"
    if errors and raise_on_error:
        raise YoloDataError(errors, root)
    return report


def fingerprint(root: Path) -> str:
    """sha256 over every file but dataset.json, in sorted relative-path order: path, NUL, size, bytes.

    ``infra.datasets.fingerprint`` is this function (for ImageFolder and YOLO datasets alike), so the value
    ``mlops data`` records in dataset.json can be checked against the files a job received.
    """
    root = Path(root)
    digest = hashlib.sha256()
    files = sorted(
        (p.relative_to(root).as_posix(), p)
        for p in root.rglob("*")
        if p.is_file() and p.relative_to(root).as_posix() != METADATA_FILE
    )
    for relative, file in files:
        data = file.read_bytes()
        digest.update(relative.encode("utf-8") + b"\0" + len(data).to_bytes(8, "big"))
        digest.update(data)
    return f"sha256:{digest.hexdigest()}"


def label_path(image: Path) -> Path:
    """Where Ultralytics looks for an image's labels: the last ``images`` directory becomes ``labels``."""
    parts = list(image.parts)
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "images":
            parts[i] = "labels"
            break
    return Path(*parts).with_suffix(".txt")


def image_files(directory: Path) -> list[Path]:
    """Images under ``directory`` (recursively, as Ultralytics reads them), sorted."""
    return sorted(p for p in directory.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


# --- stage 1: the yaml ---------------------------------------------------------------------------------


def _read_yaml(yaml_path: Path, errors: list[str]) -> dict[str, Any] | None:
    import yaml  # PyYAML, a dependency of Ultralytics; imported here so the module loads without it

    try:
        text = yaml_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        errors.append(f"{yaml_path}: no such file (a YOLO dataset needs a {DATA_YAML})")
        return None
    except (OSError, UnicodeDecodeError) as exc:
        errors.append(f"{yaml_path}: cannot read it: {exc}")
        return None
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        errors.append(f"{yaml_path}{line}: not valid YAML: {problem}")
        return None
    if not isinstance(config, dict):
        errors.append(
            f"{yaml_path}: expected a mapping of keys (train, val, names), got {type(config).__name__}"
        )
        return None
    return config


def _root(config: dict[str, Any], yaml_path: Path, errors: list[str]) -> Path:
    value = config.get("path")
    if value in (None, ""):
        return yaml_path.parent
    if not isinstance(value, str):
        errors.append(f"{yaml_path}: 'path' must be a directory name, got {value!r}")
        return yaml_path.parent
    # Relative to the yaml, not to the working directory: a job's channel lands anywhere.
    root = (yaml_path.parent / Path(value).expanduser()).resolve()
    if not root.is_dir():
        errors.append(f"{yaml_path}: 'path' {value!r} is not a directory ({root})")
    return root


def _names(config: dict[str, Any], yaml_path: Path, errors: list[str]) -> list[str]:
    raw = config.get("names")
    names: list[str] = []
    if raw is None:
        errors.append(
            f"{yaml_path}: 'names' is missing: list the class names (a list, or a mapping id: name)"
        )
        return []
    if isinstance(raw, list):
        names = [str(name) for name in raw]
    elif isinstance(raw, dict):
        try:
            ids = sorted(int(key) for key in raw)
        except (TypeError, ValueError):
            errors.append(f"{yaml_path}: 'names' keys must be class ids 0..n-1, got {sorted(map(str, raw))}")
            return []
        if ids != list(range(len(ids))):
            errors.append(f"{yaml_path}: 'names' ids must be 0..{len(ids) - 1} without gaps, got {ids}")
            return []
        by_id = {int(key): value for key, value in raw.items()}
        names = [str(by_id[i]) for i in ids]
    else:
        errors.append(f"{yaml_path}: 'names' must be a list or a mapping id: name, got {type(raw).__name__}")
        return []
    if not names:
        errors.append(f"{yaml_path}: 'names' is empty: a dataset needs at least one class")
    if any(not name.strip() for name in names):
        errors.append(f"{yaml_path}: 'names' holds an empty class name")
    if len(set(names)) != len(names):
        errors.append(f"{yaml_path}: 'names' holds duplicates: {names}")
    if "nc" in config:
        nc = config["nc"]
        if not isinstance(nc, int) or isinstance(nc, bool):
            errors.append(f"{yaml_path}: 'nc' must be an integer, got {nc!r}")
        elif nc != len(names):
            errors.append(f"{yaml_path}: 'nc' is {nc} but 'names' lists {len(names)} classes")
    return names


def _split_dirs(
    config: dict[str, Any], root: Path, yaml_path: Path, errors: list[str]
) -> dict[str, list[Path]]:
    dirs: dict[str, list[Path]] = {}
    for split in SPLIT_KEYS:
        value = config.get(split)
        if value in (None, "", []):
            if split in REQUIRED_SPLITS:
                errors.append(f"{yaml_path}: '{split}' is missing: give the {split} images directory")
            continue
        values = value if isinstance(value, list) else [value]
        found: list[Path] = []
        for item in values:
            if not isinstance(item, str):
                errors.append(f"{yaml_path}: '{split}' must be a directory or a list of them, got {item!r}")
                continue
            directory = (root / Path(item).expanduser()).resolve()
            if directory.suffix == ".txt" and directory.is_file():
                errors.append(
                    f"{yaml_path}: '{split}' is an image list file ({item}); only image directories are "
                    f"supported: point it at images/{split}"
                )
            elif not directory.is_dir():
                errors.append(f"{yaml_path}: '{split}' directory {item!r} does not exist ({directory})")
            else:
                found.append(directory)
        if found:
            dirs[split] = found
    return dirs


# --- stage 2: images and labels ------------------------------------------------------------------------


def _check_split(
    dirs: list[Path],
    *,
    names: list[str],
    task: str | None,
    instances: dict[str, int],
    kinds: set[str],
    errors: list[str],
) -> SplitReport:
    report = SplitReport()
    for directory in dirs:
        images = image_files(directory)
        if not images:
            errors.append(f"{directory}: holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        for image in images:
            report.images += 1
            _check_image(image, errors)
            labels = label_path(image)
            found = _check_labels(labels, names, task, errors) if labels.is_file() else []
            if not found:
                report.background += 1
            for class_id, kind in found:
                report.instances += 1
                if kind == "box":
                    report.boxes += 1
                else:
                    report.polygons += 1
                instances[names[class_id]] += 1
                kinds.add(kind)
    return report


def _check_image(image: Path, errors: list[str]) -> None:
    try:
        with Image.open(image) as handle:
            handle.verify()  # checks the file's structure without decoding every pixel
        with Image.open(image) as handle:
            width, height = handle.size
    except Exception as exc:  # noqa: BLE001 - Pillow raises many types for a broken file; all mean "unreadable"
        errors.append(f"{image}: not a readable image: {exc}")
        return
    if width < 1 or height < 1:
        errors.append(f"{image}: has no pixels ({width}x{height})")


def _check_labels(
    labels: Path, names: list[str], task: str | None, errors: list[str]
) -> list[tuple[int, str]]:
    """(class id, "box" | "polygon") for every valid line; each bad line adds one error."""
    try:
        lines = labels.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        errors.append(f"{labels}: cannot read it: {exc}")
        return []
    found: list[tuple[int, str]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        problem, parsed = _parse_line(line.split(), len(names), task)
        if problem:
            errors.append(f"{labels}:{number}: {problem}")
        elif parsed is not None:
            found.append(parsed)
    return found


# One early return per kind of bad line: the function reads as the list of rules.
def _parse_line(  # noqa: PLR0911
    fields: list[str], nc: int, task: str | None
) -> tuple[str, tuple[int, str] | None]:
    try:
        values = [float(v) for v in fields]
    except ValueError:
        return f"not numbers: {' '.join(fields)!r}", None
    if not all(math.isfinite(v) for v in values):
        return "holds a non-finite number", None
    class_value, coords = values[0], values[1:]
    if class_value != int(class_value):
        return f"class id {fields[0]} is not an integer", None
    class_id = int(class_value)
    if not 0 <= class_id < nc:
        return f"class id {class_id} is out of range (names has {nc} classes: 0..{nc - 1})", None
    if len(coords) == 4:
        if task == "segmentation":
            return "a box (class cx cy w h) where segmentation needs a polygon (class x1 y1 x2 y2 ...)", None
        return _check_box(coords), (class_id, "box")
    if len(coords) % 2:
        return f"odd number of polygon coordinates ({len(coords)}): x and y come in pairs", None
    if len(coords) < 6:
        return f"a polygon needs at least 3 points, got {len(coords) // 2}", None
    outside = [v for v in coords if not -TOLERANCE <= v <= 1 + TOLERANCE]
    if outside:
        return f"polygon point coordinate {outside[0]:g} is outside the image (0..1)", None
    return "", (class_id, "polygon")


def _check_box(coords: list[float]) -> str:
    cx, cy, w, h = coords
    if w <= 0 or h <= 0:
        return f"box has no area (w={w:g}, h={h:g})"
    edges = (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
    if not all(-TOLERANCE <= edge <= 1 + TOLERANCE for edge in edges):
        x1, y1, x2, y2 = edges
        return f"box ({x1:.4g}, {y1:.4g}) to ({x2:.4g}, {y2:.4g}) is outside the image (0..1)"
    return ""


# --- stage 3: labels without an image ------------------------------------------------------------------


def _orphan_labels(split_dirs: dict[str, list[Path]], errors: list[str]) -> None:
    seen: set[Path] = set()
    for directory in (d for dirs in split_dirs.values() for d in dirs):
        labels_dir = label_path(directory / "x.png").parent
        if labels_dir in seen or labels_dir == directory or not labels_dir.is_dir():
            continue
        seen.add(labels_dir)
        expected = {label_path(image) for image in image_files(directory)}
        for labels in _txt_files(labels_dir):
            if labels not in expected and labels.name != "classes.txt":
                errors.append(f"{labels}: a label file without an image (no {labels.stem}.* in {directory})")


def _txt_files(directory: Path) -> Iterator[Path]:
    return iter(sorted(p for p in directory.rglob("*.txt") if p.is_file()))


def format_report(report: YoloReport) -> Iterable[str]:
    """Human-readable lines: splits, classes with their instances, background images."""
    for split, stats in report.splits.items():
        yield (f"{split}: {stats.images} images, {stats.instances} instances, {stats.background} background")
    yield f"classes ({len(report.names)}): " + ", ".join(
        f"{i}={name} ({report.instances.get(name, 0)})" for i, name in enumerate(report.names)
    )
    yield f"task: {report.task}; background images: {report.background}"


__all__ = [
    "DATA_YAML",
    "MAX_SHOWN",
    "SPLIT_KEYS",
    "SplitReport",
    "YoloDataError",
    "YoloReport",
    "fingerprint",
    "format_report",
    "image_files",
    "label_path",
    "validate",
]
