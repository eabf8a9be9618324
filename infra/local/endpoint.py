"""The local endpoint: `python -m serve` in the background behind a front door, deployed with a guarded,
zero-downtime switch.

The endpoint port belongs to the front (`infra.local.front`), which forwards each request to the serving
process its upstream file names. deploy(version):
  1. start the candidate on a scratch port and wait for GET /ping (the hosting contract's health check);
  2. smoke-test it with held-out test images over real HTTP;
  3. only then switch: point the front at it (one atomic write; the front starts on the first deploy),
     check it through the endpoint port, and only then stop the old server, which finishes its
     in-flight requests: a client calling in a loop sees no refused connection and no error;
  4. if anything fails, the front goes back to the previous server (still running), the candidate is
     stopped, and the deploy reports failure.

State (`<home>/endpoint/state.json`): version, pid and port of the serving process, the front's pid and
the endpoint URL, model dir, log paths.
"""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from infra.errors import DeployFailed, UsageError
from infra.local import process
from infra.local.files import read_json, write_json_atomic
from infra.local.front import write_upstream
from infra.platform import EndpointStatus
from infra.smoke import Sample, Send, smoke_test

READY_TIMEOUT = 90.0
FRONT_MODULE = "infra.local.front"


def http(
    url: str, body: bytes | None = None, content_type: str | None = None, timeout: float = 60.0
) -> tuple[int, dict[str, Any]]:
    # Only http URLs we build ourselves (the endpoint state) reach here, never user-given schemes.
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")  # noqa: S310
    if content_type:
        request.add_header("Content-Type", content_type)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310 -- see above
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as exc:
        try:
            payload = json.loads(exc.read() or b"{}")
        except json.JSONDecodeError:
            payload = {"error": exc.reason}
        return exc.code, payload


def http_sender(url: str) -> Send:
    return lambda body, content_type: http(f"{url}/invocations", body, content_type)


def serve_command(model_dir: Path, host: str, port: int) -> list[str]:
    """The hosting contract's entry point, as the container runs it (`serve`), on a local model dir."""
    return [
        sys.executable,
        "-m",
        "serve",
        "serve",
        "--model-dir",
        str(model_dir),
        "--host",
        host,
        "--port",
        str(port),
    ]


class LocalEndpoint:
    def __init__(self, root: Path, host: str, port: int) -> None:
        self.root = root
        self.host = host
        self.port = port
        self.state_path = root / "state.json"

    def url(self, port: int | None = None) -> str:
        return f"http://{self.host}:{port or self.port}"

    def state(self) -> dict[str, Any] | None:
        data: dict[str, Any] | None = read_json(self.state_path, None)
        return data

    def status(self) -> EndpointStatus:
        state = self.state()
        if state is None:
            return EndpointStatus(
                False, False, None, None, detail="no local endpoint; deploy a version first"
            )
        running = process.alive(state["pid"]) and process.is_serve_process(state["pid"])
        running = running and self._front_alive(state)
        healthy = False
        if running:
            try:
                healthy = http(f"{state['url']}/ping", timeout=2)[0] == 200
            except OSError:
                healthy = False
        detail = "serving" if healthy else ("not answering /ping" if running else "process is not running")
        return EndpointStatus(
            running, healthy, state["version"], state["url"], state["pid"], Path(state["log"]), detail
        )

    def start_server(self, model_dir: Path, port: int, log: Path) -> int:
        """Start the serve program on `model_dir`, detached; its pid (then `wait_ready`)."""
        argv = serve_command(model_dir, self.host, port)
        with log.open("a") as fh:
            fh.write(
                f"--- {datetime.now(UTC).isoformat(timespec='seconds')} starting {model_dir} on port {port}\n"
            )
        env = dict(os.environ)
        # Locally the endpoint shares the cores with training and other servers; one torch thread keeps
        # latency steady there (two threads under contention were measured 5-20x slower).
        env.setdefault("MLOPS_TORCH_THREADS", "1")
        return process.spawn_detached(argv, log, env)

    def wait_ready(
        self,
        pid: int,
        port: int,
        log: Path,
        timeout: float = READY_TIMEOUT,
        *,
        what: str = "the server",
        marker: str = "serve",
    ) -> None:
        """Until `port` answers GET /ping (for the front: once its upstream does); DeployFailed, with the
        log's tail, when the process exits first or the time runs out (the process is then stopped)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not process.alive(pid):
                raise DeployFailed(f"{what} exited before answering /ping: {process.tail(log)}")
            try:
                if http(f"{self.url(port)}/ping", timeout=2)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        process.terminate(pid, marker=marker)
        raise DeployFailed(f"{what} did not answer /ping within {timeout:.0f}s: {process.tail(log)}")

    def _launch(self, version: int, model_dir: Path, port: int) -> tuple[int, Path]:
        log = self.root / "logs" / f"v{version}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        pid = self.start_server(model_dir, port, log)
        self.wait_ready(pid, port, log)
        return pid, log

    @property
    def upstream_file(self) -> Path:
        return self.root / "upstream.json"

    def _front_alive(self, state: dict[str, Any] | None) -> bool:
        pid = (state or {}).get("front_pid")
        return isinstance(pid, int) and process.alive(pid) and process.is_serve_process(pid, FRONT_MODULE)

    def _ensure_front(self, state: dict[str, Any] | None) -> int:
        """The front's pid: the running one, or one started on the endpoint port."""
        if state is not None and self._front_alive(state):
            return int(state["front_pid"])
        self._refuse_a_busy_port()
        log = self.root / "logs" / "front.log"
        argv = [
            sys.executable,
            "-m",
            FRONT_MODULE,
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--upstream-file",
            str(self.upstream_file),
        ]
        pid = process.spawn_detached(argv, log, dict(os.environ))
        self.wait_ready(pid, self.port, log, what="the endpoint's front door", marker=FRONT_MODULE)
        return pid

    def _refuse_a_busy_port(self) -> None:
        if not process.port_free(self.host, self.port):
            raise UsageError(
                f"port {self.port} is in use by another program; "
                "free it or set MLOPS_ENDPOINT_PORT to another port"
            )

    def deploy(
        self, version: int, model_dir: Path, samples: list[Sample], classes: list[str]
    ) -> dict[str, Any]:
        """Guarded switch to `version`; raises DeployFailed with the previous version still serving."""
        current = self.state()
        previous = current if current is not None and process.alive(current["pid"]) else None
        if not self._front_alive(current):
            self._refuse_a_busy_port()  # before anything starts
        # 1-2: the candidate on a scratch port, smoke-tested before it can take traffic. With no samples
        # (the caller allowed an untested deploy) it only has to answer /ping.
        scratch = process.free_port(self.host)
        pid, log = self._launch(version, model_dir, scratch)
        smoke: dict[str, Any] = {"ok": True, "images": 0, "errors": [], "skipped": True}
        if samples:
            smoke = smoke_test(http_sender(self.url(scratch)), samples, classes)
        if not smoke["ok"]:
            process.terminate(pid)
            raise DeployFailed(
                f"candidate v{version} failed its smoke test on {smoke['images']} held-out "
                f"images: {'; '.join(smoke['errors']) or 'no answer'}"
            )
        # 3: the switch, checked through the endpoint port before the old server goes.
        write_upstream(self.upstream_file, scratch, version)
        try:
            front = self._ensure_front(current)
            check = smoke_test(http_sender(self.url()), samples[:2], classes) if samples else smoke
            if not check["ok"]:
                raise DeployFailed(
                    f"v{version} failed its check after the switch: {'; '.join(check['errors'])}"
                )
        except DeployFailed as exc:
            process.terminate(pid)
            restored = self._restore(previous)
            raise DeployFailed(f"{exc}; {restored}") from None
        self._write_state(version, pid, scratch, front, model_dir, log)
        if previous is not None:
            process.terminate(previous["pid"])  # SIGTERM: it finishes its in-flight requests first
        return smoke

    def _restore(self, previous: dict[str, Any] | None) -> str:
        """Point the front back at what served before the switch (from the endpoint's own state, not the
        registry), starting it again if it is gone."""
        if previous is None:
            self.stop()
            return "no previous version to restore; the endpoint is down"
        version, model_dir = int(previous["version"]), Path(previous["model_dir"])
        pid, port, log = previous["pid"], previous.get("backend_port"), Path(previous["log"])
        if not process.alive(pid) or not port:
            try:
                port = process.free_port(self.host)
                pid, log = self._launch(version, model_dir, port)
            except DeployFailed as exc:
                self.stop()
                return f"restoring v{version} failed too: {exc}"
        write_upstream(self.upstream_file, int(port), version)
        try:
            front = self._ensure_front(self.state())
        except (DeployFailed, UsageError) as exc:
            self.stop()
            process.terminate(pid)
            return f"restoring v{version} failed too: {exc}"
        self._write_state(version, pid, int(port), front, model_dir, log)
        return f"v{version} restored and serving"

    def _write_state(  # noqa: PLR0917 -- the state file's fields, in its order
        self, version: int, pid: int, backend_port: int, front_pid: int, model_dir: Path, log: Path
    ) -> None:
        write_json_atomic(
            self.state_path,
            {
                "version": version,
                "pid": pid,
                "backend_port": backend_port,
                "front_pid": front_pid,
                "host": self.host,
                "port": self.port,
                "url": self.url(),
                "model_dir": str(model_dir),
                "log": str(log),
                "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
            },
        )

    def stop(self) -> int | None:
        """Stop the serving process and the front; the version that served, if any."""
        state = self.state()
        if state is None:
            return None
        process.terminate(state["pid"])
        if state.get("front_pid"):
            process.terminate(state["front_pid"], marker=FRONT_MODULE)
        self.state_path.unlink(missing_ok=True)
        self.upstream_file.unlink(missing_ok=True)
        return int(state["version"])

    def invoke(self, body: bytes, content_type: str) -> tuple[int, dict[str, Any]]:
        status = self.status()
        if not status.healthy or status.url is None:
            raise UsageError(
                f"the local endpoint is not serving ({status.detail}); deploy with `mlops deploy --local`"
            )
        return http(f"{status.url}/invocations", body, content_type)
