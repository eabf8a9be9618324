"""SageMaker batch transform: every image under an S3 prefix scored by a registered version's serve image.

Stages:
  1. `resources` checks the instance type against botocore's TransformInstanceType enum and settles
     MaxConcurrentTransforms / MaxPayloadInMB: given, or what the serve program's /execution-parameters
     would answer on that instance, within the API's 100 MB bound on their product.
  2. `list_input` lists the input prefix (read-only): batch transform sends EVERY object under an
     S3Prefix data source as one request, so anything that is not a .png/.jpg/.jpeg, or is larger than
     MaxPayloadInMB, would fail the job: it is refused here, before anything is created.
  3. `start`: CreateModel from the registry package (`PrimaryContainer.ModelPackageName`, as a deploy
     does: the serve image and model.tar.gz of that version, with lineage) and CreateTransformJob
     (SplitType None, BatchStrategy SingleRecord: one image per request; Accept application/json).
  4. `wait`: DescribeTransformJob every poll, with the `.out` objects written so far and the elapsed
     time; Ctrl-C sends StopTransformJob and waits until it has stopped, so nothing is left billing.
  5. `collect`: each input `<prefix>/<rel>` has its answer at `<S3OutputPath><rel>.out`; each becomes
     the same JSON line as a local run. An image without one (the job failed or stopped first) is an
     error line.
  6. `delete_model_call`: the transform's model is deleted once the job has ended (the registry keeps
     the version; a model left behind would only wait for `mlops cleanup`).
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from infra import batch
from infra.aws import costs
from infra.aws.endpoints import Tags, model_call, resource_name
from infra.aws.errors import AwsError, NotFound, aws_errors
from infra.aws.plan import Call, Executor, LiveExecutor
from infra.aws.session import Aws
from infra.concurrency import cancelling_pool
from infra.errors import UsageError

TERMINAL = ("Completed", "Failed", "Stopped")
# Batch transform sends each object with the one TransformInput.ContentType; the serve program
# recognises PNG and JPEG by their bytes under this type, so one prefix may mix both.
CONTENT_TYPE = "application/x-image"
ACCEPT = "application/json"
# CreateTransformJob: MaxPayloadInMB <= 100, and MaxConcurrentTransforms * MaxPayloadInMB <= 100.
MAX_TOTAL_PAYLOAD_MB = 100
MIB = 1024 * 1024
# For the estimate only: instances take minutes to start and pull the image (billed), then score at
# roughly this rate each on CPU (one HTTP request per image).
STARTUP_SECONDS = 300
ASSUMED_IMAGES_PER_SECOND = 20.0
READERS = 16  # `.out` objects fetched at once

Events = Callable[[str], None]


# --- names and resources ------------------------------------------------------------------------------


def job_name(project: str, version: int, now: float | None = None) -> str:
    """`<project>-batch-v<version>-<UTC stamp>`: the transform job and its model share it."""
    return resource_name(f"{project}-batch", version, now)


@functools.cache
def transform_instance_types() -> tuple[str, ...]:
    """TransformResources.InstanceType's allowed values, from the installed botocore service model."""
    import botocore.session

    model = botocore.session.get_session().get_service_model("sagemaker")
    return tuple(model.shape_for("TransformInstanceType").enum)


def vcpus(instance_type: str) -> int | None:
    """vCPUs of an ml.* type from its size (large 2, xlarge 4, Nxlarge 4N), as EC2 sizes them."""
    match = re.fullmatch(r"ml\.[a-z0-9-]+\.(\d*)(x?large)", instance_type)
    if match is None:
        return None
    if match[2] == "large":
        return 2
    return 4 * int(match[1] or 1)


@dataclass(frozen=True)
class Resources:
    instance_type: str
    instance_count: int
    max_concurrent: int  # MaxConcurrentTransforms: requests in flight per instance
    max_payload_mb: int  # MaxPayloadInMB: the largest object sent


def resources(
    instance_type: str, instance_count: int, *, concurrency: int | None = None, payload_mb: int | None = None
) -> Resources:
    """Checked TransformResources and limits; UsageError naming the flag otherwise."""
    from serve.server import DEFAULT_MAX_CONCURRENCY, DEFAULT_MAX_PAYLOAD

    allowed = transform_instance_types()
    if instance_type not in allowed:
        near = [t for t in allowed if t.split(".")[1:2] == instance_type.split(".")[1:2]]
        hint = (
            f" (of that family: {', '.join(near)})" if near else f" ({len(allowed)} types, e.g. ml.m5.xlarge)"
        )
        raise UsageError(f"--instance-type {instance_type!r} cannot run batch transform{hint}")
    if instance_count < 1:
        raise UsageError(f"--instance-count must be at least 1, got {instance_count}")
    payload = DEFAULT_MAX_PAYLOAD // MIB if payload_mb is None else payload_mb
    if not 1 <= payload <= MAX_TOTAL_PAYLOAD_MB:
        raise UsageError(f"--max-payload-mb must be between 1 and {MAX_TOTAL_PAYLOAD_MB}, got {payload}")
    if concurrency is None:
        # What the serve program's /execution-parameters answers on this instance, within the API bound.
        concurrency = min(DEFAULT_MAX_CONCURRENCY, max(2, vcpus(instance_type) or 2))
        concurrency = max(1, min(concurrency, MAX_TOTAL_PAYLOAD_MB // payload))
    if concurrency < 1:
        raise UsageError(f"--concurrency must be at least 1, got {concurrency}")
    if concurrency * payload > MAX_TOTAL_PAYLOAD_MB:
        raise UsageError(
            f"--concurrency {concurrency} x --max-payload-mb {payload} is {concurrency * payload} MB; "
            f"SageMaker allows at most {MAX_TOTAL_PAYLOAD_MB} MB in flight per instance"
        )
    return Resources(instance_type, instance_count, concurrency, payload)


# --- the input ----------------------------------------------------------------------------------------


_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def prefix_uri(uri: str, flag: str) -> str:
    """An S3 prefix as `s3://bucket/prefix/`: the trailing slash keeps `in/` from matching `in-old/`."""
    text = uri.strip()
    bucket, _, key = text.removeprefix("s3://").partition("/")
    if not text.startswith("s3://") or not _BUCKET.fullmatch(bucket):
        raise UsageError(
            f"{flag} {uri!r} must be an S3 prefix, s3://BUCKET/PREFIX/ (a folder and a .jsonl file are "
            "for --local)"
        )
    key = key.strip("/")
    return f"s3://{bucket}/{key}/" if key else f"s3://{bucket}/"


def check_locations(input_uri: str, output_uri: str) -> None:
    """The results may not land under the input: a later run would send the `.out` files as images."""
    if output_uri.startswith(input_uri):
        raise UsageError(
            f"--output {output_uri} is inside --input {input_uri}: the next run over the input would send "
            "the results as images; write them to another prefix"
        )


@dataclass
class InputListing:
    uri: str  # s3://bucket/prefix/
    images: list[tuple[str, int]]  # (key relative to the prefix, size in bytes), sorted
    others: list[str]  # relative keys that are not images

    @property
    def bytes(self) -> int:
        return sum(size for _, size in self.images)


def list_input(aws: Aws, uri: str) -> InputListing:
    bucket, prefix = _split(uri)
    images: list[tuple[str, int]] = []
    others: list[str] = []
    paginator = aws.client("s3").get_paginator("list_objects_v2")
    with aws_errors(f"listing {uri}"):
        for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                relative = item["Key"][len(prefix) :]
                if not relative or relative.endswith("/"):  # a console "folder": no object to score
                    continue
                if batch.is_image(relative):
                    images.append((relative, int(item.get("Size", 0))))
                else:
                    others.append(relative)
    return InputListing(uri, sorted(images), sorted(others))


def check_input(listing: InputListing, payload_mb: int) -> None:
    """Refuse what would fail the job: no images, objects that are not images, images over the limit."""
    if listing.others:
        shown = ", ".join(listing.others[:5]) + (", ..." if len(listing.others) > 5 else "")
        raise UsageError(
            f"{listing.uri} holds {len(listing.others)} object(s) that are not .png/.jpg/.jpeg ({shown}); "
            "batch transform sends every object under the prefix to the model, and one it refuses fails "
            "the job: move them, or point --input at a prefix of images only"
        )
    if not listing.images:
        raise UsageError(f"no images (.png, .jpg, .jpeg) under {listing.uri}")
    large = [(key, size) for key, size in listing.images if size > payload_mb * MIB]
    if large:
        key, size = max(large, key=lambda item: item[1])
        raise UsageError(
            f"{len(large)} image(s) under {listing.uri} exceed MaxPayloadInMB={payload_mb} (the largest: "
            f"{key}, {size / MIB:.1f} MB); raise --max-payload-mb"
        )


# --- the requests -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TransformSpec:
    job_name: str
    model_name: str
    input_uri: str  # s3://bucket/prefix/
    output_uri: str  # S3OutputPath: s3://bucket/prefix/<job name>/
    resources: Resources
    tags: Tags


def transform_job_call(spec: TransformSpec) -> Call:
    res = spec.resources
    params: dict[str, Any] = {
        "TransformJobName": spec.job_name,
        "ModelName": spec.model_name,
        "MaxConcurrentTransforms": res.max_concurrent,
        "MaxPayloadInMB": res.max_payload_mb,
        "BatchStrategy": "SingleRecord",
        # The container admits as many requests, and as large a body, as the job sends (serve/server.py).
        "Environment": {
            "MLOPS_MAX_CONCURRENCY": str(res.max_concurrent),
            "MLOPS_MAX_PAYLOAD_BYTES": str(res.max_payload_mb * MIB),
        },
        "TransformInput": {
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": spec.input_uri}},
            "ContentType": CONTENT_TYPE,
            "CompressionType": "None",
            "SplitType": "None",  # one object is one request: an image is never split
        },
        "TransformOutput": {"S3OutputPath": spec.output_uri, "Accept": ACCEPT, "AssembleWith": "None"},
        "TransformResources": {"InstanceType": res.instance_type, "InstanceCount": res.instance_count},
        "Tags": spec.tags,
    }
    why = f"score {spec.input_uri} -> {spec.output_uri} on {res.instance_count} x {res.instance_type}"
    return Call("sagemaker", "CreateTransformJob", params, why=why)


def start(spec: TransformSpec, *, package_arn: str, role_arn: str, executor: Executor) -> None:
    """CreateModel from the registry package, then CreateTransformJob (printed only, on a dry run)."""
    model = model_call(spec.model_name, package_arn=package_arn, role_arn=role_arn, tags=spec.tags)
    executor(model)
    executor(transform_job_call(spec))


def stop_call(name: str) -> Call:
    return Call("sagemaker", "StopTransformJob", {"TransformJobName": name}, why=f"stop transform job {name}")


def delete_model_call(name: str) -> Call:
    return Call("sagemaker", "DeleteModel", {"ModelName": name}, why=f"the transform job's model {name}")


# --- cost ---------------------------------------------------------------------------------------------


def estimate_seconds(images: int, res: Resources) -> float:
    return STARTUP_SECONDS + images / (ASSUMED_IMAGES_PER_SECOND * res.instance_count)


def estimate_line(images: int | None, res: Resources) -> str:
    price = costs.hourly_price(res.instance_type)
    rate = f"{costs.format_cost(price)}/h" if price is not None else "no price in the table"
    head = f"{res.instance_count} x {res.instance_type} at {rate} each"
    if images is None:
        return f"{head}; billed from instance start to job end (at least ~{STARTUP_SECONDS // 60} min)"
    seconds = estimate_seconds(images, res)
    cost = costs.job_cost(res.instance_type, res.instance_count, seconds, spot=False)
    return (
        f"{head}; about {seconds / 60:.0f} min (~{STARTUP_SECONDS // 60} min startup, {images} images at "
        f"~{ASSUMED_IMAGES_PER_SECOND:g}/s per instance): estimated {costs.format_cost(cost)}"
    )


# --- waiting ------------------------------------------------------------------------------------------


@dataclass
class TransformOutcome:
    job_name: str
    status: str  # Completed | Failed | Stopped
    failure_reason: str | None
    output_uri: str
    instance_type: str
    instance_count: int
    seconds: float | None  # TransformStartTime -> TransformEndTime: what the instances were billed for

    @property
    def cost(self) -> float | None:
        if self.seconds is None:
            return None
        return costs.job_cost(self.instance_type, self.instance_count, self.seconds, spot=False)

    def line(self) -> str:
        billed = "unknown" if self.seconds is None else f"{self.seconds:.0f} s"
        text = (
            f"transform job {self.job_name}: {self.status}; {self.instance_count} x {self.instance_type}, "
            f"billed {billed}, cost {costs.format_cost(self.cost)}"
        )
        return text + (f"; {self.failure_reason}" if self.failure_reason else "")


def describe(aws: Aws, name: str) -> dict[str, Any]:
    with aws_errors(f"describing transform job {name}"):
        answer: dict[str, Any] = aws.client("sagemaker").describe_transform_job(TransformJobName=name)
    return answer


def outcome_from(desc: dict[str, Any]) -> TransformOutcome:
    res = desc.get("TransformResources", {})
    started, ended = desc.get("TransformStartTime"), desc.get("TransformEndTime")
    seconds = (ended - started).total_seconds() if started and ended else (0.0 if ended else None)
    return TransformOutcome(
        job_name=str(desc["TransformJobName"]),
        status=str(desc.get("TransformJobStatus", "")),
        failure_reason=desc.get("FailureReason") or None,
        output_uri=str(desc.get("TransformOutput", {}).get("S3OutputPath", "")),
        instance_type=str(res.get("InstanceType", "")),
        instance_count=int(res.get("InstanceCount", 1)),
        seconds=max(0.0, seconds) if seconds is not None else None,
    )


def count_outputs(aws: Aws, output_uri: str) -> int:
    bucket, prefix = _split(output_uri)
    paginator = aws.client("s3").get_paginator("list_objects_v2")
    with aws_errors(f"listing {output_uri}"):
        return sum(
            1
            for page in paginator.paginate(Bucket=bucket, Prefix=prefix)
            for item in page.get("Contents", [])
            if item["Key"].endswith(".out")
        )


def wait(
    aws: Aws,
    name: str,
    *,
    output_uri: str,
    total: int,
    on_event: Events,
    poll_seconds: float = 30,
    executor: Executor | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> TransformOutcome:
    """Poll until Completed, Failed or Stopped, one progress line per poll. Ctrl-C sends StopTransformJob
    and waits for Stopped (SageMaker bills until then); a second Ctrl-C leaves at once."""
    began = clock()
    stop_sent = False
    counting = True
    while True:
        try:
            desc = describe(aws, name)
            status = str(desc.get("TransformJobStatus", ""))
            if status in TERMINAL:
                return outcome_from(desc)
            progress = ""
            if counting:
                try:
                    progress = f", {count_outputs(aws, output_uri)}/{total} images written"
                except AwsError as exc:
                    # Progress is a convenience: lacking s3:ListBucket must not lose the job.
                    on_event(f"progress off: {exc}")
                    counting = False
            on_event(f"{name}: {status}{progress}, {_elapsed(clock() - began)} elapsed")
            aws.sleep(poll_seconds)
        except KeyboardInterrupt:
            if stop_sent:
                on_event(f"interrupted again: no longer waiting; {name} is stopping on SageMaker")
                raise
            stop_sent = True
            on_event(f"interrupted: stopping {name} (StopTransformJob); Ctrl-C again to leave now")
            try:
                (executor or LiveExecutor(aws.client))(stop_call(name))
            except NotFound:
                raise
            except AwsError as exc:
                # ValidationException: it ended meanwhile; the next poll shows how.
                if exc.code != "ValidationException":
                    raise
                on_event(f"{name} could not be stopped: {exc}")


def _elapsed(seconds: float) -> str:
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m{rest:02d}s"


# --- the results --------------------------------------------------------------------------------------


def collect(
    aws: Aws, listing: InputListing, output_uri: str, *, why_missing: str = "no output"
) -> list[dict[str, Any]]:
    """One JSON line per input image, in the listing's (sorted) order, from its `<rel>.out` object."""
    bucket, prefix = _split(output_uri)
    client = aws.client("s3")

    def read(relative: str) -> dict[str, Any]:
        key = f"{prefix}{relative}.out"
        try:
            with aws_errors(f"reading s3://{bucket}/{key}"):
                body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except NotFound:
            return batch.failed(relative, f"{why_missing}: s3://{bucket}/{key} does not exist", None)
        try:
            answer = json.loads(body)
        except ValueError:
            return batch.failed(relative, f"s3://{bucket}/{key} is not JSON: {body[:200]!r}", None)
        return batch.from_answer(relative, 200, answer)

    with cancelling_pool(READERS, "transform-results") as pool:
        return list(pool.map(read, [relative for relative, _ in listing.images]))


def _split(uri: str) -> tuple[str, str]:
    """s3://bucket/prefix/ -> (bucket, "prefix/"); the bucket root -> (bucket, "")."""
    rest = uri[len("s3://") :]
    bucket, _, prefix = rest.partition("/")
    return bucket, prefix
