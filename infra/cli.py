"""`mlops`: the command line for the pipeline, on this machine (`--local`) or, later, on AWS.

Every command prints one clear line and exits non-zero on an expected failure (exit codes: 1 general,
2 usage, 3 training failed, 4 gate rejected with --fail-on-reject, 5 deploy or verification failed).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import secrets
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from infra.errors import GateRejected, MlopsError, UsageError
from infra.settings import Config, Settings, load

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
console = Console(highlight=False, width=_WIDTH, emoji=False)
err = Console(stderr=True, highlight=False, width=_WIDTH, emoji=False)


# --- shared plumbing -------------------------------------------------------------------------------


class Context:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.settings, self.config = load()
        if getattr(args, "home", None):
            self.settings.home = Path(args.home)
        self.home = self.settings.home.resolve()

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
        from infra.cli_aws import aws_platform

        return aws_platform(self)

    def default_data(self) -> Path:
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


def _hyperparameters(ctx: Context, pairs: list[str], *, local: bool) -> dict[str, str]:
    """Config defaults ([local] or [train]), then --hp key=value overrides; validated before a job starts."""
    from train.config import ConfigError, parse_hyperparameters

    base = dict((ctx.config.local if local else ctx.config.train).hyperparameters)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--hp expects key=value, got {pair!r}")
        base[key.strip()] = value.strip()
    try:
        parse_hyperparameters(base)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    return base


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
    from infra.datasets import DatasetError, make_synthetic

    if (data / "train").is_dir() and (data / "test").is_dir():
        return f"using {data}"
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


# --- commands ---------------------------------------------------------------------------------------


def cmd_data(ctx: Context) -> int:
    from infra.datasets import DatasetError, make_synthetic, prepare_cifar10

    args = ctx.args
    out = Path(args.out) if args.out else ctx.home / "data" / args.dataset

    def progress(message: str) -> None:
        console.print(f"  [dim]{message}[/]")

    try:
        if args.dataset == "synthetic":
            info = make_synthetic(
                out,
                seed=args.seed,
                classes=args.classes,
                train_per_class=args.train_per_class,
                val_per_class=args.val_per_class,
                test_per_class=args.test_per_class,
                size=args.size,
                force=args.force,
                progress=progress,
            )
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
            spec = TrainingSpec(
                ctx.job_name(), _hyperparameters(ctx, ctx.args.hp, local=ctx.local), data, ctx.code_version()
            )
            console.print(f"training job {spec.job_name} on {data}")
            result = platform.train(spec, display)
    finally:
        display.close()
    console.print(f"job {result.job_name}: {result.status} in {result.seconds:.1f}s")
    if result.status == "Planned":
        return 0
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


def _decide(ctx: Context, platform: Any, job: str) -> tuple[Any, Any]:
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
    decision = gate.evaluate(
        result.metrics, ctx.config.gate, compare, production.label if production else None, notes
    )
    return result, decision


def cmd_evaluate(ctx: Context) -> int:
    platform = ctx.platform()
    job = ctx.args.job or _latest_job(ctx)
    _result, decision = _decide(ctx, platform, job)
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
    result, decision = _decide(ctx, platform, job)
    version = platform.register(result, decision.to_dict())
    console.print(f"registered {version.label} from job {job}: {version.status} ({decision.summary})")
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
            v.status,
            f"{acc:.4f}" if acc is not None else "",
            v.created_at,
            v.source_job,
            v.code_version,
            "production" if production and production.version == v.version else "",
        )
    console.print(table)
    return 0


def _print_deploy(result: Any) -> int:
    from infra.errors import DeployFailed

    if not result.ok:
        raise DeployFailed(result.message)
    console.print(result.message)
    if result.smoke:
        console.print(
            f"smoke test: {result.smoke['images']} held-out images, p50 {result.smoke['p50_ms']:.1f} ms"
        )
    return 0


def cmd_deploy(ctx: Context) -> int:
    platform = ctx.platform()
    version = ctx.args.version
    if version is None:
        approved = [v for v in platform.versions() if v.status == "Approved"]
        if not approved:
            raise UsageError("no Approved version in the registry; run `mlops pipeline --local`")
        version = approved[-1].version
    how = (
        "start on a scratch port, smoke-test, then switch"
        if ctx.local
        else "blue/green update with auto-rollback alarms, then a smoke test"
    )
    console.print(f"deploying v{version}: {how}")
    return _print_deploy(platform.deploy(version))


def cmd_rollback(ctx: Context) -> int:
    platform = ctx.platform()
    result = platform.rollback(ctx.args.to)
    return _print_deploy(result)


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
            top = ", ".join(f"{p['label']} {p['probability']:.3f}" for p in prediction["top_k"])
            console.print(f"{path}{f'[{i}]' if len(payload['predictions']) > 1 else ''}: {top}")
    return 0


def cmd_pipeline(ctx: Context) -> int:
    from infra.console import StageView, TrainingDisplay
    from infra.pipeline import run_pipeline
    from infra.platform import TrainingSpec
    from infra.report import print_report, write_step_summary

    platform = ctx.platform()
    data = Path(ctx.args.data) if ctx.args.data else ctx.default_data()
    spec = TrainingSpec(
        ctx.job_name(), _hyperparameters(ctx, ctx.args.hp, local=ctx.local), data, ctx.code_version()
    )
    if ctx.dry_run:
        from infra.cli_aws import plan_pipeline

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


# --- parser -----------------------------------------------------------------------------------------


def _local_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--local",
        action="store_true",
        help="run on this machine (subprocesses, a local registry and endpoint) instead of AWS",
    )


def _dry_run_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the exact AWS requests (operation and JSON parameters); change nothing",
    )


def _hp_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--hp",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="hyperparameter override, repeatable (see `python -m train --help` for keys)",
    )


def build_parser() -> argparse.ArgumentParser:  # noqa: PLR0915 -- one flat declaration of the CLI
    parser = argparse.ArgumentParser(
        prog="mlops",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train, gate, register, deploy and roll back computer-vision models.\n"
        "Local state lives in MLOPS_HOME (default ./.mlops); gate thresholds in mlops.toml.",
        epilog="Start with: mlops pipeline --local   (the whole loop on this machine, no AWS account)",
    )
    parser.add_argument("--home", help="local state directory (default: $MLOPS_HOME or ./.mlops)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = sub.add_parser("data", help="create or prepare a dataset (ImageFolder train/validation/test)")
    dsub = data.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    syn = dsub.add_parser("synthetic", help="a deterministic, learnable 32x32 dataset (no download)")
    syn.add_argument("--out", help="output directory (default: $MLOPS_HOME/data/synthetic)")
    syn.add_argument("--seed", type=int, default=0)
    syn.add_argument("--classes", type=int, default=8, help="number of classes, 2-10 (default 8)")
    syn.add_argument("--train-per-class", type=int, default=250)
    syn.add_argument("--val-per-class", type=int, default=50)
    syn.add_argument("--test-per-class", type=int, default=50)
    syn.add_argument("--size", type=int, default=32, help="image side in pixels")
    syn.add_argument("--force", action="store_true", help="overwrite an existing dataset")
    cif = dsub.add_parser("cifar10", help="real CIFAR-10 (45k/5k/10k) from the official binary archive")
    cif.add_argument("--out", help="output directory (default: $MLOPS_HOME/data/cifar10)")
    cif.add_argument("--archive", help="a local cifar-10-binary.tar.gz (otherwise downloaded)")
    cif.add_argument("--seed", type=int, default=0, help="seed of the train/validation split")
    cif.add_argument("--force", action="store_true", help="overwrite an existing dataset")
    syn.set_defaults(handler=cmd_data)
    cif.set_defaults(handler=cmd_data)
    from infra.cli_aws import add_aws_commands, add_data_upload

    add_data_upload(dsub, _dry_run_flag)

    train = sub.add_parser("train", help="run a training job")
    _local_flag(train)
    _hp_flag(train)
    train.add_argument("--data", help="dataset directory with train/ validation/ test/ (default: synthetic)")
    train.add_argument("--job-name", help="name the job (default: <project>-<UTC time>-<random>)")
    train.add_argument(
        "--resume", metavar="JOB", help="start an interrupted local job again from its checkpoint"
    )
    train.add_argument("--verbose", "-v", action="store_true", help="show every line the trainer prints")
    _dry_run_flag(train)
    train.set_defaults(handler=cmd_train)

    ev = sub.add_parser("evaluate", help="check a finished job against the gate and production")
    _local_flag(ev)
    ev.add_argument("--job", help="training job name (default: the latest)")
    ev.add_argument("--data", help="dataset whose test/ split scores production when its test set differs")
    ev.add_argument("--json", action="store_true", help="also print the decision as JSON")
    ev.set_defaults(handler=cmd_evaluate)

    reg = sub.add_parser("register", help="register a job's model (Approved or Rejected by the gate)")
    _local_flag(reg)
    reg.add_argument("--job", help="training job name (default: the latest)")
    reg.add_argument("--data", help="dataset whose test/ split scores production when its test set differs")
    _dry_run_flag(reg)
    reg.set_defaults(handler=cmd_register)

    ver = sub.add_parser("versions", help="list registered model versions")
    _local_flag(ver)
    ver.set_defaults(handler=cmd_versions)

    dep = sub.add_parser("deploy", help="deploy a registered version (smoke-tested before it takes traffic)")
    _local_flag(dep)
    dep.add_argument("--version", type=int, help="version number (default: the latest Approved)")
    dep.add_argument("--data", help="dataset whose test/ split smoke-tests the endpoint (default: synthetic)")
    _dry_run_flag(dep)
    dep.set_defaults(handler=cmd_deploy)

    rb = sub.add_parser("rollback", help="return the endpoint to the previous production version")
    _local_flag(rb)
    rb.add_argument("--to", type=int, metavar="VERSION", help="a specific Approved version instead")
    rb.add_argument("--data", help="dataset whose test/ split smoke-tests the endpoint (default: synthetic)")
    _dry_run_flag(rb)
    rb.set_defaults(handler=cmd_rollback)

    ep = sub.add_parser("endpoint", help="the serving endpoint: status, invoke, stop")
    esub = ep.add_subparsers(dest="action", required=True, metavar="ACTION")
    est = esub.add_parser("status", help="which version serves, where, and whether it answers /ping")
    _local_flag(est)
    inv = esub.add_parser("invoke", help="send image files to the endpoint and print the top-k predictions")
    inv.add_argument("files", nargs="+", help="images (.png, .jpg), .npy arrays or JSON request bodies")
    inv.add_argument("--content-type", help="override the content type guessed from the file suffix")
    inv.add_argument("--json", action="store_true", help="print the raw JSON answer")
    _local_flag(inv)
    stp = esub.add_parser("stop", help="stop the endpoint's server process")
    _local_flag(stp)
    dele = esub.add_parser(
        "delete", help="delete the SageMaker endpoint, its autoscaling target and alarms (AWS)"
    )
    _dry_run_flag(dele)
    ep.set_defaults(handler=cmd_endpoint)

    pipe = sub.add_parser("pipeline", help="data -> train -> evaluate -> register -> deploy -> verify")
    _local_flag(pipe)
    _hp_flag(pipe)
    pipe.add_argument("--data", help="dataset directory (default: synthetic, created when missing)")
    pipe.add_argument("--job-name", help="name the training job (default: <project>-<UTC time>-<random>)")
    pipe.add_argument(
        "--fail-on-reject", action="store_true", help="exit 4 when the gate rejects the candidate"
    )
    pipe.add_argument("--verbose", "-v", action="store_true", help="show every line the trainer prints")
    _dry_run_flag(pipe)
    pipe.set_defaults(handler=cmd_pipeline)

    add_aws_commands(sub, _dry_run_flag)

    srv = sub.add_parser("serve", help="run the inference server in the foreground")
    group = srv.add_mutually_exclusive_group()
    group.add_argument("--version", type=int, help="a registry version (default: production)")
    group.add_argument("--model-dir", help="a model artifact directory")
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=8080)
    srv.set_defaults(handler=cmd_serve)
    return parser


def _interrupt_on_sigterm() -> None:
    """A cancelled GitHub workflow sends SIGINT, then SIGTERM: both must reach the code that stops a
    SageMaker job (StopTrainingJob) or a local trainer, which listens for KeyboardInterrupt."""
    import signal

    def handler(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _interrupt_on_sigterm()
    try:
        ctx = Context(args)
        return int(args.handler(ctx))
    except MlopsError as exc:
        err.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130


__all__ = ["Config", "Settings", "main"]


if __name__ == "__main__":
    raise SystemExit(main())
