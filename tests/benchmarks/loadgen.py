"""A closed-loop HTTP/1.1 load generator that costs the server as little CPU as possible.

The client shares the machine's cores with the server it measures, so every cycle it spends is taken
from the server: no HTTP library, no per-request allocation of headers. Each of `concurrency`
keep-alive connections (an asyncio Protocol on a raw socket) sends a pre-built request, parses the
status line and Content-Length (or chunked framing) of the answer, and sends the next request at once.

Stages: connect all -> warm-up for `warmup` s (answers discarded) -> measure for `duration` s: requests
sent in the window are timed, answers completed in it are counted -> stop sending, wait for the last.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from tests.benchmarks.common import percentile


@dataclass
class LoadResult:
    concurrency: int
    seconds: float
    completed: int  # answers (any status) received inside the measured window
    latencies_ms: list[float] = field(repr=False)  # of requests sent inside the window, 200s only
    statuses: Counter[int] = field(default_factory=Counter)
    errors: int = 0  # connections lost mid-request
    client_cpu: float = 0.0  # share of one core this client used, warm-up included: taken from the server
    answered: int = 0  # every answer received, warm-up and the last in-flight ones included

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)

    @property
    def non_200(self) -> int:
        return sum(n for status, n in self.statuses.items() if status != 200) + self.errors

    @property
    def throughput(self) -> float:
        """200 answers per second inside the window."""
        return self.ok / self.seconds if self.seconds else 0.0

    @property
    def p50(self) -> float:
        return percentile(self.latencies_ms, 50)

    @property
    def p99(self) -> float:
        return percentile(self.latencies_ms, 99)

    def summary(self) -> dict[str, object]:
        return {
            "concurrency": self.concurrency,
            "seconds": round(self.seconds, 3),
            "requests_per_s": round(self.throughput, 2),
            "p50_ms": round(self.p50, 3),
            "p99_ms": round(self.p99, 3),
            "ok": self.ok,
            "non_200": self.non_200,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "connection_errors": self.errors,
            "timed_requests": len(self.latencies_ms),
            "client_cpu_share_of_one_core": round(self.client_cpu, 3),
        }


def build_request(host: str, port: int, path: str, body: bytes, content_type: str) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: {content_type}\r\n"
        f"Accept: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode("ascii") + body


class _Run:
    def __init__(self, requests: Sequence[bytes], warmup: float, duration: float) -> None:
        self.requests = itertools.cycle(requests)
        self.start = time.perf_counter()
        self.window_start = self.start + warmup
        self.window_end = self.window_start + duration
        self.latencies: list[float] = []
        self.statuses: Counter[int] = Counter()
        self.completed = 0
        self.answered_total = 0
        self.errors = 0
        self.open = 0
        self.finished: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def answered(self, conn: _Connection, status: int, sent_at: float) -> None:
        now = time.perf_counter()
        self.answered_total += 1
        if self.window_start <= now <= self.window_end:
            self.completed += 1
            self.statuses[status] += 1
        if sent_at >= self.window_start and sent_at < self.window_end and status == 200:
            self.latencies.append((now - sent_at) * 1000)
        if now < self.window_end:
            conn.send(next(self.requests))
        else:
            conn.close()

    def lost(self, in_flight: bool) -> None:
        if in_flight and time.perf_counter() < self.window_end:
            self.errors += 1
        self.open -= 1
        if self.open == 0 and not self.finished.done():
            self.finished.set_result(None)


class _Connection(asyncio.Protocol):
    def __init__(self, run: _Run) -> None:
        self.run = run
        self.buffer = bytearray()
        self.transport: asyncio.Transport | None = None
        self.sent_at = 0.0
        self.in_flight = False
        self.status = 0
        self.body_end: int | None = None  # index in `buffer` where the current answer ends
        self.chunked = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send(self, request: bytes) -> None:
        assert self.transport is not None
        self.in_flight = True
        self.sent_at = time.perf_counter()
        self.transport.write(request)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self._parse():
            self.in_flight = False
            self.run.answered(self, self.status, self.sent_at)

    def _parse(self) -> bool:
        """True when a whole answer is in the buffer (it is then removed from it)."""
        if self.body_end is None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return False
            head = bytes(self.buffer[:end]).lower()
            self.status = int(head[9:12])
            self.chunked = b"transfer-encoding: chunked" in head
            if self.chunked:
                del self.buffer[: end + 4]
                self.body_end = 0
            else:
                length, at = 0, head.find(b"content-length:")
                if at >= 0:
                    stop = head.find(b"\r\n", at)
                    length = int(head[at + 15 : stop if stop >= 0 else len(head)])
                self.body_end = end + 4 + length
        if self.chunked:
            return self._parse_chunks()
        if len(self.buffer) < self.body_end:
            return False
        del self.buffer[: self.body_end]
        self.body_end = None
        return True

    def _parse_chunks(self) -> bool:
        while True:
            line_end = self.buffer.find(b"\r\n")
            if line_end < 0:
                return False
            size = int(bytes(self.buffer[:line_end]).split(b";")[0], 16)
            if size == 0:
                if len(self.buffer) < line_end + 4:  # the terminating CRLF after the last chunk
                    return False
                del self.buffer[: line_end + 4]
                self.body_end = None
                return True
            if len(self.buffer) < line_end + 2 + size + 2:
                return False
            del self.buffer[: line_end + 2 + size + 2]

    def connection_lost(self, exc: Exception | None) -> None:
        self.run.lost(self.in_flight)


async def _load(
    host: str, port: int, requests: Sequence[bytes], concurrency: int, warmup: float, duration: float
) -> LoadResult:
    loop = asyncio.get_running_loop()
    cpu, wall = time.process_time(), time.perf_counter()
    run = _Run(requests, warmup, duration)
    connections = []
    for _ in range(concurrency):
        _transport, conn = await loop.create_connection(lambda: _Connection(run), host, port)
        connections.append(conn)
    run.open = len(connections)
    # The clock starts once every connection is open, so connecting is not counted as serving.
    run.start = time.perf_counter()
    run.window_start, run.window_end = run.start + warmup, run.start + warmup + duration
    for conn in connections:
        conn.send(next(run.requests))
    try:
        await asyncio.wait_for(run.finished, timeout=warmup + duration + 120)
    finally:
        for conn in connections:
            conn.close()
    cpu_share = (time.process_time() - cpu) / (time.perf_counter() - wall)
    return LoadResult(
        concurrency,
        duration,
        run.completed,
        run.latencies,
        run.statuses,
        run.errors,
        cpu_share,
        run.answered_total,
    )


def load(
    host: str, port: int, requests: Sequence[bytes], concurrency: int, *, warmup: float, duration: float
) -> LoadResult:
    """Closed-loop load: `concurrency` requests always in flight (a 503 or error counts, not retries)."""
    return asyncio.run(_load(host, port, requests, concurrency, warmup, duration))
