"""The quality gate: pure logic, no I/O. Absolute thresholds plus champion/challenger against production.

A candidate passes when every absolute threshold holds and, on each compared metric, it is no worse than
the production model by more than the tolerance. The decision is data: each check with its numbers, and
reasons a reviewer can read in the job summary.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from infra.settings import GateConfig
from train.metrics import BY_KEY


@dataclass(frozen=True)
class Check:
    metric: str
    kind: str  # "threshold" or "regression"
    op: str  # ">=" or "<="
    target: float | None  # the threshold, or production's value adjusted by the tolerance
    value: float | None  # the candidate's value (None when it lacks the metric)
    passed: bool
    production: float | None = None

    @property
    def delta(self) -> float | None:
        if self.value is None or self.production is None:
            return None
        return self.value - self.production

    def describe(self) -> str:
        if self.value is None:
            return f"{self.metric} is missing from the candidate's metrics"
        mark = "ok" if self.passed else "FAILED"
        if self.kind == "threshold":
            return f"{self.metric} {self.value:.4f} {self.op} {self.target:.4f} ({mark})"
        return (
            f"{self.metric} {self.value:.4f} vs production {self.production:.4f} "
            f"({self.delta:+.4f}; must be {self.op} {self.target:.4f}) ({mark})"
        )


@dataclass(frozen=True)
class Decision:
    passed: bool
    gate_version: int
    checks: list[Check]
    production_version: str | None
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # how production was measured, when that needs saying

    @property
    def summary(self) -> str:
        return self.reasons[0] if self.reasons else ("passed" if self.passed else "rejected")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "summary": self.summary}


def _threshold(metric: str, op: str, target: float, candidate: Mapping[str, float]) -> Check:
    value = candidate.get(metric)
    passed = value is not None and (value >= target if op == ">=" else value <= target)
    return Check(metric, "threshold", op, target, value, passed)


def _regression(
    metric: str, candidate: Mapping[str, float], production: Mapping[str, float], tolerance: float
) -> Check | None:
    prod = production.get(metric)
    if prod is None:  # production predates this metric: nothing to compare against
        return None
    value = candidate.get(metric)
    if BY_KEY[metric].goal == "maximize":
        op, target = ">=", prod - tolerance
    else:
        op, target = "<=", prod + tolerance
    passed = value is not None and (value >= target if op == ">=" else value <= target)
    return Check(metric, "regression", op, target, value, passed, production=prod)


def candidate_task(model_dir: Path | None, default: str = "classification") -> str:
    """The task a candidate was trained for, from its manifest: which `[gate.<task>]` judges it."""
    if model_dir is None or not (model_dir / "manifest.json").is_file():
        return default
    from artifact.manifest import load_manifest

    return str(load_manifest(model_dir).task)


def evaluate(
    candidate: Mapping[str, float],
    gate: GateConfig,
    production: Mapping[str, float] | None = None,
    production_version: str | None = None,
    notes: Sequence[str] = (),
) -> Decision:
    """`production` None with a `production_version` means a model serves but cannot be compared
    like for like (the caller says why in `notes`): thresholds alone decide."""
    checks = [_threshold(m, ">=", t, candidate) for m, t in gate.min.items()]
    checks += [_threshold(m, "<=", t, candidate) for m, t in gate.max.items()]
    if production is not None:
        checks += [c for m in gate.compare if (c := _regression(m, candidate, production, gate.tolerance))]
    failed = [c for c in checks if not c.passed]
    passed = not failed
    if failed:
        reasons = ["rejected: " + "; ".join(c.describe() for c in failed)]
    elif production is None and production_version is not None:
        reasons = [
            f"promote: meets all {len(checks)} thresholds of gate v{gate.version}; "
            f"not compared with production {production_version} (see below)"
        ]
    elif production is None:
        reasons = [
            f"promote: meets all {len(checks)} thresholds of gate v{gate.version}; no model in production yet"
        ]
    else:
        reasons = [
            f"promote: meets all thresholds of gate v{gate.version} and does not regress against "
            f"production {production_version} beyond the tolerance of {gate.tolerance}"
        ]
    reasons += list(notes)
    reasons += [c.describe() for c in checks]
    return Decision(passed, gate.version, checks, production_version, reasons, list(notes))
