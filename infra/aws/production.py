"""The production history on AWS: one small JSON object per event in the project's bucket.

    s3://<bucket>/<project>/production-history/<UTC timestamp, microseconds>-v<N>-<action>.json

SageMaker keeps no record of which endpoint config served when (a rolled-back update leaves no trace in
DescribeEndpoint), so the platform writes one whenever what the endpoint serves changes (`infra.history`).
One object per event, never rewritten: two writers cannot lose each other's events, and the keys sort
in time order.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from infra.aws.errors import aws_errors
from infra.aws.plan import Call, Executor
from infra.aws.session import Aws
from infra.history import ProductionEvent


def prefix(project: str) -> str:
    return f"{project}/production-history/"


def record_call(bucket: str, project: str, event: ProductionEvent, *, now: datetime | None = None) -> Call:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S%fZ")
    what = f"v{event.version}" if event.version is not None else "none"
    key = f"{prefix(project)}{stamp}-{what}-{event.action}.json"
    params = {
        "Bucket": bucket,
        "Key": key,
        "Body": json.dumps(event.to_dict(), sort_keys=True).encode(),
        "ContentType": "application/json",
    }
    return Call("s3", "PutObject", params, why=f"production history: {what} serves ({event.action})")


def record(aws: Aws, bucket: str, project: str, event: ProductionEvent, executor: Executor) -> None:
    executor(record_call(bucket, project, event))


def events(aws: Aws, bucket: str, project: str) -> list[ProductionEvent]:
    """Every recorded event, oldest first."""
    s3 = aws.client("s3")
    found: list[ProductionEvent] = []
    with aws_errors(f"reading the production history under s3://{bucket}/{prefix(project)}"):
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix(project))
        keys = sorted(item["Key"] for page in pages for item in page.get("Contents", []))
        for key in keys:
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            try:
                found.append(ProductionEvent.from_dict(json.loads(body)))
            except (ValueError, TypeError, AttributeError):
                continue  # not one of ours (edited or copied in by hand): the rest still tell the story
    return found
