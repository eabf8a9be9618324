"""Dynamic batching: requests that arrive while the model is busy share its next forward pass.

One forward pass of 32 images costs far less than 32 passes of one (ResNet-18 on two cores: about
10 ms for one image, 150-180 ms for 32), so under load the endpoint's throughput is the batched one.

Stages, all on the event loop except the forward pass itself:
  submit   a request's decoded images and its settings join the queue and wait for their answer
  collect  the collector takes the oldest request, then every queued one that still fits in
           `max_size` images; while the batch is not full and more requests are expected, it waits
           for them, at most `max_wait` seconds after it started the batch. Expected are requests
           admitted and still on their way (reading or decoding their bodies), and, under a steady
           load, as many as the last batch held: closed-loop callers answered together send again
           together, but one at a time, and a batch started on the first of them would run one image
           and leave the rest for the next. With nobody on the way and a last batch no bigger, it
           never waits, so a lone caller pays no batching delay at all.
  run      the batch goes to the single inference thread in one call; the requests that arrive
           meanwhile queue up and form the next batch (so a busy model batches by itself, and
           `max_wait` only decides how long to wait for stragglers when it is idle)
  answer   each request's future gets its own slice of the results; when a batched call fails, each
           request is retried alone, so one request that breaks the model fails only itself

Each request learns its `queue` time (queued -> its pass starts in the inference thread) and its pass's
`infer` time, which the request log prints.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

# One request's part of a batch: its images and its settings (top_k, or detection options).
Work = tuple[list[np.ndarray], Any]
# Runs in the inference thread: the requests of one batch -> per request, its answers (one per image).
RunBatch = Callable[[Sequence[Work]], list[list[dict[str, Any]]]]


@dataclass
class _Request:
    images: list[np.ndarray]
    setting: Any
    answer: asyncio.Future[list[dict[str, Any]]] = field(repr=False)
    batch_images: int = 0  # images in the forward pass this request ran in (its own included)
    queued_at: float = field(default_factory=time.perf_counter)
    # perf_counter seconds: queued -> its pass started in the inference thread -> the pass ended there
    started_at: float = 0.0
    ended_at: float = 0.0


class Batcher:
    """Queue requests and run them in batches of at most `max_size` images on `executor`.

    `arriving` counts requests admitted but not yet submitted: a request takes an `Arrival` when it is
    admitted, submits through it, and closes it when it is done (whether it submitted or not).
    """

    def __init__(self, run_batch: RunBatch, executor: Executor, max_size: int, max_wait: float) -> None:
        if max_size < 1 or max_wait < 0:
            raise ValueError(f"need max_size >= 1 and max_wait >= 0, got {max_size} and {max_wait}")
        self.run_batch = run_batch
        self.executor = executor
        self.max_size = max_size
        self.max_wait = max_wait
        self.arriving = 0
        self.batches = 0  # forward-pass calls made, and the images they held: the mean batch size
        self.batched_images = 0
        self._recent = 0  # requests in the last batch: how many are likely on their way again soon
        self._queue: deque[_Request] = deque()
        self._wake = asyncio.Event()
        self._collector: asyncio.Task[None] | None = None

    def arrival(self) -> Arrival:
        """A request admitted: the collector may wait for it (up to `max_wait`) until it is closed."""
        return Arrival(self)

    def wake(self) -> None:
        self._wake.set()

    def enqueue(self, images: list[np.ndarray], setting: Any) -> _Request:
        """Queue a request; its `answer` future settles after its batch. Go through an `Arrival`."""
        loop = asyncio.get_running_loop()
        if self._collector is None or self._collector.done():
            self._collector = loop.create_task(self._collect(), name="batch-collector")
        request = _Request(images, setting, loop.create_future())
        self._queue.append(request)
        self._wake.set()
        return request

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            while not self._queue:
                self._wake.clear()
                await self._wake.wait()
            batch = [self._queue.popleft()]
            size = len(batch[0].images)
            deadline = loop.time() + self.max_wait
            while True:
                while self._queue and size + len(self._queue[0].images) <= self.max_size:
                    request = self._queue.popleft()
                    batch.append(request)
                    size += len(request.images)
                if size >= self.max_size or self._queue:
                    break  # full, or the next request does not fit
                if self.arriving <= 0 and len(batch) >= self._recent:
                    break  # nobody is on the way, and the last batch was no bigger: go now
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                self._wake.clear()
                try:
                    async with asyncio.timeout(remaining):
                        await self._wake.wait()
                except TimeoutError:
                    pass
            self._recent = len(batch)
            batch = [r for r in batch if not r.answer.done()]  # a caller may have gone (cancelled)
            if batch:
                await self._run(batch)

    async def _run(self, batch: list[_Request]) -> None:
        loop = asyncio.get_running_loop()
        work = [(r.images, r.setting) for r in batch]
        size = sum(len(r.images) for r in batch)
        self.batches += 1
        self.batched_images += size
        for request in batch:
            request.batch_images = size
        try:
            results = await loop.run_in_executor(self.executor, _timed, self.run_batch, work, batch)
        except Exception as exc:  # noqa: BLE001 - handed to the requests, which answer for it
            if len(batch) == 1:
                _settle(batch[0], exc=exc)
                return
            for request, one in zip(batch, work, strict=True):  # the one that breaks the model fails alone
                try:
                    alone = await loop.run_in_executor(
                        self.executor, _timed, self.run_batch, [one], [request]
                    )
                except Exception as alone_exc:  # noqa: BLE001
                    _settle(request, exc=alone_exc)
                else:
                    request.batch_images = len(request.images)
                    _settle(request, result=alone[0])
            return
        for request, result in zip(batch, results, strict=True):
            _settle(request, result=result)


def _timed(
    run_batch: RunBatch, work: Sequence[Work], batch: Sequence[_Request]
) -> list[list[dict[str, Any]]]:
    """`run_batch(work)` in the inference thread, noting on each request when its pass ran there."""
    started = time.perf_counter()
    try:
        return run_batch(work)
    finally:
        ended = time.perf_counter()
        for request in batch:
            request.started_at, request.ended_at = started, ended


class Arrival:
    def __init__(self, batcher: Batcher) -> None:
        self.batcher = batcher
        self.open = True
        self.batch_images = 0  # after `submit`: the size of the batch it ran in
        # After `submit`, in seconds: from queued to its pass starting in the inference thread (batching
        # wait, earlier passes, the thread switch), and that pass's own time there (shared by its batch).
        self.queue_seconds = 0.0
        self.infer_seconds = 0.0
        batcher.arriving += 1

    async def submit(self, images: list[np.ndarray], setting: Any) -> list[dict[str, Any]]:
        """The answers for `images` (one per image), computed in the next batch that has room."""
        if self.open:  # no await until the request is queued, so the collector never sees it missing
            self.open = False
            self.batcher.arriving -= 1
        request = self.batcher.enqueue(images, setting)
        try:
            return await request.answer
        finally:
            self.batch_images = request.batch_images
            if request.ended_at:
                self.queue_seconds = request.started_at - request.queued_at
                self.infer_seconds = request.ended_at - request.started_at

    def close(self) -> None:
        if self.open:
            self.open = False
            self.batcher.arriving -= 1
            self.batcher.wake()  # the collector may be waiting for this request


def _settle(
    request: _Request, result: list[dict[str, Any]] | None = None, exc: BaseException | None = None
) -> None:
    if request.answer.done():
        return
    if exc is not None:
        request.answer.set_exception(exc)
    else:
        assert result is not None
        request.answer.set_result(result)
