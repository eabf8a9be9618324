"""The pipeline's decisions, against a fake platform: which stages run, and what happens on each failure."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from infra.pipeline import run_pipeline
from infra.platform import DeployResult, EndpointStatus, ModelVersion, TrainingResult, TrainingSpec
from infra.settings import Config
from tests.factories import make_model_artifact, png_bytes

CLASSES = ("circle", "square", "triangle")
CONFIG = Config.from_mapping(
    {
        "project": {"name": "t"},
        "gate": {
            "version": 2,
            "min": {"test_accuracy": 0.8},
            "compare": ["test_accuracy"],
            "tolerance": 0.01,
        },
        "local": {"verify_images": 6},
    }
)


class FakePlatform:
    """Records calls; each behaviour is a plain attribute a test sets."""

    name = "fake"

    def __init__(
        self,
        tmp: Path,
        *,
        metrics: dict[str, float],
        status: str = "Completed",
        production: ModelVersion | None = None,
        deploy_ok: bool = True,
        invoke_status: int = 200,
    ) -> None:
        self.tmp, self.metrics, self.status = tmp, metrics, status
        self._production, self.deploy_ok, self.invoke_status = production, deploy_ok, invoke_status
        self.calls: list[tuple[str, Any]] = []
        self.model_dir = tmp / "model"
        make_model_artifact(self.model_dir, classes=CLASSES)

    def train(self, spec: TrainingSpec, on_line: Any) -> TrainingResult:
        self.calls.append(("train", spec.job_name))
        on_line("epoch=1 epochs=1 train_loss=1.0")
        ok = self.status == "Completed"
        return TrainingResult(
            spec.job_name,
            self.status,
            self.model_dir if ok else None,
            self.metrics,
            1.0,
            failure_reason=None if ok else "AlgorithmError: boom",
        )

    def register(self, result: TrainingResult, decision: dict[str, Any]) -> ModelVersion:
        status = "Approved" if decision["passed"] else "Rejected"
        self.calls.append(("register", status))
        return ModelVersion(2, status, result.metrics, self.model_dir, "now", result.job_name, "sha")

    def versions(self) -> list[ModelVersion]:
        return []

    def production(self) -> ModelVersion | None:
        return self._production

    def deploy(self, version: int, *, action: str = "deploy") -> DeployResult:
        self.calls.append((action, version))
        if not self.deploy_ok:
            return DeployResult(
                False, 1, "http://fake", "candidate failed its smoke test", previous_version=1
            )
        return DeployResult(
            True,
            version,
            "http://fake",
            f"v{version} serving",
            smoke={"images": 3, "p50_ms": 1.0},
            previous_version=1 if self._production else None,
        )

    def rollback(self, to: int | None = None) -> DeployResult:
        self.calls.append(("rollback", to))
        return DeployResult(True, to, "http://fake", f"v{to} serving")

    def endpoint_status(self) -> EndpointStatus:
        return EndpointStatus(True, True, 1, "http://fake")

    def invoke(self, body: bytes, content_type: str) -> tuple[int, dict[str, Any]]:
        if self.invoke_status != 200:
            return self.invoke_status, {"error": "internal"}
        return 200, {"predictions": [{"top_k": [{"label": "circle", "probability": 1.0}]}]}


class Observer:
    def __init__(self) -> None:
        self.done: list[tuple[str, str]] = []

    def started(self, name: str) -> None:
        pass

    def finished(self, stage: Any) -> None:
        self.done.append((stage.name, stage.status))


@pytest.fixture
def data(tmp_path: Path) -> Path:
    for cls in CLASSES:
        (tmp_path / "data" / "test" / cls).mkdir(parents=True)
        for i in range(2):
            (tmp_path / "data" / "test" / cls / f"{i}.png").write_bytes(png_bytes(seed=i))
    return tmp_path / "data"


def run(platform: FakePlatform, data: Path) -> tuple[Any, Observer]:
    observer = Observer()
    spec = TrainingSpec("job-1", {}, data, "sha")
    report = run_pipeline(
        platform, CONFIG, spec, on_line=lambda _line: None, observer=observer, ensure_data=lambda: "ready"
    )
    return report, observer


PROD = ModelVersion(1, "Approved", {"test_accuracy": 0.9}, Path("/nowhere"), "then", "job-0", "sha0")


def test_a_passing_first_candidate_is_registered_deployed_and_verified(tmp_path, data):
    platform = FakePlatform(tmp_path, metrics={"test_accuracy": 0.95})
    report, observer = run(platform, data)
    assert report.exit_code == 0 and report.outcome == "promoted v2 (previous production: none)"
    assert [c[0] for c in platform.calls] == ["train", "register", "deploy"]
    assert observer.done == [(s, "ok") for s in ("data", "train", "evaluate", "register", "deploy", "verify")]
    assert report.verify["images"] == 6


def test_failed_training_stops_the_pipeline_before_the_registry(tmp_path, data):
    platform = FakePlatform(tmp_path, metrics={}, status="Failed")
    report, observer = run(platform, data)
    assert report.exit_code == 3 and [c[0] for c in platform.calls] == ["train"]
    assert "AlgorithmError: boom" in report.stages[1].detail
    assert [s for _n, s in observer.done[2:]] == ["skipped"] * 4


def test_a_candidate_worse_than_production_is_registered_rejected_and_never_deployed(tmp_path, data):
    platform = FakePlatform(tmp_path, metrics={"test_accuracy": 0.85}, production=PROD)
    report, _observer = run(platform, data)
    assert ("register", "Rejected") in platform.calls
    assert not any(c[0] in ("deploy", "rollback") for c in platform.calls)
    assert report.exit_code == 0 and report.outcome == "kept v1 in production: candidate v2 rejected"
    assert "vs production 0.9000" in report.decision.summary


def test_a_failed_deploy_skips_verification_and_fails_the_run(tmp_path, data):
    platform = FakePlatform(tmp_path, metrics={"test_accuracy": 0.95}, production=PROD, deploy_ok=False)
    report, observer = run(platform, data)
    assert report.exit_code == 5 and "v1 is serving" in report.outcome
    assert observer.done[-2:] == [("deploy", "failed"), ("verify", "skipped")]


def test_a_failed_verification_rolls_back_to_the_previous_version(tmp_path, data):
    platform = FakePlatform(tmp_path, metrics={"test_accuracy": 0.95}, production=PROD, invoke_status=500)
    report, _observer = run(platform, data)
    assert platform.calls[-1] == ("rollback", 1)
    assert report.exit_code == 5 and "rolled back to v1" in report.stages[-1].detail
