"""Cleanup: what the project owns on AWS, and what of it is wasting money.

Stages: find the project's resources by tag (`owned`: the Resource Groups Tagging API) -> list the live
SageMaker endpoints, endpoint configs, models and in-progress training jobs, keeping the project's ->
apply the rules (idle endpoints, training jobs over budget, endpoint configs no endpoint uses, models no
endpoint config references) -> one `Finding` per resource, carrying the `Call` that fixes it ->
`apply` runs those calls through an executor. Nothing here mutates by itself: the CLI passes a
`DryRunExecutor` (prints the requests) unless asked to delete.

Ownership. Every resource the pipeline creates carries the tag `mlops:project=<project>` (see
`session.tags`). One paginated `tag:GetResources` call finds them across services, instead of one
`ListTags` per resource, and moto emulates it for SageMaker, so the same code is tested. The tagging
API is eventually consistent and also returns resources deleted a moment ago, so a tag alone never makes
a finding: the resource must also appear in the service's own List* answer (matched by ARN, compared
case-insensitively because SageMaker lowercases names inside ARNs). When the tags cannot be read (the
role lacks `tag:GetResources`), ownership falls back to the name prefix `<project>-`, which every
pipeline-made name starts with; each reason then says so, because a prefix also matches a project
called `<project>-something`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from infra.aws.errors import AwsError, NotFound, aws_errors
from infra.aws.plan import Call, Executor
from infra.settings import AwsConfig

TAG_KEY = "mlops:project"
SAGEMAKER_TYPES = (
    "sagemaker:endpoint",
    "sagemaker:endpoint-config",
    "sagemaker:model",
    "sagemaker:training-job",
)
# A deploy creates the model, then the endpoint config, then the endpoint: for a few minutes the first
# two are "unused". Younger orphans are left alone so a cleanup run never races a deploy in flight.
ORPHAN_GRACE = timedelta(hours=1)


@dataclass
class Finding:
    kind: str  # "endpoint" | "training-job" | "model" | "endpoint-config"
    name: str
    reason: str
    action: Call | None
    monthly_cost: float | None = None  # USD per month the resource costs while it lives, when known


@dataclass(frozen=True)
class Ownership:
    """Which resources are the project's: the ARNs tagged for it or, when `arns` is None (tags could not
    be read), the names starting with `<project>-`."""

    project: str
    arns: frozenset[str] | None
    note: str = ""  # why tags were not used

    def owns(self, arn: str, name: str) -> bool:
        if self.arns is not None:
            return arn.lower() in self.arns
        return name.lower().startswith(f"{self.project.lower()}-")

    def explain(self, reason: str) -> str:
        if self.arns is not None:
            return reason
        return f"{reason} [owned by name prefix {self.project}-: {self.note}]"


def owned(aws: Any, project: str, *, resource_types: Sequence[str] = ()) -> list[dict[str, Any]]:
    """Everything tagged mlops:project=<project> in the session's region, any service (narrowed by
    `resource_types` such as "sagemaker:endpoint"). Each item: arn, service, type, name, tags."""
    params: dict[str, Any] = {"TagFilters": [{"Key": TAG_KEY, "Values": [project]}]}
    if resource_types:
        params["ResourceTypeFilters"] = list(resource_types)
    found = []
    with aws_errors(f"listing the resources tagged {TAG_KEY}={project}"):
        paginator = aws.client("resourcegroupstaggingapi").get_paginator("get_resources")
        for page in paginator.paginate(**params):
            for item in page.get("ResourceTagMappingList", []):
                arn = item["ResourceARN"]
                service, kind, name = _split_arn(arn)
                tags = {t["Key"]: t["Value"] for t in item.get("Tags", [])}
                found.append({"arn": arn, "service": service, "type": kind, "name": name, "tags": tags})
    return found


def ownership(aws: Any, project: str) -> Ownership:
    """The project's SageMaker resources by tag; by name prefix when the tagging API cannot be read."""
    try:
        items = owned(aws, project, resource_types=SAGEMAKER_TYPES)
    except AwsError as exc:
        return Ownership(project, None, note=f"tags unavailable ({exc.code or 'error'})")
    return Ownership(project, frozenset(item["arn"].lower() for item in items))


def scan(aws: Any, project: str, config: AwsConfig, *, now: datetime | None = None) -> list[Finding]:
    """The project's resources that cost money for nothing, each with the request that ends it."""
    now = _utc(now or datetime.now(UTC))
    sagemaker = aws.client("sagemaker")
    who = ownership(aws, project)

    # All endpoints and configs of the account, not just ours, decide what is "in use": a config or model
    # that anything still references is never deleted.
    endpoints = [
        d
        for e in _pages(sagemaker, "list_endpoints", "Endpoints")
        if (d := _describe(sagemaker.describe_endpoint, EndpointName=e["EndpointName"])) is not None
    ]
    configs = {
        c["EndpointConfigName"]: d
        for c in _pages(sagemaker, "list_endpoint_configs", "EndpointConfigs")
        if (d := _describe(sagemaker.describe_endpoint_config, EndpointConfigName=c["EndpointConfigName"]))
        is not None
    }
    models = list(_pages(sagemaker, "list_models", "Models"))

    ours = [e for e in endpoints if who.owns(e["EndpointArn"], e["EndpointName"])]
    findings = idle_endpoints(aws.client("cloudwatch"), ours, configs, who=who, config=config, now=now)
    findings += overdue_training_jobs(sagemaker, who=who, config=config, now=now)
    findings += unused_endpoint_configs(configs.values(), endpoints, who=who, now=now)
    findings += orphaned_models(models, configs.values(), who=who, now=now)
    return findings


def apply(
    findings: Iterable[Finding], executor: Executor, delete_endpoint: Callable[[str], None] | None = None
) -> int:
    """Run each finding's action; return how many ran (or were printed, in a dry run).

    `delete_endpoint` (endpoints.delete bound to the session) replaces the bare DeleteEndpoint of an idle
    endpoint, so its autoscaling target and rollback alarms go with it. A resource that is already gone
    is skipped; any other failure is collected so the remaining actions still run, then raised as one
    error naming each failed resource."""
    done, failures = 0, []
    for finding in findings:
        if finding.action is None:
            continue
        try:
            if finding.kind == "endpoint" and delete_endpoint is not None:
                delete_endpoint(finding.name)
            else:
                executor(finding.action)
        except NotFound:
            continue  # deleted meanwhile, by hand or by an overlapping run: the goal is met
        except AwsError as exc:
            failures.append(f"{finding.kind} {finding.name}: {exc}")
            continue
        done += 1
    if failures:
        raise AwsError(f"cleanup: {len(failures)} action(s) failed ({done} done): " + "; ".join(failures))
    return done


# The rules. Each takes what it needs explicitly, so a test can drive one rule with a Stubber.


def idle_endpoints(
    cloudwatch: Any,
    endpoints: Iterable[Mapping[str, Any]],
    configs: Mapping[str, Mapping[str, Any]],
    *,
    who: Ownership,
    config: AwsConfig,
    now: datetime,
) -> list[Finding]:
    """InService endpoints (DescribeEndpoint answers) older than idle_endpoint_days without a single
    invocation in that window."""
    window = timedelta(days=config.idle_endpoint_days)
    findings = []
    for endpoint in endpoints:
        name = endpoint["EndpointName"]
        created = _utc(endpoint["CreationTime"])
        if endpoint.get("EndpointStatus") != "InService" or now - created < window:
            continue  # creating/updating/failed endpoints are another job's business; young ones get time
        variants = [v["VariantName"] for v in endpoint.get("ProductionVariants", [])] or ["AllTraffic"]
        if any(_invocations(cloudwatch, name, variant, now - window, now) > 0 for variant in variants):
            continue
        reason = (
            f"no invocations in the last {config.idle_endpoint_days:g} days "
            f"(InService since {created:%Y-%m-%d})"
        )
        findings.append(
            Finding(
                kind="endpoint",
                name=name,
                reason=who.explain(reason),
                action=Call(
                    "sagemaker",
                    "DeleteEndpoint",
                    {"EndpointName": name},
                    why=f"delete idle endpoint {name}",
                ),
                monthly_cost=_endpoint_cost(endpoint, configs.get(endpoint.get("EndpointConfigName", ""))),
            )
        )
    return findings


def overdue_training_jobs(
    sagemaker: Any, *, who: Ownership, config: AwsConfig, now: datetime
) -> list[Finding]:
    """Training jobs InProgress for longer than job_budget_hours, counted from CreationTime (a job
    waiting for spot capacity is also over budget: it holds the pipeline)."""
    budget = timedelta(hours=config.job_budget_hours)
    findings = []
    for job in _pages(sagemaker, "list_training_jobs", "TrainingJobSummaries", StatusEquals="InProgress"):
        name = job["TrainingJobName"]
        if job.get("TrainingJobStatus") != "InProgress" or not who.owns(job["TrainingJobArn"], name):
            continue
        elapsed = now - _utc(job["CreationTime"])
        if elapsed <= budget:
            continue
        reason = (
            f"InProgress for {elapsed.total_seconds() / 3600:.1f} h, "
            f"over the {config.job_budget_hours:g} h job budget"
        )
        findings.append(
            Finding(
                kind="training-job",
                name=name,
                reason=who.explain(reason),
                action=Call(
                    "sagemaker",
                    "StopTrainingJob",
                    {"TrainingJobName": name},
                    why=f"stop training job {name}: over budget",
                ),
            )
        )
    return findings


def unused_endpoint_configs(
    configs: Iterable[Mapping[str, Any]],
    endpoints: Iterable[Mapping[str, Any]],
    *,
    who: Ownership,
    now: datetime,
) -> list[Finding]:
    """The project's endpoint configs (DescribeEndpointConfig answers) that no endpoint uses, now or in
    a deployment in flight (DescribeEndpoint.PendingDeploymentSummary)."""
    in_use = set()
    for endpoint in endpoints:
        in_use.add(endpoint.get("EndpointConfigName"))
        in_use.add(endpoint.get("PendingDeploymentSummary", {}).get("EndpointConfigName"))
    return _unreferenced(
        configs,
        in_use,
        kind="endpoint-config",
        key="EndpointConfig",
        who=who,
        now=now,
        reason="not used by any endpoint",
        operation="DeleteEndpointConfig",
        verb="delete unused endpoint config",
    )


def orphaned_models(
    models: Iterable[Mapping[str, Any]],
    configs: Iterable[Mapping[str, Any]],
    *,
    who: Ownership,
    now: datetime,
) -> list[Finding]:
    """The project's models (ListModels summaries) that no endpoint config references. A model whose
    only config is flagged in the same run is caught by the next run, once the config is gone."""
    referenced = {
        variant.get("ModelName")
        for cfg in configs
        for variant in (*cfg.get("ProductionVariants", []), *cfg.get("ShadowProductionVariants", []))
    }
    return _unreferenced(
        models,
        referenced,
        kind="model",
        key="Model",
        who=who,
        now=now,
        reason="not referenced by any endpoint config",
        operation="DeleteModel",
        verb="delete orphaned model",
    )


def _unreferenced(
    items: Iterable[Mapping[str, Any]],
    used: set[Any],
    *,
    kind: str,
    key: str,
    who: Ownership,
    now: datetime,
    reason: str,
    operation: str,
    verb: str,
) -> list[Finding]:
    """The project's items (named `<key>Name`, `<key>Arn`) that nothing uses, older than the grace period
    (a deploy in progress creates model, then config, then endpoint: never race it)."""
    findings = []
    for item in items:
        name = item[f"{key}Name"]
        if name in used or not who.owns(item[f"{key}Arn"], name):
            continue
        if now - _utc(item["CreationTime"]) < ORPHAN_GRACE:
            continue
        call = Call("sagemaker", operation, {f"{key}Name": name}, why=f"{verb} {name}")
        findings.append(Finding(kind=kind, name=name, reason=who.explain(reason), action=call))
    return findings


# Helpers.


def _invocations(cloudwatch: Any, endpoint: str, variant: str, start: datetime, end: datetime) -> float:
    # GetMetricStatistics answers at most 1440 datapoints, and for data older than 63 days only accepts
    # periods that are multiples of an hour: whole hours, as many as the window needs.
    hours = (end - start).total_seconds() / 3600
    period = 3600 * max(1, math.ceil(hours / 1440))
    with aws_errors(f"reading the Invocations metric of endpoint {endpoint}"):
        response = cloudwatch.get_metric_statistics(
            Namespace="AWS/SageMaker",
            MetricName="Invocations",
            Dimensions=[
                {"Name": "EndpointName", "Value": endpoint},
                {"Name": "VariantName", "Value": variant},
            ],
            StartTime=start,
            EndTime=end,
            Period=period,
            Statistics=["Sum"],
        )
    return float(sum(point.get("Sum", 0.0) for point in response.get("Datapoints", [])))


def _endpoint_cost(endpoint: Mapping[str, Any], endpoint_config: Mapping[str, Any] | None) -> float | None:
    """Monthly cost of the endpoint's instances, if `infra.aws.costs` is present and knows the prices."""
    try:
        from infra.aws.costs import endpoint_monthly_cost
    except ImportError:  # the costs module is optional here: the finding stands without a price
        return None
    if endpoint_config is None:
        return None
    current = {
        v["VariantName"]: v.get("CurrentInstanceCount") for v in endpoint.get("ProductionVariants", [])
    }
    total = 0.0
    for variant in endpoint_config.get("ProductionVariants", []):
        instance_type = variant.get("InstanceType")
        if not instance_type:
            continue  # serverless variants bill per request: an idle one costs nothing
        count = current.get(variant["VariantName"]) or variant.get("InitialInstanceCount") or 1
        cost = endpoint_monthly_cost(instance_type, int(count))
        if cost is None:
            return None
        total += float(cost)
    return total


def _pages(client: Any, method: str, key: str, **params: Any) -> Iterator[dict[str, Any]]:
    with aws_errors(f"listing SageMaker resources ({method})"):
        for page in client.get_paginator(method).paginate(**params):
            yield from page.get(key, [])


def _describe(call: Callable[..., dict[str, Any]], **params: Any) -> dict[str, Any] | None:
    """A Describe* answer, or None when the resource vanished between List and Describe."""
    try:
        with aws_errors(f"describing {next(iter(params.values()))}"):
            return call(**params)
    except NotFound:
        return None


def _split_arn(arn: str) -> tuple[str, str, str]:
    """service, resource type, name: 'arn:aws:sagemaker:r:a:endpoint/x' -> sagemaker, endpoint, x;
    'arn:aws:logs:r:a:log-group:/aws/x' -> logs, log-group, /aws/x; 'arn:aws:s3:::b' -> s3, '', b."""
    parts = arn.split(":", 5)
    if len(parts) < 6:
        return "", "", arn
    service, resource = parts[2], parts[5]
    slash, colon = resource.find("/"), resource.find(":")
    cuts = [i for i in (slash, colon) if i >= 0]
    if not cuts:
        return service, "", resource
    cut = min(cuts)
    return service, resource[:cut], resource[cut + 1 :]


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
