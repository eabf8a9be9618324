"""Build image-classification datasets in ImageFolder layout: ``root/<split>/<class>/<file>.png``.

Two sources, one pipeline:

1. decide: if ``out`` already holds a dataset whose ``dataset.json`` matches the request, reuse it;
   if it holds anything else, refuse unless ``force``.
2. source: ``make_synthetic`` renders shapes with numpy from a seed; ``prepare_cifar10`` reads the
   official *binary* CIFAR-10 archive (downloaded and cached, or given), verifying its md5 and
   reading tar members in memory, so nothing from the archive is ever extracted or unpickled.
3. write: PNGs are encoded in a thread pool into a hidden temporary sibling of ``out``.
4. record: ``dataset.json`` gets parameters, classes, counts and a content fingerprint.
5. install: the temporary directory is renamed to ``out``; an interrupted run leaves ``out`` untouched.

Nothing runs at import time.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from PIL import Image

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
CIFAR10_ARCHIVE_NAME = "cifar-10-binary.tar.gz"
# Only used to recognise the pickle edition and point at the binary one; it is never opened.
_CIFAR10_PYTHON_MD5 = "c58f30108f718f92721af3b95e74349a"

SPLITS: tuple[str, ...] = ("train", "validation", "test")
METADATA_FILE = "dataset.json"

# Bump when the bytes a given set of parameters produces change, so stale datasets are not reused.
GENERATOR_VERSION = 1

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

_CIFAR_SIDE = 32
_CIFAR_RECORD = 1 + 3 * _CIFAR_SIDE * _CIFAR_SIDE
_CIFAR_TRAIN_FILES = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
_CIFAR_TEST_FILE = "test_batch.bin"
_CIFAR_META_FILE = "batches.meta.txt"
_CIFAR_DIR = "cifar-10-batches-bin"
# The official batches are 30,730,000 bytes; the cap keeps a hostile archive from exhausting memory.
_CIFAR_MAX_MEMBER = 64 * 1024 * 1024
# 10% of every class goes to validation: 500 per class (5,000 in all) for the official archive.
_CIFAR_VALIDATION_FRACTION = 0.1
_CLASS_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

# Enough images per task that pool overhead is noise, few enough that an interruption stops quickly.
_CHUNK = 500

Progress = Callable[[str], None]


class DatasetError(Exception):
    """Clear one-line message for the user."""


@dataclass
class DatasetInfo:
    root: Path  # holds train/ validation/ test/ in ImageFolder layout (root/<split>/<class>/<file>.png)
    name: str  # "synthetic" or "cifar10"
    classes: list[str]  # sorted, i.e. the label order torchvision's ImageFolder assigns
    counts: dict[str, int]  # images per split
    created: bool  # False when an identical dataset was already there and was reused
    seconds: float


# --------------------------------------------------------------------------------------------------
# Synthetic shapes
# --------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------
# CIFAR-10
# --------------------------------------------------------------------------------------------------


def prepare_cifar10(
    out: Path,
    *,
    archive: Path | None = None,
    url: str = CIFAR10_URL,
    seed: int = 0,
    force: bool = False,
    timeout: float = 30.0,
    progress: Progress | None = None,
    expected_md5: str | None = CIFAR10_MD5,
) -> DatasetInfo:
    """Write CIFAR-10 from the official binary archive as PNGs: train 45,000 / validation 5,000 / test 10,000.

    ``archive`` is used as given; without it the archive is downloaded from ``url`` once and cached at
    ``out.parent / "cifar-10-binary.tar.gz"``. The archive's md5 must equal ``expected_md5``;
    ``expected_md5=None`` skips that check (hand-built archives in tests), and the split sizes then
    follow from the records present: 10% of each class's training images go to validation.
    """
    started = time.perf_counter()
    say = progress or _silent
    if seed < 0:
        raise DatasetError(f"seed must be a non-negative integer, got {seed}")
    out = _normalise(out)

    source_md5: str | None = expected_md5
    if archive is not None:
        archive = _normalise(archive)
        if not archive.is_file():
            raise DatasetError(f"CIFAR-10 archive {archive} does not exist or is not a file")
        _refuse_python_edition_name(archive)
        say(f"checking md5 of {archive.name}")
        source_md5 = _md5_file(archive)
        _check_md5(archive, source_md5, expected_md5)

    def parameters(md5: str) -> dict[str, Any]:
        return {"seed": seed, "validation_fraction": _CIFAR_VALIDATION_FRACTION, "source_md5": md5}

    # Checked before any download, so an existing dataset needs no network at all.
    if source_md5 is not None:
        reused = _reuse_or_refuse(
            out, "cifar10", parameters(source_md5), force=force, started=started, say=say
        )
        if reused is not None:
            return reused
    elif (read_metadata(out) or {}).get("name") != "cifar10":
        # Fail before a long download when `out` is plainly foreign; a cifar10 dataset there is
        # compared with the downloaded archive's md5 below.
        _check_target(out, force)

    if archive is None:
        cache = out.parent / CIFAR10_ARCHIVE_NAME
        archive, source_md5 = _fetch_cifar10(url, cache, expected_md5=expected_md5, timeout=timeout, say=say)
        if expected_md5 is None:
            reused = _reuse_or_refuse(
                out, "cifar10", parameters(source_md5), force=force, started=started, say=say
            )
            if reused is not None:
                return reused
    assert source_md5 is not None

    say(f"reading {archive.name}")
    names, train, test = _read_cifar_archive(archive)
    validation_rows = _stratified_validation(train[:, 0], seed)
    is_validation = np.zeros(len(train), dtype=bool)
    is_validation[validation_rows] = True
    # Original record indices become file names, so any PNG can be traced back to its record.
    rows = {
        "train": np.flatnonzero(~is_validation),
        "validation": validation_rows,
        "test": np.arange(len(test)),
    }
    sources = {"train": train, "validation": train, "test": test}

    say(f"writing CIFAR-10 ({len(train) + len(test)} images) to {out}")
    with _staging(out, force) as tmp, _pool() as pool:
        for split in SPLITS:
            records = sources[split]
            jobs = [
                (f"{split}/{names[records[row, 0]]}/{row:05d}.png", _cifar_job(records, int(row)))
                for row in rows[split]
            ]
            _write_split(tmp, split, classes=names, jobs=jobs, pool=pool, say=say)
        counts = {split: len(rows[split]) for split in SPLITS}
        _write_metadata(
            tmp,
            "cifar10",
            parameters=parameters(source_md5),
            seed=seed,
            classes=names,
            counts=counts,
            say=say,
        )
    return DatasetInfo(out, "cifar10", sorted(names), counts, True, time.perf_counter() - started)


def _cifar_job(records: np.ndarray, row: int) -> Callable[[], np.ndarray]:
    # Record layout: label, then 1024 R, 1024 G, 1024 B bytes, each plane row-major.
    return lambda: records[row, 1:].reshape(3, _CIFAR_SIDE, _CIFAR_SIDE).transpose(1, 2, 0).copy()


def _stratified_validation(labels: np.ndarray, seed: int) -> np.ndarray:
    """Sorted row indices of the validation split: a seeded 10% of every class."""
    rng = np.random.default_rng(seed)
    chosen: list[np.ndarray] = []
    for label in range(10):
        members = np.flatnonzero(labels == label)
        take = round(len(members) * _CIFAR_VALIDATION_FRACTION)
        chosen.append(rng.permutation(members)[:take])
    return np.sort(np.concatenate(chosen))


def _refuse_python_edition_name(archive: Path) -> None:
    # By name here, by md5 and by member names later: renamed copies are caught too.
    if archive.name.lower().startswith("cifar-10-python"):
        raise DatasetError(_python_edition_message(archive))


def _python_edition_message(archive: Path) -> str:
    return (
        f"{archive} is the Python (pickle) edition of CIFAR-10, which is never unpickled here; "
        f"use the binary archive {CIFAR10_ARCHIVE_NAME} ({CIFAR10_URL})"
    )


def _check_md5(archive: Path, actual: str, expected: str | None) -> None:
    if actual == _CIFAR10_PYTHON_MD5:
        raise DatasetError(_python_edition_message(archive))
    if expected is not None and actual != expected:
        raise DatasetError(
            f"{archive} has md5 {actual}, expected {expected}: the file is truncated, corrupt or not the "
            f"official {CIFAR10_ARCHIVE_NAME}; download it again"
        )


def _md5_file(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _fetch_cifar10(
    url: str, cache: Path, *, expected_md5: str | None, timeout: float, say: Progress
) -> tuple[Path, str]:
    """The cached archive, downloaded first if needed; the cache only ever holds a verified file."""
    if cache.is_file():
        say(f"using cached {cache}")
        md5 = _md5_file(cache)
        if md5 == _CIFAR10_PYTHON_MD5 or (expected_md5 is not None and md5 != expected_md5):
            raise DatasetError(
                f"cached {cache} has md5 {md5}, expected {expected_md5}: delete it and run again, "
                f"or pass --archive PATH"
            )
        return cache, md5
    if not url.lower().startswith(("http://", "https://")):
        raise DatasetError(f"cannot download CIFAR-10 from {url}: only http:// and https:// URLs work")

    cache.parent.mkdir(parents=True, exist_ok=True)
    say(f"downloading {url}")
    fd, partial_name = tempfile.mkstemp(prefix=f".{cache.name}.", suffix=".partial", dir=cache.parent)
    os.close(fd)
    partial = Path(partial_name)
    try:
        md5 = _download(url, partial, timeout, say)
        if md5 == _CIFAR10_PYTHON_MD5:
            raise DatasetError(_python_edition_message(Path(url)))
        if expected_md5 is not None and md5 != expected_md5:
            raise DatasetError(
                f"the file downloaded from {url} has md5 {md5}, expected {expected_md5}: the download was "
                f"corrupted or the URL does not serve the official {CIFAR10_ARCHIVE_NAME}"
            )
        partial.replace(cache)
    finally:
        partial.unlink(missing_ok=True)
    return cache, md5


def _download(url: str, dest: Path, timeout: float, say: Progress) -> str:
    """Stream ``url`` into ``dest``; returns the md5 of what was written."""
    digest = hashlib.md5(usedforsecurity=False)
    try:
        # The scheme is checked by the caller; the URL is the user's choice of mirror.
        with (
            urllib.request.urlopen(url, timeout=timeout) as response,  # noqa: S310
            dest.open("wb") as sink,
        ):
            total = int(response.headers.get("Content-Length") or 0)
            done, next_report = 0, 0.1
            while block := response.read(1 << 20):
                sink.write(block)
                digest.update(block)
                done += len(block)
                if total and done / total >= next_report:
                    say(f"downloading: {done >> 20}/{total >> 20} MiB")
                    next_report += 0.1
            if total and done != total:
                raise DatasetError(f"download of {url} stopped after {done} of {total} bytes; run again")
    except http.client.HTTPException as exc:
        # Raised mid-body (IncompleteRead, bad status line): the server or the connection gave up.
        raise DatasetError(
            f"download of {url} was cut off ({type(exc).__name__}); run again, or download "
            f"{CIFAR10_ARCHIVE_NAME} elsewhere and pass --archive PATH"
        ) from exc
    except urllib.error.HTTPError as exc:
        raise DatasetError(
            f"cannot download CIFAR-10 from {url} (HTTP {exc.code} {exc.reason}); "
            f"download {CIFAR10_ARCHIVE_NAME} elsewhere and pass --archive PATH"
        ) from exc
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise DatasetError(
            f"cannot download CIFAR-10 from {url} ({str(reason) or type(reason).__name__}): this machine "
            f"seems offline; download {CIFAR10_ARCHIVE_NAME} elsewhere and pass --archive PATH"
        ) from exc
    return digest.hexdigest()


def _read_cifar_archive(archive: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Class names, train records and test records, each records array (N, 3073) uint8."""
    wanted = {*_CIFAR_TRAIN_FILES, _CIFAR_TEST_FILE, _CIFAR_META_FILE}
    found: dict[str, bytes] = {}
    try:
        # Stream mode decompresses once; members are read into memory, never extracted to disk, so
        # hostile member names (../, absolute paths, links) cannot write anywhere.
        with tarfile.open(archive, mode="r|*") as tar:
            for member in tar:
                parts = PurePosixPath(member.name).parts
                if "cifar-10-batches-py" in parts:
                    raise DatasetError(_python_edition_message(archive))
                if (
                    not member.isfile()
                    or len(parts) < 2
                    or parts[-2] != _CIFAR_DIR
                    or parts[-1] not in wanted
                ):
                    continue
                if member.size > _CIFAR_MAX_MEMBER:
                    raise DatasetError(
                        f"{archive}: {member.name} is {member.size} bytes, too big for CIFAR-10"
                    )
                handle = tar.extractfile(member)
                if handle is None:
                    continue
                found[parts[-1]] = handle.read()
    except (tarfile.TarError, EOFError, zlib.error, OSError) as exc:
        raise DatasetError(f"cannot read {archive} as a .tar.gz archive ({exc}); download it again") from exc

    missing = sorted(wanted - found.keys())
    if missing:
        raise DatasetError(
            f"{archive} is not the CIFAR-10 binary archive: {_CIFAR_DIR}/ lacks {', '.join(missing)}"
        )
    names = _cifar_class_names(archive, found[_CIFAR_META_FILE])
    train = np.concatenate([_cifar_records(archive, name, found[name]) for name in _CIFAR_TRAIN_FILES])
    test = _cifar_records(archive, _CIFAR_TEST_FILE, found[_CIFAR_TEST_FILE])
    return names, train, test


def _cifar_class_names(archive: Path, data: bytes) -> list[str]:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{archive}: {_CIFAR_META_FILE} is not text") from exc
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) != 10 or len(set(names)) != 10:
        raise DatasetError(f"{archive}: {_CIFAR_META_FILE} must list 10 distinct class names, not {names}")
    bad = [name for name in names if not _CLASS_NAME.match(name)]
    if bad:
        raise DatasetError(f"{archive}: {_CIFAR_META_FILE} has class names unfit for directories: {bad}")
    return names


def _cifar_records(archive: Path, name: str, data: bytes) -> np.ndarray:
    if not data or len(data) % _CIFAR_RECORD:
        raise DatasetError(
            f"{archive}: {name} is {len(data)} bytes, not a whole number of {_CIFAR_RECORD}-byte records"
        )
    records = np.frombuffer(data, dtype=np.uint8).reshape(-1, _CIFAR_RECORD)
    if records[:, 0].max() >= 10:
        raise DatasetError(f"{archive}: {name} has label {int(records[:, 0].max())}; CIFAR-10 labels are 0-9")
    return records


# --------------------------------------------------------------------------------------------------
# Shared: reuse, staging, writing, metadata
# --------------------------------------------------------------------------------------------------


def fingerprint(root: Path) -> str:
    """sha256 over every file but dataset.json, in sorted relative-path order: path, NUL, size, bytes."""
    digest = hashlib.sha256()
    files = sorted(
        (path.relative_to(root).as_posix(), path)
        for path in root.rglob("*")
        if path.is_file() and path.relative_to(root).as_posix() != METADATA_FILE
    )
    for relative, path in files:
        data = path.read_bytes()
        # Lengths keep the stream unambiguous: no two different trees can hash the same bytes.
        digest.update(relative.encode("utf-8") + b"\0" + len(data).to_bytes(8, "big"))
        digest.update(data)
    return f"sha256:{digest.hexdigest()}"


def read_metadata(root: Path) -> dict[str, Any] | None:
    """The parsed dataset.json of ``root``, or None when there is none or it is unreadable."""
    try:
        meta = json.loads((root / METADATA_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def _silent(_: str) -> None:
    pass


def _normalise(path: Path) -> Path:
    return Path(path).expanduser().absolute()


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


def _reuse_or_refuse(
    out: Path, name: str, parameters: dict[str, Any], *, force: bool, started: float, say: Progress
) -> DatasetInfo | None:
    """An existing matching dataset (reused), or None when a new one should be written."""
    if not (out.exists() or out.is_symlink()) or _is_empty_dir(out):
        return None
    meta = read_metadata(out) if out.is_dir() else None
    matches = (
        meta is not None
        and meta.get("name") == name
        and meta.get("generator_version") == GENERATOR_VERSION
        and meta.get("parameters") == parameters
    )
    if matches and not force:
        assert meta is not None
        try:
            counts = {split: int(meta["counts"][split]) for split in SPLITS}
            classes = [str(name) for name in meta["classes"]]
        except (KeyError, TypeError, ValueError):
            counts, classes = {}, []
        on_disk = {split: _count_pngs(out / split) for split in SPLITS}
        if on_disk != counts:
            raise DatasetError(
                f"{out} holds an incomplete {name} dataset ({on_disk} images, dataset.json says {counts}); "
                f"pass --force to rebuild it"
            )
        say(f"reusing the existing {name} dataset at {out}")
        return DatasetInfo(out, name, classes, counts, False, time.perf_counter() - started)
    if not force:
        if meta is not None and meta.get("name") == name:
            raise DatasetError(
                f"{out} holds a {name} dataset built with different parameters "
                f"({meta.get('parameters')}); pass --force to replace it or choose another directory"
            )
        raise DatasetError(
            f"{out} already exists and is not a matching dataset; pass --force to replace it "
            f"or choose another directory"
        )
    _check_target(out, force)
    return None


def _check_target(out: Path, force: bool) -> None:
    """Refuse to overwrite anything but an empty directory without force, and a few paths even with it."""
    if not (out.exists() or out.is_symlink()) or _is_empty_dir(out):
        return
    if not force:
        raise DatasetError(
            f"{out} already exists and is not a matching dataset; pass --force to replace it "
            f"or choose another directory"
        )
    resolved = out.resolve()
    cwd = Path.cwd().resolve()
    # --force deletes the old directory; a slip like `--out ~` or `--out .` must not wipe real work.
    if resolved in (Path(resolved.anchor), Path.home().resolve(), cwd, *cwd.parents):
        raise DatasetError(
            f"refusing to replace {out}: it is the filesystem root, the home directory or contains the "
            f"current directory; choose a dedicated dataset directory"
        )


def _count_pngs(split_dir: Path) -> int:
    if not split_dir.is_dir():
        return 0
    return sum(
        1
        for class_dir in split_dir.iterdir()
        if class_dir.is_dir()
        for entry in os.scandir(class_dir)
        if entry.name.endswith(".png") and entry.is_file()
    )


@contextmanager
def _staging(out: Path, force: bool) -> Iterator[Path]:
    """A hidden temporary sibling of ``out``, renamed to ``out`` on success and deleted on any failure.

    Hidden (leading dot) so ImageFolder-style scanners of ``out.parent`` never pick up a partial dataset.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        yield tmp
        _install(tmp, out, force)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _install(tmp: Path, out: Path, force: bool) -> None:
    if _is_empty_dir(out):
        out.rmdir()
    if not (out.exists() or out.is_symlink()):
        tmp.rename(out)
        return
    if not force:
        # Something appeared at `out` while we were writing (another run?): never clobber it.
        raise DatasetError(f"{out} appeared while the dataset was being written; run again")
    _check_target(out, force)
    # Move the old tree aside first, so `out` is only ever the old dataset or the complete new one.
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
    old.rmdir()
    out.rename(old)
    tmp.rename(out)
    if old.is_dir() and not old.is_symlink():
        shutil.rmtree(old, ignore_errors=True)
    else:
        old.unlink(missing_ok=True)


@contextmanager
def _pool() -> Iterator[ThreadPoolExecutor]:
    # zlib and file writes release the GIL for part of each image, and threads share the decoded
    # records without the pickling a process pool would need.
    pool = ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1), thread_name_prefix="dataset-write")
    try:
        yield pool
    except BaseException:
        # On interruption stop queued work now; running chunks finish before the staging dir is removed.
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _write_split(
    tmp: Path,
    split: str,
    *,
    classes: Sequence[str],
    jobs: Sequence[tuple[str, Callable[[], np.ndarray]]],
    pool: ThreadPoolExecutor,
    say: Progress,
) -> None:
    for name in classes:
        (tmp / split / name).mkdir(parents=True, exist_ok=True)
    total = len(jobs)
    pending: set[Future[int]] = {
        pool.submit(_write_chunk, tmp, jobs[start : start + _CHUNK]) for start in range(0, total, _CHUNK)
    }
    done, step = 0, max(total // 5, 1)
    next_report = step
    while pending:
        finished, pending = wait(pending, return_when=FIRST_COMPLETED)
        for future in finished:
            done += future.result()
        if done >= next_report or not pending:
            say(f"writing {split}: {done}/{total}")
            next_report = (done // step + 1) * step


def _write_chunk(tmp: Path, jobs: Sequence[tuple[str, Callable[[], np.ndarray]]]) -> int:
    for relative, render in jobs:
        # Fixed encoder settings and no metadata chunks: the same pixels always give the same bytes.
        Image.fromarray(render()).save(tmp / relative, format="PNG", compress_level=6)
    return len(jobs)


def _write_metadata(
    tmp: Path,
    name: str,
    *,
    parameters: dict[str, Any],
    seed: int,
    classes: Sequence[str],
    counts: dict[str, int],
    say: Progress,
) -> None:
    say("fingerprinting")
    meta = {
        "name": name,
        "generator_version": GENERATOR_VERSION,
        "parameters": parameters,
        "seed": seed,
        "classes": sorted(classes),
        "counts": counts,
        "layout": "<split>/<class>/<file>.png",
        "fingerprint": fingerprint(tmp),
    }
    # No timestamp: two runs with the same parameters produce byte-identical trees, dataset.json included.
    (tmp / METADATA_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n", encoding="utf-8")
