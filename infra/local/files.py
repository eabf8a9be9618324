"""Crash-safe file writes and an inter-process lock for the local state under MLOPS_HOME."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TextIO


def write_json_atomic(path: Path, data: Any) -> None:
    """`data` as indented JSON, written by `write_atomic`."""

    def fill(fh: TextIO) -> None:
        json.dump(data, fh, indent=2, sort_keys=True)
        fh.write("\n")

    write_atomic(path, fill)


def write_atomic(path: Path, fill: Callable[[TextIO], None]) -> None:
    """Write to a temporary file in the same directory (`fill` writes the text), fsync, then rename over
    the target: a crash at any point leaves either the old file or the new one, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fill(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)  # noqa: PTH105 -- os.replace is what tests fault-inject
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)  # noqa: PTH108 -- tmp is a str from mkstemp
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself must reach the disk
    finally:
        os.close(dir_fd)


def read_json(path: Path, default: Any) -> Any:
    if not path.is_file():
        return default
    return json.loads(path.read_text())


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Exclusive advisory lock: two `mlops` processes never interleave a read-modify-write."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
