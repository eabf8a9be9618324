"""Batch transform on this machine: the serve program SageMaker would run, scoring a folder of images.

Stages of `run`:
  1. find the images under the folder (recursively; .png .jpg .jpeg), the other files listed as skipped;
  2. start `python -m serve` on a free 127.0.0.1 port with the version's model dir, and wait for /ping
     (the local endpoint's own launch and readiness wait);
  3. GET /execution-parameters: MaxConcurrentTransforms is the default number of requests in flight, as
     SageMaker's batch transform would use it;
  4. POST each image to /invocations, at most `concurrency` at a time, reporting progress every few
     seconds. A refused image (a corrupt file: 400) becomes an error line and the run goes on; a server
     that dies mid-run ends it;
  5. stop the server, whatever happened (an error, Ctrl-C, SIGTERM).
The lines come back sorted by path; writing them is the caller's (`infra.batch.write_jsonl_atomic`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.batch import BatchSummary, failed, from_answer, is_image
from infra.concurrency import cancelling_pool
from infra.errors import DeployFailed, MlopsError, UsageError
from infra.local import process
from infra.local.endpoint import LocalEndpoint, http
from infra.smoke import IMAGE_TYPES

HOST = "127.0.0.1"
PROGRESS_SECONDS = 3.0
# The serve program answers 503 with Retry-After when more requests arrive than it admits (a
# --concurrency above its MLOPS_MAX_CONCURRENCY): wait and send again, a few times.
OVERLOAD_RETRIES = 5
REQUEST_TIMEOUT = 120.0

Progress = Callable[[int, int, float], None]  # (done, total, seconds so far)


@dataclass
class Images:
    root: Path
    images: list[Path]  # relative to root, sorted
    skipped: list[Path]  # relative to root, sorted: files that are not images


def find_images(root: Path) -> Images:
    if not root.is_dir():
        raise UsageError(f"--input {root} is not a directory")
    files = sorted(p.relative_to(root) for p in root.rglob("*") if p.is_file())
    images = [p for p in files if is_image(p.name)]
    skipped = [p for p in files if not is_image(p.name)]
    return Images(root, images, skipped)


class ServerGone(MlopsError):
    """The serve program exited during the run."""


def run(
    model_dir: Path,
    found: Images,
    *,
    version: int,
    workdir: Path,
    concurrency: int | None = None,
    on_progress: Progress | None = None,
    on_event: Callable[[str], None] = print,
) -> BatchSummary:
    """Score every image in `found` with the serve program on `model_dir`; the server is always stopped."""
    if not found.images:
        raise UsageError(f"no images (.png, .jpg, .jpeg) under {found.root}")
    endpoint = LocalEndpoint(workdir, HOST, 0)
    port = process.free_port(HOST)
    log = workdir / "logs" / f"v{version}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    # The local endpoint's own start and readiness wait, taken apart so that the pid is known before the
    # wait: a Ctrl-C while the model loads must stop the server too.
    pid = endpoint.start_server(model_dir, port, log)
    url = endpoint.url(port)
    try:
        try:
            endpoint.wait_ready(pid, port, log)
        except DeployFailed as exc:
            raise MlopsError(f"the serve program did not start on v{version}: {exc}") from None
        on_event(f"serving v{version} on {url} (log {log})")
        if concurrency is None:
            concurrency = _default_concurrency(url)
            on_event(f"{concurrency} requests in flight (MaxConcurrentTransforms of /execution-parameters)")
        started = time.monotonic()
        records = _score(url, found, concurrency, pid, log, started, on_progress)
        return BatchSummary(records, time.monotonic() - started, [str(p) for p in found.skipped])
    finally:
        process.terminate(pid)


def _default_concurrency(url: str) -> int:
    status, answer = http(f"{url}/execution-parameters", timeout=10)
    value = answer.get("MaxConcurrentTransforms") if status == 200 else None
    if not isinstance(value, int) or value < 1:
        raise MlopsError(f"GET /execution-parameters answered {status} {answer}: no MaxConcurrentTransforms")
    return value


def _score(  # noqa: PLR0917 -- one run's state, passed once
    url: str,
    found: Images,
    concurrency: int,
    pid: int,
    log: Path,
    started: float,
    on_progress: Progress | None,
) -> list[dict[str, Any]]:
    total = len(found.images)
    results: dict[Path, dict[str, Any]] = {}
    # The pool's workers bound the requests in flight; each reads its file only when it runs.
    with cancelling_pool(concurrency, "batch") as pool:
        pending: set[Future[tuple[Path, dict[str, Any]]]] = {
            pool.submit(_send, url, found.root, image) for image in found.images
        }
        last = started
        while pending:
            done, pending = wait(pending, timeout=PROGRESS_SECONDS, return_when=FIRST_COMPLETED)
            for future in done:
                image, record = future.result()
                if record.get("status") is None and "error" in record and _exited(pid):
                    raise ServerGone(f"the serve program exited during the run: {process.tail(log)}")
                results[image] = record
            now = time.monotonic()
            if on_progress is not None and (now - last >= PROGRESS_SECONDS or not pending):
                last = now
                on_progress(len(results), total, now - started)
    return [results[image] for image in found.images]


def _exited(pid: int, grace: float = 2.0) -> bool:
    """Whether the server has exited. A killed process refuses connections before the kernel has
    finished tearing it down, so a refusal waits a moment for its exit to show."""
    deadline = time.monotonic() + grace
    while process.alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _send(url: str, root: Path, image: Path) -> tuple[Path, dict[str, Any]]:
    name = image.as_posix()
    try:
        body = (root / image).read_bytes()
    except OSError as exc:
        return image, failed(name, f"cannot read the file: {exc.strerror or exc}", None)
    content_type = IMAGE_TYPES[image.suffix.lower()]
    for _attempt in range(OVERLOAD_RETRIES + 1):
        try:
            status, answer = http(f"{url}/invocations", body, content_type, timeout=REQUEST_TIMEOUT)
        except OSError as exc:  # refused, reset, timed out: the caller checks whether the server lives
            return image, failed(name, f"no answer from the serve program: {exc}", None)
        except ValueError:
            return image, failed(name, "the serve program answered with a body that is not JSON", 200)
        if status != 503:
            return image, from_answer(name, status, answer)
        time.sleep(1.0)
    return image, from_answer(name, status, answer)
