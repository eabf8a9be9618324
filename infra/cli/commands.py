"""The `mlops` commands that run on both platforms (`--local` or AWS)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from infra.cli.context import (
    CONTENT_TYPES,
    Context,
    _ensure_synthetic,
    _latest_job,
    console,
    err,
)
from infra.errors import GateRejected, UsageError


def cmd_data(ctx: Context) -> int:
    from infra.datasets import (
        DatasetError,
        make_synthetic,
        make_synthetic_yolo,
        prepare_cifar10,
        write_digits,
    )

    args = ctx.args
    task = getattr(args, "task", "classification")
    default_name = args.dataset if task == "classification" else f"{args.dataset}-{task}"
    out = Path(args.out) if args.out else ctx.home / "data" / default_name

    def progress(message: str) -> None:
        console.print(f"  [dim]{message}[/]")

    try:
        if args.dataset == "synthetic" and task == "classification":
            info = make_synthetic(
                out,
                seed=args.seed,
                force=args.force,
                progress=progress,
                **_given(
                    classes=args.classes,
                    train_per_class=args.train_per_class,
                    val_per_class=args.val_per_class,
                    test_per_class=args.test_per_class,
                    size=args.size,
                ),
            )
        elif args.dataset == "synthetic":
            # An image holds several objects of random classes, so the per-class flags count images.
            info = make_synthetic_yolo(
                out,
                task=task,
                seed=args.seed,
                force=args.force,
                progress=progress,
                **_given(
                    classes=args.classes,
                    train=args.train_per_class,
                    val=args.val_per_class,
                    test=args.test_per_class,
                    size=args.size,
                ),
            )
        elif args.dataset == "digits":
            info = write_digits(out, seed=args.seed, size=args.size, force=args.force, progress=progress)
        else:
            info = prepare_cifar10(
                out,
                archive=Path(args.archive) if args.archive else None,
                seed=args.seed,
                force=args.force,
                progress=progress,
            )
    except DatasetError as exc:
        raise UsageError(str(exc)) from None
    counts = ", ".join(f"{k}={v}" for k, v in info.counts.items())
    verb = "wrote" if info.created else "already present:"
    console.print(
        f"{verb} {info.name} dataset at {info.root} ({len(info.classes)} classes; {counts}) "
        f"in {info.seconds:.1f}s"
    )
    return 0


def _given(**values: int | None) -> dict[str, Any]:
    """The flags the user gave: the others keep the dataset function's own defaults."""
    return {name: value for name, value in values.items() if value is not None}


def cmd_data_yolo(ctx: Context) -> int:
    """Validate a YOLO dataset and, with --out, copy it normalised; a bad one exits 2 listing file:line."""
    from infra.datasets import DatasetError, prepare_yolo
    from train.yolo_data import format_report

    args = ctx.args
    try:
        info = prepare_yolo(
            Path(args.path),
            Path(args.out) if args.out else None,
            task=args.task,
            force=args.force,
            progress=lambda message: console.print(f"  [dim]{message}[/]"),
        )
    except DatasetError as exc:
        raise UsageError(str(exc)) from None
    assert info.report is not None  # prepare_yolo always reports
    console.print(f"valid YOLO dataset at {info.report.yaml_path} ({len(info.classes)} classes)")
    for line in format_report(info.report):
        console.print(f"  {line}")
    if info.created:
        console.print(f"copied to {info.root} in {info.seconds:.1f}s (data.yaml with relative paths)")
    return 0


def cmd_data_prepare(ctx: Context) -> int:
    """One dataset source, however it is given: a built-in name is made on this machine (deterministic,
    so every workflow job makes the same bytes), an s3:// prefix is downloaded. Workflow jobs start bare
    and call this before training, evaluating or deploying."""
    source, args = ctx.args.source.strip(), ctx.args
    out = Path(args.out) if args.out else ctx.home / "data" / "prepared"
    splits = tuple(args.split or ())
    if source.startswith("s3://"):
        from infra.aws.storage import download_dataset
        from infra.cli.aws import aws_platform, progress_printer

        platform = aws_platform(ctx)
        result = download_dataset(
            platform.aws, source, out, splits=splits, progress=progress_printer(console, "downloading")
        )
        console.print(
            f"dataset {result.uri} -> {result.root}: {result.downloaded} downloaded, "
            f"{result.files - result.downloaded} already there, {result.files} files "
            f"in {result.seconds:.1f}s"
        )
        return 0
    if source not in BUILT_IN_DATASETS:
        raise UsageError(
            f"unknown dataset source {source!r}: use one of {', '.join(BUILT_IN_DATASETS)}, or an s3:// "
            "prefix made by `mlops data upload`"
        )
    if splits:
        console.print(f"note: {source} is generated whole (--split applies to s3:// sources)")
    ctx.args = argparse.Namespace(
        **{**vars(args), "dataset": source, "out": str(out), "seed": 0, "size": 32, "force": False},
        archive=None,
        classes=8,
        train_per_class=250,
        val_per_class=50,
        test_per_class=50,
    )
    return cmd_data(ctx)


BUILT_IN_DATASETS = ("synthetic", "digits", "cifar10")


def cmd_train(ctx: Context) -> int:
    from infra.console import TrainingDisplay
    from infra.platform import TrainingSpec

    platform = ctx.platform()
    display = TrainingDisplay(console, verbose=ctx.args.verbose)
    if ctx.args.resume and not ctx.local:
        raise UsageError(
            "--resume is for local jobs; on SageMaker a spot job resumes from its checkpoints itself"
        )
    try:
        if ctx.args.resume:
            console.print(f"resuming local job {ctx.args.resume}")
            result = platform.resume(ctx.args.resume, display)
        else:
            data = Path(ctx.args.data) if ctx.args.data else ctx.default_data()
            if not ctx.args.data:
                _ensure_synthetic(ctx, data)
            from infra.local.jobs import check_dataset

            check_dataset(data)
            spec = TrainingSpec(ctx.job_name(), ctx.hyperparameters, data, ctx.code_version())
            console.print(f"training job {spec.job_name} on {data}")
            result = platform.train(spec, display)
    finally:
        display.close()
    console.print(f"job {result.job_name}: {result.status} in {result.seconds:.1f}s")
    if result.status == "Planned":
        return 0
    _hand_on_training(ctx, platform, result)
    if result.billing:
        from infra.aws.costs import billing_line

        console.print(billing_line(result.billing))
    if result.status != "Completed":
        from infra.errors import TrainingFailed

        raise TrainingFailed(f"{result.job_name}: {result.failure_reason}")
    console.print("metrics: " + " ".join(f"{k}={v:.4f}" for k, v in result.metrics.items()))
    console.print(f"model: {result.model_dir}")
    if result.wandb:
        console.print(f"W&B run: {result.wandb.get('url') or result.wandb.get('dir')}")
    return 0


def _console_url(ctx: Context, platform: Any, job: str) -> str | None:
    if ctx.local:
        return None
    from infra.github import training_job_url

    return training_job_url(platform.aws.region, job)


def _hand_on_training(ctx: Context, platform: Any, result: Any) -> None:
    """In a workflow: the job's name and status for later jobs, and its summary for the reviewer."""
    from infra.github import write_outputs, write_summary
    from infra.report import training_markdown

    write_outputs({"job_name": result.job_name, "status": result.status})
    write_summary(training_markdown(result, console_url=_console_url(ctx, platform, result.job_name)))


def _decide(ctx: Context, platform: Any, job: str) -> tuple[Any, Any, Any]:
    from infra import gate
    from infra.champion import champion_metrics

    result = platform.job(job)
    if result.status != "Completed":
        raise UsageError(f"job {job} did not complete: {result.failure_reason}")
    production = platform.production()
    compare: dict[str, float] | None = None
    notes: list[str] = []
    if production is not None:
        data = platform.job_data(job) if ctx.local else None
        data = data or (Path(ctx.args.data) if getattr(ctx.args, "data", None) else ctx.default_data())
        compare, notes = champion_metrics(platform, production, result, data)
    judge = ctx.config.gate.for_task(gate.candidate_task(result.model_dir))
    decision = gate.evaluate(result.metrics, judge, compare, production.label if production else None, notes)
    return result, decision, production


def cmd_evaluate(ctx: Context) -> int:
    platform = ctx.platform()
    job = ctx.args.job or _latest_job(ctx)
    _result, decision, _production = _decide(ctx, platform, job)
    console.print(f"job {job} against gate v{decision.gate_version} ({ctx.config.source}):")
    for reason in decision.reasons:
        console.print(f"  {reason}")
    if ctx.args.json:
        console.print_json(json.dumps(decision.to_dict()))
    if not decision.passed:
        raise GateRejected(decision.summary)
    return 0


def cmd_register(ctx: Context) -> int:
    platform = ctx.platform()
    job = ctx.args.job or _latest_job(ctx)
    result, decision, production = _decide(ctx, platform, job)
    version = platform.register(result, decision.to_dict())
    console.print(f"registered {version.label} from job {job}: {version.status} ({decision.summary})")
    from infra.github import write_outputs, write_summary
    from infra.report import candidate_markdown

    write_outputs(
        {"version": str(version.version), "status": version.status, "approved": str(decision.passed).lower()}
    )
    write_summary(
        candidate_markdown(
            result, decision, version, production, console_url=_console_url(ctx, platform, job)
        )
    )
    if ctx.args.fail_on_reject and not decision.passed:
        raise GateRejected(f"{version.label} is registered as Rejected: {decision.summary}")
    return 0


def cmd_versions(ctx: Context) -> int:
    platform = ctx.platform()
    production = platform.production()
    rows = platform.versions()
    if not rows:
        console.print("the registry is empty")
        return 0
    from rich.table import Table

    table = Table()
    for col in ("version", "status", "test_accuracy", "created", "job", "code", "serving"):
        table.add_column(col)
    for v in rows:
        acc = v.metrics.get("test_accuracy")
        table.add_row(
            v.label,
            v.state,
            f"{acc:.4f}" if acc is not None else "",
            v.created_at,
            v.source_job,
            v.code_version,
            "production" if production and production.version == v.version else "",
        )
    console.print(table)
    return 0


def _finish_deploy(ctx: Context, what: str, guarded: Any, verified: Any = None) -> int:
    """Print what the guarded deploy (and its verification) did, write it to the GitHub job summary with
    what served before and after, and return its exit code."""
    from infra import guard
    from infra.pipeline import verify_line
    from infra.report import write_markdown

    check, recovery = verified if verified is not None else (None, None)
    result = guarded.result
    ok = guarded.ok and recovery is None
    lines = [guarded.message]
    if guarded.ok and result is not None and result.smoke:
        lines.append(
            f"smoke test: {result.smoke['images']} held-out images, p50 {result.smoke['p50_ms']:.1f} ms"
        )
    if guarded.ok and result is not None and not result.tested:
        lines.append("NOT smoke-tested: deployed with --allow-untested")
    if check is not None:
        lines.append(
            f"verification failed: {recovery.message}" if recovery else f"verified: {verify_line(check)}"
        )
    for line in lines:
        (console if ok else err).print(line, highlight=False, markup=False)
    now = guard.serving(ctx.platform_cached())
    after = "unknown (check `mlops endpoint status`)" if now is guard.UNKNOWN else _label(now)
    if ok and isinstance(now, int):  # W&B's `production` alias follows what serves
        from infra.wandb_alias import move_production

        serving = {v.version: v for v in ctx.platform_cached().versions()}.get(now)
        lines.append(move_production(serving.wandb if serving else None))
        console.print(lines[-1], highlight=False, markup=False)
    if not ctx.local:  # what the endpoint costs, by its mode's model (printed when the deploy began)
        from infra.aws.costs import deploy_cost_line

        lines.append(deploy_cost_line(ctx.config.aws))
    code = int(recovery.exit_code if recovery is not None else guarded.exit_code)
    status = "ok" if ok else f"FAILED (exit {code})"
    write_markdown(
        "\n".join(
            [
                f"## mlops {what}: {status}",
                "",
                f"**Serving before:** {_label(guarded.previous)}",
                f"**Serving after:** {after}",
                "",
                *(f"- {line}" for line in lines),
                "",
            ]
        )
    )
    return code


def _label(version: Any) -> str:
    return f"v{version}" if isinstance(version, int) else "nothing"


def _verify_after(ctx: Context, platform: Any, version: int, guarded: Any) -> Any:
    """`--verify`: held-out test images through the endpoint after the switch, as the pipeline does."""
    from artifact.manifest import load_manifest
    from infra import guard

    if not ctx.args.verify or not guarded.ok:
        return None
    registered = {v.version: v for v in platform.versions()}[version]
    classes = load_manifest(platform.model_dir(registered)).classes
    data = Path(ctx.args.data) if ctx.args.data else ctx.default_data()
    console.print(f"verifying v{version}: {ctx.config.local.verify_images} held-out test images")
    return guard.verify(
        platform,
        version,
        previous=guarded.previous,
        data=data,
        count=ctx.config.local.verify_images,
        classes=classes,
    )


def _no_untested_in_workflows(ctx: Context) -> None:
    """A workflow deploy is never waved through without its smoke test: a person may choose
    --allow-untested at a terminal, a workflow (where nobody watches the output) may not."""
    from infra.github import in_workflow

    if ctx.args.allow_untested and in_workflow():
        raise UsageError(
            "--allow-untested is refused inside GitHub Actions: a deploy from a workflow must be "
            "smoke-tested; give it held-out test images (`mlops data prepare SOURCE --split test`)"
        )


def cmd_deploy(ctx: Context) -> int:
    from infra import guard
    from infra.cli.aws import MODE_FLAGS, deploy_aws_config

    _no_untested_in_workflows(ctx)
    if ctx.local:
        given = [f for f in MODE_FLAGS if getattr(ctx.args, f, None) is not None]
        if given:
            flag = "--" + given[0].replace("_", "-")
            raise UsageError(f"{flag} chooses a SageMaker endpoint mode (AWS); drop it or --local")
    else:  # before the platform exists: it deploys with ctx.config.aws
        ctx.config.aws = deploy_aws_config(ctx)
    platform = ctx.platform_cached()
    version = ctx.args.version
    if version is None:
        approved = [v for v in platform.versions() if v.status == "Approved"]
        if not approved:
            raise UsageError(
                "no Approved version in the registry (versions whose deploy or verification failed are "
                "Rejected); run the pipeline, or name one with --version"
            )
        version = approved[-1].version
    if ctx.local:
        how = "start on a scratch port, smoke-test, then switch"
    else:
        from infra.aws.rollout import mode_line

        how = mode_line(ctx.config.aws)
    untested = " (NO smoke test: --allow-untested)" if ctx.args.allow_untested else ""
    console.print(f"deploying v{version}: {how}{untested}")
    if not ctx.local:
        from infra.aws.costs import deploy_cost_line

        console.print(deploy_cost_line(ctx.config.aws), highlight=False, markup=False)
    if ctx.dry_run:
        platform.deploy(version, allow_untested=ctx.args.allow_untested)
        return 0
    guarded = guard.deploy(platform, version, allow_untested=ctx.args.allow_untested)
    verified = _verify_after(ctx, platform, version, guarded)
    return _finish_deploy(ctx, f"deploy v{version}", guarded, verified)


def cmd_rollback(ctx: Context) -> int:
    from infra import guard
    from infra.history import ROLLBACK, rollback_target

    _no_untested_in_workflows(ctx)
    platform = ctx.platform_cached()
    _check_endpoint(ctx, platform)
    current = guard.serving(platform)
    if current is guard.UNKNOWN:
        raise UsageError("cannot read what the endpoint serves; check `mlops endpoint status`")
    versions = {v.version: v for v in platform.versions()}
    target = ctx.args.to
    if target is None:
        target = rollback_target(
            platform.history(),
            current if isinstance(current, int) else None,
            lambda n: n in versions and versions[n].status == "Approved",
        )
        if target is None:
            raise UsageError(
                "nothing to roll back to: no Approved version served before "
                + (f"v{current}" if isinstance(current, int) else "(nothing serves now)")
                + "; name one with --to N (see `mlops history`)"
            )
    elif current == target:
        raise UsageError(f"v{target} is already in production")
    console.print(
        f"rolling back from {f'v{current}' if isinstance(current, int) else 'nothing'} to v{target}"
        + (" (NO smoke test: --allow-untested)" if ctx.args.allow_untested else "")
    )
    if ctx.dry_run:
        platform.deploy(target, action=ROLLBACK, allow_untested=ctx.args.allow_untested)
        return 0
    guarded = guard.deploy(platform, target, action=ROLLBACK, allow_untested=ctx.args.allow_untested)
    return _finish_deploy(ctx, f"rollback to v{target}", guarded)


def _check_endpoint(ctx: Context, platform: Any) -> None:
    """`--endpoint NAME` (the rollback workflow's input) must name this project's endpoint: a typo, or
    another project's endpoint, is refused before anything changes."""
    given = getattr(ctx.args, "endpoint", None)
    if not given or not given.strip():
        return
    mine = platform.endpoint if not ctx.local else "local"
    if given.strip() != mine:
        raise UsageError(
            f"--endpoint {given.strip()!r} is not this project's endpoint ({mine}); set MLOPS_PROJECT "
            "for another project"
        )


def cmd_history(ctx: Context) -> int:
    from rich.table import Table

    from infra.history import intervals

    platform = ctx.platform()
    events = platform.history()
    if not events:
        console.print("no production history yet: nothing has been deployed")
        return 0
    table = Table(title="production history (oldest first)", title_justify="left")
    for col in ("version", "from", "until", "how"):
        table.add_column(col)
    for span in intervals(events):
        table.add_row(f"v{span.version}", span.start, span.end or "now (serving)", span.action)
    console.print(table)
    last = events[-1]
    if last.version is None:
        console.print(f"nothing serves since {last.at}: {last.reason or last.action}")
    from infra.github import write_summary

    rows = [
        f"| v{span.version} | {span.start} | {span.end or 'now (serving)'} | {span.action} |"
        for span in intervals(events)
    ]
    write_summary(
        "\n".join(
            ["### Production history", "", "| version | from | until | how |", "|---|---|---|---|", *rows]
        )
    )
    return 0


def cmd_endpoint(ctx: Context) -> int:
    platform = ctx.platform()
    action = ctx.args.action
    if action == "status":
        status = platform.endpoint_status()
        if status.version is None:
            console.print(status.detail)
            return 1
        console.print(
            f"v{status.version} at {status.url}: {status.detail} (pid {status.pid}, log {status.log})"
        )
        return 0 if status.healthy else 1
    if action == "delete":
        from infra.aws import endpoints

        if endpoints.describe(platform.aws, platform.endpoint) is None:
            console.print(f"endpoint {platform.endpoint} does not exist; nothing to delete")
            return 0
        endpoints.delete(platform.aws, platform.endpoint, platform.executor)
        console.print(
            f"{'would delete' if ctx.dry_run else 'deleted'} endpoint {platform.endpoint} "
            "(models and endpoint configs stay for `mlops cleanup`; rollback can recreate it)"
        )
        return 0
    if action == "stop":
        if not ctx.local:
            raise UsageError("`endpoint stop` stops the local endpoint; on AWS use `mlops endpoint delete`")
        stopped = platform.stop_endpoint()
        console.print(
            f"stopped the local endpoint (v{stopped})" if stopped else "no local endpoint was running"
        )
        return 0
    for name in ctx.args.files:
        path = Path(name)
        if not path.is_file():
            raise UsageError(f"{path} is not a file")
        content_type = ctx.args.content_type or CONTENT_TYPES.get(path.suffix.lower(), "application/x-image")
        code, payload = platform.invoke(path.read_bytes(), content_type)
        if code != 200:
            raise UsageError(f"{path}: the endpoint answered HTTP {code}: {payload.get('error', payload)}")
        if ctx.args.json:
            console.print_json(json.dumps(payload))
            continue
        for i, prediction in enumerate(payload["predictions"]):
            where = f"{path}{f'[{i}]' if len(payload['predictions']) > 1 else ''}"
            if "boxes" in prediction:  # a detector: each box with its label, score and pixel corners
                found = [
                    f"{b['label']} {b['score']:.3f} at ({', '.join(f'{c:.0f}' for c in b['box'])})"
                    for b in prediction["boxes"]
                ]
                console.print(f"{where}: {'; '.join(found) or 'nothing found'}")
                continue
            top = ", ".join(f"{p['label']} {p['probability']:.3f}" for p in prediction["top_k"])
            console.print(f"{where}: {top}")
    return 0


def cmd_pipeline(ctx: Context) -> int:
    from infra.console import StageView, TrainingDisplay
    from infra.pipeline import run_pipeline
    from infra.platform import TrainingSpec
    from infra.report import print_report, write_step_summary

    platform = ctx.platform()
    data = Path(ctx.args.data) if ctx.args.data else ctx.default_data()
    spec = TrainingSpec(ctx.job_name(), ctx.hyperparameters, data, ctx.code_version())
    if ctx.dry_run:
        from infra.cli.aws import plan_pipeline

        return plan_pipeline(ctx, platform, spec, ensure_data=lambda: _ensure_synthetic(ctx, data))
    display = TrainingDisplay(console, verbose=ctx.args.verbose)
    console.print(
        f"[bold]mlops pipeline {'--local' if ctx.local else '(AWS)'}[/] job {spec.job_name}, "
        f"code {spec.code_version}, gate v{ctx.config.gate.version}"
    )
    report = run_pipeline(
        platform,
        ctx.config,
        spec,
        on_line=display,
        observer=StageView(console, display),
        ensure_data=lambda: _ensure_synthetic(ctx, data),
    )
    console.print()
    print_report(report, console)
    write_step_summary(report)
    if report.exit_code == 0 and report.endpoint_url and ctx.local:
        console.print(
            f"\ntry: curl -s -X POST -H 'Content-Type: image/png' --data-binary @image.png "
            f"{report.endpoint_url}/invocations\nstop: mlops endpoint stop --local"
        )
    if report.exit_code == 0 and ctx.args.fail_on_reject and report.decision and not report.decision.passed:
        return GateRejected.exit_code
    return report.exit_code


def cmd_serve(ctx: Context) -> int:
    """Run the serving program in the foreground on a registry version or a model directory."""
    if ctx.args.model_dir:
        model_dir = Path(ctx.args.model_dir)
    else:
        from infra.local.registry import LocalRegistry

        registry = LocalRegistry(ctx.home / "registry")
        target = registry.get(ctx.args.version) if ctx.args.version else registry.production()
        if target is None:
            raise UsageError("no production version; pass --version N or --model-dir DIR")
        model_dir = target.model_dir
    from infra.local.endpoint import serve_command

    argv = serve_command(model_dir, ctx.args.host, ctx.args.port)
    os.execv(sys.executable, argv)  # noqa: S606 -- replaces this process with the server, by design
    return 0  # pragma: no cover


def cmd_validate(ctx: Context) -> int:
    """The inputs were resolved and checked when the Context was made (the tuning inputs are checked
    here); show them and hand them on."""
    from infra.cli.aws import TUNING_FLAGS, tuning_config
    from infra.github import write_outputs

    tuning = None
    if any(str(getattr(ctx.args, flag, None) or "").strip() for flag in TUNING_FLAGS):
        tuning = tuning_config(ctx)
    values = ctx.run.outputs()
    where = (
        "this machine" if ctx.local else f"SageMaker ({values['instance_count']} x {values['instance_type']}"
    )
    where += "" if ctx.local else f", spot {values['spot']}, at most {values['max_runtime_minutes']} min)"
    console.print(f"inputs are valid: a {values['task']} run on {where}")
    console.print("hyperparameters: " + " ".join(f"{k}={v}" for k, v in sorted(ctx.hyperparameters.items())))
    if tuning is not None:
        console.print(
            f"tuning: {', '.join(sorted(tuning.ranges))} for {tuning.objective}, {tuning.max_jobs} trials, "
            f"{tuning.max_parallel_jobs} at a time"
        )
    write_outputs({**values, "job_name": ctx.job_name()})
    return 0
