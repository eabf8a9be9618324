"""The AWS side of the `mlops` CLI: the platform factory, the pipeline plan, and the AWS-only commands
(`data upload`, `images publish`, `tune`, `jobs list|describe|logs`, `cleanup`)."""

from __future__ import annotations

import argparse
import json
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
    from infra.aws.costs import deploy_cost_line

    console.print(f"\n[bold]6. deploy ({rollout.mode_line(cfg)})[/]")
    console.print(f"  {deploy_cost_line(cfg)}", highlight=False, markup=False)
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
        update = rollout.update_deployment(cfg, platform.endpoint, cfg.endpoint_instance_count)
        platform.executor(
            endpoints.update_endpoint_call(platform.endpoint, "<the new endpoint config>", update)
        )
    console.print(
        "\n[bold]7. verify[/]\n  held-out test images through sagemaker-runtime "
        f"{'InvokeEndpointAsync (via S3)' if cfg.endpoint_mode == 'async' else 'InvokeEndpoint'}. If the "
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
    result = platform.upload_data(data, progress=progress_printer(console, "uploading"))
    verb = "would upload" if ctx.dry_run else "uploaded"
    console.print(
        f"{verb} {data} -> {result.uri}: {result.uploaded} uploaded, {result.skipped} unchanged, "
        f"{result.files} files in {result.seconds:.1f}s"
    )
    return 0


def progress_printer(console: Any, label: str) -> Callable[[int, int], None]:
    state = {"last": -1}

    def report(done: int, total: int) -> None:
        step = max(1, total // 10)
        if done == total or done // step != state["last"]:
            state["last"] = done // step
            console.print(f"  {label} {done}/{total}", highlight=False)

    return report


def cmd_images_publish(ctx: Context) -> int:
    from infra.github import write_outputs, write_summary

    platform = _aws(ctx)
    refs = platform.publish_images(Path(ctx.args.context))
    lines = []
    for name, ref in refs.items():
        state = "pushed" if ref.pushed else ("already in ECR" if ref.digest else "planned")
        lines.append(
            f"{name}: {ref.by_digest if ref.digest else ref.repository_uri + ':' + ref.tag} ({state})"
        )
        console.print(lines[-1])
    if not ctx.dry_run:
        # Later workflow jobs pin these digests (MLOPS_TRAIN_IMAGE, MLOPS_SERVE_IMAGE).
        write_outputs({f"{name}_image": ref.by_digest for name, ref in refs.items()})
        write_summary("## Images\n\n" + "\n".join(f"- `{line}`" for line in lines) + "\n")
    return 0


def cmd_tune(ctx: Context) -> int:
    from infra.aws import tuning
    from infra.channels import channel_prefixes
    from infra.github import write_outputs, write_summary
    from infra.platform import TrainingSpec

    config = tuning_config(ctx)
    platform = _aws(ctx)
    data = Path(ctx.args.data) if ctx.args.data else ctx.default_data()
    spec = TrainingSpec(ctx.job_name(), ctx.hyperparameters, data, ctx.code_version())
    uploaded = platform.upload_data(data)
    job = platform.job_spec(spec, channel_prefixes(data, uploaded.uri))
    name = f"{ctx.config.project.name[:14]}-{spec.job_name[-13:]}"[:32].strip("-")
    console.print(
        f"tuning {', '.join(sorted(config.ranges))} for {config.objective}: {config.max_jobs} trials, "
        f"{config.max_parallel_jobs} at a time ({config.strategy})"
    )
    tuning.start_tuning(platform.aws, name, job, config, platform.executor)
    if ctx.dry_run:
        return 0
    outcome = tuning.wait_tuning(platform.aws, name, on_event=lambda line: console.print(f"  {line}"))
    console.print(f"tuning job {name}: {outcome.status}")
    console.print(outcome.table(), highlight=False, markup=False)
    best = outcome.best
    if best:
        console.print(f"best: {best.job_name} ({outcome.objective}={best.objective})")
        write_outputs(
            {
                "best_job": best.job_name,
                "best_objective": str(best.objective),
                "best_hyperparameters": json.dumps(best.hyperparameters, sort_keys=True),
            }
        )
    write_summary(tuning_markdown(outcome, config))
    if outcome.status != "Completed" or best is None:
        from infra.errors import TrainingFailed

        raise TrainingFailed(
            f"tuning job {name} ended {outcome.status}: {outcome.failure_reason or 'no best trial'}"
        )
    return 0


def tuning_config(ctx: Context) -> Any:
    """[aws.tuning] of mlops.toml with --ranges-json, --max-jobs, --max-parallel-jobs and --objective
    applied, validated as the config itself is (the tune workflow's inputs)."""
    from pydantic import ValidationError

    from infra.cli.inputs import InputError
    from infra.settings import TuningConfig

    base = ctx.config.aws.tuning.model_dump()
    args = ctx.args
    if args.ranges_json and args.ranges_json.strip():
        try:
            ranges = json.loads(args.ranges_json)
        except json.JSONDecodeError as exc:
            raise InputError(
                "--ranges-json", f"is not valid JSON ({exc.msg} at character {exc.pos})"
            ) from None
        if not isinstance(ranges, dict) or not ranges:
            raise InputError("--ranges-json", "must be a non-empty JSON object of name: range")
        base["ranges"] = ranges
    for flag in ("max_jobs", "max_parallel_jobs", "objective"):
        value = getattr(args, flag, None)
        if value is not None and str(value).strip():
            base[flag] = str(value).strip()
    try:
        config = TuningConfig.model_validate(base)
        from infra.aws.tuning import parameter_ranges

        parameter_ranges(config.ranges)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = "--" + str(first["loc"][0]).replace("_", "-") if first["loc"] else "--ranges-json"
        raise InputError(where, str(first["msg"])) from None
    except UsageError as exc:
        raise InputError("--ranges-json", str(exc)) from None
    if config.max_parallel_jobs > config.max_jobs:
        raise InputError(
            "--max-parallel-jobs", f"{config.max_parallel_jobs} is more than --max-jobs {config.max_jobs}"
        )
    return config


def tuning_markdown(outcome: Any, config: Any) -> str:
    keys = sorted({k for t in outcome.trials for k in t.hyperparameters})
    lines = [
        f"## Tuning {outcome.name}: {outcome.status}",
        "",
        f"{config.strategy} search of {', '.join(sorted(config.ranges))}, {outcome.goal.lower()} "
        f"`{outcome.objective}`, {config.max_jobs} trials ({config.max_parallel_jobs} in parallel)",
        "",
    ]
    if outcome.best:
        best = ", ".join(f"`{k}={v}`" for k, v in sorted(outcome.best.hyperparameters.items()))
        lines += [
            f"**Best:** {outcome.best.job_name}: {outcome.objective} = {outcome.best.objective}",
            "",
            f"**Best parameters:** {best}",
            "",
        ]
    lines += [
        "| trial | status | " + " | ".join([outcome.objective, *keys]) + " |",
        "|---|---|" + "---|" * (len(keys) + 1),
    ]
    for t in outcome.trials:
        mark = " (best)" if outcome.best and t.job_name == outcome.best.job_name else ""
        objective = "" if t.objective is None else f"{t.objective:.4f}"
        lines.append(
            f"| {t.job_name}{mark} | {t.status} | {objective} | "
            + " | ".join(t.hyperparameters.get(k, "") for k in keys)
            + " |"
        )
    if outcome.failure_reason:
        lines += ["", f"**Failure:** {outcome.failure_reason}"]
    return "\n".join([*lines, ""])


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


TUNING_FLAGS = ("ranges_json", "max_jobs", "max_parallel_jobs", "objective")

# `mlops deploy` flag -> [aws] setting it overrides
MODE_FLAGS = {
    "mode": "endpoint_mode",
    "serverless_memory": "serverless_memory_mb",
    "serverless_max_concurrency": "serverless_max_concurrency",
    "async_output": "async_output",
    "async_max_concurrency": "async_max_concurrent_invocations",
    "async_min_instances": "async_min_instances",
}


def add_mode_flags(p: argparse.ArgumentParser) -> None:
    """The endpoint mode and its knobs on `mlops deploy` (AWS), over [aws] of mlops.toml."""
    from infra.aws.modes import MODES

    group = p.add_argument_group(
        "endpoint mode (AWS; default: [aws] endpoint_mode and its settings in mlops.toml)"
    )
    group.add_argument(
        "--mode",
        choices=MODES,
        help="realtime: instances behind InvokeEndpoint (6 MB requests); serverless: no instances, CPU "
        "only, 4 MB requests, billed per second of processing; async: InvokeEndpointAsync through S3, "
        "1 GB requests, can scale to zero. A change of mode needs `mlops endpoint delete` first",
    )
    group.add_argument(
        "--serverless-memory", type=int, metavar="MB", help="serverless memory: 1024-6144 in 1024 MB steps"
    )
    group.add_argument(
        "--serverless-max-concurrency",
        type=int,
        metavar="N",
        help="serverless concurrent invocations at most: 1-200",
    )
    group.add_argument(
        "--async-output",
        metavar="S3_URI",
        help="async answers go here (default: s3://$MLOPS_BUCKET/<project>/async-output/); errors under "
        "its failures/, the deploy's own test requests under its requests/",
    )
    group.add_argument(
        "--async-max-concurrency",
        type=int,
        metavar="N",
        help="async requests in each instance at once: 1-1000 (MaxConcurrentInvocationsPerInstance)",
    )
    group.add_argument(
        "--async-min-instances",
        type=int,
        metavar="N",
        help="async fleet's autoscaling minimum; 0 scales it to zero when the queue is empty",
    )


def deploy_aws_config(ctx: Context) -> Any:
    """[aws] of mlops.toml with `mlops deploy`'s mode flags applied, checked as mlops.toml is (before any
    AWS call); a bad value is reported under the flag's own name."""
    from pydantic import ValidationError

    from infra.cli.inputs import InputError
    from infra.settings import AwsConfig

    given = {
        setting: getattr(ctx.args, flag)
        for flag, setting in MODE_FLAGS.items()
        if getattr(ctx.args, flag, None) is not None
    }
    if not given:
        return ctx.config.aws
    try:
        return AwsConfig.model_validate({**ctx.config.aws.model_dump(), **given})
    except ValidationError as exc:
        first = exc.errors()[0]
        message = str(first["msg"]).removeprefix("Value error, ")
        if first["loc"]:  # a field's own constraint
            setting = str(first["loc"][0])
        else:  # AwsConfig's check of the modes: "<setting>: <why>"
            setting, _, message = message.partition(": ")
        flags = {s: "--" + f.replace("_", "-") for f, s in MODE_FLAGS.items()}
        if setting in flags:
            raise InputError(flags[setting], message) from None
        # A setting no flag sets, made wrong by one that does (a GPU endpoint_instance_type and --mode).
        raise InputError("--mode", f"[aws] {setting}: {message}") from None


def add_tuning_flags(p: argparse.ArgumentParser) -> None:
    """The tuning inputs (of `mlops tune`, and of `mlops validate`, which checks them without AWS)."""
    p.add_argument(
        "--ranges-json",
        metavar="JSON",
        help='ranges to search instead of [aws.tuning] ranges, e.g. \'{"learning_rate": {"min": 0.01, '
        '"max": 0.4, "scaling": "Logarithmic"}, "optimizer": {"values": ["sgd", "adamw"]}}\'',
    )
    p.add_argument("--max-jobs", help="trials in all (default: [aws.tuning] max_jobs)")
    p.add_argument("--max-parallel-jobs", help="trials at a time (default: [aws.tuning] max_parallel_jobs)")
    p.add_argument("--objective", help="metric to maximise (default: [aws.tuning] objective)")


def add_aws_commands(sub: Any, dry_run_flag: Callable[[argparse.ArgumentParser], None]) -> None:
    images = sub.add_parser("images", help="build the train and serve images and push them to ECR (AWS)")
    isub = images.add_subparsers(dest="action", required=True, metavar="ACTION")
    pub = isub.add_parser("publish", help="ensure ECR repositories, build, tag with the git SHA, push")
    pub.add_argument(
        "--context", default=str(REPO_ROOT), help="docker build context (default: the repository)"
    )
    dry_run_flag(pub)
    images.set_defaults(handler=cmd_images_publish)

    tune = sub.add_parser(
        "tune",
        help="hyperparameter tuning on SageMaker (ranges in mlops.toml [aws.tuning], or --ranges-json)",
    )
    tune.add_argument("--data", help="dataset directory (default: $MLOPS_HOME/data/synthetic)")
    tune.add_argument("--hp", action="append", default=[], metavar="KEY=VALUE", help="static hyperparameter")
    add_tuning_flags(tune)
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
