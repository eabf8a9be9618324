"""The SageMaker Model Registry: one model package group per project and task, one package per version.

Stages: `ensure_group` (DescribeModelPackageGroup, CreateModelPackageGroup when missing) -> `register`
(CreateModelPackage: serve image + model.tar.gz, approval status, metrics and metadata as
CustomerMetadataProperties, then DescribeModelPackage for the number SageMaker gave it) ->
`list_versions` / `get_version` read them back -> `set_status` approves or rejects (UpdateModelPackage).

Metrics travel as CustomerMetadataProperties `metric:<name>` = the float's repr, parsed back to floats on
read: the property map is the one place on a package that holds arbitrary key/value data without an S3
report to write and fetch. SageMaker numbers versions itself (ModelPackageVersion, 1, 2, ...), so the
registry needs no index of its own.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from infra.aws.errors import NotFound, aws_errors
from infra.aws.plan import Call, Executor
from infra.aws.session import Aws
from infra.errors import MlopsError, UsageError

APPROVED, REJECTED, PENDING = "Approved", "Rejected", "PendingManualApproval"
STATUSES = (APPROVED, REJECTED, PENDING)
METRIC_PREFIX = "metric:"

# What serve/codecs.py decodes, and what it answers with (InferenceSpecification).
CONTENT_TYPES = ["image/png", "image/jpeg", "application/x-image", "application/json", "application/x-npy"]
RESPONSE_TYPES = ["application/json"]

# CustomerMetadataProperties: at most 50 entries, keys 1-128 and values 1-256 characters drawn from
# letters, numbers, spaces and `_.:/=+-@` (the API's pattern; botocore checks lengths, not patterns,
# so a bad character would only fail at AWS). Free text belongs in ModelPackageDescription.
_MAX_PROPERTIES, _MAX_KEY, _MAX_VALUE = 50, 128, 256
_NOT_ALLOWED = re.compile(r"[^\w .:/=+\-@]")  # \w: letters, numbers and `_`
_MAX_DESCRIPTION = 1024

Tags = list[dict[str, str]]


@dataclass
class PackageVersion:
    arn: str
    version: int
    status: str  # Approved | Rejected | PendingManualApproval
    metrics: dict[str, float]
    image_uri: str
    model_data_uri: str
    created: str  # ISO 8601
    metadata: dict[str, str] = field(default_factory=dict)
    description: str = ""
    approval_description: str = ""


def group_name(project: str, task: str = "classification") -> str:
    """`<project>-<task>`, fitted to ModelPackageGroupName (letters, digits, inner hyphens, <= 63)."""
    name = re.sub(r"[^a-zA-Z0-9-]+", "-", f"{project}-{task}")
    return re.sub(r"-+$", "", name.strip("-")[:63])


def ensure_group(aws: Aws, group: str, executor: Executor, tags: Tags) -> None:
    """Create the model package group unless it exists (safe to call before every registration)."""
    try:
        with aws_errors(f"reading model package group {group}"):
            aws.client("sagemaker").describe_model_package_group(ModelPackageGroupName=group)
        return
    except NotFound:
        pass
    except MlopsError:
        if not executor.dry_run:
            raise
        # A dry run without credentials cannot look; it shows the create it would make if missing.
    call = Call(
        "sagemaker",
        "CreateModelPackageGroup",
        {
            "ModelPackageGroupName": group,
            "ModelPackageGroupDescription": f"Model versions of {group}, registered by the mlops pipeline",
            "Tags": tags,
        },
        why=f"create the model registry group {group}",
    )
    try:
        executor(call)
    except MlopsError as exc:
        # Two pipelines registering at once both see the group missing; the second create loses the race.
        if "already exist" not in str(exc):
            raise


def register_call(
    group: str,
    *,
    image_uri: str,
    model_data_uri: str,
    metrics: dict[str, float],
    metadata: dict[str, str],
    status: str,
    description: str,
    instance_types: list[str] | None = None,
) -> Call:
    """CreateModelPackage for one version: the serve image and model.tar.gz, status, metrics, metadata."""
    _check_status(status)
    container = {"Image": image_uri, "ModelDataUrl": model_data_uri}
    spec: dict[str, Any] = {
        "Containers": [container],
        "SupportedContentTypes": CONTENT_TYPES,
        "SupportedResponseMIMETypes": RESPONSE_TYPES,
    }
    if instance_types:
        spec["SupportedRealtimeInferenceInstanceTypes"] = instance_types
    params: dict[str, Any] = {
        "ModelPackageGroupName": group,
        "ModelPackageDescription": _printable(description)[:_MAX_DESCRIPTION],
        "InferenceSpecification": spec,
        "ModelApprovalStatus": status,
    }
    properties = customer_metadata(metrics, metadata)
    if properties:  # the API rejects an empty map (min 1 entry)
        params["CustomerMetadataProperties"] = properties
    return Call("sagemaker", "CreateModelPackage", params, why=f"register a version as {status} in {group}")


def customer_metadata(metrics: dict[str, float], metadata: dict[str, str]) -> dict[str, str]:
    """Metrics as `metric:<name>` plus free metadata, fitted to the CustomerMetadataProperties limits."""
    clashing = sorted(k for k in metadata if k.startswith(METRIC_PREFIX))
    if clashing:
        raise UsageError(
            f"metadata keys may not start with {METRIC_PREFIX!r} (reserved for metrics): {clashing}"
        )
    raw = {f"{METRIC_PREFIX}{k}": repr(float(v)) for k, v in metrics.items()} | dict(metadata)
    properties: dict[str, str] = {}
    for key, value in raw.items():
        if not key or len(key) > _MAX_KEY or _NOT_ALLOWED.search(key):
            raise UsageError(
                f"metadata key {key!r} does not fit CustomerMetadataProperties (1-{_MAX_KEY} characters: "
                "letters, numbers, spaces and _.:/=+-@)"
            )
        fitted = _fit_value(str(value))
        if fitted:  # values must be at least 1 character; an empty one says nothing anyway
            properties[key] = fitted
    if len(properties) > _MAX_PROPERTIES:
        raise UsageError(
            f"{len(properties)} metrics and metadata entries; CustomerMetadataProperties holds at most "
            f"{_MAX_PROPERTIES}"
        )
    return properties


def register(
    aws: Aws,
    group: str,
    *,
    image_uri: str,
    model_data_uri: str,
    metrics: dict[str, float],
    metadata: dict[str, str],
    status: str,
    description: str,
    executor: Executor,
    instance_types: list[str] | None = None,
) -> PackageVersion:
    """Register one version and return it as SageMaker numbered it (a placeholder in a dry run)."""
    call = register_call(
        group,
        image_uri=image_uri,
        model_data_uri=model_data_uri,
        metrics=metrics,
        metadata=metadata,
        status=status,
        description=description,
        instance_types=instance_types,
    )
    response = executor(call)
    if executor.dry_run:
        properties = call.params.get("CustomerMetadataProperties", {})
        return PackageVersion(
            arn="<dry-run>",
            version=0,
            status=status,
            metrics=_metrics(properties),
            image_uri=image_uri,
            model_data_uri=model_data_uri,
            created="",
            metadata=_metadata(properties),
            description=call.params["ModelPackageDescription"],
        )
    return _describe(aws, response["ModelPackageArn"])


def list_versions(aws: Aws, group: str) -> list[PackageVersion]:
    """Every version in the group, oldest first (the summaries lack metadata: one Describe each)."""
    return [_describe(aws, s["ModelPackageArn"]) for s in _summaries(aws, group)]


def get_version(aws: Aws, group: str, version: int) -> PackageVersion:
    summaries = _summaries(aws, group)
    for summary in summaries:
        if summary.get("ModelPackageVersion") == version:
            return _describe(aws, summary["ModelPackageArn"])
    known = ", ".join(f"v{s['ModelPackageVersion']}" for s in summaries) or "none"
    raise NotFound(f"model version v{version} is not in the registry group {group} (known: {known})")


def describe_version(aws: Aws, arn: str) -> PackageVersion:
    """One version by its model package ARN (what an endpoint's model points at)."""
    return _describe(aws, arn)


def set_status(aws: Aws, arn: str, status: str, executor: Executor, *, reason: str = "") -> None:
    """Approve, reject or park a version; `reason` becomes its ApprovalDescription."""
    _check_status(status)
    params: dict[str, Any] = {"ModelPackageArn": arn, "ModelApprovalStatus": status}
    if reason:
        # ApprovalDescription's pattern is `.*`, which stops at a line break: keep it on one line.
        params["ApprovalDescription"] = " ".join(reason.split())[:_MAX_DESCRIPTION]
    executor(Call("sagemaker", "UpdateModelPackage", params, why=f"mark {arn} {status}"))


# A version whose deploy or verification failed carries these properties (and is Rejected, with the reason
# as its ApprovalDescription): the registry records what happened, not what was hoped.
FAILED_STAGE, FAILED_AT = "failed_stage", "failed_at"


def mark_failed_call(arn: str, *, stage: str, reason: str, at: str) -> Call:
    """UpdateModelPackage: Rejected, the failed stage and time as metadata, the reason as description."""
    params: dict[str, Any] = {
        "ModelPackageArn": arn,
        "ModelApprovalStatus": REJECTED,
        "ApprovalDescription": " ".join(f"{stage} failed at {at}: {reason}".split())[:_MAX_DESCRIPTION],
        "CustomerMetadataProperties": customer_metadata({}, {FAILED_STAGE: stage, FAILED_AT: at}),
    }
    return Call("sagemaker", "UpdateModelPackage", params, why=f"mark {arn} Rejected: its {stage} failed")


def failure(package: PackageVersion) -> dict[str, str] | None:
    """{stage, reason, at} of a version marked failed, else None."""
    stage = package.metadata.get(FAILED_STAGE)
    if not stage:
        return None
    reason = package.approval_description.partition(": ")[2] or package.approval_description
    return {"stage": stage, "reason": reason, "at": package.metadata.get(FAILED_AT, "")}


def _summaries(aws: Aws, group: str) -> list[dict[str, Any]]:
    paginator = aws.client("sagemaker").get_paginator("list_model_packages")
    summaries: list[dict[str, Any]] = []
    try:
        with aws_errors(f"listing the versions in {group}"):
            for page in paginator.paginate(ModelPackageGroupName=group, ModelPackageType="Versioned"):
                summaries.extend(page.get("ModelPackageSummaryList", []))
    except NotFound:
        return []  # no group yet: no versions
    return sorted(summaries, key=lambda s: int(s.get("ModelPackageVersion", 0)))


def _describe(aws: Aws, arn: str) -> PackageVersion:
    with aws_errors(f"reading model package {arn}"):
        package = aws.client("sagemaker").describe_model_package(ModelPackageName=arn)
    containers = package.get("InferenceSpecification", {}).get("Containers", [{}])
    properties = package.get("CustomerMetadataProperties") or {}
    created = package.get("CreationTime")
    return PackageVersion(
        arn=package["ModelPackageArn"],
        version=int(package.get("ModelPackageVersion", 0)),
        status=package.get("ModelApprovalStatus", PENDING),
        metrics=_metrics(properties),
        image_uri=containers[0].get("Image", ""),
        model_data_uri=containers[0].get("ModelDataUrl", ""),
        created=created.isoformat() if created is not None else "",
        metadata=_metadata(properties),
        description=package.get("ModelPackageDescription", ""),
        approval_description=package.get("ApprovalDescription", ""),
    )


def _metrics(properties: dict[str, str]) -> dict[str, float]:
    metrics = {}
    for key, value in properties.items():
        if key.startswith(METRIC_PREFIX):
            try:
                metrics[key[len(METRIC_PREFIX) :]] = float(value)
            except ValueError:
                continue  # edited by hand in the console; not a number we can compare
    return metrics


def _metadata(properties: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in properties.items() if not k.startswith(METRIC_PREFIX)}


def _fit_value(value: str) -> str:
    """A property value in the API's alphabet: comparisons become words (a gate summary stays readable:
    `test_accuracy 0.91 ge 0.80`), any other character outside it a space, runs of spaces one."""
    for symbol, word in (("<=", " le "), (">=", " ge "), ("<", " lt "), (">", " gt ")):
        value = value.replace(symbol, word)
    return " ".join(_NOT_ALLOWED.sub(" ", value).split())[:_MAX_VALUE]


def _printable(text: str) -> str:
    # ModelPackageDescription allows letters, marks, spaces, symbols, numbers, punctuation: no control
    # characters, so line breaks and tabs become spaces.
    return "".join(c if c.isprintable() else " " for c in text)


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise UsageError(f"approval status {status!r} is not one of {', '.join(STATUSES)}")
