"""The HTTP side of the hosting contract: a Starlette app around a loaded Predictor.

Stages of one invocation: admit it or answer 503 (at most `max_concurrency` in progress) -> check
Accept and the settings in the query and headers (cheap, on the event loop) -> read the body under a
byte cap (Content-Length first, then while streaming) -> decode it and add a JSON body's settings (on
the loop when the body is small, in the decode threads otherwise) -> join the dynamic batcher
(serve/batching.py), which runs the model in the single inference thread -> JSON. Every refusal is
`{"error": ...}` with a 4xx status (503 when overloaded); a request log line wraps it all.

Both task families answer `{"predictions": [one per image], "model": {...}}`: a classifier's
prediction holds `top_k`, a detector's `boxes` (each with a `polygon` for segmentation).
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve.batching import Arrival, Batcher, Work
from serve.codecs import BadRequest, cheap_to_decode, check_content_type, decode_request
from serve.options import (
    CLASSIFY_SETTINGS,
    DETECT_SETTINGS,
    check_parameters,
    custom_attributes,
    requested_detect_options,
    requested_top_k,
)
from serve.predictor import Prediction, Predictor
from serve.yolo import Detection, DetectOptions, Detector

CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
_JSON_ACCEPTS = {"application/json", "application/*", "*/*"}
log = logging.getLogger("serve.requests")
# Small images are decoded on the event loop: a 32x32 PNG takes about 0.07 ms, less than the two thread
# switches of sending it to a decode thread, and doing so raised smallcnn's throughput at concurrency 32
# by a third (1,023 -> 1,407 requests/s on two cores). Larger ones (a 640 px JPEG takes milliseconds),
# and small bodies whose header declares many pixels, go to the decode threads, so the loop keeps
# reading other requests meanwhile.
INLINE_DECODE_BYTES = 64 * 1024
INLINE_DECODE_PIXELS = 256 * 256


@dataclass(frozen=True)
class Limits:
    max_payload_bytes: int
    max_batch: int
    max_concurrency: int  # invocations admitted at once; more are answered 503 with Retry-After
    # Memory of the images being decoded or waiting for the model, all requests together (DecodeBudget).
    max_decoded_bytes: int = 1024 * 1024 * 1024


class DecodeBudget:
    """The memory that decoded images in flight may take, all requests together.

    A small body can declare a huge image (a 50 KB PNG of 4096x4096 pixels decodes to 50 MB), so the
    concurrency limit alone bounds memory only at `max_concurrency` such images. Each image reserves its
    decoding memory (serve.codecs.DECODE_BYTES_PER_PIXEL per pixel) once its header is read and before it
    is decoded; the request gives it back when it is answered. An image larger than the whole budget is
    refused with 413 (it could never be decoded); one that does not fit beside the others, with 503 and
    Retry-After. Reserved from the event loop and the decode threads, hence the lock."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self._lock = threading.Lock()

    def reserve(self, nbytes: int) -> None:
        if nbytes > self.limit:
            raise BadRequest(
                413,
                f"image needs about {_mb(nbytes)} MB to decode, more than the server's whole budget of "
                f"{_mb(self.limit)} MB for decoded images (MLOPS_MAX_DECODED_MB)",
            )
        with self._lock:
            if self.used + nbytes > self.limit:
                message = (
                    f"overloaded: images in flight hold {_mb(self.used)} of {_mb(self.limit)} MB of decoding "
                    f"memory, this one needs {_mb(nbytes)} MB; retry after 1 s"
                )
                raise BadRequest(503, message, {"Retry-After": "1"})
            self.used += nbytes

    def release(self, nbytes: int) -> None:
        with self._lock:
            self.used -= nbytes

    def hold(self) -> Hold:
        return Hold(self)


class Hold:
    """One request's reservations, given back together when it is answered (`release`)."""

    def __init__(self, budget: DecodeBudget) -> None:
        self.budget = budget
        self.held = 0

    def reserve(self, nbytes: int) -> None:
        self.budget.reserve(nbytes)
        self.held += nbytes

    def release(self) -> None:
        self.budget.release(self.held)
        self.held = 0


def _mb(nbytes: int) -> str:
    return f"{nbytes / (1024 * 1024):.1f}"


@dataclass(frozen=True)
class Batching:
    max_size: int = 32  # images in one forward pass; 1 turns batching off
    max_wait: float = 0.010  # seconds a batch may wait for requests on their way (serve/batching.py)


@dataclass(frozen=True)
class Executors:
    inference: Executor  # the single thread that loaded the model: inference only ever runs there
    decode: Executor | None = field(default=None)  # image decoding, off the event loop; None: inference's


def create_app(
    predictor: Predictor | Detector, executors: Executors, limits: Limits, batching: Batching | None = None
) -> ASGIApp:
    model_info = describe(predictor)
    task = _Detect(predictor) if isinstance(predictor, Detector) else _Classify(predictor)
    batching = batching or Batching()
    batcher = Batcher(task.run, executors.inference, batching.max_size, batching.max_wait)
    decode_pool = executors.decode or executors.inference
    admitted = 0  # invocations between admission and their answer (the event loop's thread only)
    budget = DecodeBudget(limits.max_decoded_bytes)

    async def execution_parameters(request: Request) -> Response:
        # Batch transform asks once, when its job leaves these unset: one image object per request, as
        # many in flight as keep the inference thread busy without queueing past the admission limit.
        return JSONResponse(
            {
                "MaxConcurrentTransforms": min(limits.max_concurrency, max(2, os.cpu_count() or 1)),
                "BatchStrategy": "SINGLE_RECORD",
                "MaxPayloadInMB": max(1, limits.max_payload_bytes // (1024 * 1024)),
            }
        )

    async def invocations(request: Request) -> Response:
        nonlocal admitted
        if admitted >= limits.max_concurrency:
            # Shed load instead of queueing without bound; /ping stays cheap and healthy meanwhile.
            headers = {"Retry-After": "1", **await _drain(request)}
            message = f"overloaded: {limits.max_concurrency} requests in progress; retry after 1 s"
            raise BadRequest(503, message, headers)
        admitted += 1
        arrival = batcher.arrival()
        hold = budget.hold()
        try:
            return await _invoke(request, arrival, hold)
        finally:
            admitted -= 1
            arrival.close()
            hold.release()

    async def _invoke(request: Request, arrival: Arrival, hold: Hold) -> Response:
        if not accepts_json(request.headers.get("accept")):
            accept = request.headers["accept"]
            raise BadRequest(406, f"cannot answer Accept: {accept}; responses are application/json")
        try:
            attributes = custom_attributes(request.headers.get(CUSTOM_ATTRIBUTES))
            sources: Sources = [request.query_params, attributes]
            task.settings(sources)  # refuse a bad setting before reading a body it would be wasted on
            content_type = check_content_type(request.headers.get("content-type"))
            body = await read_body(request, limits.max_payload_bytes)

            read_at = time.perf_counter()
            images, setting = await _decode(
                content_type, body, task, sources, max_images=limits.max_batch, pool=decode_pool, hold=hold
            )
            request.state.stages = {"decode": time.perf_counter() - read_at}
            predictions = await arrival.submit(images, setting)
            request.state.stages.update(queue=arrival.queue_seconds, infer=arrival.infer_seconds)
        except BadRequest:
            raise
        except Exception:  # a bug or a model failure must not take the endpoint down with it
            log.exception("inference failed")
            return JSONResponse({"error": "internal error during inference; see the server log"}, 500)
        request.state.images = len(predictions)
        request.state.batch = arrival.batch_images
        return JSONResponse({"predictions": predictions, "model": model_info})

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        message = f"{exc.detail}: {request.method} {request.url.path}"
        return JSONResponse({"error": message}, exc.status_code, headers=exc.headers)

    app = Starlette(
        routes=[
            Route("/ping", _ping, methods=["GET"]),
            Route("/execution-parameters", execution_parameters, methods=["GET"]),
            Route("/invocations", invocations, methods=["POST"]),
        ],
        exception_handlers={BadRequest: _bad_request, HTTPException: http_error},
    )
    return RequestLog(app)


async def _ping(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def _bad_request(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, BadRequest)
    return JSONResponse({"error": exc.message}, exc.status, headers=exc.headers)


Sources = list[Mapping[str, Any]]  # where per-request settings are looked up, first wins


async def _decode(
    content_type: str,
    body: bytes,
    task: _Classify | _Detect,
    sources: Sources,
    *,
    max_images: int,
    pool: Executor,
    hold: Hold,
) -> tuple[list[np.ndarray], Any]:
    """The images and the request's setting (top_k or detection options), with a JSON body's own; each
    image's decoding memory is reserved in `hold` first."""

    def decode() -> tuple[list[np.ndarray], Any]:
        images, parameters = decode_request(content_type, body, max_images, hold.reserve)
        check_parameters(parameters, task.accepted)
        return images, task.settings([*sources, parameters])

    if len(body) <= INLINE_DECODE_BYTES and cheap_to_decode(content_type, body, INLINE_DECODE_PIXELS):
        return decode()
    return await asyncio.get_running_loop().run_in_executor(pool, decode)


class _Classify:
    accepted = CLASSIFY_SETTINGS

    def __init__(self, predictor: Predictor) -> None:
        self.predictor = predictor
        self.default_top_k = min(5, predictor.num_classes)

    def settings(self, sources: Sources) -> int:
        return requested_top_k(sources, default=self.default_top_k, num_classes=self.predictor.num_classes)

    def run(self, work: Sequence[Work]) -> list[list[dict[str, Any]]]:
        """One forward pass for every request's images, at the largest top_k any of them asked for."""
        images = [image for request_images, _ in work for image in request_images]
        ranked = self.predictor.predict(images, max(top_k for _, top_k in work))
        answers, start = [], 0
        for request_images, top_k in work:
            answers.append([_ranked(p[:top_k]) for p in ranked[start : start + len(request_images)]])
            start += len(request_images)
        return answers


class _Detect:
    accepted = DETECT_SETTINGS

    def __init__(self, detector: Detector) -> None:
        self.detector = detector

    def settings(self, sources: Sources) -> DetectOptions:
        return requested_detect_options(sources)

    def run(self, work: Sequence[Work]) -> list[list[dict[str, Any]]]:
        """One predict call per distinct set of options (conf, iou, max_det), in request order."""
        classes = self.detector.classes
        answers: list[list[dict[str, Any]]] = [[] for _ in work]
        groups: dict[DetectOptions, list[int]] = {}
        for index, (_, options) in enumerate(work):
            groups.setdefault(options, []).append(index)
        for options, members in groups.items():
            images = [image for index in members for image in work[index][0]]
            detections = iter(self.detector.predict(images, options))
            for index in members:
                answers[index] = [
                    {"boxes": [_box(d, classes) for d in next(detections)]} for _ in work[index][0]
                ]
        return answers


def _ranked(prediction: Prediction) -> dict[str, Any]:
    return {"top_k": [{"label": label, "probability": round(p, 6)} for label, p in prediction]}


def _box(detection: Detection, classes: list[str]) -> dict[str, Any]:
    box: dict[str, Any] = {
        "box": list(detection.box),
        "score": detection.score,
        "label": classes[detection.class_id],
        "class_id": detection.class_id,
    }
    if detection.polygon is not None:
        box["polygon"] = [list(point) for point in detection.polygon]
    return box


def describe(predictor: Predictor | Detector) -> dict[str, Any]:
    """What every response says about the model, so a caller can tell which deployment answered."""
    manifest = predictor.manifest
    info: dict[str, Any] = {
        "task": manifest.task,
        "architecture": manifest.architecture,
        "code_version": manifest.code_version,
        # The weights' own sha256 names this exact model whatever registry it came through.
        "version": manifest.files.get(manifest.weights, "")[:12],
        "num_classes": predictor.num_classes,
        "created_at": manifest.created_at,
    }
    if manifest.wandb:
        # The run's identity, not the training host's file paths: answers reach any client.
        info["wandb"] = {k: manifest.wandb[k] for k in ("id", "project", "url") if manifest.wandb.get(k)}
    return info


def accepts_json(accept: str | None) -> bool:
    if not accept or not accept.strip():
        return True
    return any(part.split(";", 1)[0].strip().lower() in _JSON_ACCEPTS for part in accept.split(","))


DRAIN_SECONDS = 30.0  # how long an oversized body is read and discarded so its sender sees the 413


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 once it is known to exceed `limit` bytes.

    The refusal must reach the client: a server that answers and closes while the client is still
    sending leaves unread bytes in its socket, the kernel resets the connection, and the client sees
    "connection reset" instead of the 413 (urllib, requests and most SDKs send the whole body before
    they read a response). So the rest of the body is read and thrown away, up to DRAIN_SECONDS, memory
    staying flat; a client that sent `Expect: 100-continue` is answered at once instead, before it sends
    the body at all."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise BadRequest(400, f"invalid Content-Length {declared!r}")
        if int(declared) > limit:
            message = f"payload of {int(declared)} bytes exceeds the limit of {limit} bytes"
            if "100-continue" in request.headers.get("expect", "").lower():
                raise BadRequest(413, message, {"Connection": "close"})
            raise BadRequest(413, message, await _drain(request))
    body = bytearray()
    # Chunked uploads carry no Content-Length, so the cap is also enforced as the bytes arrive.
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            del body[:]
            raise BadRequest(413, f"payload exceeds the limit of {limit} bytes", await _drain(request))
    return bytes(body)


async def _drain(request: Request) -> dict[str, str]:
    """Read the rest of the body and discard it; the headers the refusal is sent with."""
    try:
        async with asyncio.timeout(DRAIN_SECONDS):
            async for _chunk in request.stream():
                pass
    except TimeoutError:
        return {"Connection": "close"}  # still sending after DRAIN_SECONDS: answer and hang up
    return {}


class RequestLog:
    """One stdout line per request: method, path, status, latency, number of images predicted, the
    images in the forward pass they shared (batch=), and where an invocation's time went: decoding its
    body (decode=), waiting from the queue to its pass starting in the inference thread (queue=: the
    batching wait, earlier passes, the thread switch) and that pass (infer=). The rest of the latency is
    reading the request, answering it and the switch back to the event loop."""

    def __init__(self, app: ASGIApp, clock: Callable[[], float] = time.perf_counter) -> None:
        self.app = app
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = self.clock()
        state = scope.setdefault("state", {})  # where the handler's request.state.images lands
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            elapsed_ms = (self.clock() - start) * 1000
            stages = state.get("stages", {})
            log.info(
                "%s %s %d %.1fms images=%d%s%s",
                scope["method"],
                scope["path"],
                status,
                elapsed_ms,
                state.get("images", 0),
                f" batch={state['batch']}" if state.get("batch") else "",
                "".join(f" {name}={seconds * 1000:.2f}ms" for name, seconds in stages.items()),
            )
