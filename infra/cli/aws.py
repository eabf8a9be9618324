"""The AWS side of the `mlops` CLI: the platform factory, the pipeline plan, and the AWS-only commands
(`data upload`, `images publish`, `tune`, `jobs list|describe|logs`, `cleanup`)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infra.cli.context import console
from infra.errors import UsageError

if TYPE_CHECKING:
    from infra.aws.platform import AwsPlatform
    from infra.cli.context import Context
    from infra.platform import TrainingSpec

REPO_ROOT = Path(__file__).resolve().parents[2]


def aws_platform(ctx: Context) -> AwsPlatform:
    from infra.aws.plan import DryRunExecutor, LiveExecutor
    from infra.aws.platform import AwsPlatform
    from infra.aws.session import Aws, AwsSettings

    settings = AwsSettings.from_env(ctx.config.project.name)
    aws = Aws(settings)
    executor: Any
    if ctx.dry_run:
        # Reads (Describe/List) still run when credentials work, so the plan reflects real state.
        executor = DryRunExecutor(
            emit=lambda text: console.print(text, highlight=False, markup=False), clients=aws.client
        )
    else:
        executor = LiveExecutor(aws.client)
    git_sha = ctx.code_version()
    data = getattr(ctx.args, "data", None)
    return AwsPlatform(
        aws,
        ctx.config,
        executor,
        git_sha=git_sha,
        cache=ctx.home / "aws",
        smoke_data=Path(data) if data else ctx.default_data(),
        on_event=lambda line: console.print(f"  {line}", highlight=False, markup=False),
    )


def _can_read(platform: AwsPlatform) -> bool:
    from infra.errors import MlopsError

    try:
        platform.aws.identity()
    except MlopsError:
        return False
    return True


def plan_pipeline(
    ctx: Context, platform: AwsPlatform, spec: TrainingSpec, *, ensure_data: Callable[[], str]
) -> int:
    """`mlops pipeline --dry-run`: every request the pipeline would send, in order, and nothing sent."""
    from infra.aws import endpoints, rollout

    cfg = ctx.config.aws
    console.print(
        f"[bold]plan[/] for job {spec.job_name} at code {spec.code_version} (dry run: nothing is changed)"
    )
    console.print("\n[bold]1. images[/]")
    platform.publish_images(REPO_ROOT)
    console.print("\n[bold]2. data[/]")
    console.print(f"  {ensure_data()}")
    console.print("\n[bold]3. training (managed spot, checkpointed)[/]")
    platform.train(spec, lambda line: console.print(f"  {line}", highlight=False, markup=False))
    console.print(
        "\n[bold]4. evaluate[/]\n  the gate "
        f"v{ctx.config.gate.version}: {ctx.config.gate.min} / {ctx.config.gate.max}, no regression on "
        f"{ctx.config.gate.compare} beyond {ctx.config.gate.tolerance} against production"
    )
    console.print("\n[bold]5. register (as Approved when the gate passes, Rejected otherwise)[/]")
    from infra.platform import TrainingResult

    planned = TrainingResult(spec.job_name, "Planned", None, {}, 0.0)
    platform.register(planned, {"passed": True, "summary": "decided by the gate"})
    console.print(
        "\n[bold]6. deploy (blue/green, smoke-tested during the bake, auto-rollback on the alarms)[/]"
    )
    before = endpoints.describe(platform.aws, platform.endpoint) if _can_read(platform) else None
    rollout.deploy(
        platform.aws,
        project=platform.project,
        package_arn="<the new model package ARN>",
        version=0,
        role_arn=str(platform.aws.settings.role_arn),
        config=cfg,
        executor=platform.executor,
        tags=platform.tags(),
        samples=[],
        classes=[],
        on_event=platform.on_event,
    )
    if before is None:
        # The first deploy creates the endpoint; show what every later deploy sends as well.
        console.print("later deploys update the endpoint blue/green, rolled back by the alarms above:")
        update = endpoints.deployment_config(
            endpoints.alarm_names(platform.endpoint),
            instance_count=cfg.endpoint_instance_count,
            bake_seconds=cfg.bake_seconds,
            canary_percent=cfg.canary_percent,
        )
        platform.executor(
            endpoints.update_endpoint_call(platform.endpoint, "<the new endpoint config>", update)
        )
    console.print(
        "\n[bold]7. verify[/]\n  held-out test images through sagemaker-runtime InvokeEndpoint. If the "
        "deploy or the verification fails: the version is marked Rejected (UpdateModelPackage), and "
        "the version that served before is deployed again the same way (or, after a failed first deployment, "
        "the endpoint is deleted); each change of what serves is recorded under "
        f"s3://{platform.aws.settings.bucket}/{platform.project}/production-history/"
    )
    return 0


# --- AWS-only commands ------------------------------------------------------------------------------


def cmd_data_upload(ctx: Context) -> int:
    platform = _aws(ctx)
    data = Path(ctx.args.data) if ctx.args.data else ctx.default_data()
    result = platform.upload_data(data, progress=_progress(console, "uploading"))
    verb = "would upload" if ctx.dry_run else "uploaded"
    console.print(
        f"{verb} {data} -> {result.uri}: {result.uploaded} uploaded, {result.skipped} unchanged, "
        f"{result.files} files in {result.seconds:.1f}s"
    )
    return 0


def _progress(console: Any, label: str) -> Callable[[int, int], None]:
    state = {"last": -1}

    def report(done: int, total: int) -> None:
        step = max(1, total // 10)
        if done == total or done // step != state["last"]:
            state["last"] = done // step
            console.print(f"  {label} {done}/{total}", highlight=False)

    return report


def cmd_images_publish(ctx: Context) -> int:
    platform = _aws(ctx)
    refs = platform.publish_images(Path(ctx.args.context))
    for name, ref in refs.items():
        state = "pushed" if ref.pushed else ("already in ECR" if ref.digest else "planned")
        console.print(
            f"{name}: {ref.by_digest if ref.digest else ref.repository_uri + ':' + ref.tag} ({state})"
        )
    return 0


def cmd_tune(ctx: Context) -> int:
    from infra.aws import storage, tuning
    from infra.platform import TrainingSpec

    platform = _aws(ctx)
    data = Path(ctx.args.data) if ctx.args.data else ctx.default_data()
    spec = TrainingSpec(ctx.job_name(), ctx.hyperparameters, data, ctx.code_version())
    uploaded = platform.upload_data(data)
    job = platform.job_spec(spec, storage.channel_uris(uploaded.uri))
    name = f"{ctx.config.project.name[:14]}-{spec.job_name[-13:]}"[:32].strip("-")
    tuning.start_tuning(platform.aws, name, job, ctx.config.aws.tuning, platform.executor)
    if ctx.dry_run:
        return 0
    outcome = tuning.wait_tuning(platform.aws, name, on_event=lambda line: console.print(f"  {line}"))
    from rich.table import Table

    table = Table(title=f"tuning job {name}: {outcome.status}")
    for col in ("trial", "status", ctx.config.aws.tuning.objective, "hyperparameters"):
        table.add_column(col)
    for trial in outcome.trials:
        tuned = ", ".join(
            f"{k}={v}" for k, v in sorted(trial.hyperparameters.items()) if not k.startswith("_")
        )
        objective = f"{trial.objective:.4f}" if trial.objective is not None else ""
        table.add_row(trial.job_name, trial.status, objective, tuned)
    console.print(table)
    if outcome.best:
        console.print(f"best: {outcome.best.job_name} ({outcome.best.objective})")
    return 0


def cmd_jobs(ctx: Context) -> int:
    from infra.aws import training, watch
    from infra.aws.costs import billing_line

    platform = _aws(ctx)
    if ctx.args.action == "list":
        jobs = training.list_jobs(platform.aws, platform.project)
        if not jobs:
            console.print(f"no training jobs for project {platform.project}")
        for job in jobs:
            console.print(
                f"{job['TrainingJobName']}  {job['TrainingJobStatus']}  {job.get('CreationTime', '')}"
            )
        return 0
    if not ctx.args.job:
        raise UsageError(f"`mlops jobs {ctx.args.action}` needs a job name")
    if ctx.args.action == "describe":
        outcome = training.describe(platform.aws, ctx.args.job)
        console.print(f"{outcome.job_name}: {outcome.status} ({outcome.secondary_status})")
        if outcome.failure_reason:
            console.print(f"failure: {outcome.failure_reason}")
        console.print("metrics: " + " ".join(f"{k}={v:.4f}" for k, v in outcome.metrics.items()))
        console.print(f"model: {outcome.model_artifact_uri}")
        console.print(billing_line(outcome.billing()))
        return 0
    for line in watch.log_lines(platform.aws, ctx.args.job):
        console.print(line, highlight=False, markup=False)
    return 0


def cmd_cleanup(ctx: Context) -> int:
    from infra.aws import cleanup, endpoints
    from infra.aws.plan import DryRunExecutor

    platform = _aws(ctx)
    findings = cleanup.scan(platform.aws, platform.project, ctx.config.aws)
    if not findings:
        console.print(f"nothing to clean up for project {platform.project}")
        return 0
    for finding in findings:
        cost = f" (~{finding.monthly_cost:.0f} $/month)" if finding.monthly_cost else ""
        console.print(f"{finding.kind} {finding.name}: {finding.reason}{cost}")
    if not ctx.args.apply:
        console.print("\ndry run: these requests would be sent (add --apply to send them)")
        dry = DryRunExecutor(emit=lambda t: console.print(t, highlight=False, markup=False))
        cleanup.apply(findings, dry, delete_endpoint=lambda name: endpoints.delete(platform.aws, name, dry))
        return 0
    live = platform.executor
    done = cleanup.apply(
        findings, live, delete_endpoint=lambda name: endpoints.delete(platform.aws, name, live)
    )
    console.print(f"cleaned up {done} resource(s)")
    return 0


def _aws(ctx: Context) -> AwsPlatform:
    if ctx.local:
        raise UsageError(f"`mlops {ctx.args.command}` works on AWS only; drop --local")
    return aws_platform(ctx)


def add_aws_commands(sub: Any, dry_run_flag: Callable[[argparse.ArgumentParser], None]) -> None:
    images = sub.add_parser("images", help="build the train and serve images and push them to ECR (AWS)")
    isub = images.add_subparsers(dest="action", required=True, metavar="ACTION")
    pub = isub.add_parser("publish", help="ensure ECR repositories, build, tag with the git SHA, push")
    pub.add_argument(
        "--context", default=str(REPO_ROOT), help="docker build context (default: the repository)"
    )
    dry_run_flag(pub)
    images.set_defaults(handler=cmd_images_publish)

    tune = sub.add_parser("tune", help="Bayesian hyperparameter tuning on SageMaker (ranges in mlops.toml)")
    tune.add_argument("--data", help="dataset directory (default: $MLOPS_HOME/data/synthetic)")
    tune.add_argument("--hp", action="append", default=[], metavar="KEY=VALUE", help="static hyperparameter")
    from infra.cli.inputs import add_flags

    add_flags(tune)
    dry_run_flag(tune)
    tune.set_defaults(handler=cmd_tune)

    jobs = sub.add_parser("jobs", help="SageMaker training jobs: list, describe, logs")
    jobs.add_argument("action", choices=("list", "describe", "logs"))
    jobs.add_argument("job", nargs="?", help="training job name (describe, logs)")
    jobs.set_defaults(handler=cmd_jobs)

    clean = sub.add_parser("cleanup", help="find idle endpoints, over-budget jobs, orphaned models (dry run)")
    clean.add_argument(
        "--apply", action="store_true", help="delete or stop what was found (default: only list)"
    )
    clean.set_defaults(handler=cmd_cleanup)


def add_data_upload(dsub: Any, dry_run_flag: Callable[[argparse.ArgumentParser], None]) -> None:
    up = dsub.add_parser("upload", help="upload a dataset to S3 under a content-addressed prefix (AWS)")
    up.add_argument("--data", help="dataset directory (default: $MLOPS_HOME/data/synthetic)")
    dry_run_flag(up)
    up.set_defaults(handler=cmd_data_upload)
