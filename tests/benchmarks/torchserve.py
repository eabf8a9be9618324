"""The incumbent: the same ResNet-18 served by TorchServe 0.12, under the same load, in the same run.

Stages: check Java (17 or later; Debian: `apt-get install -y openjdk-17-jre-headless`) -> make sure
TorchServe's own environment exists (.bench/torchserve-venv: torchserve and torch-model-archiver 0.12,
and the project's torch/torchvision pins; created on first use) -> package the artifact's weights with
tests/benchmarks/torchserve_handler.py into a .mar whose model-config.yaml sets one worker and
TorchServe's batching (batchSize, maxBatchDelay) -> `torchserve --start --ncs --disable-token-auth`
on free ports, with its pid file, logs and metrics under a temporary directory -> wait until its
worker is READY -> one checked prediction -> concurrency 1, 8, 32 -> `torchserve --stop`, and any of
its processes still alive are killed. Our figures come from the serving benchmark of the same run.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

from tests.benchmarks import serving
from tests.benchmarks.common import ROOT, Result, free_port, http_ok, wait_until

VENV = ROOT / ".bench" / "torchserve-venv"
MODEL = "resnet18"
EXTRA_FILES = ("architectures.py", "manifest.json", "bench.json")  # read by the handler
JAVA_HINT = "install Java 17 (Debian: apt-get install -y openjdk-17-jre-headless) or put it on PATH"


def pins() -> list[str]:
    """TorchServe 0.12 and the very torch/torchvision the project pins (so both serve the same kernels)."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    torch_pins = [
        dep for dep in pyproject["project"]["dependencies"] if dep.split("==")[0] in ("torch", "torchvision")
    ]
    # TorchServe 0.12's worker imports yaml without declaring the dependency.
    return ["torchserve==0.12.*", "torch-model-archiver==0.12.*", *torch_pins, "pillow", "numpy", "pyyaml"]


def java_problem() -> str | None:
    """Why TorchServe cannot start here, or None."""
    java = shutil.which("java")
    if java is None:
        return f"no `java` on PATH; {JAVA_HINT}"
    try:
        text = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        ).stderr
    except (OSError, subprocess.SubprocessError) as exc:
        return f"`java -version` failed ({exc}); {JAVA_HINT}"
    version = text.split('"')[1] if '"' in text else ""
    major = version.split(".")[0] if version else ""
    if not major.isdigit() or int(major) < 17:
        return f"TorchServe 0.12 needs Java 17 or later, found {version or text.strip()!r}; {JAVA_HINT}"
    return None


def ensure_venv(log: Path) -> str | None:
    """Create or refresh TorchServe's environment; None when ready, else why not."""
    wanted = "\n".join(pins())
    stamp = VENV / ".installed"
    if stamp.is_file() and stamp.read_text() == wanted:
        return None
    print(f"  installing TorchServe into {VENV.relative_to(ROOT)} (first time: a few minutes)", flush=True)
    with log.open("a") as out:
        steps = [
            [sys.executable, "-m", "venv", str(VENV)],
            [
                str(VENV / "bin" / "python"),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                *pins(),
            ],
        ]
        for argv in steps:
            if subprocess.run(argv, stdout=out, stderr=out, check=False).returncode != 0:
                return f"`{' '.join(argv[:5])} ...` failed; see {log}"
    stamp.write_text(wanted)
    return None


def package(model_dir: Path, work: Path, threads: int, batch_size: int, max_delay_ms: int) -> Path:
    """A .mar in a fresh model store: our weights, our architecture code, the benchmark handler."""
    import torch
    from safetensors.torch import load_file

    stage, store = work / "mar-files", work / "model-store"
    stage.mkdir()
    store.mkdir()
    manifest = json.loads((model_dir / "manifest.json").read_text())
    torch.save(load_file(str(model_dir / manifest.get("weights", "model.safetensors"))), stage / "weights.pt")
    shutil.copy(ROOT / "artifact" / "architectures.py", stage / "architectures.py")
    shutil.copy(model_dir / "manifest.json", stage / "manifest.json")
    shutil.copy(Path(__file__).with_name("torchserve_handler.py"), stage / "handler.py")
    (stage / "bench.json").write_text(json.dumps({"threads": threads}))
    (stage / "model-config.yaml").write_text(
        f"minWorkers: 1\nmaxWorkers: 1\nbatchSize: {batch_size}\nmaxBatchDelay: {max_delay_ms}\n"
        "responseTimeout: 120\n"
    )
    argv = [
        str(VENV / "bin" / "torch-model-archiver"),
        "--model-name", MODEL,
        "--version", "1.0",
        "--serialized-file", str(stage / "weights.pt"),
        "--handler", str(stage / "handler.py"),
        "--extra-files", ",".join(str(stage / f) for f in EXTRA_FILES),
        "--config-file", str(stage / "model-config.yaml"),
        "--export-path", str(store),
        "--force",
    ]  # fmt: skip
    subprocess.run(argv, check=True, capture_output=True, timeout=300)
    return store


def _children(pid: int) -> list[int]:
    """`pid`'s descendants, from /proc (TorchServe's Python workers are children of its java)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        kids = [p for p, pp in parents.items() if pp == parent]
        found += kids
        frontier += kids
    return found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


class TorchServe:
    """One TorchServe instance whose pid file, logs and snapshots all live under `work`."""

    def __init__(self, work: Path, store: Path) -> None:
        self.work, self.store = work, store
        self.inference, self.management, self.metrics = free_port(), free_port(), free_port()
        tmp = work / "ts-tmp"
        tmp.mkdir()
        # TorchServe keeps its pid file in the temp dir: a private one keeps --stop to our instance.
        self.env = {
            **os.environ,
            "TMPDIR": str(tmp),
            "LOG_LOCATION": str(work / "ts-logs"),
            "METRICS_LOCATION": str(work / "ts-logs"),
            "PATH": f"{VENV / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        self.pid_file = tmp / ".model_server.pid"
        self.config = work / "config.properties"
        self.config.write_text(
            "\n".join(
                [
                    f"inference_address=http://127.0.0.1:{self.inference}",
                    f"management_address=http://127.0.0.1:{self.management}",
                    f"metrics_address=http://127.0.0.1:{self.metrics}",
                    "default_workers_per_model=1",
                    "disable_system_metrics=true",  # no metrics collector process every minute
                    "install_py_dep_per_model=false",
                    "vmargs=-Xmx1g",
                ]
            )
            + "\n"
        )
        self.java: int | None = None
        self.log = work / "torchserve.log"

    def _torchserve(self, *args: str) -> subprocess.CompletedProcess[str]:
        with self.log.open("a") as out:
            return subprocess.run(
                [str(VENV / "bin" / "torchserve"), *args],
                cwd=self.work, env=self.env, stdout=out, stderr=out, text=True, timeout=120, check=False,
            )  # fmt: skip

    def start(self) -> None:
        self._torchserve(
            "--start", "--ncs", "--disable-token-auth", "--ts-config", str(self.config),
            "--model-store", str(self.store), "--models", f"{MODEL}={MODEL}.mar",
        )  # fmt: skip
        if self.pid_file.is_file():
            self.java = int(self.pid_file.read_text().split()[0])
        try:
            wait_until(self._ready, 300, "TorchServe", lambda: self.java is not None and _alive(self.java))
        except RuntimeError as exc:
            raise RuntimeError(f"{exc}; {self._last_error()}") from None

    def _last_error(self) -> str:
        """The worker's last error line: a worker that cannot start only says why in its own log."""
        log = self.work / "ts-logs" / "model_log.log"
        lines = log.read_text().splitlines() if log.is_file() else []
        errors = [
            line.split("MODEL_LOG - ", 1)[-1] for line in lines if "Error" in line or "Exception" in line
        ]
        return f"its worker's last error: {errors[-1]}" if errors else f"see {self.log}"

    def _ready(self) -> bool:
        body = http_ok(f"http://127.0.0.1:{self.management}/models/{MODEL}")
        if body is None:
            return False
        workers = json.loads(body)[0].get("workers", [])
        return bool(workers) and all(w.get("status") == "READY" for w in workers)

    def describe(self) -> Any:
        body = http_ok(f"http://127.0.0.1:{self.management}/models/{MODEL}")
        return json.loads(body)[0] if body else None

    def stop(self) -> None:
        processes = [self.java, *_children(self.java)] if self.java else []
        self._torchserve("--stop")
        deadline = time.monotonic() + 30
        while any(_alive(p) for p in processes if p) and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in processes:
            if pid and _alive(pid):
                os.kill(pid, signal.SIGKILL)


COLUMNS = ["concurrency", "TS req/s", "TS p50 ms", "TS p99 ms", "TS non-200", "ours req/s", "ours p50 ms"]


def run(
    work: Path,
    *,
    quick: bool,
    config: serving.ServerConfig,
    ours: Result | None,
    batch_size: int = 32,
    max_delay_ms: int = 5,
) -> list[Result]:
    """TorchServe's table with our ratio to it; runs our server too when `ours` is not given."""
    result = Result(
        "torchserve",
        f"incumbent: TorchServe 0.12 vs ours on {MODEL}",
        [*COLUMNS, "ours/TS req/s", "TS/ours p50"],
    )
    problem = java_problem() or ensure_venv(work / "torchserve-install.log")
    if problem:
        result.skipped = problem
        return [result]
    extra: list[Result] = []
    if ours is None:
        ours = serving.run(work, quick=quick, config=config, models=[MODEL])[0]
        extra.append(ours)
    timing = serving.Timing.for_run(quick)
    threads = int(ours.data["raw"]["limit"]["threads"])
    model_dir = serving.make_artifact(work / "torchserve", MODEL)
    store = package(model_dir, work / "torchserve", threads, batch_size, max_delay_ms)
    server = TorchServe(work / "torchserve", store)
    pngs = serving.sample_pngs()
    try:
        server.start()
        described = server.describe()
        serving.check_answer(f"http://127.0.0.1:{server.inference}/predictions/{MODEL}", pngs[0])
        path = f"/predictions/{MODEL}"
        loads, _inside = serving.measure_load("127.0.0.1", server.inference, path, pngs, timing)
    finally:
        server.stop()
    for c, run in loads.items():
        mine = ours.data["load"][str(c)]
        result.add(
            c, run.throughput, run.p50, run.p99, run.non_200, mine["requests_per_s"], mine["p50_ms"],
            f"{mine['requests_per_s'] / run.throughput:.2f}x" if run.throughput else "-",
            f"{run.p50 / mine['p50_ms']:.2f}x" if mine["p50_ms"] else "-",
        )  # fmt: skip
    result.notes.append(
        f"TorchServe: 1 worker, batchSize {batch_size}, maxBatchDelay {max_delay_ms} ms, {threads} torch "
        f"thread(s) in its handler (as our server); ours: configuration {config.name}"
    )
    result.data = {
        "torchserve": {str(c): run.summary() for c, run in loads.items()},
        "ours": ours.data["load"],
        "ours_configuration": ours.data["configuration"],
        "model_config": {"batchSize": batch_size, "maxBatchDelay": max_delay_ms, "workers": 1},
        "torch_threads": threads,
        "described": described,
        "pins": pins(),
    }
    return [*extra, result]
