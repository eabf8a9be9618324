"""The pipeline's decisions and failure paths, against two fakes that behave like the two platforms.

`LocalLike` switches the endpoint only after the candidate passed its smoke test (as infra/local does).
`SageMakerLike` serves a new version as soon as it is InService, whatever its smoke test says (as a
SageMaker endpoint does after CreateEndpoint, or after a blue/green update whose bake ended): a failed
candidate then keeps the traffic unless the pipeline rolls it back. Every failure path runs on both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from infra.errors import MlopsError
from infra.history import ROLLBACK, ProductionEvent, intervals, now_iso, rollback_target
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


class FakeAwsError(MlopsError):
    """What infra.aws.errors raises for an AWS failure (AccessDenied, throttling, ...)."""


class FakePlatform:
    """A registry, an endpoint and a production history in memory. Behaviours are plain attributes:

    bad_smoke      versions whose smoke test fails (the deploy's own check)
    bad_answers    versions that answer invocations with HTTP 500 once serving (verification fails)
    broken         operations that raise FakeAwsError: "production", "rollback", "take_down", "register"
    """

    name = "fake"
    switches_before_smoke = False  # SageMakerLike: True

    def __init__(self, tmp: Path, *, metrics: dict[str, float], status: str = "Completed") -> None:
        self.metrics, self.status = metrics, status
        self.registry: dict[int, ModelVersion] = {}
        self.serving: int | None = None
        self.events: list[ProductionEvent] = []
        self.calls: list[tuple[str, Any]] = []
        self.bad_smoke: set[int] = set()
        self.bad_answers: set[int] = set()
        self.broken: set[str] = set()
        self.candidate_dir = tmp / "model"
        self.wandb: dict[str, Any] | None = None  # the W&B run the next training reports
        make_model_artifact(self.candidate_dir, classes=CLASSES, test_fingerprint="sha256:new-test-set")

    def with_production(self, version: int = 1, accuracy: float = 0.9) -> FakePlatform:
        self.registry[version] = ModelVersion(
            version, "Approved", {"test_accuracy": accuracy}, self.candidate_dir, "then", "job-0", "sha0"
        )
        self._switch(version, "deploy")
        return self

    def _switch(self, version: int | None, action: str) -> None:
        self.events.append(ProductionEvent(version, action, now_iso(), self.serving))
        self.serving = version

    # the protocol
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
            wandb=self.wandb,
        )

    def register(self, result: TrainingResult, decision: dict[str, Any]) -> ModelVersion:
        if "register" in self.broken:
            raise KeyError("ModelPackageArn")  # not an MlopsError: an unexpected failure
        status = "Approved" if decision["passed"] else "Rejected"
        number = max(self.registry, default=0) + 1
        self.registry[number] = ModelVersion(
            number, status, result.metrics, self.candidate_dir, "now", result.job_name, "sha", result.wandb
        )
        self.calls.append(("register", status))
        return self.registry[number]

    def versions(self) -> list[ModelVersion]:
        return [self.registry[n] for n in sorted(self.registry)]

    def production(self) -> ModelVersion | None:
        if "production" in self.broken:
            raise FakeAwsError("reading endpoint t-endpoint: AccessDeniedException: not authorized")
        return self.registry.get(self.serving) if self.serving is not None else None

    def model_dir(self, version: ModelVersion) -> Path:
        return version.model_dir

    def deploy(self, version: int, *, action: str = "deploy", allow_untested: bool = False) -> DeployResult:
        self.calls.append((action, version))
        if action == ROLLBACK and "rollback" in self.broken:
            raise FakeAwsError("UpdateEndpoint: ThrottlingException: rate exceeded")
        assert self.registry[version].status == "Approved", f"deployed a {self.registry[version].status}"
        previous = self.serving
        smoke_ok = version not in self.bad_smoke
        if smoke_ok or self.switches_before_smoke:
            self._switch(version, action)
        if not smoke_ok:
            return DeployResult(
                False,
                self.serving,
                "http://fake",
                f"v{version} failed its smoke test: HTTP 500",
                None,
                previous,
            )
        smoke = {"ok": True, "images": 3, "p50_ms": 1.0, "errors": []}
        return DeployResult(True, version, "http://fake", f"v{version} serving", smoke, previous)

    def mark_failed(self, version: int, stage: str, reason: str) -> None:
        old = self.registry[version]
        self.registry[version] = ModelVersion(
            old.version,
            "Rejected",
            old.metrics,
            old.model_dir,
            old.created_at,
            old.source_job,
            old.code_version,
            old.wandb,
            failure={"stage": stage, "reason": reason, "at": now_iso()},
        )

    def history(self) -> list[ProductionEvent]:
        return list(self.events)

    def take_down(self, reason: str) -> str:
        self.calls.append(("take_down", self.serving))
        if "take_down" in self.broken:
            raise FakeAwsError("DeleteEndpoint: AccessDeniedException")
        self._switch(None, "down")
        return "endpoint deleted"

    def endpoint_status(self) -> EndpointStatus:
        running = self.serving is not None
        return EndpointStatus(running, running, self.serving, "http://fake" if running else None)

    def invoke(self, body: bytes, content_type: str) -> tuple[int, dict[str, Any]]:
        if self.serving in self.bad_answers:
            return 500, {"error": "internal error during inference"}
        return 200, {"predictions": [{"top_k": [{"label": "circle", "probability": 1.0}]}]}


class LocalLike(FakePlatform):
    name = "local-like"


class SageMakerLike(FakePlatform):
    name = "sagemaker-like"
    switches_before_smoke = True


BOTH = pytest.mark.parametrize("kind", [LocalLike, SageMakerLike], ids=["local", "sagemaker"])


class Observer:
    def __init__(self) -> None:
        self.done: list[tuple[str, str]] = []

    def started(self, name: str) -> None:
        pass

    def finished(self, stage: Any) -> None:
        self.done.append((stage.name, stage.status))


def held_out_images(tmp: Path) -> Path:
    for cls in CLASSES:
        (tmp / "data" / "test" / cls).mkdir(parents=True)
        for i in range(2):
            (tmp / "data" / "test" / cls / f"{i}.png").write_bytes(png_bytes(seed=i))
    return tmp / "data"


@pytest.fixture
def data(tmp_path: Path) -> Path:
    return held_out_images(tmp_path)


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


def statuses(observer: Observer) -> dict[str, str]:
    return dict(observer.done)


# the happy paths


@BOTH
def test_a_passing_first_candidate_is_registered_deployed_and_verified(kind, tmp_path, data):
    platform = kind(tmp_path, metrics={"test_accuracy": 0.95})
    report, observer = run(platform, data)
    assert report.exit_code == 0 and report.outcome == "promoted v1 (previous production: none)"
    assert [c[0] for c in platform.calls] == ["train", "register", "deploy"]
    assert observer.done == [(s, "ok") for s in ("data", "train", "evaluate", "register", "deploy", "verify")]
    assert report.verify["images"] == 6 and report.verify["accuracy"] == pytest.approx(1 / 3)
    assert [(e.version, e.action) for e in platform.history()] == [(1, "deploy")]


def test_failed_training_stops_the_pipeline_before_the_registry(tmp_path, data):
    platform = LocalLike(tmp_path, metrics={}, status="Failed")
    report, observer = run(platform, data)
    assert report.exit_code == 3 and [c[0] for c in platform.calls] == ["train"]
    assert report.outcome == "failed: training did not complete: job-1 Failed: AlgorithmError: boom"
    assert [s for _n, s in observer.done[2:]] == ["skipped"] * 4


def test_a_candidate_worse_than_production_is_registered_rejected_and_never_deployed(tmp_path, data):
    platform = LocalLike(tmp_path, metrics={"test_accuracy": 0.85}).with_production(accuracy=0.9)
    report, _observer = run(platform, data)
    assert ("register", "Rejected") in platform.calls
    assert not any(c[0] in ("deploy", "rollback") for c in platform.calls)
    assert report.exit_code == 0 and report.outcome == "kept v1 in production: candidate v2 rejected"
    assert "vs production 0.9000" in report.decision.summary


# a failed deploy (the candidate's smoke test)


@BOTH
def test_a_candidate_that_fails_its_smoke_test_never_keeps_serving(kind, tmp_path, data):
    platform = kind(tmp_path, metrics={"test_accuracy": 0.95}).with_production()
    platform.bad_smoke = {2}
    report, observer = run(platform, data)

    assert platform.serving == 1
    assert report.exit_code == 5
    assert statuses(observer)["deploy"] == "failed" and statuses(observer)["verify"] == "skipped"
    if kind is SageMakerLike:  # it took the traffic: the pipeline rolled it back
        assert platform.calls[-1] == ("rollback", 1)
        assert report.outcome == "deploy of v2 failed; rolled back: v1 is serving"
        assert "rolled back to v1, which serves again" in report.stages[-2].detail
    else:  # it never took the traffic
        assert ("rollback", 1) not in platform.calls
        assert report.outcome == "deploy of v2 failed; v1 is serving"
        assert "v1 still serves (the candidate does not)" in report.stages[-2].detail


@BOTH
def test_a_failed_candidate_is_marked_in_the_registry_and_never_picked_again(kind, tmp_path, data):
    platform = kind(tmp_path, metrics={"test_accuracy": 0.95}).with_production()
    platform.bad_smoke = {2}
    run(platform, data)

    failed = platform.registry[2]
    assert (failed.status, failed.state) == ("Rejected", "Rejected (deploy failed)")
    assert "failed its smoke test: HTTP 500" in failed.failure["reason"]
    assert [v.version for v in platform.versions() if v.status == "Approved"] == [1]  # `mlops deploy`
    approved = {v.version for v in platform.versions() if v.status == "Approved"}
    assert rollback_target(platform.history(), platform.serving, approved.__contains__) is None


@BOTH
def test_a_failed_first_deployment_is_taken_out_of_service(kind, tmp_path, data):
    platform = kind(tmp_path, metrics={"test_accuracy": 0.95})
    platform.bad_smoke = {1}
    report, _observer = run(platform, data)

    assert platform.serving is None and report.exit_code == 5
    assert report.outcome == "deploy of v1 failed; nothing is serving"
    if kind is SageMakerLike:  # it was InService: the pipeline took it down
        assert ("take_down", 1) in platform.calls
        assert "nothing served before it, so it was taken out of service" in report.stages[-2].detail
    else:
        assert ("take_down", 1) not in platform.calls


def test_a_failed_first_deployment_that_cannot_be_taken_down_says_it_still_serves(tmp_path, data):
    platform = SageMakerLike(tmp_path, metrics={"test_accuracy": 0.95})
    platform.bad_smoke, platform.broken = {1}, {"take_down"}
    report, _observer = run(platform, data)

    assert platform.serving == 1 and report.exit_code == 7
    assert "v1 STILL SERVES: nothing served before it, and taking it out of service failed" in report.outcome
    assert "DeleteEndpoint: AccessDeniedException" in report.outcome


# a failed verification (after the switch)


@BOTH
def test_a_failed_verification_rolls_back_to_the_version_that_served_before(kind, tmp_path, data):
    platform = kind(tmp_path, metrics={"test_accuracy": 0.95}).with_production()
    platform.bad_answers = {2}
    report, observer = run(platform, data)

    assert platform.serving == 1 and platform.calls[-1] == ("rollback", 1)
    assert report.exit_code == 5 and statuses(observer)["verify"] == "failed"
    assert report.outcome == "verification of v2 failed; rolled back: v1 is serving"
    assert platform.registry[2].state == "Rejected (verify failed)"
    assert [(e.version, e.action) for e in platform.history()] == [
        (1, "deploy"),
        (2, "deploy"),
        (1, "rollback"),
    ]
    assert [(s.version, s.end is None) for s in intervals(platform.history())] == [
        (1, False),
        (2, False),
        (1, True),
    ]


@BOTH
def test_a_failed_rollback_says_the_failed_version_still_serves(kind, tmp_path, data):
    platform = kind(tmp_path, metrics={"test_accuracy": 0.95}).with_production()
    platform.bad_answers, platform.broken = {2}, {"rollback"}
    report, _observer = run(platform, data)

    assert platform.serving == 2 and report.exit_code == 7
    assert "rolled back" not in report.outcome.split("production needs attention")[0]
    assert report.outcome.startswith("verification of v2 failed; v2 is serving; production needs attention")
    assert "v2 STILL SERVES: the rollback to v1 failed (UpdateEndpoint: ThrottlingException" in report.outcome


@BOTH
def test_a_failed_verification_of_a_first_deployment_takes_it_down(kind, tmp_path, data):
    platform = kind(tmp_path, metrics={"test_accuracy": 0.95})
    platform.bad_answers = {1}
    report, _observer = run(platform, data)

    assert platform.serving is None and ("take_down", 1) in platform.calls
    assert report.exit_code == 5 and report.outcome == "verification of v1 failed; nothing is serving"
    assert platform.registry[1].state == "Rejected (verify failed)"


# other stage failures end in the summary, never in a traceback


@BOTH
def test_an_evaluate_error_ends_the_run_with_its_reason_and_registers_nothing(kind, tmp_path, data):
    platform = kind(tmp_path, metrics={"test_accuracy": 0.95}).with_production()
    platform.broken = {"production"}
    report, observer = run(platform, data)

    assert report.exit_code == 6 and platform.registry.keys() == {1}
    assert report.outcome == (
        "failed: evaluate (whatever served is unchanged): "
        "reading endpoint t-endpoint: AccessDeniedException: not authorized"
    )
    assert [statuses(observer)[s] for s in ("evaluate", "register", "deploy", "verify")] == [
        "failed",
        "skipped",
        "skipped",
        "skipped",
    ]


def test_an_unexpected_error_in_a_stage_is_reported_with_its_type(tmp_path, data):
    platform = LocalLike(tmp_path, metrics={"test_accuracy": 0.95})
    platform.broken = {"register"}
    report, observer = run(platform, data)

    assert report.exit_code == 1 and platform.serving is None
    assert (
        report.outcome == "failed: register (production is unchanged): unexpected KeyError: 'ModelPackageArn'"
    )
    assert statuses(observer)["deploy"] == "skipped"


# champion and challenger


def champion(tmp_path: Path, *, fingerprint: str, classes=CLASSES, recorded: float = 0.99) -> ModelVersion:
    model_dir = tmp_path / "champion"
    make_model_artifact(model_dir, classes=classes, test_fingerprint=fingerprint)
    return ModelVersion(1, "Approved", {"test_accuracy": recorded}, model_dir, "then", "job-0", "sha0")


def with_champion(platform: FakePlatform, production: ModelVersion) -> FakePlatform:
    platform.registry[1] = production
    platform.serving = 1
    return platform


def test_production_scored_on_the_same_test_set_is_compared_by_its_recorded_metrics(tmp_path, data):
    production = champion(tmp_path, fingerprint="sha256:new-test-set", recorded=0.99)
    platform = with_champion(LocalLike(tmp_path, metrics={"test_accuracy": 0.95}), production)
    report, _observer = run(platform, data)  # the evaluator would fail the test if called
    assert not report.decision.passed and "vs production 0.9900" in report.decision.summary


def test_production_from_another_test_set_is_re_evaluated_on_the_candidates(tmp_path, data):
    production = champion(tmp_path, fingerprint="sha256:old-test-set", recorded=0.99)
    platform = with_champion(LocalLike(tmp_path, metrics={"test_accuracy": 0.95}), production)
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
    platform = with_champion(LocalLike(tmp_path, metrics={"test_accuracy": 0.95}), production)
    report, _observer = run(platform, data)
    assert report.decision.passed and "not compared with production v1" in report.decision.summary
    assert any("predicts other classes (2 vs 3)" in r for r in report.decision.reasons)
    assert not [c for c in report.decision.checks if c.kind == "regression"]
