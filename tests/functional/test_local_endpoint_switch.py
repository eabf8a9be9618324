"""The local endpoint switches versions with no downtime: clients calling it in a loop through a deploy, a
second deploy and a switch back (what `mlops rollback --local` does) see no refused connection and no
error, and a candidate that cannot serve never interrupts the version that does.

Real processes on 127.0.0.1: the front door (`python -m infra.local.front`) and `python -m serve`."""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import httpx
import pytest

from infra.errors import DeployFailed
from infra.local.endpoint import LocalEndpoint
from infra.smoke import held_out_samples
from tests.conftest import free_port
from tests.factories import make_model_artifact, png_bytes

CLASSES = ["circle", "square", "triangle"]


class Callers:
    """Two clients calling /invocations until stopped: one opening a connection per request (urllib),
    one reusing a keep-alive connection (httpx). Every answer's status and model version is counted."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers: Counter[tuple[int, str]] = Counter()
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._urllib), threading.Thread(target=self._httpx)]

    def __enter__(self) -> Callers:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def _record(self, status: int, body: bytes) -> None:
        version = json.loads(body).get("model", {}).get("version", "?") if status == 200 else "-"
        self.answers[(status, version)] += 1
        if status != 200:
            self.errors.append(f"HTTP {status}: {body[:200]!r}")

    def _urllib(self) -> None:
        body = png_bytes()
        while not self._stop.is_set():
            request = urllib.request.Request(
                f"{self.url}/invocations", data=body, headers={"Content-Type": "image/png"}
            )
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    self._record(response.status, response.read())
            except urllib.error.HTTPError as exc:
                self._record(exc.code, exc.read())
            except OSError as exc:
                self.errors.append(f"urllib: {type(exc).__name__}: {exc}")

    def _httpx(self) -> None:
        body = png_bytes(seed=1)
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self._stop.is_set():
                try:
                    response = client.post(
                        "/invocations", content=body, headers={"Content-Type": "image/png"}
                    )
                    self._record(response.status_code, response.content)
                except httpx.TransportError as exc:
                    self.errors.append(f"httpx: {type(exc).__name__}: {exc}")

    def wait_for(self, version: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not any(v == version for (_s, v) in self.answers):
            assert time.monotonic() < deadline, f"no answer from {version}: {self.answers}"
            time.sleep(0.05)


@pytest.fixture
def models(tmp_path: Path) -> dict[int, tuple[Path, str]]:
    out = {}
    for version in (1, 2):
        manifest = make_model_artifact(tmp_path / f"v{version}", classes=tuple(CLASSES), seed=version)
        out[version] = (tmp_path / f"v{version}", manifest.files[manifest.weights][:12])
    return out


@pytest.fixture
def samples(tmp_path: Path) -> list:
    for cls in CLASSES:
        (tmp_path / "data" / "test" / cls).mkdir(parents=True)
        (tmp_path / "data" / "test" / cls / "0.png").write_bytes(png_bytes(seed=len(cls)))
    return held_out_samples(tmp_path / "data", 3, CLASSES)


@pytest.fixture
def endpoint(tmp_path: Path):
    local = LocalEndpoint(tmp_path / "endpoint", "127.0.0.1", free_port())
    yield local
    local.stop()


def test_callers_in_a_loop_see_no_error_across_deploys_and_a_switch_back(endpoint, models, samples):
    endpoint.deploy(1, models[1][0], samples, CLASSES)
    with Callers(endpoint.url()) as callers:
        callers.wait_for(models[1][1])
        endpoint.deploy(2, models[2][0], samples, CLASSES)
        callers.wait_for(models[2][1])
        endpoint.deploy(1, models[1][0], samples, CLASSES)  # the rollback's path
        seen = sum(callers.answers.values())
        callers.wait_for(models[1][1])
        while sum(callers.answers.values()) < seen + 20:
            time.sleep(0.05)
    assert callers.errors == [], (callers.errors[:5], callers.answers)
    assert {v for (_s, v) in callers.answers} == {models[1][1], models[2][1]}
    state = endpoint.state()
    assert state is not None and state["version"] == 1
    status = endpoint.status()
    assert status.healthy and status.version == 1


def test_a_candidate_that_cannot_start_never_interrupts_the_version_that_serves(endpoint, models, samples):
    endpoint.deploy(1, models[1][0], samples, CLASSES)
    broken = models[2][0]
    (broken / "model.safetensors").write_bytes(b"not the weights the manifest hashed")
    with Callers(endpoint.url()) as callers:
        callers.wait_for(models[1][1])
        with pytest.raises(DeployFailed, match="exited before answering /ping"):
            endpoint.deploy(2, broken, samples, CLASSES)
        seen = sum(callers.answers.values())
        while sum(callers.answers.values()) < seen + 10:
            time.sleep(0.05)
    assert callers.errors == [] and {v for (_s, v) in callers.answers} == {models[1][1]}
    assert endpoint.status().version == 1


def test_stop_ends_both_processes_and_frees_the_port(endpoint, models, samples):
    from infra.local import process

    endpoint.deploy(1, models[1][0], samples, CLASSES)
    state = endpoint.state()
    assert state is not None
    assert endpoint.stop() == 1
    assert not process.alive(state["pid"]) and not process.alive(state["front_pid"])
    assert process.port_free("127.0.0.1", endpoint.port)
    assert not endpoint.status().running
