"""`mlops runs compare`: a candidate against production (or any two versions), metric by metric.

Every metric either version recorded, with the delta and whether it moved the right way (the goal
comes from the trainer's own metric table), their W&B runs, jobs and code versions. In a workflow the
same table goes to the job summary.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from infra.cli.context import Context, console
from infra.errors import UsageError


def _goal(metric: str) -> str | None:
    from train.metrics import METRICS

    return next((m.goal for m in METRICS if m.key == metric), None)


def compare_rows(
    candidate: dict[str, float], baseline: dict[str, float]
) -> list[tuple[str, str, str, str, str]]:
    """(metric, candidate, baseline, delta, verdict) for every metric of either side."""
    rows = []
    for metric in sorted(set(candidate) | set(baseline)):
        a, b = candidate.get(metric), baseline.get(metric)
        delta = a - b if a is not None and b is not None else None
        goal = _goal(metric)
        if delta is None or goal is None or delta == 0:
            verdict = "" if delta is None or goal is None else "same"
        else:
            verdict = "better" if (delta > 0) == (goal == "maximize") else "worse"
        rows.append(
            (
                metric,
                "" if a is None else f"{a:.4f}",
                "" if b is None else f"{b:.4f}",
                "" if delta is None else f"{delta:+.4f}",
                verdict,
            )
        )
    return rows


def cmd_runs(ctx: Context) -> int:
    from rich.table import Table

    from infra.github import write_summary

    platform = ctx.platform()
    versions = {v.version: v for v in platform.versions()}
    if not versions:
        raise UsageError("the registry is empty: nothing to compare")
    candidate = versions.get(ctx.args.candidate) if ctx.args.candidate else versions[max(versions)]
    if candidate is None:
        raise UsageError(f"no version {ctx.args.candidate} in the registry (see `mlops versions`)")
    if ctx.args.against:
        baseline = versions.get(ctx.args.against)
        if baseline is None:
            raise UsageError(f"no version {ctx.args.against} in the registry (see `mlops versions`)")
    else:
        baseline = platform.production()
        if baseline is None:
            raise UsageError("nothing serves in production; name a version to compare with: --against N")
    if baseline.version == candidate.version:
        raise UsageError(f"{candidate.label} is the version it would be compared with; pick another")
    rows = compare_rows(candidate.metrics, baseline.metrics)
    left, right = (
        f"{candidate.label} ({candidate.status})",
        f"{baseline.label}" + (" (production)" if not ctx.args.against else f" ({baseline.status})"),
    )
    table = Table(title=f"{left} against {right}", title_justify="left")
    for col in ("metric", candidate.label, baseline.label, "delta", ""):
        table.add_column(col)
    for row in rows:
        table.add_row(*row)
    console.print(table)
    for version in (candidate, baseline):
        run = (version.wandb or {}).get("id", "none")
        console.print(
            f"{version.label}: job {version.source_job}, code {version.code_version}, W&B run {run}"
        )
    markdown = [
        f"### {left} against {right}",
        "",
        f"| metric | {candidate.label} | {baseline.label} | delta | |",
        "|---|---|---|---|---|",
        *("| " + " | ".join(row) + " |" for row in rows),
        "",
    ]
    write_summary("\n".join(markdown))
    return 0


def add_runs_command(sub: Any, local_flag: Callable[[argparse.ArgumentParser], None]) -> None:
    runs = sub.add_parser("runs", help="compare registered runs: a candidate against production")
    rsub = runs.add_subparsers(dest="action", required=True, metavar="ACTION")
    cmp = rsub.add_parser(
        "compare",
        help="every metric of two versions side by side, with the delta and whether it improved",
        description="Compare a version (default: the newest) with the one in production (or --against N), "
        "metric by metric: every metric either recorded, the delta, and better/worse by the metric's goal.",
    )
    cmp.add_argument("--candidate", type=int, metavar="N", help="the version to judge (default: the newest)")
    cmp.add_argument(
        "--against", type=int, metavar="M", help="compare with this version instead of production"
    )
    local_flag(cmp)
    runs.set_defaults(handler=cmd_runs)
