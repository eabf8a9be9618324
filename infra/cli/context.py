"""Shared plumbing of the `mlops` commands: the consoles, the per-process Context (settings, config,
platform, code version, job names) and the helpers several commands use."""

from __future__ import annotations

import argparse
import functools
import os
import secrets
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from infra.errors import UsageError
from infra.settings import load

if TYPE_CHECKING:
    from infra.cli.inputs import RunInputs

CONTENT_TYPES = {
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".npy": "application/x-npy",
    ".json": "application/json",
}
# CI logs are not terminals: give tables room instead of rich's 80-column default.
_WIDTH = None if sys.stdout.isatty() else int(os.environ.get("COLUMNS", "140"))
# emoji=False: rich would turn ":secret:" inside a Secrets Manager ARN into an emoji.
# soft_wrap: a long message (a recovery, an error naming a resource) stays one line, whole, for logs and
# scripts that search it; tables still fit the width.
console = Console(highlight=False, width=_WIDTH, emoji=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, width=_WIDTH, emoji=False, soft_wrap=True)


# --- shared plumbing -------------------------------------------------------------------------------


class Context:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.settings, self.config = load()
        if getattr(args, "home", None):
            self.settings.home = Path(args.home)
        self.home = self.settings.home.resolve()
        self._run: RunInputs | None = None
        self._platform: Any = None
        if hasattr(args, "hp"):  # a command that starts a run: its inputs are checked before anything else
            from infra.cli.inputs import resolve

            self._run = resolve(self.config, args, local=self.local)
            self.config = self._run.config

    @property
    def run(self) -> RunInputs:
        """The resolved run inputs of `train`, `pipeline`, `tune` and `validate`."""
        if self._run is None:
            raise UsageError(f"`mlops {self.args.command}` takes no run inputs")
        return self._run

    @property
    def hyperparameters(self) -> dict[str, str]:
        return self.run.hyperparameters

    @property
    def local(self) -> bool:
        return bool(getattr(self.args, "local", False))

    @property
    def dry_run(self) -> bool:
        return bool(getattr(self.args, "dry_run", False))

    def platform(self) -> Any:
        if self.local:
            if self.dry_run:
                raise UsageError("--dry-run plans AWS requests; the local platform has nothing to plan")
            from infra.local.platform import LocalPlatform

            port = self.settings.endpoint_port or self.config.local.endpoint_port
            return LocalPlatform(
                self.home,
                host=self.settings.endpoint_host,
                port=port,
                smoke_images=self.config.local.smoke_images,
            )
        from infra.cli.aws import aws_platform

        return aws_platform(self)

    def platform_cached(self) -> Any:
        """One platform per command, for commands that use it in several places."""
        if self._platform is None:
            self._platform = self.platform()
        return self._platform

    @property
    def task(self) -> str:
        """The task of this run (classification unless the run inputs say otherwise)."""
        return self._run.hyperparameters.get("task", "classification") if self._run else "classification"

    def default_data(self) -> Path:
        """The dataset a run without --data uses: [local] dataset, or for detection and segmentation
        the synthetic dataset of that task (`mlops data synthetic --task TASK` writes it there)."""
        if self.task != "classification" and self.config.local.dataset == "synthetic":
            return self.home / "data" / f"synthetic-{self.task}"
        return self.home / "data" / self.config.local.dataset

    @functools.cache  # noqa: B019 -- one Context per process: asking git once is enough
    def code_version(self) -> str:
        if self.settings.code_version:
            return self.settings.code_version
        try:
            sha = subprocess.run(
                ["git", "rev-parse", "--short=12", "HEAD"],  # noqa: S607 -- git from PATH, as a user runs it
                capture_output=True,
                text=True,
                check=True,
                timeout=10,
            ).stdout.strip()
            dirty = subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],  # noqa: S607 -- as above
                capture_output=True,
                text=True,
                check=True,
                timeout=10,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "unknown"
        return f"{sha}-dirty" if dirty else sha

    def job_name(self) -> str:
        given = getattr(self.args, "job_name", None)
        if given:
            import re

            if not re.fullmatch(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}", given):
                raise UsageError(
                    f"--job-name {given!r}: use letters, digits and hyphens, at most 63 characters"
                )
            return str(given)
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        return f"{self.config.project.name}-{stamp}-{secrets.token_hex(2)}"[:63]


def _latest_job(ctx: Context) -> str:
    if not ctx.local:
        raise UsageError("name the SageMaker training job with --job (see `mlops jobs list`)")
    jobs = ctx.home / "jobs"
    found = (
        sorted((p for p in jobs.glob("*/job.json")), key=lambda p: p.stat().st_mtime) if jobs.is_dir() else []
    )
    if not found:
        raise UsageError(f"no local training jobs under {jobs}; run `mlops train --local` first")
    return found[-1].parent.name


def _ensure_synthetic(ctx: Context, data: Path) -> str:
    from infra.datasets import DatasetError, make_synthetic, make_synthetic_yolo

    if ((data / "train").is_dir() and (data / "test").is_dir()) or (data / "data.yaml").is_file():
        return f"using {data}"
    if ctx.task != "classification" and data == ctx.default_data():
        try:
            made = make_synthetic_yolo(
                data, task=ctx.task, progress=lambda m: console.print(f"  [dim]{m}[/]")
            )
        except DatasetError as exc:
            raise UsageError(str(exc)) from None
        return f"synthetic {ctx.task} dataset at {data} ({made.seconds:.1f}s)"
    if data != ctx.default_data() or ctx.config.local.dataset != "synthetic":
        raise UsageError(
            f"no dataset at {data}; create it with `mlops data synthetic --out {data}` "
            "or `mlops data cifar10 --out ...`"
        )
    try:
        info = make_synthetic(data, progress=lambda m: console.print(f"  [dim]{m}[/]"))
    except DatasetError as exc:
        raise UsageError(str(exc)) from None
    counts = ", ".join(f"{k} {v}" for k, v in info.counts.items())
    return f"synthetic dataset at {data} ({counts}; {info.seconds:.1f}s)"
