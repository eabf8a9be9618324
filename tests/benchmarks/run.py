"""`make bench`: speed figures of the local programs, printed with ratios. Not part of `make test`.

data      decoding an ImageFolder channel into tensors (images/s)
train     smallcnn training steps at 32x32, batch 64, 1 thread and all threads (images/s)
serve     the real server over HTTP on 127.0.0.1: single-PNG latency p50/p99, batch-of-32 throughput
"""

from __future__ import annotations

import io
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def row(name: str, value: float, unit: str, note: str = "") -> None:
    print(f"  {name:<42} {value:>10.1f} {unit:<10} {note}")


def bench_data(root: Path) -> None:
    from train.data import load_channel

    tick = time.perf_counter()
    data = load_channel(root / "train", 32)
    seconds = time.perf_counter() - tick
    row("decode train channel", len(data) / seconds, "images/s", f"({len(data)} PNGs in {seconds:.2f}s)")


def bench_train() -> None:
    import torch
    from torch import nn

    from artifact.architectures import build

    results = {}
    for threads in (1, os.cpu_count() or 1):
        torch.set_num_threads(threads)
        model = build("smallcnn", 8)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
        x, y = torch.randn(64, 3, 32, 32), torch.randint(0, 8, (64,))
        for _ in range(3):  # warm-up
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        steps, tick = 20, time.perf_counter()
        for _ in range(steps):
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        results[threads] = steps * 64 / (time.perf_counter() - tick)
        row(f"train smallcnn, {threads} thread(s)", results[threads], "images/s")
    if len(results) == 2:
        one, many = results.values()
        row("ratio all threads / 1 thread", many / one, "x")


def _post(url: str, body: bytes, content_type: str) -> float:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type})
    tick = time.perf_counter()
    with urllib.request.urlopen(request, timeout=60) as response:
        response.read()
    return time.perf_counter() - tick


def bench_serve(work: Path, data_root: Path) -> None:
    import socket

    from PIL import Image

    from tests.factories import make_model_artifact

    make_model_artifact(work / "model", classes=tuple(f"c{i}" for i in range(8)))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "MLOPS_TORCH_THREADS": os.environ.get("MLOPS_TORCH_THREADS", "1")}
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "serve",
            "--model-dir",
            str(work / "model"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{url}/ping", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise SystemExit("the server did not come up") from None
                time.sleep(0.2)
        png = next((data_root / "test").rglob("*.png")).read_bytes()
        for _ in range(20):
            _post(f"{url}/invocations", png, "image/png")
        latencies = sorted(_post(f"{url}/invocations", png, "image/png") * 1000 for _ in range(200))
        p50, p99 = statistics.median(latencies), latencies[int(len(latencies) * 0.99) - 1]
        row("serve single PNG, p50", p50, "ms", f"(threads={env['MLOPS_TORCH_THREADS']})")
        row("serve single PNG, p99", p99, "ms")
        images = [
            np.asarray(Image.open(p).convert("RGB")) for p in sorted((data_root / "test").rglob("*.png"))[:32]
        ]
        buf = io.BytesIO()
        np.save(buf, np.stack(images), allow_pickle=False)
        batch = buf.getvalue()
        seconds = [_post(f"{url}/invocations", batch, "application/x-npy") for _ in range(30)]
        batch_rate = 32 / statistics.median(seconds)
        row("serve batch of 32 (npy)", batch_rate, "images/s")
        row("ratio batch / single-request throughput", batch_rate / (1000 / p50), "x")
    finally:
        server.terminate()
        server.wait(timeout=30)


def main() -> int:
    from infra.datasets import make_synthetic

    print(f"cv-mlops benchmarks ({os.cpu_count()} CPUs, python {sys.version.split()[0]})")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        info = make_synthetic(
            work / "data", classes=8, train_per_class=250, val_per_class=10, test_per_class=10
        )
        print("data")
        bench_data(info.root)
        print("train")
        bench_train()
        print("serve")
        bench_serve(work, info.root)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
