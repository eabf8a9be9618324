"""`python -m infra.local.front`: the local endpoint's front door, so a deploy or rollback never drops a
request.

It holds the endpoint port for as long as the endpoint exists and forwards each HTTP request to the
`python -m serve` process named in its upstream file (`{"port": N, "version": V}`, written atomically by
`infra.local.endpoint`). The file is read again whenever it changes, so a switch is one write: requests
that arrive after it go to the new version, the ones in flight finish where they started, and the old
server (SIGTERM: it stops accepting and finishes what it has) goes away only afterwards. A request that
meets the old server just as it stops accepting (connection refused or closed before any answer) is
sent again to the current upstream: an invocation is a pure function of its body, so that is safe.

A SageMaker endpoint needs none of this (its blue/green update shifts traffic behind a load balancer);
this is the same guarantee for the local platform.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from infra.local.files import write_json_atomic

# Hop-by-hop headers (RFC 9110 7.6.1) belong to one connection, not to the request or the answer.
_HOP = {
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "host",
    "content-length",
}
VERSION_HEADER = "X-Mlops-Version"  # which version answered, for the deploy's check after a switch
log = logging.getLogger("front")


@dataclass(frozen=True)
class Upstream:
    port: int
    version: int


class UpstreamFile:
    """The upstream file, re-read when it changes: a new inode (each write renames a new file into place)
    or a new modification time."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int] | None = None
        self._upstream: Upstream | None = None

    def current(self) -> Upstream | None:
        try:
            stat = self.path.stat()
        except FileNotFoundError:
            return None
        key = (stat.st_mtime_ns, stat.st_ino)
        if key != self._seen:
            try:
                data = json.loads(self.path.read_text())
                self._upstream = Upstream(int(data["port"]), int(data["version"]))
            except (OSError, ValueError, KeyError, TypeError):
                return self._upstream  # a torn read cannot happen (atomic rename); keep the last good one
            self._seen = key
        return self._upstream


def write_upstream(path: Path, port: int, version: int) -> None:
    """Point the front at another server: one atomic rename, picked up by the next request."""
    write_json_atomic(path, {"port": port, "version": version})


def create_app(upstreams: UpstreamFile, host: str) -> Starlette:
    client = httpx.AsyncClient(
        timeout=httpx.Timeout(120.0, connect=5.0), limits=httpx.Limits(max_keepalive_connections=32)
    )

    async def forward(request: Request) -> Response:
        body = await request.body()
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in _HOP]
        for attempt in (1, 2):
            upstream = upstreams.current()
            if upstream is None:
                return JSONResponse({"error": "the local endpoint has no server to forward to"}, 503)
            url = f"http://{host}:{upstream.port}{request.url.path}"
            try:
                answer = await client.request(
                    request.method, url, params=request.query_params, content=body, headers=headers
                )
            except (httpx.ConnectError, httpx.RemoteProtocolError) as exc:
                # The server went away as we reached it (a switch): the file names its successor.
                if attempt == 2 or upstreams.current() is None:
                    log.warning("no answer from v%d on port %d: %s", upstream.version, upstream.port, exc)
                    message = f"the server of v{upstream.version} did not answer: {type(exc).__name__}"
                    return JSONResponse({"error": message}, 502)
                continue
            except httpx.TimeoutException:
                return JSONResponse({"error": f"v{upstream.version} did not answer in time"}, 504)
            kept = {k: v for k, v in answer.headers.items() if k.lower() not in _HOP | {"content-encoding"}}
            kept[VERSION_HEADER] = str(upstream.version)
            return Response(answer.content, answer.status_code, headers=kept)
        raise AssertionError("unreachable")

    methods = ["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"]
    return Starlette(routes=[Route("/{path:path}", forward, methods=methods)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m infra.local.front",
        description="Hold the local endpoint's port and forward each request to the serving process "
        "named in the upstream file (zero-downtime switches).",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind and to reach servers on")
    parser.add_argument("--port", type=int, required=True, help="the endpoint port")
    parser.add_argument("--upstream-file", type=Path, required=True, help='{"port": N, "version": V}')
    args = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stdout, level=logging.INFO, format="%(asctime)s front %(message)s")
    config = uvicorn.Config(
        create_app(UpstreamFile(args.upstream_file), args.host),
        host=args.host,
        port=args.port,
        access_log=False,
        log_level="warning",
        lifespan="off",
        timeout_keep_alive=75,
    )
    server = uvicorn.Server(config)
    stopped: list[int] = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, _frame: stopped.append(signum))
    log.info("forwarding http://%s:%d to the server in %s", args.host, args.port, args.upstream_file)
    server.run()
    if not server.started:
        print(f"front: error: cannot listen on {args.host}:{args.port}", file=sys.stderr)
        return 3
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
