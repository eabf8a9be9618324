"""The pipeline, written once against the platform protocol.

    data -> train -> evaluate (gate vs thresholds and production) -> register -> deploy -> verify

Decisions are data: each stage returns a record; the gate's decision travels with the registered
version. A rejected candidate is registered as Rejected and never deployed. Deploy and verify go through
`infra.guard`: a candidate that fails either is marked failed in the registry, and production goes back
to what served before (or, when nothing did, the failed model is taken out of service). Every outcome
line is built from what happened, and every stage failure ends the run with its reason and an exit code:

    0  promoted, or kept production (the gate rejected the candidate)
    1  an unexpected error in a stage (the summary names it)
    2  no data
    3  training did not complete
    5  deploy or verification failed; production is safe (the previous version serves, or nothing
       serves because nothing did before)
    6  evaluate or register failed (the registry or the production endpoint could not be read or written)
    7  deploy or verification failed and production is NOT safe: a failed candidate may still serve, or
       nothing serves although something did: a person must look
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from artifact.manifest import load_manifest
from infra import gate, guard
from infra.champion import Evaluator, champion_metrics, evaluate_in_subprocess
from infra.errors import MlopsError
from infra.platform import DeployResult, LineSink, ModelVersion, Platform, TrainingResult, TrainingSpec
from infra.settings import Config
from infra.wandb_alias import move_production

OK, FAILED, SKIPPED = "ok", "failed", "skipped"
EXIT_ERROR, EXIT_NO_DATA, EXIT_TRAINING, EXIT_RECORD = 1, 2, 3, 6


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
    guarded: guard.Guarded | None = None
    recovery: guard.Recovery | None = None  # after a failed deploy or verification
    verify: dict[str, Any] | None = None
    endpoint_url: str | None = None
    wandb_alias: str | None = None  # what became of W&B's `production` alias after a promotion
    outcome: str = ""
    exit_code: int = 0

    @property
    def deploy(self) -> DeployResult | None:
        """The platform's own account of the deploy (None when it raised or never ran)."""
        return self.guarded.result if self.guarded else None


class StageObserver(Protocol):
    def started(self, name: str) -> None: ...
    def finished(self, stage: Stage) -> None: ...


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
    failure: dict[str, int] = {}  # stage -> exit code when a stage failed in an unexpected way

    def stage(name: str, work: Callable[[], tuple[str, str]]) -> bool:
        observer.started(name)
        tick = time.monotonic()
        try:
            status, detail = work()
        except MlopsError as exc:
            status, detail = FAILED, str(exc)
        except Exception as exc:  # noqa: BLE001 -- any stage failure ends in the summary, not a traceback
            status, detail = FAILED, f"unexpected {type(exc).__name__}: {exc}"
            failure[name] = EXIT_ERROR
        record = Stage(name, status, time.monotonic() - tick, detail)
        report.stages.append(record)
        observer.finished(record)
        return status != FAILED

    def skip(names: tuple[str, ...], why: str) -> None:
        for name in names:
            report.stages.append(Stage(name, SKIPPED, 0.0, why))
            observer.finished(report.stages[-1])

    def stop(name: str, outcome: str, code: int) -> PipelineReport:
        """End the run after stage `name` failed: its reason in the outcome, the later stages skipped."""
        detail = report.stages[-1].detail
        later = ("data", "train", "evaluate", "register", "deploy", "verify")
        skip(later[later.index(name) + 1 :], f"{name} failed")
        report.outcome = f"{outcome}: {detail}" if detail else outcome
        report.exit_code = failure.get(name, code)
        return report

    def do_data() -> tuple[str, str]:
        return OK, ensure_data()

    def do_train() -> tuple[str, str]:
        result = platform.train(spec, on_line)
        report.training = result
        if result.status != "Completed":
            return FAILED, f"{result.job_name} {result.status}: {result.failure_reason}"
        acc = result.metrics.get("test_accuracy")
        return OK, f"{result.job_name}" + (f", test_accuracy={acc:.4f}" if acc is not None else "")

    def do_evaluate(training: TrainingResult) -> tuple[str, str]:
        production = platform.production()
        report.production_before = production
        compare: dict[str, float] | None = None
        notes: list[str] = []
        if production is not None:
            compare, notes = champion_metrics(platform, production, training, spec.data, evaluate_model)
        judge = config.gate.for_task(gate.candidate_task(training.model_dir))
        report.decision = gate.evaluate(
            training.metrics, judge, compare, production.label if production else None, notes
        )
        return OK, report.decision.summary

    def do_register(training: TrainingResult, decision: gate.Decision) -> tuple[str, str]:
        report.version = platform.register(training, decision.to_dict())
        return OK, f"{report.version.label} ({report.version.status})"

    def do_deploy(version: ModelVersion) -> tuple[str, str]:
        guarded = guard.deploy(platform, version.version)
        report.guarded, report.recovery = guarded, guarded.recovery
        report.endpoint_url = guarded.result.url if guarded.result else platform.endpoint_status().url
        if not guarded.ok:
            return FAILED, guarded.message
        smoke = (guarded.result.smoke if guarded.result else None) or {}
        return OK, (
            f"{guarded.message}; smoke test {smoke.get('images', 0)} images, "
            f"p50 {smoke.get('p50_ms') or 0:.1f} ms"
        )

    def do_verify(version: ModelVersion, training: TrainingResult) -> tuple[str, str]:
        classes = load_manifest(training.model_dir).classes if training.model_dir else []
        previous = report.guarded.previous if report.guarded else None
        check, recovery = guard.verify(
            platform,
            version.version,
            previous=previous,
            data=spec.data,
            count=config.local.verify_images,
            classes=classes,
        )
        report.verify = check
        if recovery is None:
            return OK, verify_line(check)
        report.recovery = recovery
        report.endpoint_url = platform.endpoint_status().url
        return FAILED, recovery.message

    if not stage("data", do_data):
        return stop("data", "failed: no data", EXIT_NO_DATA)
    if not stage("train", do_train) or report.training is None:
        return stop("train", "failed: training did not complete", EXIT_TRAINING)
    training = report.training
    if not stage("evaluate", lambda: do_evaluate(training)) or report.decision is None:
        kept = report.production_before.label if report.production_before else "whatever served"
        return stop("evaluate", f"failed: evaluate ({kept} is unchanged)", EXIT_RECORD)
    decision = report.decision
    if not stage("register", lambda: do_register(training, decision)) or report.version is None:
        return stop("register", "failed: register (production is unchanged)", EXIT_RECORD)
    candidate = report.version
    if not decision.passed:
        skip(("deploy", "verify"), "the gate rejected the candidate")
        kept = report.production_before.label if report.production_before else "nothing"
        report.outcome = f"kept {kept} in production: candidate {candidate.label} rejected"
        report.endpoint_url = platform.endpoint_status().url
        return report
    if not stage("deploy", lambda: do_deploy(candidate)):
        if report.guarded is None:  # refused before anything changed (a UsageError), or an internal error
            outcome = (
                f"deploy of {candidate.label} failed unexpectedly; check what serves"
                if "deploy" in failure
                else f"deploy of {candidate.label} refused; production is unchanged"
            )
            return stop("deploy", outcome, guard.DEPLOY_FAILED)
        skip(("verify",), "deploy failed")
        report.outcome = _failed_outcome("deploy", candidate, report.recovery)
        report.exit_code = report.guarded.exit_code
        return report
    if not stage("verify", lambda: do_verify(candidate, training)):
        report.outcome = _failed_outcome("verification", candidate, report.recovery)
        report.exit_code = failure.get("verify") or (
            report.recovery.exit_code if report.recovery else guard.UNSAFE
        )
        return report
    before = report.production_before.label if report.production_before else "none"
    report.outcome = f"promoted {candidate.label} (previous production: {before})"
    report.wandb_alias = move_production(candidate.wandb)
    return report


def verify_line(check: dict[str, Any]) -> str:
    return f"{check['images']} test images, accuracy {check['accuracy']:.4f}, p50 {check['p50_ms']:.1f} ms"


def _failed_outcome(what: str, candidate: ModelVersion, recovery: guard.Recovery | None) -> str:
    """One line from what the recovery found and did, never from what it was meant to do."""
    if recovery is None:
        return f"{what} of {candidate.label} failed; what serves now is unknown"
    serving = recovery.serving
    now = (
        "what serves now is unknown"
        if serving is guard.UNKNOWN
        else ("nothing is serving" if serving is None else f"v{serving} is serving")
    )
    if not recovery.safe:
        return f"{what} of {candidate.label} failed; {now}; production needs attention: {recovery.steps[-1]}"
    if recovery.rolled_back:
        return f"{what} of {candidate.label} failed; rolled back: {now}"
    return f"{what} of {candidate.label} failed; {now}"
