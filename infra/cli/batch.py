"""`mlops batch-predict`: score a folder (`--local`) or an S3 prefix (SageMaker batch transform) with a
registered version, one JSON line per image (the format is `infra.batch`'s).

Locally the serve program itself runs on a free 127.0.0.1 port, so what is scored here is what SageMaker
would score; on AWS a transform job runs the version's serve image and the `.out` objects it writes are
read back into the same JSON lines.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from infra.batch import BatchSummary, write_jsonl_atomic
from infra.cli.context import Context, console, err
from infra.errors import MlopsError, UsageError

if TYPE_CHECKING:
    from infra.aws.platform import AwsPlatform

BATCH_HELP = """Score many images with a registered version: one JSON line per image, sorted by path,
{"image": "<path relative to the input>", "predictions": [...], "model": {...}} or, for an image the
model refused, {"image": ..., "error": "...", "status": 400}. The version is the one in production
unless --version N names another registered one.

--local: --input is a folder (searched recursively for .png, .jpg, .jpeg; other files are listed as
skipped), --output the .jsonl file to write. The serve program (`python -m serve`) starts on a free
127.0.0.1 port; --concurrency requests are in flight at once (default: its /execution-parameters'
MaxConcurrentTransforms). A corrupt image is an error line, and the run goes on.

On AWS: --input is an S3 prefix of images only (batch transform sends every object under it, one
request each; anything else is refused before a job starts), --output the S3 prefix the job writes
`<key>.out` objects under (in a folder named after the job). CreateModel from the registry package,
then CreateTransformJob (SingleRecord, SplitType None) on --instance-count x --instance-type, waited on
with progress; the results are then read back into --jsonl (default: $MLOPS_HOME/batch/<job>.jsonl).
The cost is estimated before the job starts and reported after. On SageMaker an image the model
refuses fails the whole job; the lines it wrote before are still collected. Ctrl-C stops the job.

The output file is written at the end, atomically: an interrupted run leaves no partial file.

Exit codes: 0 every image scored; 1 some image failed (its line says why) or the SageMaker job failed or
was stopped (with its FailureReason); 2 refused before anything ran (bad input, no version, no images);
130 interrupted."""


def add_batch_command(
    sub: Any,
    local_flag: Callable[[argparse.ArgumentParser], None],
    dry_run_flag: Callable[[argparse.ArgumentParser], None],
) -> None:
    bp = sub.add_parser(
        "batch-predict",
        help="score a folder (--local) or an S3 prefix (SageMaker batch transform): one JSON line per image",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=BATCH_HELP,
    )
    local_flag(bp)
    bp.add_argument(
        "--input", required=True, metavar="DIR|S3", help="a folder (--local) or s3://BUCKET/PREFIX/"
    )
    bp.add_argument(
        "--output",
        required=True,
        metavar="FILE|S3",
        help="the .jsonl file to write (--local), or the s3:// prefix for the transform job's output",
    )
    bp.add_argument("--version", type=int, metavar="N", help="registered version (default: production)")
    bp.add_argument(
        "--concurrency",
        type=int,
        metavar="N",
        help="requests in flight (per instance on AWS: MaxConcurrentTransforms); default: what the serve "
        "program's /execution-parameters answers",
    )
    aws = bp.add_argument_group("SageMaker only")
    aws.add_argument(
        "--instance-type",
        help="transform instance type (default: [aws] endpoint_instance_type of mlops.toml)",
    )
    aws.add_argument("--instance-count", type=int, metavar="N", help="instances (default 1)")
    aws.add_argument(
        "--max-payload-mb",
        type=int,
        metavar="MB",
        help="MaxPayloadInMB, the largest image sent (default: the serve program's limit, 6)",
    )
    aws.add_argument("--jsonl", metavar="FILE", help="where to write the JSON lines read back from S3")
    aws.add_argument(
        "--no-wait",
        action="store_true",
        help="start the job and return; the .out objects appear under --output (no --jsonl is written)",
    )
    dry_run_flag(bp)
    bp.set_defaults(handler=cmd_batch_predict)


def cmd_batch_predict(ctx: Context) -> int:
    return _local(ctx) if ctx.local else _on_aws(ctx)


# --- locally ------------------------------------------------------------------------------------------

_AWS_ONLY = ("instance_type", "instance_count", "max_payload_mb", "jsonl", "no_wait", "dry_run")


def _local(ctx: Context) -> int:
    from infra.local import transform
    from infra.local.registry import LocalRegistry

    args = ctx.args
    for name in _AWS_ONLY:
        if getattr(args, name, None) not in (None, False):
            flag = "--" + name.replace("_", "-")
            raise UsageError(f"{flag} is for SageMaker batch transform; drop it with --local")
    if args.input.startswith("s3://") or args.output.startswith("s3://"):
        raise UsageError("with --local, --input is a folder and --output a .jsonl file (s3:// is for AWS)")
    output = Path(args.output)
    if output.is_dir():
        raise UsageError(f"--output {output} is a directory; name the .jsonl file to write")
    if args.concurrency is not None and args.concurrency < 1:
        raise UsageError(f"--concurrency must be at least 1, got {args.concurrency}")
    found = transform.find_images(Path(args.input))
    if not found.images:
        raise UsageError(f"no images (.png, .jpg, .jpeg) under {found.root}")
    registry = LocalRegistry(ctx.home / "registry")
    target = registry.get(args.version) if args.version is not None else registry.production()
    if target is None:
        raise UsageError(
            "nothing is in production in the local registry; name a registered version with --version N "
            "(see `mlops versions --local`)"
        )
    console.print(
        f"batch-predict with v{target.version} ({target.state}): "
        f"{len(found.images)} images under {found.root}"
    )
    if found.skipped:
        shown = ", ".join(str(p) for p in found.skipped[:10]) + (", ..." if len(found.skipped) > 10 else "")
        console.print(f"skipped {len(found.skipped)} file(s) that are not images: {shown}", markup=False)

    def progress(done: int, total: int, seconds: float) -> None:
        rate = done / seconds if seconds > 0 else 0.0
        console.print(f"  {done}/{total} images, {rate:.1f} images/s", highlight=False)

    summary = transform.run(
        target.model_dir,
        found,
        version=target.version,
        workdir=ctx.home / "batch",
        concurrency=args.concurrency,
        on_progress=progress,
        on_event=lambda line: console.print(f"  {line}", markup=False),
    )
    write_jsonl_atomic(output, summary.records)
    return _finish(summary, output)


def _finish(summary: BatchSummary, path: Path) -> int:
    """The summary line; exit 1 when any image failed, naming the first few."""
    console.print(f"{summary.line()} -> {path}", markup=False)
    failures = [r for r in summary.records if "error" in r]
    for record in failures[:5]:
        status = f" ({record['status']})" if record.get("status") else ""
        err.print(f"failed{status}: {record['image']}: {record['error']}", markup=False)
    if len(failures) > 5:
        err.print(f"... and {len(failures) - 5} more (see {path})", markup=False)
    return 1 if failures else 0


# --- on SageMaker -------------------------------------------------------------------------------------


def _on_aws(ctx: Context) -> int:
    from infra.aws import transform
    from infra.aws.endpoints import _look
    from infra.cli.aws import aws_platform

    args = ctx.args
    # Everything that can be checked without AWS is checked before the first call.
    input_uri = transform.prefix_uri(args.input, "--input")
    output_base = transform.prefix_uri(args.output, "--output")
    transform.check_locations(input_uri, output_base)
    res = transform.resources(
        args.instance_type or ctx.config.aws.endpoint_instance_type,
        1 if args.instance_count is None else args.instance_count,
        concurrency=args.concurrency,
        payload_mb=args.max_payload_mb,
    )
    jsonl = Path(args.jsonl) if args.jsonl else None
    if jsonl is not None and args.no_wait:
        raise UsageError("--jsonl needs the results, which --no-wait does not wait for; drop one of them")
    if jsonl is not None and jsonl.is_dir():
        raise UsageError(f"--jsonl {jsonl} is a directory; name the .jsonl file to write")

    platform = aws_platform(ctx)
    platform.aws.settings.require("role_arn")
    version, package_arn, state = _aws_version(platform, args.version)
    name = transform.job_name(platform.project, version)
    output_uri = f"{output_base}{name}/"
    listing, known = _look(
        platform.executor, lambda: transform.list_input(platform.aws, input_uri), assume=None
    )
    if listing is not None:
        transform.check_input(listing, res.max_payload_mb)
    else:
        console.print(f"dry run: cannot list {input_uri}; the image count is unknown", markup=False)
    count = len(listing.images) if listing is not None else None
    console.print(
        f"batch transform with v{version} ({state}): {count if count is not None else '?'} images under "
        f"{input_uri} -> {output_uri}",
        markup=False,
    )
    console.print(
        f"{res.max_concurrent} requests in flight per instance, each at most {res.max_payload_mb} MB "
        "(BatchStrategy SingleRecord)"
    )
    console.print(f"cost: {transform.estimate_line(count, res)}", markup=False)
    spec = transform.TransformSpec(name, name, input_uri, output_uri, res, platform.tags())
    transform.start(
        spec,
        package_arn=package_arn,
        role_arn=str(platform.aws.settings.role_arn),
        executor=platform.executor,
    )
    if ctx.dry_run:
        console.print("dry run: nothing was created")
        return 0
    if args.no_wait or listing is None:
        console.print(
            f"started transform job {name}; its .out objects appear under {output_uri} (the model {name} "
            "stays for `mlops cleanup`)",
            markup=False,
        )
        return 0
    assert known
    outcome = transform.wait(
        platform.aws,
        name,
        output_uri=output_uri,
        total=len(listing.images),
        on_event=lambda line: console.print(f"  {line}", markup=False),
        poll_seconds=platform.poll_seconds,
        executor=platform.executor,
    )
    (console if outcome.status == "Completed" else err).print(outcome.line(), markup=False)
    why = (
        "no output" if outcome.status == "Completed" else f"no output (the job ended {outcome.status} first)"
    )
    records = transform.collect(platform.aws, listing, output_uri, why_missing=why)
    path = jsonl or ctx.home / "batch" / f"{name}.jsonl"
    write_jsonl_atomic(path, records)
    try:
        platform.executor(transform.delete_model_call(name))
    except MlopsError as exc:  # the results are safe; a leftover model only waits for cleanup
        err.print(f"the model {name} was not deleted ({exc}); `mlops cleanup` finds it", markup=False)
    code = _finish(BatchSummary(records, outcome.seconds or 0.0), path)
    if outcome.status != "Completed":
        err.print(
            f"transform job {name} ended {outcome.status}: {outcome.failure_reason or 'no reason given'} "
            f"(its log: CloudWatch /aws/sagemaker/TransformJobs, streams {name}/...)",
            markup=False,
        )
        return 1
    return code


def _aws_version(platform: AwsPlatform, version: int | None) -> tuple[int, str, str]:
    """(version, model package ARN, approval status): --version N, or what the endpoint serves."""
    from infra.aws import registry
    from infra.aws.errors import NotFound

    dry = platform.executor.dry_run
    try:
        if version is not None:
            package = registry.get_version(platform.aws, platform.group, version)
            return package.version, package.arn, package.status
        current = platform.production()
    except NotFound as exc:
        raise UsageError(f"{exc} (see `mlops versions`)") from None
    except MlopsError as exc:
        if not dry:
            raise
        # A dry run without credentials still shows the plan, with the ARN it cannot read.
        console.print(f"dry run: cannot read the registry ({exc})", markup=False)
        if version is None:
            raise UsageError("dry run without AWS access: name the version with --version N") from None
        return version, f"<the model package ARN of v{version}>", "unknown"
    if current is None:
        raise UsageError(
            f"nothing serves in production (endpoint {platform.endpoint}); name a registered version with "
            "--version N (see `mlops versions`)"
        )
    return current.version, str(current.uri), current.status
