"""`python -m serve` as a real process, spoken to over real HTTP: the SageMaker hosting contract."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from artifact.manifest import Manifest, write_manifest
from tests.conftest import free_port
from tests.factories import make_model_artifact, png_bytes

CLASSES = ("circle", "square", "triangle", "star", "hexagon", "cross")
MAX_BATCH = 8
STARTUP_TIMEOUT_S = 60
REPO = Path(__file__).resolve().parents[2]


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def server_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(
            ("SAGEMAKER_", "MLOPS_MAX", "MLOPS_TORCH", "MLOPS_BATCH", "MLOPS_DECODE", "MLOPS_LAYOUT")
        )
    }
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def start(args: list[str], log_path: Path, url: str, env: dict[str, str]) -> Server:
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "serve", *args], cwd=REPO, env=env, stdout=log, stderr=log
        )
    return Server(proc, url, log_path)


def launch(args: list[str], log_dir: Path, env: dict[str, str], *, port_from_env: bool = False) -> Server:
    """Start on a free port and wait until it serves, trying another port if one was taken meanwhile
    (free_port() releases the port, and parallel test runs start servers too)."""
    for _ in range(3):
        port = free_port()
        if port_from_env:
            run_args, run_env = args, {**env, "SAGEMAKER_BIND_TO_PORT": str(port)}
        else:
            run_args, run_env = [*args, "--port", str(port)], env
        server = start(run_args, log_dir / f"server-{port}.log", f"http://127.0.0.1:{port}", run_env)
        try:
            if wait_ready(server):
                return server
        except BaseException:
            stop(server)
            raise
    pytest.fail("three free ports were taken before the server could bind them")


def wait_ready(server: Server) -> bool:
    """True once /ping answers; False if the port was taken; a test failure with the log otherwise."""
    # The banner names the address this process bound: a /ping answered before it appears could come
    # from whoever else holds the port.
    banner = f"on {server.url}"
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            if server.proc.returncode == 3 and "address already in use" in server.log():
                return False
            pytest.fail(f"server exited with {server.proc.returncode} before serving:\n{server.log()}")
        if banner in server.log():
            try:
                if httpx.get(f"{server.url}/ping", timeout=2).status_code == 200:
                    return True
            except httpx.TransportError:
                pass
        time.sleep(0.1)
    pytest.fail(f"server did not answer /ping within {STARTUP_TIMEOUT_S} s:\n{server.log()}")


def stop(server: Server) -> int:
    if server.proc.poll() is None:
        server.proc.terminate()
        try:
            server.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()
    return server.proc.returncode


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest]:
    model_dir = tmp_path_factory.mktemp("served") / "model"
    return model_dir, make_model_artifact(model_dir, classes=CLASSES)


@pytest.fixture(scope="module")
def server(artifact: tuple[Path, Manifest], tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    args = ["--model-dir", str(artifact[0]), "--host", "127.0.0.1"]
    # One intra-op thread keeps latency steady on a shared CI runner; the SageMaker-style test below
    # runs with PyTorch's default.
    env = server_env(MLOPS_MAX_BATCH=str(MAX_BATCH), MLOPS_TORCH_THREADS="1")
    running = launch(args, tmp_path_factory.mktemp("server-log"), env)
    try:
        yield running
    finally:
        stop(running)


@pytest.fixture(scope="module")
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        yield http


def encode(pixels: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return buf.getvalue()


def npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def invoke(client: httpx.Client, body: bytes, content_type: str, **kwargs: Any) -> httpx.Response:
    headers = {"Content-Type": content_type, **kwargs.pop("headers", {})}
    return client.post("/invocations", content=body, headers=headers, **kwargs)


def rankings(response: httpx.Response) -> list[list[dict[str, Any]]]:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    return [p["top_k"] for p in response.json()["predictions"]]


def assert_still_serving(client: httpx.Client) -> None:
    assert client.get("/ping").status_code == 200
    assert len(rankings(invoke(client, png_bytes(), "image/png"))) == 1


# --- the happy path -------------------------------------------------------------------------------


def test_ping(client: httpx.Client) -> None:
    response = client.get("/ping")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_png_prediction_ranks_every_class(client: httpx.Client, artifact: tuple[Path, Manifest]) -> None:
    response = invoke(client, png_bytes(), "image/png", params={"top_k": len(CLASSES)})
    [ranked] = rankings(response)
    assert sorted(p["label"] for p in ranked) == sorted(CLASSES)
    probabilities = [p["probability"] for p in ranked]
    assert sum(probabilities) == pytest.approx(1.0, abs=1e-4)
    assert probabilities == sorted(probabilities, reverse=True)
    model = response.json()["model"]
    assert model["architecture"] == "smallcnn"
    assert model["code_version"] == "test"
    assert model["task"] == "classification"
    assert model["version"] == artifact[1].files["model.safetensors"][:12]


PIXELS = np.random.default_rng(7).integers(0, 256, (32, 32, 3), dtype=np.uint8)


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("image/png", encode(PIXELS, "PNG")),
        ("image/jpeg", encode(PIXELS, "JPEG")),
        ("application/x-image", encode(PIXELS, "JPEG")),
        ("application/json", json.dumps({"instances": [b64(encode(PIXELS, "PNG"))]}).encode()),
        (
            "application/json; charset=utf-8",
            json.dumps({"instances": [{"b64": b64(encode(PIXELS, "PNG"))}]}).encode(),
        ),
        ("application/x-npy", npy(PIXELS)),
        ("application/x-npy", npy(PIXELS.astype(np.float32) / 255)),
    ],
    ids=["png", "jpeg", "x-image", "json", "json-b64-object", "npy-uint8", "npy-float"],
)
def test_each_content_type_predicts_with_default_top_k(
    client: httpx.Client, content_type: str, body: bytes
) -> None:
    [ranked] = rankings(invoke(client, body, content_type))
    assert len(ranked) == 5  # min(5, number of classes)
    assert {p["label"] for p in ranked} <= set(CLASSES)
    assert all(0.0 <= p["probability"] <= 1.0 for p in ranked)


def test_lossless_encodings_give_identical_predictions(client: httpx.Client) -> None:
    as_png = rankings(invoke(client, encode(PIXELS, "PNG"), "image/png"))
    as_npy = rankings(invoke(client, npy(PIXELS), "application/x-npy"))
    as_json = rankings(
        invoke(client, json.dumps({"instances": [b64(encode(PIXELS, "PNG"))]}).encode(), "application/json")
    )
    assert as_png == as_npy == as_json


def test_several_images_in_one_request(client: httpx.Client) -> None:
    sizes = [32, 64, 20]  # not all at the model's input size: the server resizes
    instances = [b64(png_bytes(size, seed=i)) for i, size in enumerate(sizes)]
    ranked = rankings(invoke(client, json.dumps({"instances": instances}).encode(), "application/json"))
    assert len(ranked) == 3
    batch = np.random.default_rng(3).random((MAX_BATCH, 32, 32, 3)).astype(np.float32)
    assert len(rankings(invoke(client, npy(batch), "application/x-npy"))) == MAX_BATCH


def test_top_k_from_query_and_custom_attributes(client: httpx.Client) -> None:
    body = png_bytes()
    assert len(rankings(invoke(client, body, "image/png", params={"top_k": 2}))[0]) == 2
    header = {"X-Amzn-SageMaker-Custom-Attributes": "top_k=3"}
    assert len(rankings(invoke(client, body, "image/png", headers=header))[0]) == 3
    among_others = {"X-Amzn-SageMaker-Custom-Attributes": "trace=abc, top_k=1"}
    assert len(rankings(invoke(client, body, "image/png", headers=among_others))[0]) == 1
    # The query string wins over the header.
    assert len(rankings(invoke(client, body, "image/png", params={"top_k": 4}, headers=header))[0]) == 4


@pytest.mark.parametrize("accept", ["application/json", "*/*", "text/html, application/json;q=0.9"])
def test_json_compatible_accept_headers(client: httpx.Client, accept: str) -> None:
    assert len(rankings(invoke(client, png_bytes(), "image/png", headers={"Accept": accept}))) == 1


def test_each_request_is_logged(client: httpx.Client, server: Server) -> None:
    invoke(client, npy(np.zeros((2, 32, 32, 3), dtype=np.uint8)), "application/x-npy")
    client.get("/nowhere")
    # The line is written just after the response is sent, so give it a moment to land.
    deadline = time.monotonic() + 10
    while "GET /nowhere 404 " not in server.log() and time.monotonic() < deadline:
        time.sleep(0.05)
    lines = server.log().splitlines()
    assert any("inference on 1 torch thread" in line for line in lines)
    assert any(
        re.search(r"serving smallcnn \(6 classes\) from \S+ on http://127\.0\.0\.1:\d+$", line)
        for line in lines
    )
    invocation = r"POST /invocations 200 \d+\.\dms images=2 batch=2"
    stages = r" decode=\d+\.\d\dms queue=\d+\.\d\dms infer=\d+\.\d\dms$"
    assert any(re.search(invocation + stages, line) for line in lines)
    assert any(re.search(r"GET /nowhere 404 \d+\.\dms images=0$", line) for line in lines)


def test_concurrent_requests_share_forward_passes_and_each_gets_its_own_answer(
    artifact: tuple[Path, Manifest], tmp_path: Path
) -> None:
    env = server_env(MLOPS_TORCH_THREADS="1", MLOPS_BATCH_MAX_WAIT_MS="100", MLOPS_BATCH_MAX_SIZE="8")
    running = launch(["--model-dir", str(artifact[0]), "--host", "127.0.0.1"], tmp_path, env)
    rng = np.random.default_rng(7)
    bodies = [encode(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8), "PNG") for _ in range(24)]

    def ask(index: int) -> list[list[dict[str, Any]]]:
        with httpx.Client(base_url=running.url, timeout=60) as client:
            return rankings(invoke(client, bodies[index], "image/png", params={"top_k": 1 + index % 6}))

    try:
        alone = [ask(i) for i in range(len(bodies))]
        with ThreadPoolExecutor(max_workers=12) as pool:
            together = list(pool.map(ask, range(len(bodies))))
        deadline = time.monotonic() + 10
        while running.log().count("POST /invocations 200") < 2 * len(bodies) and time.monotonic() < deadline:
            time.sleep(0.05)
        batches = [
            int(size) for size in re.findall(r"POST /invocations 200 \S+ images=1 batch=(\d+)", running.log())
        ]
    finally:
        stop(running)
    for index, (one, shared) in enumerate(zip(alone, together, strict=True)):
        # Each caller gets its own image's answer at its own top_k, whoever it shared the pass with.
        # (Random weights give near-uniform probabilities: a batched pass may order two classes that tie
        # to within float rounding the other way, so the ranking is compared value by value.)
        assert len(shared[0]) == 1 + index % 6
        assert [p["probability"] for p in shared[0]] == pytest.approx(
            [p["probability"] for p in one[0]], abs=1e-4
        )
        own = {p["label"]: p["probability"] for p in one[0]}
        assert all(
            p["probability"] == pytest.approx(own[p["label"]], abs=1e-4)
            for p in shared[0]
            if p["label"] in own
        )
    assert len(batches) == 2 * len(bodies)
    assert max(batches) > 1, f"concurrent requests never shared a forward pass: {batches}"
    assert max(batches) <= 8


# --- refusals: each one a 4xx JSON error, and the server keeps serving ---------------------------------


BAD_REQUESTS = [
    ("corrupt-png", "image/png", b"\x89PNG\r\n\x1a\n" + bytes(64), {}, 400, "PNG or JPEG"),
    ("truncated-jpeg", "image/jpeg", encode(PIXELS, "JPEG")[:300], {}, 400, "truncated"),
    ("unsupported-type", "text/plain", b"hello", {}, 415, "application/x-npy"),
    ("empty-body", "image/png", b"", {}, 400, "empty"),
    ("bad-json", "application/json", b"{", {}, 400, "not valid JSON"),
    ("no-instances", "application/json", b'{"inputs": []}', {}, 400, '"instances"'),
    ("bad-base64", "application/json", b'{"instances": ["%%%"]}', {}, 400, "invalid base64"),
    ("npy-wrong-shape", "application/x-npy", npy(np.zeros((2, 3, 32, 32), np.uint8)), {}, 400, "wrong shape"),
    ("npy-object", "application/x-npy", b"\x80\x04K\x01.", {}, 400, "pickled data is refused"),
    (
        "too-many-images",
        "application/x-npy",
        npy(np.zeros((MAX_BATCH + 1, 8, 8, 3), np.uint8)),
        {},
        400,
        f"limit is {MAX_BATCH}",
    ),
    ("top-k-zero", "image/png", png_bytes(), {"params": {"top_k": 0}}, 400, "top_k must be between 1 and 6"),
    ("top-k-text", "image/png", png_bytes(), {"params": {"top_k": "many"}}, 400, "top_k must be an integer"),
    (
        "top-k-attribute",
        "image/png",
        png_bytes(),
        {"headers": {"X-Amzn-SageMaker-Custom-Attributes": "top_k=7"}},
        400,
        "got 7",
    ),
    ("accept-html", "image/png", png_bytes(), {"headers": {"Accept": "text/html"}}, 406, "application/json"),
]


@pytest.mark.parametrize(
    ("content_type", "body", "kwargs", "status", "needle"),
    [case[1:] for case in BAD_REQUESTS],
    ids=[case[0] for case in BAD_REQUESTS],
)
def test_bad_request_is_a_json_error_and_serving_continues(
    client: httpx.Client, content_type: str, body: bytes, kwargs: dict[str, Any], status: int, needle: str
) -> None:
    response = invoke(client, body, content_type, **kwargs)
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert needle in response.json()["error"]
    assert_still_serving(client)


@pytest.mark.parametrize(
    ("method", "path", "status"), [("GET", "/predict", 404), ("GET", "/invocations", 405)]
)
def test_unknown_routes_are_json_errors(client: httpx.Client, method: str, path: str, status: int) -> None:
    response = client.request(method, path)
    assert response.status_code == status
    assert path in response.json()["error"]


def test_oversized_payload_is_413(client: httpx.Client) -> None:
    too_big = bytes(6 * 1024 * 1024 + 1)
    response = invoke(client, too_big, "application/x-npy")
    assert response.status_code == 413
    assert "6291456" in response.json()["error"]
    assert_still_serving(client)


def test_oversized_chunked_payload_is_413(client: httpx.Client) -> None:
    # No Content-Length: the cap must hold while the body streams in.
    chunks = (bytes(1024 * 1024) for _ in range(8))
    response = client.post("/invocations", content=chunks, headers={"Content-Type": "application/x-npy"})
    assert response.status_code == 413
    assert "limit" in response.json()["error"]
    assert_still_serving(client)


def test_execution_parameters_tell_batch_transform_how_to_call(client: httpx.Client) -> None:
    response = client.get("/execution-parameters")
    assert response.status_code == 200
    parameters = response.json()
    assert parameters["BatchStrategy"] == "SINGLE_RECORD" and parameters["MaxPayloadInMB"] == 6
    assert 1 <= parameters["MaxConcurrentTransforms"] <= 64


def test_a_client_that_sends_the_whole_oversized_body_first_still_reads_the_413(server: Server) -> None:
    """urllib (like requests and most SDKs) sends the entire body before reading the answer: a server
    that answered and hung up mid-upload would reset the connection under it."""
    import urllib.error
    import urllib.request

    request = urllib.request.Request(
        f"{server.url}/invocations",
        data=bytes(64 * 1024 * 1024),
        headers={"Content-Type": "application/x-npy"},
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=60)
    assert refused.value.code == 413
    assert "exceeds the limit of 6291456 bytes" in json.loads(refused.value.read())["error"]


def test_an_oversized_body_announced_with_expect_100_continue_is_refused_before_it_is_sent(
    client: httpx.Client,
) -> None:
    response = invoke(client, bytes(7 * 1024 * 1024), "application/x-npy", headers={"Expect": "100-continue"})
    assert response.status_code == 413 and response.headers["connection"] == "close"
    assert_still_serving(client)


def test_over_the_concurrency_limit_requests_get_503_with_retry_after_and_ping_stays_healthy(
    artifact: tuple[Path, Manifest], tmp_path: Path
) -> None:
    env = server_env(MLOPS_MAX_CONCURRENCY="1", MLOPS_TORCH_THREADS="1")
    running = launch(["--model-dir", str(artifact[0]), "--host", "127.0.0.1"], tmp_path, env)
    host, port = running.url.removeprefix("http://").split(":")
    try:
        # A slow upload holds the one slot: admitted, its body still arriving.
        with socket.create_connection((host, int(port)), timeout=30) as slow:
            slow.sendall(
                b"POST /invocations HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n4\r\n\x89PNG\r\n"
            )
            with httpx.Client(base_url=running.url, timeout=30) as client:
                deadline = time.monotonic() + 10
                while (response := invoke(client, png_bytes(), "image/png")).status_code == 200:
                    assert time.monotonic() < deadline, "the slow upload was never admitted"
                    time.sleep(0.05)
                assert response.status_code == 503 and response.headers["retry-after"] == "1"
                assert "overloaded: 1 requests in progress" in response.json()["error"]
                assert client.get("/ping").status_code == 200
                slow.sendall(b"0\r\n\r\n")  # the slow upload ends (a truncated PNG: 400) and frees its slot
                assert b" 400 " in slow.recv(4096).split(b"\r\n", 1)[0]
                assert len(rankings(invoke(client, png_bytes(), "image/png"))) == 1
    finally:
        stop(running)


def test_decoding_memory_in_flight_is_bounded_and_given_back(
    artifact: tuple[Path, Manifest], tmp_path: Path
) -> None:
    """MLOPS_MAX_DECODED_MB=1: a 512x512 image (2 MB to decode) can never fit (413); 300x300 ones (0.7
    MB each) fit one at a time, so callers who overlap get 503 + Retry-After, and the budget is whole
    again once they are answered."""
    env = server_env(MLOPS_MAX_DECODED_MB="1", MLOPS_TORCH_THREADS="1")
    running = launch(["--model-dir", str(artifact[0]), "--host", "127.0.0.1"], tmp_path, env)
    rng = np.random.default_rng(3)
    medium = encode(rng.integers(0, 256, (300, 300, 3), dtype=np.uint8), "PNG")
    try:
        with httpx.Client(base_url=running.url, timeout=30) as client:
            huge = invoke(client, encode(np.zeros((512, 512, 3), np.uint8), "PNG"), "image/png")
            assert huge.status_code == 413
            assert "needs about 2.0 MB to decode" in huge.json()["error"]
            assert "MLOPS_MAX_DECODED_MB" in huge.json()["error"]

        def storm(_: int) -> list[httpx.Response]:
            with httpx.Client(base_url=running.url, timeout=30) as client:
                return [invoke(client, medium, "image/png") for _ in range(15)]

        with ThreadPoolExecutor(max_workers=6) as pool:
            answers = [r for batch in pool.map(storm, range(6)) for r in batch]
        statuses = {r.status_code for r in answers}
        assert statuses <= {200, 503}, statuses
        refused = [r for r in answers if r.status_code == 503]
        assert refused, "six callers of 0.7 MB images never overlapped in a 1 MB budget"
        assert all(r.headers["retry-after"] == "1" for r in refused)
        assert "of 1.0 MB of decoding memory" in refused[0].json()["error"]
        assert any(r.status_code == 200 for r in answers)
        with httpx.Client(base_url=running.url, timeout=30) as client:  # every reservation was given back
            assert [invoke(client, medium, "image/png").status_code for _ in range(3)] == [200] * 3
    finally:
        stop(running)


# --- the process: flags, environment, refusal to start, shutdown ----------------------------------------


def run_serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "serve", *args],
        cwd=REPO,
        env=env or server_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_help_explains_flags_and_environment() -> None:
    result = run_serve("serve", "--help")
    assert result.returncode == 0, result.stderr
    for word in (
        "--model-dir",
        "--host",
        "--port",
        "SAGEMAKER_BIND_TO_PORT",
        "SAGEMAKER_BASE_DIR",
        "MLOPS_MAX_PAYLOAD_BYTES",
        "MLOPS_MAX_BATCH",
        "MLOPS_TORCH_THREADS",
        "MLOPS_BATCH_MAX_SIZE",
        "MLOPS_BATCH_MAX_WAIT_MS",
        "MLOPS_LAYOUT",
        "/ping",
        "/invocations",
    ):
        assert word in result.stdout


def test_bad_environment_value_is_a_usage_error() -> None:
    result = run_serve("--port", "1", env=server_env(MLOPS_MAX_BATCH="lots"))
    assert result.returncode == 2
    assert "MLOPS_MAX_BATCH='lots'" in result.stderr


def refused_start(model_dir: Path) -> subprocess.CompletedProcess[str]:
    """Start on a port we hold ourselves: reaching the bind would fail differently and say so."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run_serve("serve", "--model-dir", str(model_dir), "--host", "127.0.0.1", "--port", str(port))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "serving" not in result.stdout
    assert "Traceback" not in result.stderr
    assert "address already in use" not in result.stderr.lower()
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result


def test_tampered_artifact_refuses_to_start(tmp_path: Path) -> None:
    make_model_artifact(tmp_path / "model")
    weights = tmp_path / "model" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    result = refused_start(tmp_path / "model")
    assert "failed verification" in result.stderr
    assert "model.safetensors does not match its sha256" in result.stderr


def test_unsupported_task_refuses_to_start(tmp_path: Path) -> None:
    manifest = make_model_artifact(tmp_path / "model")
    manifest.task = "keypoints"
    write_manifest(tmp_path / "model", manifest)
    assert "'keypoints' is not implemented" in refused_start(tmp_path / "model").stderr


def test_missing_model_dir_refuses_to_start(tmp_path: Path) -> None:
    assert "does not exist" in refused_start(tmp_path / "absent").stderr


def test_sagemaker_style_start_and_sigterm(tmp_path: Path) -> None:
    """As SageMaker runs it: `serve` argument, model under $SAGEMAKER_BASE_DIR/model, port from the env."""
    make_model_artifact(tmp_path / "opt-ml" / "model")
    env = server_env(SAGEMAKER_BASE_DIR=str(tmp_path / "opt-ml"))
    running = launch(["serve", "--host", "127.0.0.1"], tmp_path, env, port_from_env=True)
    try:
        assert f"from {tmp_path / 'opt-ml' / 'model'} on {running.url}" in running.log()
        running.proc.send_signal(signal.SIGTERM)
        assert running.proc.wait(timeout=30) == 0, running.log()
        assert "stopped by SIGTERM" in running.log()
    finally:
        stop(running)
