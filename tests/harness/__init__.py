"""Offline test harnesses: run GitHub Actions workflows locally (see :mod:`tests.harness.workflow`)."""

from tests.harness.expressions import (
    ExpressionError,
    ExpressionRuntimeError,
    evaluate,
    evaluate_template,
    interpolate,
)
from tests.harness.workflow import (
    JobResult,
    StepResult,
    UsesCall,
    UsesResult,
    WorkflowError,
    WorkflowResult,
    load_workflow,
    parse_file_command,
    run_workflow,
)

__all__ = [
    "ExpressionError",
    "ExpressionRuntimeError",
    "JobResult",
    "StepResult",
    "UsesCall",
    "UsesResult",
    "WorkflowError",
    "WorkflowResult",
    "evaluate",
    "evaluate_template",
    "interpolate",
    "load_workflow",
    "parse_file_command",
    "run_workflow",
]
