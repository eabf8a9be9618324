"""The pipeline, written once against the platform protocol.

    data -> train -> evaluate (gate vs thresholds and production) -> register -> deploy -> verify

Decisions are data: each stage returns a record; the gate's decision travels with the registered
version. A rejected candidate is registered as Rejected and never deployed. A deploy whose smoke test
fails leaves the previous version serving. A verification failure after the switch rolls back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from artifact.manifest import load_manifest
from infra import gate
from infra.champion import Evaluator, champion_metrics, evaluate_in_subprocess
from infra.errors import MlopsError
from infra.platform import DeployResult, LineSink, ModelVersion, Platform, TrainingResult, TrainingSpec
from infra.settings import Config
from infra.smoke import held_out_samples, smoke_test

OK, FAILED, SKIPPED = "ok", "failed", "skipped"


@dataclass
class Stage:
    name: str
    status: str
    seconds: float
    detail: str = ""


@dataclass
class PipelineReport:
    stages: list[Stage] = field(default_factory=list)
    training: TrainingResult | None = None
    decision: gate.Decision | None = None
    production_before: ModelVersion | None = None
    version: ModelVersion | None = None
    deploy: DeployResult | None = None
    verify: dict[str, Any] | None = None
    endpoint_url: str | None = None
    outcome: str = ""
    exit_code: int = 0


class StageObserver(Protocol):
    def started(self, name: str) -> None: ...
    def finished(self, stage: Stage) -> None: ...


def _verify(platform: Platform, data: Path, count: int, classes: list[str]) -> dict[str, Any]:
    """After the switch: real test images through the platform's invoke (the production path)."""
    samples = held_out_samples(data, count, classes)
    if not samples:
        return {"ok": False, "images": 0, "errors": ["no test images to verify with"], "accuracy": 0.0}
    return smoke_test(platform.invoke, samples, classes)


def run_pipeline(  # noqa: PLR0911, PLR0915 -- the stages read top to bottom, one early exit each
    platform: Platform,
    config: Config,
    spec: TrainingSpec,
    *,
    on_line: LineSink,
    observer: StageObserver,
    ensure_data: Callable[[], str],
    evaluate_model: Evaluator = evaluate_in_subprocess,
) -> PipelineReport:
    report = PipelineReport()

    def stage(name: str, work: Callable[[], tuple[str, str]]) -> bool:
        observer.started(name)
        tick = time.monotonic()
        try:
            status, detail = work()
        except MlopsError as exc:
            status, detail = FAILED, str(exc)
        record = Stage(name, status, time.monotonic() - tick, detail)
        report.stages.append(record)
        observer.finished(record)
        return status != FAILED

    def skip(names: tuple[str, ...], why: str) -> None:
        for name in names:
            report.stages.append(Stage(name, SKIPPED, 0.0, why))
            observer.finished(report.stages[-1])

    def do_data() -> tuple[str, str]:
        return OK, ensure_data()

    def do_train() -> tuple[str, str]:
        result = platform.train(spec, on_line)
        report.training = result
        if result.status != "Completed":
            return FAILED, f"{result.job_name} {result.status}: {result.failure_reason}"
        acc = result.metrics.get("test_accuracy")
        return OK, f"{result.job_name}" + (f", test_accuracy={acc:.4f}" if acc is not None else "")

    def do_evaluate() -> tuple[str, str]:
        assert report.training is not None
        production = platform.production()
        report.production_before = production
        compare: dict[str, float] | None = None
        notes: list[str] = []
        if production is not None:
            compare, notes = champion_metrics(
                platform, production, report.training, spec.data, evaluate_model
            )
        report.decision = gate.evaluate(
            report.training.metrics, config.gate, compare, production.label if production else None, notes
        )
        return OK, report.decision.summary

    def do_register() -> tuple[str, str]:
        assert report.training is not None and report.decision is not None
        report.version = platform.register(report.training, report.decision.to_dict())
        return OK, f"{report.version.label} ({report.version.status})"

    def do_deploy() -> tuple[str, str]:
        assert report.version is not None
        result = platform.deploy(report.version.version)
        report.deploy = result
        report.endpoint_url = result.url
        if not result.ok:
            return FAILED, result.message
        smoke = result.smoke or {}
        return OK, (
            f"{result.message}; smoke test {smoke.get('images', 0)} images, "
            f"p50 {smoke.get('p50_ms') or 0:.1f} ms"
        )

    def do_verify() -> tuple[str, str]:
        assert report.version is not None
        assert report.training is not None and report.training.model_dir is not None
        classes = load_manifest(report.training.model_dir).classes
        check = _verify(platform, spec.data, config.local.verify_images, classes)
        report.verify = check
        if check["ok"]:
            return (
                OK,
                f"{check['images']} test images, accuracy {check['accuracy']:.4f}, "
                f"p50 {check['p50_ms']:.1f} ms",
            )
        previous = report.deploy.previous_version if report.deploy else None
        detail = f"verification failed: {'; '.join(check['errors'])}"
        if previous is not None:
            rolled = platform.rollback(previous)
            report.endpoint_url = rolled.url
            detail += f"; rolled back to v{previous}" if rolled.ok else f"; rollback failed: {rolled.message}"
        return FAILED, detail

    if not stage("data", do_data):
        skip(("train", "evaluate", "register", "deploy", "verify"), "no data")
        report.outcome, report.exit_code = "failed: no data", 2
        return report
    if not stage("train", do_train):
        skip(("evaluate", "register", "deploy", "verify"), "training failed")
        report.outcome, report.exit_code = "failed: training did not complete", 3
        return report
    stage("evaluate", do_evaluate)
    if not stage("register", do_register):
        skip(("deploy", "verify"), "registration failed")
        report.outcome, report.exit_code = "failed: registration", 1
        return report
    assert report.decision is not None
    if not report.decision.passed:
        skip(("deploy", "verify"), "the gate rejected the candidate")
        kept = report.production_before.label if report.production_before else "nothing"
        report.outcome = (
            f"kept {kept} in production: candidate {report.version.label if report.version else ''} rejected"
        )
        report.endpoint_url = platform.endpoint_status().url
        return report
    if not stage("deploy", do_deploy):
        skip(("verify",), "deploy failed")
        serving = report.deploy.version if report.deploy else None
        report.outcome = f"deploy failed; {'v' + str(serving) if serving else 'nothing'} is serving"
        report.exit_code = 5
        return report
    if not stage("verify", do_verify):
        report.outcome, report.exit_code = "verification failed; rolled back", 5
        return report
    assert report.version is not None
    before = report.production_before.label if report.production_before else "none"
    report.outcome = f"promoted {report.version.label} (previous production: {before})"
    return report
