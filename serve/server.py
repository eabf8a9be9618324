"""`python -m serve [serve]`: the SageMaker hosting contract on uvicorn.

Stages: parse flags and environment -> start the single inference thread -> in it, set the thread
count for the cores this process may use, verify, load and warm the model, pick its memory layout (a
bad artifact ends the process here, before the port is bound) -> bind and serve until SIGTERM (requests
are batched dynamically, see serve/batching.py) -> stop accepting, finish in-flight requests, stop the
inference thread, exit 0.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import signal
import socket
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import uvicorn

from artifact.manifest import ArtifactError

if TYPE_CHECKING:
    from serve.predictor import Predictor
    from serve.yolo import Detector

DEFAULT_PORT = 8080
DEFAULT_MAX_PAYLOAD = 6 * 1024 * 1024  # SageMaker real-time endpoints refuse larger requests anyway
DEFAULT_MAX_BATCH = 64
DEFAULT_MAX_CONCURRENCY = 64
DEFAULT_MAX_DECODED_MB = 1024
DEFAULT_BATCH_SIZE = 32
DEFAULT_BATCH_WAIT_MS = 10
# serve.predictor.LAYOUTS, named here so that parsing flags does not import torch (a unit test ties them).
LAYOUTS = ("auto", "channels_last", "contiguous")

_EPILOG = f"""\
environment:
  SAGEMAKER_BASE_DIR       base of the SageMaker layout; the model is read from $SAGEMAKER_BASE_DIR/model
                           (default base: /opt/ml)
  SAGEMAKER_BIND_TO_PORT   port to listen on when --port is not given (default {DEFAULT_PORT})
  MLOPS_MAX_PAYLOAD_BYTES  largest request body, in bytes (default {DEFAULT_MAX_PAYLOAD}); larger -> 413
  MLOPS_MAX_BATCH          most images in one request (default {DEFAULT_MAX_BATCH}); more -> 400
  MLOPS_MAX_CONCURRENCY    invocations admitted at once (default {DEFAULT_MAX_CONCURRENCY}); more -> 503 with
                           Retry-After: 1, so memory stays bounded under overload and /ping stays healthy
  MLOPS_MAX_DECODED_MB     memory the images being decoded or waiting for the model may take, all
                           requests together, counted from their headers before decoding at 8 bytes a
                           pixel (default {DEFAULT_MAX_DECODED_MB}); an image that does not fit beside the
                           others -> 503 with Retry-After: 1, one larger than all of it -> 413
  MLOPS_BATCH_MAX_SIZE     most images in one forward pass of the dynamic batcher (default
                           {DEFAULT_BATCH_SIZE}); requests that arrive while the model is busy share its next
                           pass; 1 turns batching off
  MLOPS_BATCH_MAX_WAIT_MS  how long a batch may wait for requests on their way: being received or
                           decoded, or expected because the last batch held more (default
                           {DEFAULT_BATCH_WAIT_MS}); a lone caller never waits; 0: never wait
  MLOPS_TORCH_THREADS      intra-op threads for inference (default: the cores this process may use,
                           from its CPU affinity and cgroup quota, at most PyTorch's own choice); set 1
                           where the host's cores are shared: OpenMP threads that wait for a busy core
                           turn milliseconds into a hundred
  MLOPS_DECODE_THREADS     threads decoding request bodies off the event loop (default: min(4, cores))
  MLOPS_LAYOUT             a classifier's memory layout: auto (default: time both at startup, keep the
                           faster), channels_last or contiguous

endpoints:
  GET  /ping          200 {{"status": "ok"}} (the model is loaded before the port is bound)
  GET  /execution-parameters
                      batch transform's defaults: MaxConcurrentTransforms, BatchStrategy
                      (SINGLE_RECORD: one image per request), MaxPayloadInMB
  POST /invocations   image/png, image/jpeg, application/x-image, application/json
                      ({{"instances": [<base64 image>, ...]}}) or application/x-npy;
                      classification: top_k from ?top_k=N, "X-Amzn-SageMaker-Custom-Attributes: top_k=N"
                      or a JSON body's {{"parameters": {{"top_k": N}}}}
                      detection, segmentation: conf (0-1], iou (0-1], max_det [1-1000] the same ways,
                      e.g. ?conf=0.25&iou=0.7&max_det=100; Ultralytics runs offline from a private
                      config dir under the temp dir, set up at startup

exit status: 0 after SIGTERM or SIGINT, 1 when the model artifact fails verification or cannot
load, 2 on bad flags or environment values, 3 when the port cannot be bound.
"""


@dataclass(frozen=True)
class Settings:
    model_dir: Path
    host: str
    port: int
    max_payload_bytes: int
    max_batch: int
    torch_threads: int | None
    max_concurrency: int
    max_decoded_mb: int = DEFAULT_MAX_DECODED_MB
    batch_max_size: int = DEFAULT_BATCH_SIZE
    batch_max_wait_ms: int = DEFAULT_BATCH_WAIT_MS
    decode_threads: int | None = None
    layout: str = "auto"


def build_parser() -> argparse.ArgumentParser:
    base = Path(os.environ.get("SAGEMAKER_BASE_DIR") or "/opt/ml")
    parser = argparse.ArgumentParser(
        prog="python -m serve",
        description="Serve a verified model artifact over HTTP on the SageMaker hosting contract.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "command",
        nargs="?",
        choices=["serve"],
        default="serve",
        help="optional; SageMaker starts serving containers with the argument `serve`",
    )
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=base / "model",
        help="unpacked model artifact (default: $SAGEMAKER_BASE_DIR/model, now %(default)s)",
    )
    parser.add_argument(
        "--host",
        default="0.0.0.0",  # noqa: S104 - the container contract: reachable from outside the container
        help="address to bind (default: %(default)s, as SageMaker needs; use 127.0.0.1 locally)",
    )
    parser.add_argument(
        "--port", type=int, default=None, help=f"port (default: $SAGEMAKER_BIND_TO_PORT, else {DEFAULT_PORT})"
    )
    return parser


def parse_settings(argv: list[str] | None = None) -> Settings:
    """Flags first, then the environment; a bad value exits 2 with argparse's one-line usage error."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        port = args.port if args.port is not None else _env_int("SAGEMAKER_BIND_TO_PORT", DEFAULT_PORT, 0)
        settings = Settings(
            model_dir=args.model_dir,
            host=args.host,
            port=port,
            max_payload_bytes=_env_int("MLOPS_MAX_PAYLOAD_BYTES", DEFAULT_MAX_PAYLOAD, 1),
            max_batch=_env_int("MLOPS_MAX_BATCH", DEFAULT_MAX_BATCH, 1),
            torch_threads=_env_int("MLOPS_TORCH_THREADS", 0, 1) or None,
            max_concurrency=_env_int("MLOPS_MAX_CONCURRENCY", DEFAULT_MAX_CONCURRENCY, 1),
            max_decoded_mb=_env_int("MLOPS_MAX_DECODED_MB", DEFAULT_MAX_DECODED_MB, 1),
            batch_max_size=_env_int("MLOPS_BATCH_MAX_SIZE", DEFAULT_BATCH_SIZE, 1),
            batch_max_wait_ms=_env_int("MLOPS_BATCH_MAX_WAIT_MS", DEFAULT_BATCH_WAIT_MS, 0),
            decode_threads=_env_int("MLOPS_DECODE_THREADS", 0, 1) or None,
            layout=_env_choice("MLOPS_LAYOUT", "auto", LAYOUTS),
        )
    except ValueError as exc:
        parser.error(str(exc))
    if not 0 <= settings.port <= 65535:
        parser.error(f"port {settings.port} is out of range 0-65535")
    return settings


def main(argv: list[str] | None = None) -> int:
    settings = parse_settings(argv)
    if not settings.model_dir.is_dir():
        return _fail(f"model directory {settings.model_dir} does not exist (see --model-dir)")
    _configure_logging()
    # One thread builds, warms and runs the model (see predictor.py on OpenMP pools).
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
    decoders = ThreadPoolExecutor(
        max_workers=settings.decode_threads or min(4, available_cores()), thread_name_prefix="decode"
    )
    try:
        try:
            predictor, threads = executor.submit(_load, settings).result()
        except ArtifactError as exc:
            return _fail(str(exc))
        except Exception as exc:  # noqa: BLE001 - any load failure is one line for the operator
            return _fail(f"cannot load the model from {settings.model_dir}: {type(exc).__name__}: {exc}")
        return _serve(predictor, executor, decoders, settings, threads)
    finally:
        executor.shutdown(wait=True, cancel_futures=True)
        decoders.shutdown(wait=True, cancel_futures=True)


def available_cores() -> int:
    """The CPUs this process may run on: its affinity mask, capped by a cgroup CPU quota.

    A container limited to 2 CPUs on a 64-core host still sees 64 in os.cpu_count(), and 64 OpenMP
    threads time-sliced onto 2 CPUs run a forward pass many times slower than 2 threads do."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    quota = _cgroup_cpu_quota()
    return max(1, min(cores, quota)) if quota else cores


def _cgroup_cpu_quota() -> int | None:
    try:  # cgroup v2: "<quota> <period>" or "max <period>"
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        return None if quota == "max" else math.ceil(int(quota) / int(period))
    except (OSError, ValueError):
        pass
    try:  # cgroup v1: quota -1 means unlimited
        quota_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period_us = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        return math.ceil(quota_us / period_us) if quota_us > 0 and period_us > 0 else None
    except (OSError, ValueError):
        return None


def _load(settings: Settings) -> tuple[Predictor | Detector, int]:
    import torch

    from serve import codecs
    from serve import predictor as loader

    torch.set_num_threads(settings.torch_threads or min(torch.get_num_threads(), available_cores()))
    predictor = loader.load(settings.model_dir)
    if isinstance(predictor, loader.Predictor):
        predictor.use_layout(settings.layout)
    codecs.warm_up()
    return predictor, torch.get_num_threads()


def _serve(
    predictor: Predictor | Detector,
    executor: ThreadPoolExecutor,
    decoders: ThreadPoolExecutor,
    settings: Settings,
    threads: int,
) -> int:
    from serve.app import Batching, Executors, Limits, create_app

    limits = Limits(
        max_payload_bytes=settings.max_payload_bytes,
        max_batch=settings.max_batch,
        max_concurrency=settings.max_concurrency,
        max_decoded_bytes=settings.max_decoded_mb * 1024 * 1024,
    )
    batching = Batching(max_size=settings.batch_max_size, max_wait=settings.batch_max_wait_ms / 1000)
    config = uvicorn.Config(
        create_app(predictor, Executors(inference=executor, decode=decoders), limits, batching),
        host=settings.host,
        port=settings.port,
        access_log=False,
        log_level="warning",
        lifespan="off",
        # Outlive a front end's 60 s idle timeout so it never reuses a connection we have just closed.
        timeout_keep_alive=75,
    )
    manifest = predictor.manifest
    layout = getattr(predictor, "layout", None)
    logging.getLogger("serve").info(
        "verified and warmed %s (weights sha256 %s); inference on %d torch thread%s%s; batches of up to "
        "%d images, waiting up to %d ms for requests on their way",
        manifest.architecture,
        manifest.files.get(manifest.weights, "")[:12],
        threads,
        "" if threads == 1 else "s",
        f", {layout} layout" if layout else "",
        batching.max_size,
        settings.batch_max_wait_ms,
    )
    banner = f"serving {manifest.architecture} ({predictor.num_classes} classes) from {settings.model_dir}"
    server = _Server(config, banner)
    stopped_by: list[int] = []
    if threading.current_thread() is threading.main_thread():
        # uvicorn re-raises the signal that stopped it once it has shut down: note it rather than die
        # by it, so a requested stop exits 0 after the inference thread has finished.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda signum, _frame: stopped_by.append(signum))
    server.run()
    reason = f" by {signal.Signals(stopped_by[0]).name}" if stopped_by else ""
    logging.getLogger("serve").info("stopped%s after %d requests", reason, server.server_state.total_requests)
    return 0


class _Server(uvicorn.Server):
    """uvicorn's server, announcing the address it actually bound (port 0 picks a free one)."""

    def __init__(self, config: uvicorn.Config, banner: str) -> None:
        super().__init__(config)
        self.banner = banner

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started:
            host, port = self.servers[0].sockets[0].getsockname()[:2]
            logging.getLogger("serve").info("%s on http://%s:%d", self.banner, host, port)


def _fail(message: str) -> int:
    print(f"serve: error: {' '.join(message.split())}", file=sys.stderr)
    return 1


def _env_int(name: str, default: int, minimum: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < minimum:
        raise ValueError(f"{name}={raw!r} must be an integer >= {minimum}")
    return int(raw)


def _env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = os.environ.get(name, "").strip().lower()
    if not raw:
        return default
    if raw not in choices:
        raise ValueError(f"{name}={raw!r} must be one of {', '.join(choices)}")
    return raw


def _configure_logging() -> None:
    # Request lines and the ready banner go to stdout, where SageMaker ships them to CloudWatch.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    logger = logging.getLogger("serve")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
