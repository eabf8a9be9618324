"""What every benchmark shares: checks against targets, the table they print, the JSON they write, and
the small process and network helpers for the servers they start.

A benchmark returns a `Result`: rows of figures (each optionally judged against a target, PASS/FAIL)
plus its raw measurements; `report` prints the table and writes `bench/results/<name>.json` with the
machine it ran on, because every figure here is machine-specific.
"""

from __future__ import annotations

import json
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "bench" / "results"
PASS, FAIL, INFO, SKIP = "PASS", "FAIL", "-", "SKIP"


@dataclass
class Row:
    """One printed line: `cells` in the table's columns, then the target and its verdict."""

    cells: list[str]
    target: str = ""
    verdict: str = INFO


@dataclass
class Result:
    name: str
    title: str
    columns: list[str]
    rows: list[Row] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # raw figures for the JSON
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None  # why the benchmark could not run at all

    def add(self, *cells: object, target: str = "", passed: bool | None = None) -> None:
        verdict = INFO if passed is None else (PASS if passed else FAIL)
        self.rows.append(Row([_cell(c) for c in cells], target, verdict))

    @property
    def verdicts(self) -> list[str]:
        return [r.verdict for r in self.rows if r.verdict in (PASS, FAIL)]

    @property
    def failed(self) -> bool:
        return FAIL in self.verdicts


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def machine() -> dict[str, Any]:
    """Where the figures were taken: they mean little without it (the load average says how busy)."""
    import torch

    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "argv": sys.argv[1:],
    }


def format_table(result: Result) -> str:
    header = [*result.columns, "target", "result"]
    lines = [[*r.cells, r.target, r.verdict] for r in result.rows]
    widths = [max(len(str(x)) for x in column) for column in zip(header, *lines, strict=False)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            str(c).rjust(w) if i else str(c).ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=False))
        )

    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    return "\n".join([line(header), rule, *(line(cells) for cells in lines)])


def report(result: Result, settings: dict[str, Any]) -> Path:
    """Print the table and write the JSON; returns the JSON's path."""
    print(f"\n== {result.title} ==")
    if result.skipped:
        print(f"SKIPPED: {result.skipped}")
    elif result.rows:
        print(format_table(result))
    for note in result.notes:
        print(f"  note: {note}")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{result.name}.json"
    payload = {
        "benchmark": result.name,
        "title": result.title,
        "machine": machine(),
        "settings": settings,
        "skipped": result.skipped,
        "table": {"columns": [*result.columns, "target", "result"], "rows": [asdict(r) for r in result.rows]},
        "passed": None if result.skipped or not result.verdicts else not result.failed,
        "notes": result.notes,
        "data": result.data,
    }
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(f"  -> {path.relative_to(ROOT)}")
    return path


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) by nearest rank: an observed value, as load testers report it."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(q / 100 * len(ordered))))
    return ordered[rank - 1]


def free_port() -> int:
    """A port nobody listens on now. Another process may take it before we bind: servers we start
    are checked to be ours by waiting on their own readiness, and fail loudly if the bind failed."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(ready: Callable[[], bool], timeout: float, what: str, alive: Callable[[], bool]) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if not alive():
            raise RuntimeError(f"{what} exited before it was ready")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} was not ready within {timeout:.0f} s")
        time.sleep(0.2)


def http_ok(url: str, body: bytes | None = None, headers: dict[str, str] | None = None) -> bytes | None:
    """The body of a 200 answer, else None (refused, not listening yet, other status)."""
    request = urllib.request.Request(url, data=body, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.read() if response.status == 200 else None
    except (OSError, urllib.error.HTTPError):
        return None


def stop_process(proc: subprocess.Popen[Any], timeout: float = 30) -> None:
    """SIGTERM, then SIGKILL: a benchmark never leaves a server behind on the shared machine."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=timeout)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)
