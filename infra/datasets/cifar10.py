"""CIFAR-10: write the official *binary* archive as PNGs.

``prepare_cifar10`` takes the archive as given or downloads it once into a cache (``_fetch_cifar10``,
``_download``), verifies its md5 (refusing the pickle edition), reuses or refuses an existing ``out``
(see ``common``), reads the tar members in memory (``_read_cifar_archive``), so nothing from the archive
is ever extracted or unpickled, splits a seeded, stratified 10% of training off for validation, and
writes, records and installs the PNGs through the shared pipeline.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from infra.datasets.common import (
    SPLITS,
    DatasetError,
    DatasetInfo,
    Progress,
    _check_target,
    _normalise,
    _pool,
    _reuse_or_refuse,
    _silent,
    _staging,
    _write_metadata,
    _write_split,
    read_metadata,
)

CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR10_MD5 = "c32a1d4ab5d03f1284b67883e8d87530"
CIFAR10_ARCHIVE_NAME = "cifar-10-binary.tar.gz"
# Only used to recognise the pickle edition and point at the binary one; it is never opened.
_CIFAR10_PYTHON_MD5 = "c58f30108f718f92721af3b95e74349a"

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
