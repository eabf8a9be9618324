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
        self.candidate_dir = tmp / "model"
        make_model_artifact(self.candidate_dir, classes=CLASSES, test_fingerprint="sha256:new-test-set")

    def train(self, spec: TrainingSpec, on_line: Any) -> TrainingResult:
        self.calls.append(("train", spec.job_name))
        on_line("epoch=1 epochs=1 train_loss=1.0")
        ok = self.status == "Completed"
        return TrainingResult(
            spec.job_name,
            self.status,
            self.candidate_dir if ok else None,
            self.metrics,
            1.0,
            failure_reason=None if ok else "AlgorithmError: boom",
        )

    def register(self, result: TrainingResult, decision: dict[str, Any]) -> ModelVersion:
        status = "Approved" if decision["passed"] else "Rejected"
        self.calls.append(("register", status))
        return ModelVersion(2, status, result.metrics, self.candidate_dir, "now", result.job_name, "sha")

    def versions(self) -> list[ModelVersion]:
        return []

    def production(self) -> ModelVersion | None:
        return self._production

    def model_dir(self, version: ModelVersion) -> Path:
        return version.model_dir

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


def run(platform: FakePlatform, data: Path, evaluate_model: Any = None) -> tuple[Any, Observer]:
    observer = Observer()
    spec = TrainingSpec("job-1", {}, data, "sha")

    def must_not_evaluate(model_dir: Path, split: Path) -> dict[str, Any]:
        raise AssertionError(f"unexpected re-evaluation of {model_dir}")

    report = run_pipeline(
        platform,
        CONFIG,
        spec,
        on_line=lambda _line: None,
        observer=observer,
        ensure_data=lambda: "ready",
        evaluate_model=evaluate_model or must_not_evaluate,
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


def champion(tmp_path: Path, *, fingerprint: str, classes=CLASSES, recorded: float = 0.99) -> ModelVersion:
    model_dir = tmp_path / "champion"
    make_model_artifact(model_dir, classes=classes, test_fingerprint=fingerprint)
    return ModelVersion(1, "Approved", {"test_accuracy": recorded}, model_dir, "then", "job-0", "sha0")


def test_production_scored_on_the_same_test_set_is_compared_by_its_recorded_metrics(tmp_path, data):
    production = champion(tmp_path, fingerprint="sha256:new-test-set", recorded=0.99)
    platform = FakePlatform(tmp_path, metrics={"test_accuracy": 0.95}, production=production)
    report, _observer = run(platform, data)  # the evaluator would fail the test if called
    assert not report.decision.passed and "vs production 0.9900" in report.decision.summary


def test_production_from_another_test_set_is_re_evaluated_on_the_candidates(tmp_path, data):
    production = champion(tmp_path, fingerprint="sha256:old-test-set", recorded=0.99)
    platform = FakePlatform(tmp_path, metrics={"test_accuracy": 0.95}, production=production)
    calls = []

    def evaluate(model_dir: Path, split: Path) -> dict[str, Any]:
        calls.append((model_dir, split))
        return {"metrics": {"test_accuracy": 0.90, "test_loss": 0.4}, "images": 6}

    report, _observer = run(platform, data, evaluate)
    assert calls == [(production.model_dir, data / "test")]
    assert report.decision.passed  # 0.95 against a re-measured 0.90, not the 0.99 of another test set
    assert report.decision.notes == [
        "production v1 re-evaluated on the candidate's test set (6 images): "
        "its recorded metrics came from a different test set"
    ]
    regression = next(c for c in report.decision.checks if c.kind == "regression")
    assert regression.production == 0.90


def test_production_with_other_classes_is_not_compared_and_the_gate_says_so(tmp_path, data):
    production = champion(tmp_path, fingerprint="sha256:old", classes=("cat", "dog"), recorded=0.99)
    platform = FakePlatform(tmp_path, metrics={"test_accuracy": 0.95}, production=production)
    report, _observer = run(platform, data)
    assert report.decision.passed and "not compared with production v1" in report.decision.summary
    assert any("predicts other classes (2 vs 3)" in r for r in report.decision.reasons)
    assert not [c for c in report.decision.checks if c.kind == "regression"]
