"""A bounded load test of `python -m serve`: a fixed number of requests in a fixed time, over more
keep-alive connections than the server admits at once, from a client cheap enough to share two cores.

Stages: start the real server (tiny classifier, one torch thread, a low admission limit and payload
cap) -> warm up with the first WARMUP requests and read the server's RSS -> send the rest -> read RSS
again -> check that every answer was a 200, a 400 for a corrupt body, a 413 for an oversized one or a
503 with Retry-After for load beyond the limit; that no connection broke; that the server still lives
and answers /ping; and that its memory stayed flat.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.factories import make_model_artifact, png_bytes
from tests.functional.test_serve_http import Server, launch, server_env, stop

pytestmark = pytest.mark.e2e

TOTAL = 10_000
WARMUP = 1_000
CONNECTIONS = 16
MAX_CONCURRENCY = 4  # well below CONNECTIONS, so the admission limit is exercised
MAX_PAYLOAD = 16 * 1024
TIME_BOUND_S = 120
# A 503 says Retry-After: 1; a client waiting that long would leave the limit idle, so the test waits a
# tenth of it: enough that shed connections do not spin, short enough that the limit stays full.
RETRY_PAUSE_S = 0.1
# RSS growth allowed between the warm-up and the end, 9,000 requests later. Measured on 2 shared cores:
# +0.1 to +0.2 MiB (of about 710 MiB, mostly torch); a leak injected into the app, 1 KiB per admitted
# request, added 8.4 MiB and failed this check.
RSS_MARGIN_BYTES = 6 * 1024 * 1024

# What each kind of body may be answered with: its own answer, or 503 when it came beyond the limit.
EXPECTED = {"valid": {200, 503}, "corrupt": {400, 503}, "oversized": {413, 503}}


@dataclass
class Tally:
    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    missing_retry_after: int = 0
    errors: list[str] = field(default_factory=list)

    def count(self, status: int) -> int:
        return sum(n for (_, got), n in self.statuses.items() if got == status)


def request_plan(count: int, start: int) -> list[str]:
    """Mostly valid images; one in twenty corrupt, one in twenty oversized, interleaved."""
    kinds = []
    for index in range(start, start + count):
        kinds.append("corrupt" if index % 20 == 7 else "oversized" if index % 20 == 13 else "valid")
    return kinds


def http_request(body: bytes, content_type: str = "image/png") -> bytes:
    head = (
        f"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
        f"Accept: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def build_requests() -> dict[str, list[bytes]]:
    valid = [http_request(png_bytes(seed=seed)) for seed in range(8)]
    corrupt = [
        http_request(b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 2),  # a PNG signature and garbage
        http_request(png_bytes(seed=99)[:-40]),  # a PNG cut before its end
    ]
    oversized = [http_request(png_bytes(seed=1) + bytes(MAX_PAYLOAD))]
    assert all(len(r) < MAX_PAYLOAD for r in valid + corrupt) and len(oversized[0]) > MAX_PAYLOAD
    return {"valid": valid, "corrupt": corrupt, "oversized": oversized}


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str]]:
    head = await reader.readuntil(b"\r\n\r\n")
    status_line, *lines = head.decode("latin1").split("\r\n")
    headers = {}
    for line in lines:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    await reader.readexactly(int(headers["content-length"]))
    return int(status_line.split()[1]), headers


async def drive(port: int, kinds: list[str], requests: dict[str, list[bytes]], tally: Tally) -> None:
    """Send every request in `kinds` over CONNECTIONS keep-alive connections, each sending its next
    request as soon as its last was answered (a closed loop)."""
    queue = iter(enumerate(kinds))

    async def connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for index, kind in queue:
                bodies = requests[kind]
                try:
                    # Runs of 20 share a body, so every variant of each kind is sent.
                    writer.write(bodies[index // 20 % len(bodies)])
                    await writer.drain()
                    status, headers = await read_response(reader)
                except (OSError, asyncio.IncompleteReadError) as exc:
                    tally.errors.append(f"request {index} ({kind}): {type(exc).__name__}: {exc}")
                    return
                tally.statuses[kind, status] += 1
                if status not in EXPECTED[kind]:
                    tally.unexpected.append(f"request {index} ({kind}): {status}")
                if headers.get("connection", "").lower() == "close":
                    tally.errors.append(f"request {index} ({kind}): server closed the connection")
                    return
                if status == 503:
                    tally.missing_retry_after += "retry-after" not in headers
                    await asyncio.sleep(RETRY_PAUSE_S)
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(CONNECTIONS)))


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for process {pid}")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    model_dir = tmp_path / "model"
    make_model_artifact(model_dir)
    env = server_env(
        MLOPS_TORCH_THREADS="1",
        MLOPS_MAX_CONCURRENCY=str(MAX_CONCURRENCY),
        MLOPS_MAX_PAYLOAD_BYTES=str(MAX_PAYLOAD),
    )
    running = launch(["--model-dir", str(model_dir), "--host", "127.0.0.1"], tmp_path, env)
    try:
        yield running
    finally:
        stop(running)


def test_ten_thousand_requests_get_only_deliberate_answers_and_memory_stays_flat(server: Server) -> None:
    port = int(server.url.rsplit(":", 1)[1])
    requests = build_requests()
    tally = Tally()
    started = time.monotonic()

    async def load() -> tuple[int, int]:
        async with asyncio.timeout(TIME_BOUND_S):
            await drive(port, request_plan(WARMUP, 0), requests, tally)
            after_warmup = rss_bytes(server.proc.pid)
            await drive(port, request_plan(TOTAL - WARMUP, WARMUP), requests, tally)
            return after_warmup, rss_bytes(server.proc.pid)

    try:
        rss_warm, rss_end = asyncio.run(load())
    except TimeoutError:
        pytest.fail(f"{TOTAL} requests took over {TIME_BOUND_S} s; answered so far: {dict(tally.statuses)}")
    elapsed = time.monotonic() - started
    summary = (
        f"{sum(tally.statuses.values())} answers in {elapsed:.1f} s: {dict(sorted(tally.statuses.items()))}; "
        f"RSS {rss_warm / 2**20:.1f} MiB after {WARMUP}, {rss_end / 2**20:.1f} MiB after {TOTAL}"
    )
    print(summary)

    assert tally.errors == [], summary
    assert tally.unexpected == [], summary
    assert sum(tally.statuses.values()) == TOTAL, summary
    assert tally.missing_retry_after == 0, summary
    # The limit was exercised, and still most requests were served.
    assert tally.count(503) > 0, summary
    assert tally.statuses["valid", 200] > TOTAL // 2, summary
    assert tally.statuses["corrupt", 400] > 0 and tally.statuses["oversized", 413] > 0, summary
    assert server.proc.poll() is None, server.log()
    assert httpx.get(f"{server.url}/ping", timeout=5).status_code == 200
    assert "Traceback" not in server.log(), server.log()[-4000:]
    assert rss_end - rss_warm < RSS_MARGIN_BYTES, summary
