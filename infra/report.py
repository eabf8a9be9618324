"""The pipeline summary: a table in the terminal, and the same content as Markdown for the GitHub job
summary (appended to $GITHUB_STEP_SUMMARY when that is set)."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from infra.gate import Decision
from infra.pipeline import FAILED, OK, PipelineReport
from infra.platform import ModelVersion, TrainingResult

_STYLE = {OK: "green", FAILED: "bold red", "skipped": "dim"}


def _wandb_line(report: PipelineReport) -> str:
    return wandb_line(report.training)


def wandb_line(training: TrainingResult | None) -> str:
    info = training.wandb if training else None
    if not info:
        return "none"
    if info.get("url"):
        return str(info["url"])
    where = info.get("dir", "")
    return f"{info['id']} (offline: {where}; push with `wandb sync {where}`)"


def _gate_rows(report: PipelineReport) -> list[tuple[str, str, str, str, str, str]]:
    return gate_rows(report.decision)


def gate_rows(decision: Decision | None) -> list[tuple[str, str, str, str, str, str]]:
    rows: list[tuple[str, str, str, str, str, str]] = []
    if decision is None:
        return rows
    for check in decision.checks:
        value = "missing" if check.value is None else f"{check.value:.4f}"
        target = f"{check.op} {check.target:.4f}" if check.target is not None else ""
        prod = f"{check.production:.4f}" if check.production is not None else ""
        delta = f"{check.delta:+.4f}" if check.delta is not None else ""
        rows.append(
            (
                check.metric,
                check.kind,
                value,
                target,
                prod + (f" ({delta})" if delta else ""),
                "pass" if check.passed else "FAIL",
            )
        )
    return rows


def _billing_line(report: PipelineReport) -> str | None:
    return job_billing_line(report.training)


def job_billing_line(training: TrainingResult | None) -> str | None:
    if training is None or not training.billing:
        return None
    from infra.aws.costs import billing_line

    return f"job {training.job_name}: {billing_line(training.billing)}"


def print_report(report: PipelineReport, console: Console) -> None:
    stages = Table(title="pipeline", title_justify="left")
    for col in ("stage", "status", "seconds", "detail"):
        stages.add_column(col, overflow="fold")
    for s in report.stages:
        stages.add_row(s.name, f"[{_STYLE.get(s.status, '')}]{s.status}[/]", f"{s.seconds:.1f}", s.detail)
    console.print(stages)
    if report.decision is not None:
        before = report.production_before.label if report.production_before else "none"
        table = Table(
            title=f"quality gate v{report.decision.gate_version} (production before: {before})",
            title_justify="left",
        )
        for col in ("metric", "check", "candidate", "required", "production (delta)", "result"):
            table.add_column(col)
        for row in _gate_rows(report):
            table.add_row(*row[:-1], f"[{'green' if row[-1] == 'pass' else 'bold red'}]{row[-1]}[/]")
        console.print(table)
    for note in report.decision.notes if report.decision else []:
        console.print(f"[bold]note:[/]     {note}")
    console.print(f"[bold]decision:[/] {report.decision.summary if report.decision else 'none'}")
    console.print(
        "[bold]version:[/]  "
        + (f"{report.version.label} ({report.version.status})" if report.version else "none")
    )
    console.print(f"[bold]W&B run:[/]  {_wandb_line(report)}")
    if report.wandb_alias:
        alias = escape(report.wandb_alias.removeprefix("W&B: "))
        console.print(f"[bold]W&B alias:[/] {alias}", highlight=False)
    if billing := _billing_line(report):
        console.print(f"[bold]billing:[/]  {billing}")
    console.print(f"[bold]endpoint:[/] {report.endpoint_url or 'not serving'}")
    style = "green" if report.exit_code == 0 else "bold red"
    console.print(f"[bold]outcome:[/]  [{style}]{report.outcome}[/]")


def markdown(report: PipelineReport) -> str:
    lines = ["## Pipeline", "", "| stage | status | seconds | detail |", "|---|---|---|---|"]
    lines += [
        f"| {s.name} | {s.status} | {s.seconds:.1f} | {s.detail.replace('|', '/')} |" for s in report.stages
    ]
    lines += gate_markdown(report.decision)
    lines += [
        "",
        f"**Decision:** {report.decision.summary if report.decision else 'none'}",
        f"**Version:** {report.version.label if report.version else 'none'}",
        f"**W&B run:** {_wandb_line(report)}",
        *([f"**W&B alias:** {report.wandb_alias.removeprefix('W&B: ')}"] if report.wandb_alias else []),
        f"**Billing:** {_billing_line(report) or 'local run'}",
        f"**Endpoint:** {report.endpoint_url or 'not serving'}",
        f"**Outcome:** {report.outcome}",
        "",
    ]
    return "\n".join(lines)


def gate_markdown(decision: Decision | None) -> list[str]:
    if decision is None:
        return []
    lines = [
        "",
        f"### Quality gate v{decision.gate_version}",
        "",
        "| metric | check | candidate | required | production (delta) | result |",
        "|---|---|---|---|---|---|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in gate_rows(decision)]
    lines += [f"\n> {note}" for note in decision.notes]
    return lines


def training_markdown(training: TrainingResult, *, console_url: str | None = None) -> str:
    """The job summary of one training job (the train job of the pipeline workflow)."""
    job = f"[{training.job_name}]({console_url})" if console_url else f"`{training.job_name}`"
    metrics = ", ".join(f"{k}={v:.4f}" for k, v in sorted(training.metrics.items()))
    lines = [
        "## Training",
        "",
        f"**Job:** {job} ({training.status}, {training.seconds:.0f} s)",
        f"**Metrics:** {metrics or 'none'}",
        f"**W&B run:** {wandb_line(training)}",
        f"**Billing:** {job_billing_line(training) or 'local run'}",
    ]
    if training.failure_reason:
        lines.append(f"**Failure:** {training.failure_reason}")
    return "\n".join([*lines, ""])


def candidate_markdown(
    training: TrainingResult,
    decision: Decision,
    version: ModelVersion,
    production: ModelVersion | None,
    *,
    console_url: str | None = None,
) -> str:
    """The job summary of `mlops register`: the gate table with deltas against production, the W&B run,
    the job with its console link, and what it cost."""
    job = f"[{training.job_name}]({console_url})" if console_url else f"`{training.job_name}`"
    verdict = "approved: it may be deployed" if decision.passed else "REJECTED: it will not be deployed"
    lines = [
        f"## Candidate {version.label}: {verdict}",
        "",
        f"**Production before:** {production.label if production else 'none'}",
        *gate_markdown(decision),
        "",
        f"**Decision:** {decision.summary}",
        f"**Version:** {version.label} ({version.status})",
        f"**Job:** {job}",
        f"**W&B run:** {wandb_line(training)}",
        f"**Billing:** {job_billing_line(training) or 'local run'}",
        "",
    ]
    return "\n".join(lines)


def write_step_summary(report: PipelineReport) -> None:
    write_markdown(markdown(report))


def write_markdown(text: str) -> None:
    """Append to the GitHub job summary ($GITHUB_STEP_SUMMARY), when running in a workflow."""
    from infra.github import write_summary

    write_summary(text)
