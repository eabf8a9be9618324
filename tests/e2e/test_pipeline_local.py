"""`mlops pipeline --local` end to end: real training on tiny data, a real endpoint process, real HTTP.

One lifecycle, step by step, as a user lives it: promote a first model; a worse candidate is rejected
and never deployed; a better one is promoted; rollback returns to the previous version; a candidate
whose endpoint fails its smoke test is not promoted while the previous version keeps answering.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from infra.datasets import make_synthetic
from tests.conftest import free_port
from tests.factories import png_bytes

pytestmark = pytest.mark.e2e

CONFIG = """
[project]
name = "e2e"
[gate]
version = 7
min = { test_accuracy = 0.5 }
max = { test_loss = 2.0 }
compare = ["test_accuracy"]
tolerance = 0.05
[local]
hyperparameters = { arch = "smallcnn", epochs = "8", batch_size = "32", learning_rate = "0.05" }
smoke_images = 8
verify_images = 16
"""
BAD = ["--hp", "epochs=1", "--hp", "learning_rate=0.00001"]


class Mlops:
    def __init__(self, home: Path, config: Path, port: int, data: Path) -> None:
        self.home, self.port, self.data = home, port, data
        self.env = {
            **os.environ,
            "MLOPS_HOME": str(home),
            "MLOPS_CONFIG": str(config),
            "MLOPS_ENDPOINT_PORT": str(port),
            "COLUMNS": "200",
            "GITHUB_STEP_SUMMARY": str(home.parent / "step-summary.md"),
        }

    def __call__(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "infra.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def pipeline(self, *extra: str) -> subprocess.CompletedProcess[str]:
        return self("pipeline", "--local", "--data", str(self.data), *extra)

    def served_version(self) -> int | None:
        state = self.home / "endpoint" / "state.json"
        return json.loads(state.read_text())["version"] if state.is_file() else None

    def predict(self, body: bytes) -> dict:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}/invocations", data=body, headers={"Content-Type": "image/png"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200
            return json.loads(response.read())

    def registry(self) -> dict:
        return json.loads((self.home / "registry" / "registry.json").read_text())


@pytest.fixture(scope="module")
def mlops(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    config = root / "mlops.toml"
    config.write_text(CONFIG)
    data = root / "data"
    make_synthetic(data, classes=8, train_per_class=60, val_per_class=10, test_per_class=15)
    runner = Mlops(root / "home", config, free_port(), data)
    yield runner
    runner("endpoint", "stop", "--local", timeout=60)
    state = runner.home / "endpoint" / "state.json"
    if state.is_file():  # the stop failed: never leave a server behind
        os.kill(json.loads(state.read_text())["pid"], signal.SIGKILL)


def test_local_pipeline_lifecycle(mlops):
    # 1. The first candidate passes the gate and is deployed.
    first = mlops.pipeline()
    assert first.returncode == 0, first.stdout + first.stderr
    out = first.stdout
    for stage in ("data", "train", "evaluate", "register", "deploy", "verify"):
        assert f"ok {stage} (" in out, out
    assert "promoted v1 (previous production: none)" in out
    assert "quality gate v7" in out and f"http://127.0.0.1:{mlops.port}" in out and "offline" in out
    assert mlops.served_version() == 1
    answer = mlops.predict(png_bytes())
    assert len(answer["predictions"]) == 1 and len(answer["predictions"][0]["top_k"]) == 5
    summary = Path(mlops.env["GITHUB_STEP_SUMMARY"]).read_text()  # the GitHub job summary, as Markdown
    assert "| train | ok |" in summary and "### Quality gate v7" in summary
    assert "| test_accuracy | threshold |" in summary and "**Outcome:** promoted v1" in summary
    status = mlops("endpoint", "status", "--local")
    assert status.returncode == 0 and "v1 at" in status.stdout and "serving" in status.stdout

    # 2. A worse candidate is registered as Rejected, never deployed; v1 keeps serving.
    worse = mlops.pipeline(*BAD)
    assert worse.returncode == 0, worse.stdout + worse.stderr
    assert "kept v1 in production: candidate v2 rejected" in worse.stdout
    assert "skipped deploy" in worse.stdout
    assert "test_accuracy" in worse.stdout and "FAIL" in worse.stdout
    assert mlops.served_version() == 1
    assert not (mlops.home / "endpoint" / "logs" / "v2.log").exists()  # no server was ever started for v2
    assert [v["status"] for v in mlops.registry()["versions"]] == ["Approved", "Rejected"]
    compared = mlops("runs", "compare", "--local")  # the newest (v2) against production (v1)
    assert compared.returncode == 0, compared.stdout + compared.stderr
    row = next(line for line in compared.stdout.splitlines() if "test_accuracy" in line)
    assert "worse" in row and "v2 (Rejected) against v1 (production)" in compared.stdout
    assert mlops.pipeline(*BAD, "--fail-on-reject").returncode == 4  # v3, rejected again
    mlops.predict(png_bytes())

    # 3. A good candidate is compared with production and promoted.
    better = mlops.pipeline()
    assert better.returncode == 0, better.stdout + better.stderr
    assert "promoted v4 (previous production: v1)" in better.stdout
    assert "vs production" not in better.stdout or "regression" in better.stdout
    assert mlops.served_version() == 4

    # 4. Rollback returns the endpoint to the previous production version (of this endpoint only).
    elsewhere = mlops("rollback", "--local", "--endpoint", "prod-eu")
    assert elsewhere.returncode == 2 and "not this project's endpoint (local)" in elsewhere.stderr
    assert mlops.served_version() == 4
    rollback = mlops("rollback", "--local", "--endpoint", "local")
    assert rollback.returncode == 0, rollback.stdout + rollback.stderr
    assert mlops.served_version() == 1
    assert mlops.registry()["production"] == 1
    mlops.predict(png_bytes())

    # 5. A candidate whose endpoint fails its smoke test is not promoted; v1 keeps answering.
    weights = mlops.home / "registry" / "models" / "v4" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-16] + b"\0" * 16)  # corrupt it in storage
    deploy = mlops("deploy", "--local", "--version", "4")
    assert deploy.returncode == 5, deploy.stdout + deploy.stderr
    assert "failed verification" in deploy.stderr
    assert "v4 is marked Rejected (deploy failed) in the registry" in deploy.stderr
    assert "v1 still serves (the candidate does not)" in deploy.stderr
    assert mlops.served_version() == 1 and mlops.registry()["production"] == 1
    mlops.predict(png_bytes())
    # The registry records it: v4 is never picked by default again, and the history says what served.
    failed = mlops.registry()["versions"][3]
    assert failed["status"] == "Rejected" and failed["failure"]["stage"] == "deploy"
    versions = mlops("versions", "--local")
    assert "Rejected (deploy failed)" in versions.stdout
    history = mlops("history", "--local")
    assert history.returncode == 0, history.stdout + history.stderr
    rows = [line.split()[1:] for line in history.stdout.splitlines() if line.startswith("│ v")]
    assert [(row[0], row[-2]) for row in rows] == [("v1", "deploy"), ("v4", "deploy"), ("v1", "rollback")]
    assert "now (serving)" in history.stdout
    again = mlops("rollback", "--local")
    assert again.returncode == 2 and "nothing to roll back to" in again.stderr

    # 6. Rejected versions cannot be deployed by hand either.
    refused = mlops("deploy", "--local", "--version", "2")
    assert refused.returncode == 2 and "v2 is Rejected" in refused.stderr

    # 7. Stop leaves nothing running.
    pid = json.loads((mlops.home / "endpoint" / "state.json").read_text())["pid"]
    stop = mlops("endpoint", "stop", "--local")
    assert stop.returncode == 0 and "stopped the local endpoint (v1)" in stop.stdout
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert mlops("endpoint", "status", "--local").returncode == 1


def test_commands_without_local_name_the_missing_aws_settings(mlops):
    env = {k: v for k, v in mlops.env.items() if not k.startswith("AWS_") and k not in ("MLOPS_BUCKET",)}
    result = subprocess.run(
        [sys.executable, "-m", "infra.cli", "train", "--data", str(mlops.data)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert "not set: AWS_REGION" in result.stderr and ".env.example" in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_hyperparameters_are_refused_before_a_job_starts(mlops):
    result = mlops("pipeline", "--local", "--data", str(mlops.data), "--hp", "epochs=many")
    assert result.returncode == 2
    assert "hyperparameter 'epochs': 'many' is not an integer" in result.stderr


def test_ctrl_c_stops_a_local_job_which_then_resumes_from_its_checkpoint(mlops):
    args = [
        sys.executable,
        "-m",
        "infra.cli",
        "train",
        "--local",
        "--data",
        str(mlops.data),
        "--hp",
        "epochs=12",
    ]
    with subprocess.Popen(
        args, env=mlops.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as proc:
        try:
            assert proc.stdout is not None
            lines = []
            for line in proc.stdout:
                lines.append(line)
                if line.strip().startswith("epoch 1/12"):
                    proc.send_signal(signal.SIGINT)  # Ctrl-C
                    break
            output = "".join(lines) + proc.stdout.read()
            code = proc.wait(timeout=120)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert code == 3, output
    job = next(line.split()[2] for line in output.splitlines() if line.startswith("training job "))
    assert f"job {job}: Stopped" in output and "--resume <job>" in output

    resumed = mlops("train", "--local", "--resume", job)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resumed from checkpoint" in resumed.stdout and f"job {job}: Completed" in resumed.stdout
    assert "  epoch 1/12  " not in resumed.stdout and "  epoch 12/12  " in resumed.stdout
