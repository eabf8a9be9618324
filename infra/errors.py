"""The project's own exceptions: each carries a message a user can act on, and a process exit code."""

from __future__ import annotations


class MlopsError(Exception):
    """An expected failure: printed as one line (no traceback) and turned into `exit_code`."""

    exit_code = 1


class UsageError(MlopsError):
    """Bad arguments, settings or configuration."""

    exit_code = 2


class TrainingFailed(MlopsError):
    exit_code = 3


class GateRejected(MlopsError):
    exit_code = 4


class DeployFailed(MlopsError):
    exit_code = 5
