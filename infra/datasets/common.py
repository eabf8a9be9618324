"""Shared dataset I/O for both sources: decide, write, record and install.

- decide: ``_reuse_or_refuse`` reuses a matching dataset at ``out`` (per its ``dataset.json``), refuses
  anything else unless ``force``, and ``_check_target`` guards what ``force`` may replace.
- write: ``_staging`` yields a hidden temporary sibling of ``out``; ``_pool`` and ``_write_split`` encode
  PNGs into it in a thread pool.
- record: ``_write_metadata`` writes ``dataset.json`` with parameters, classes, counts and ``fingerprint``.
- install: on success ``_staging`` renames the temporary directory to ``out`` (``_install``); an
  interrupted run leaves ``out`` untouched.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from infra.concurrency import cancelling_pool

SPLITS: tuple[str, ...] = ("train", "validation", "test")
METADATA_FILE = "dataset.json"

# Bump when the bytes a given set of parameters produces change, so stale datasets are not reused.
GENERATOR_VERSION = 1

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


def fingerprint(root: Path) -> str:
    """sha256 over every file but dataset.json, in sorted relative-path order: path, NUL, size, bytes.
    One implementation, in the training program (which may not import infra), so the value `mlops data`
    records in dataset.json is the one a job computes over the files it received."""
    from train.yolo_data import fingerprint as dataset_fingerprint

    return dataset_fingerprint(root)


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


def _pool() -> AbstractContextManager[ThreadPoolExecutor]:
    # zlib and file writes release the GIL for part of each image, and threads share the decoded
    # records without the pickling a process pool would need.
    return cancelling_pool(min(8, os.cpu_count() or 1), "dataset-write")


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
