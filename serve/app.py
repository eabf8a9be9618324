"""The HTTP side of the hosting contract: a Starlette app around a loaded Predictor.

Stages of one invocation: check Accept and top_k (cheap, on the event loop) -> read the body under a
byte cap (Content-Length first, then while streaming) -> decode and predict in the single inference
thread -> JSON. Every refusal is `{"error": ...}` with a 4xx status; a request log line wraps it all.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from serve.codecs import BadRequest, check_content_type, decode
from serve.predictor import Prediction, Predictor

CUSTOM_ATTRIBUTES = "X-Amzn-SageMaker-Custom-Attributes"
_JSON_ACCEPTS = {"application/json", "application/*", "*/*"}
log = logging.getLogger("serve.requests")


@dataclass(frozen=True)
class Limits:
    max_payload_bytes: int
    max_batch: int


def create_app(predictor: Predictor, executor: Executor, limits: Limits) -> ASGIApp:
    """`executor` must be the single thread that loaded `predictor`: inference only ever runs there."""
    default_top_k = min(5, predictor.num_classes)
    model_info = describe(predictor)

    async def ping(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def invocations(request: Request) -> Response:
        if not accepts_json(request.headers.get("accept")):
            accept = request.headers["accept"]
            raise BadRequest(406, f"cannot answer Accept: {accept}; responses are application/json")
        top_k = requested_top_k(
            request.query_params.get("top_k"),
            request.headers.get(CUSTOM_ATTRIBUTES),
            default=default_top_k,
            num_classes=predictor.num_classes,
        )
        content_type = check_content_type(request.headers.get("content-type"))
        body = await read_body(request, limits.max_payload_bytes)

        def infer() -> list[Prediction]:
            return predictor.predict(decode(content_type, body, limits.max_batch), top_k)

        try:
            predictions = await asyncio.get_running_loop().run_in_executor(executor, infer)
        except BadRequest:
            raise
        except Exception:  # a bug or a model failure must not take the endpoint down with it
            log.exception("inference failed")
            return JSONResponse({"error": "internal error during inference; see the server log"}, 500)
        request.state.images = len(predictions)
        return JSONResponse(
            {
                "predictions": [
                    {"top_k": [{"label": label, "probability": round(p, 6)} for label, p in ranked]}
                    for ranked in predictions
                ],
                "model": model_info,
            }
        )

    async def bad_request(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, BadRequest)
        return JSONResponse({"error": exc.message}, exc.status)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        message = f"{exc.detail}: {request.method} {request.url.path}"
        return JSONResponse({"error": message}, exc.status_code, headers=exc.headers)

    app = Starlette(
        routes=[Route("/ping", ping, methods=["GET"]), Route("/invocations", invocations, methods=["POST"])],
        exception_handlers={BadRequest: bad_request, HTTPException: http_error},
    )
    return RequestLog(app)


def describe(predictor: Predictor) -> dict[str, Any]:
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


def requested_top_k(query: str | None, attributes: str | None, *, default: int, num_classes: int) -> int:
    """top_k from the query string, else from SageMaker's custom attributes (`top_k=3,other=x`)."""
    raw = query if query is not None else _attribute(attributes or "", "top_k")
    if raw is None:
        return default
    try:
        top_k = int(raw.strip())
    except ValueError:
        raise BadRequest(400, f"top_k must be an integer, got {raw!r}") from None
    if not 1 <= top_k <= num_classes:
        raise BadRequest(400, f"top_k must be between 1 and {num_classes} (the class count), got {top_k}")
    return top_k


def _attribute(attributes: str, name: str) -> str | None:
    for pair in attributes.replace(";", ",").split(","):
        key, sep, value = pair.partition("=")
        if sep and key.strip().lower() == name:
            return value
    return None


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refused with 413 as soon as it is known to exceed `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise BadRequest(400, f"invalid Content-Length {declared!r}")
        if int(declared) > limit:
            raise BadRequest(413, f"payload of {int(declared)} bytes exceeds the limit of {limit} bytes")
    body = bytearray()
    # Chunked uploads carry no Content-Length, so the cap is also enforced as the bytes arrive.
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BadRequest(413, f"payload exceeds the limit of {limit} bytes")
    return bytes(body)


class RequestLog:
    """One stdout line per request: method, path, status, latency and number of images predicted."""

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
            log.info(
                "%s %s %d %.1fms images=%d",
                scope["method"],
                scope["path"],
                status,
                elapsed_ms,
                state.get("images", 0),
            )
