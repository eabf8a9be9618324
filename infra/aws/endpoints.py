"""SageMaker real-time endpoints: guarded blue/green deploys, and an honest account of how they ended.

Stages of `deploy`:
  1. read the endpoint: DescribeEndpoint -> its endpoint config -> its model -> the registry package
  2. CreateModel (PrimaryContainer.ModelPackageName: the registry version, so lineage is recorded) and
     CreateEndpointConfig, both named `<project>-v<version>-<UTC stamp>`
  3. PutMetricAlarm x2 (Invocation5XXErrors, ModelLatency): the alarms the rollout is guarded by
  4. no endpoint yet: CreateEndpoint. Otherwise UpdateEndpoint with a blue/green DeploymentConfig:
     ALL_AT_ONCE on one instance, CANARY on more, a bake period, AutoRollbackConfiguration on the alarms
  5. wait (aws.sleep between DescribeEndpoint polls) while Creating/Updating/RollingBack, reporting each
     status change
  6. judge. InService on the NEW config: deployed. InService on the OLD config: SageMaker rolled back on
     its own, which DescribeEndpoint does not call a failure (no FailureReason, status InService): only
     comparing EndpointConfigName tells, and that is reported as a failure naming the alarm(s) that fired.
     Failed: the FailureReason.
  7. autoscaling (target tracking on invocations per instance) whenever the endpoint ends InService
  8. smoke test: held-out images through InvokeEndpoint (`infra.smoke.smoke_test`)
Nothing here rolls back after a failed smoke test: the caller does, by deploying an older package.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from infra.aws.errors import NotFound, aws_errors, translate
from infra.aws.plan import Call, Executor
from infra.aws.session import Aws
from infra.errors import MlopsError
from infra.settings import AlarmConfig, AwsConfig
from infra.smoke import Sample, smoke_test

VARIANT = "AllTraffic"
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
IN_PROGRESS = ("Creating", "Updating", "SystemUpdating", "RollingBack")
# Time for a green fleet to launch, pull the image, download the model and pass /ping, on top of its bakes.
PROVISION_SECONDS = 1800
# The CanarySize must be at most 50% of the variant's instances (TrafficRoutingConfig).
MAX_CANARY_PERCENT = 50
# SageMaker sets Updating when UpdateEndpoint returns. Should a read still show the old config InService
# before any sign of the update, that is not believed for this many polls: a rollback needs the update
# to have run first (minutes of provisioning), so it cannot be what the first read shows.
STALE_POLLS = 2
# The container's errors that InvokeEndpoint models; any other code (AccessDenied, ExpiredToken, ...) is
# about the caller, not the model, and is raised.
RUNTIME_ERRORS = (
    "ModelError",
    "ValidationError",
    "ModelNotReadyException",
    "ServiceUnavailable",
    "InternalFailure",
    "InternalDependencyException",
)

Tags = list[dict[str, str]]
Events = Callable[[str], None]
T = TypeVar("T")


def endpoint_name(project: str) -> str:
    return _fit(f"{project}-endpoint")


def resource_name(project: str, version: int, now: float | None = None) -> str:
    """`<project>-v<version>-<YYYYmmdd-HHMMSS>` (UTC), <= 63 characters: models and configs are immutable,
    so every deploy (a rollback included) makes new ones, and the name says what and when."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(time.time() if now is None else now))
    suffix = f"-v{version}-{stamp}"
    return _fit(project[: 63 - len(suffix)].rstrip("-") + suffix)


def alarm_names(endpoint: str) -> list[str]:
    return [f"{endpoint}-5xx", f"{endpoint}-latency"]


def model_call(
    name: str,
    *,
    package_arn: str,
    role_arn: str,
    tags: Tags,
    environment: dict[str, str] | None = None,
) -> Call:
    container: dict[str, Any] = {"ModelPackageName": package_arn}
    if environment:
        container["Environment"] = environment
    params = {"ModelName": name, "PrimaryContainer": container, "ExecutionRoleArn": role_arn, "Tags": tags}
    return Call("sagemaker", "CreateModel", params, why=f"model {name} from registry package {package_arn}")


def endpoint_config_call(
    name: str, *, model_name: str, instance_type: str, instance_count: int, tags: Tags
) -> Call:
    variant = {
        "VariantName": VARIANT,
        "ModelName": model_name,
        "InstanceType": instance_type,
        "InitialInstanceCount": instance_count,
        "InitialVariantWeight": 1.0,
    }
    params = {"EndpointConfigName": name, "ProductionVariants": [variant], "Tags": tags}
    return Call("sagemaker", "CreateEndpointConfig", params, why=f"{instance_count} x {instance_type}")


def alarm_calls(endpoint: str, alarms: AlarmConfig, *, tags: Tags | None = None) -> list[Call]:
    """The two alarms an update rolls back on. No data (no traffic) is not a breach."""
    five_xx, latency = alarm_names(endpoint)
    dimensions = [{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": VARIANT}]
    common: dict[str, Any] = {
        "Namespace": "AWS/SageMaker",
        "Dimensions": dimensions,
        "Period": 60,
        "TreatMissingData": "notBreaching",
    }
    if tags:
        common["Tags"] = tags
    errors = {
        **common,
        "AlarmName": five_xx,
        "AlarmDescription": f"{endpoint}: at least {alarms.max_5xx_errors:g} 5xx answers in a minute; "
        "rolls a blue/green update back",
        "MetricName": "Invocation5XXErrors",
        "Statistic": "Sum",
        "EvaluationPeriods": 1,
        "DatapointsToAlarm": 1,
        # SageMaker publishes 0 for minutes with traffic and no errors: ">= 0" would always fire, so a
        # zero tolerance means "at least one".
        "Threshold": max(float(alarms.max_5xx_errors), 1.0),
        "ComparisonOperator": "GreaterThanOrEqualToThreshold",
    }
    slow = {
        **common,
        "AlarmName": latency,
        "AlarmDescription": f"{endpoint}: model latency above {alarms.max_model_latency_ms:g} ms on average "
        "for two minutes; rolls a blue/green update back",
        "MetricName": "ModelLatency",
        "Statistic": "Average",
        # Two minutes, not one: the first requests to a fresh container are slower, and one slow minute
        # during the bake should not undo a good model.
        "EvaluationPeriods": 2,
        "DatapointsToAlarm": 2,
        # ModelLatency is published in MICROseconds; the config speaks milliseconds.
        "Threshold": float(alarms.max_model_latency_ms) * 1000.0,
        "ComparisonOperator": "GreaterThanThreshold",
    }
    return [
        Call("cloudwatch", "PutMetricAlarm", errors, why="roll back on 5xx errors"),
        Call("cloudwatch", "PutMetricAlarm", slow, why="roll back on model latency"),
    ]


def deployment_config(
    alarm_names: list[str], *, instance_count: int, bake_seconds: int, canary_percent: int
) -> dict[str, Any]:
    """UpdateEndpoint's DeploymentConfig: blue/green, baked, rolled back by SageMaker when an alarm fires."""
    routing: dict[str, Any] = {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": bake_seconds}
    bakes = 1
    if instance_count > 1:  # CANARY and LINEAR need more than one instance
        routing = {
            "Type": "CANARY",
            "WaitIntervalInSeconds": bake_seconds,
            "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": min(canary_percent, MAX_CANARY_PERCENT)},
        }
        bakes = 2  # after the canary step, and again once all traffic has moved
    policy = {
        "TrafficRoutingConfiguration": routing,
        # The alarms watch the bake (WaitIntervalInSeconds); keeping the old fleet longer only costs.
        "TerminationWaitInSeconds": 0,
        # 600-28800 by the API; the time to provision the green fleet plus every bake.
        "MaximumExecutionTimeoutInSeconds": min(max(PROVISION_SECONDS + bakes * bake_seconds, 600), 28800),
    }
    config: dict[str, Any] = {"BlueGreenUpdatePolicy": policy}
    if alarm_names:  # AutoRollbackConfiguration.Alarms takes 1-10 alarms
        config["AutoRollbackConfiguration"] = {"Alarms": [{"AlarmName": n} for n in alarm_names[:10]]}
    return config


def create_endpoint_call(endpoint: str, config_name: str, tags: Tags) -> Call:
    params = {"EndpointName": endpoint, "EndpointConfigName": config_name, "Tags": tags}
    return Call("sagemaker", "CreateEndpoint", params, why=f"first deployment of {endpoint}")


def update_endpoint_call(endpoint: str, config_name: str, deployment: dict[str, Any]) -> Call:
    params = {"EndpointName": endpoint, "EndpointConfigName": config_name, "DeploymentConfig": deployment}
    kind = deployment["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"]["Type"]
    return Call("sagemaker", "UpdateEndpoint", params, why=f"blue/green {kind} to {config_name}")


def resource_id(endpoint: str) -> str:
    return f"endpoint/{endpoint}/variant/{VARIANT}"


def autoscaling_calls(
    endpoint: str,
    *,
    min_instances: int,
    max_instances: int,
    invocations_per_instance: float,
    tags: Tags | None = None,
) -> list[Call]:
    target: dict[str, Any] = {
        "ServiceNamespace": "sagemaker",
        "ResourceId": resource_id(endpoint),
        "ScalableDimension": SCALABLE_DIMENSION,
        "MinCapacity": min_instances,
        "MaxCapacity": max_instances,
    }
    if tags:
        target["Tags"] = {t["Key"]: t["Value"] for t in tags}
    policy = {
        "PolicyName": f"{endpoint}-invocations",
        "ServiceNamespace": "sagemaker",
        "ResourceId": resource_id(endpoint),
        "ScalableDimension": SCALABLE_DIMENSION,
        "PolicyType": "TargetTrackingScaling",
        "TargetTrackingScalingPolicyConfiguration": {
            "TargetValue": float(invocations_per_instance),
            "PredefinedMetricSpecification": {
                "PredefinedMetricType": "SageMakerVariantInvocationsPerInstance"
            },
            # Out fast, in slowly: a new instance takes minutes to serve, removing one is instant.
            "ScaleOutCooldown": 60,
            "ScaleInCooldown": 300,
        },
    }
    return [
        Call(
            "application-autoscaling",
            "RegisterScalableTarget",
            target,
            why=f"{min_instances}-{max_instances}",
        ),
        Call("application-autoscaling", "PutScalingPolicy", policy, why="track invocations per instance"),
    ]


def deregister_call(endpoint: str) -> Call:
    params = {
        "ServiceNamespace": "sagemaker",
        "ResourceId": resource_id(endpoint),
        "ScalableDimension": SCALABLE_DIMENSION,
    }
    # Deregistering also deletes the target's scaling policies.
    return Call("application-autoscaling", "DeregisterScalableTarget", params, why="stop autoscaling")


@dataclass
class EndpointState:
    name: str
    status: str
    config_name: str
    model_name: str | None
    package_arn: str | None
    failure_reason: str | None
    instance_type: str | None
    instance_count: int | None


def describe(aws: Aws, endpoint: str) -> EndpointState | None:
    """The endpoint and the registry package it serves; None when there is no such endpoint."""
    sagemaker = aws.client("sagemaker")
    try:
        with aws_errors(f"reading endpoint {endpoint}"):
            answer = sagemaker.describe_endpoint(EndpointName=endpoint)
    except NotFound:
        return None
    config_name = answer.get("EndpointConfigName", "")
    count = (answer.get("ProductionVariants") or [{}])[0].get("CurrentInstanceCount")
    model_name = instance_type = package_arn = None
    try:
        with aws_errors(f"reading endpoint config {config_name}"):
            config = sagemaker.describe_endpoint_config(EndpointConfigName=config_name)
        variant = (config.get("ProductionVariants") or [{}])[0]
        model_name, instance_type = variant.get("ModelName"), variant.get("InstanceType")
        count = variant.get("InitialInstanceCount") if count is None else count
        if model_name:
            with aws_errors(f"reading model {model_name}"):
                model = sagemaker.describe_model(ModelName=model_name)
            package_arn = model.get("PrimaryContainer", {}).get("ModelPackageName")
    except NotFound:
        pass  # the config or model was deleted under a running endpoint: what it serves is unknown
    return EndpointState(
        name=endpoint,
        status=answer["EndpointStatus"],
        config_name=config_name,
        model_name=model_name,
        package_arn=package_arn,
        failure_reason=answer.get("FailureReason"),
        instance_type=instance_type,
        instance_count=count,
    )


@dataclass
class DeployOutcome:
    ok: bool
    message: str
    endpoint: str
    config_name: str  # the config this deploy created
    previous_config: str | None  # what served before it (None on a first deployment)
    rolled_back: bool = False  # True when the endpoint is back on previous_config
    smoke: dict[str, Any] | None = None


def deploy(
    aws: Aws,
    *,
    project: str,
    package_arn: str,
    version: int,
    role_arn: str,
    config: AwsConfig,
    executor: Executor,
    tags: Tags,
    samples: list[Sample],
    classes: list[str],
    on_event: Events,
    poll_seconds: float = 30,
    timeout_seconds: float = 3600,
    now: float | None = None,
) -> DeployOutcome:
    endpoint = endpoint_name(project)
    name = resource_name(project, version, now)
    current, known = _look(executor, lambda: describe(aws, endpoint), assume=None)
    if not known:
        on_event(f"dry run: cannot read endpoint {endpoint}; planning an update of an existing endpoint")
    if current is not None and current.status not in ("InService", "Failed"):
        reason = f" ({current.failure_reason})" if current.failure_reason else ""
        return DeployOutcome(
            False,
            f"endpoint {endpoint} is {current.status}{reason}: another deployment is in progress or the "
            "endpoint needs attention; nothing was changed",
            endpoint,
            name,
            current.config_name,
        )
    # A Failed endpoint serves nothing and cannot be updated: it is deleted and created again.
    replacing = current is not None and current.status == "Failed"
    previous = None if replacing else current
    rollout = _Rollout(aws, executor, on_event, endpoint, name, version, previous, replacing)
    count = _instance_count(config, previous)
    plan = [
        model_call(name, package_arn=package_arn, role_arn=role_arn, tags=tags),
        endpoint_config_call(
            name,
            model_name=name,
            instance_type=config.endpoint_instance_type,
            instance_count=count,
            tags=tags,
        ),
        *alarm_calls(endpoint, config.alarms, tags=tags),
    ]
    deadline = timeout_seconds
    if previous is not None or not known:
        deployment = deployment_config(
            alarm_names(endpoint),
            instance_count=count,
            bake_seconds=config.bake_seconds,
            canary_percent=config.canary_percent,
        )
        # SageMaker bounds the update by MaximumExecutionTimeoutInSeconds, then rolls back: stop watching
        # only after that, or an update SageMaker is still finishing would be reported as failed.
        limit = deployment["BlueGreenUpdatePolicy"]["MaximumExecutionTimeoutInSeconds"]
        deadline = max(timeout_seconds, limit + PROVISION_SECONDS)
        if previous is not None and previous.instance_type != config.endpoint_instance_type:
            # UpdateEndpoint refuses to change the instance type of a variant that is an autoscaling target.
            registered, _ = _look(executor, lambda: _scaling_registered(aws, endpoint), assume=False)
            if registered:
                plan.append(deregister_call(endpoint))
        plan.append(update_endpoint_call(endpoint, name, deployment))
    else:
        plan.append(create_endpoint_call(endpoint, name, tags))
    # Registered on every deploy, not only when max_instances > 1: RegisterScalableTarget is idempotent,
    # and lowering max_instances to 1 then takes effect instead of a stale target still scaling out.
    scale = autoscaling_calls(
        endpoint,
        min_instances=config.autoscaling.min_instances,
        max_instances=config.autoscaling.max_instances,
        invocations_per_instance=config.autoscaling.invocations_per_instance,
        tags=tags,
    )
    if executor.dry_run:
        for call in rollout.removal() + plan + scale:
            executor(call)
        return rollout.outcome(True, "dry run")
    if replacing and current is not None:
        on_event(f"endpoint {endpoint} is Failed ({current.failure_reason}); deleting it to create it again")
        executor(rollout.removal()[0])
        if not _wait_deleted(aws, endpoint, poll_seconds, timeout_seconds):
            return rollout.outcome(
                False, f"endpoint {endpoint} was still being deleted after {timeout_seconds:g} s"
            )
    for call in plan:
        executor(call)
    on_event(f"{plan[-1].operation} {endpoint}: v{version} as {name} ({plan[-1].why})")
    answer, timed_out = _wait(
        aws,
        endpoint,
        poll_seconds=poll_seconds,
        timeout_seconds=deadline,
        on_event=on_event,
        old_config=rollout.previous,
    )
    if timed_out:
        return rollout.outcome(
            False,
            f"gave up waiting after {deadline:g} s: endpoint {endpoint} is still {answer['EndpointStatus']}; "
            "SageMaker carries on without us, so check it again before deploying anything else",
        )
    return rollout.judge(answer, scale, samples=samples, classes=classes)


def invoke(aws: Aws, endpoint: str, body: bytes, content_type: str) -> tuple[int, dict[str, Any]]:
    """One InvokeEndpoint: (200, answer), or (status, {"error": ...}) when the endpoint or model refuses."""
    try:
        answer = aws.client("sagemaker-runtime").invoke_endpoint(
            EndpointName=endpoint, Body=body, ContentType=content_type, Accept="application/json"
        )
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code, message = str(error.get("Code", "")), str(error.get("Message", ""))
        if code not in RUNTIME_ERRORS:
            raise translate(exc, f"invoking endpoint {endpoint}") from exc
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 500))
        if code == "ModelError":
            # The container answered with an error: OriginalStatusCode/OriginalMessage are its own status
            # and body; the 424 around them is SageMaker's.
            status = int(exc.response.get("OriginalStatusCode", status))
            message = _error_text(str(exc.response.get("OriginalMessage", ""))) or message
        return status, {"error": f"{code}: {message}"}
    except BotoCoreError as exc:
        raise translate(exc, f"invoking endpoint {endpoint}") from exc
    text = answer["Body"].read()
    try:
        payload = json.loads(text)
    except ValueError:
        return 200, {"error": f"answer is not JSON: {text[:200]!r}"}
    if not isinstance(payload, dict):
        return 200, {"error": f"unexpected answer: {str(payload)[:200]}"}
    return 200, payload


def delete(aws: Aws, endpoint: str, executor: Executor) -> None:
    """DeleteEndpoint, with its autoscaling target and its rollback alarms. Models and configs stay for
    cleanup (they are tagged), so a deleted endpoint can be recreated from its last config."""
    registered, _ = _look(executor, lambda: _scaling_registered(aws, endpoint), assume=True)
    if registered:
        executor(deregister_call(endpoint))
    current, known = _look(executor, lambda: describe(aws, endpoint), assume=None)
    if current is not None or not known:
        executor(Call("sagemaker", "DeleteEndpoint", {"EndpointName": endpoint}, why=f"delete {endpoint}"))
    names = alarm_names(endpoint)
    existing, _ = _look(executor, lambda: _existing_alarms(aws, names), assume=names)
    if existing:
        # DeleteAlarms fails as a whole when one name does not exist: only delete what is there.
        executor(Call("cloudwatch", "DeleteAlarms", {"AlarmNames": existing}, why="the rollback alarms"))


@dataclass
class _Rollout:
    """One deploy's names and effects, and how to tell its outcome."""

    aws: Aws
    executor: Executor
    on_event: Events
    endpoint: str
    name: str  # of the model and endpoint config this deploy creates
    version: int
    current: EndpointState | None  # what served before, when anything did
    replacing: bool  # a Failed endpoint is deleted first

    @property
    def previous(self) -> str | None:
        return self.current.config_name if self.current else None

    def removal(self) -> list[Call]:
        delete_call = Call(
            "sagemaker", "DeleteEndpoint", {"EndpointName": self.endpoint}, why="replace Failed"
        )
        return [delete_call] if self.replacing else []

    def outcome(
        self, ok: bool, message: str, *, rolled_back: bool = False, smoke: dict[str, Any] | None = None
    ) -> DeployOutcome:
        return DeployOutcome(ok, message, self.endpoint, self.name, self.previous, rolled_back, smoke)

    def judge(
        self, answer: dict[str, Any], scale: list[Call], *, samples: list[Sample], classes: list[str]
    ) -> DeployOutcome:
        status, serving = answer["EndpointStatus"], answer.get("EndpointConfigName")
        if status != "InService":
            first = (
                "" if self.current else "; this was the first deployment, so there is nothing to roll back to"
            )
            reason = answer.get("FailureReason") or "no reason given"
            return self.outcome(False, f"endpoint {self.endpoint} ended {status}: {reason}{first}")
        scaled = self.autoscale(scale)
        if serving != self.name:
            return self.outcome(
                False, self.rolled_back(serving, answer.get("FailureReason")) + scaled, rolled_back=True
            )
        return self.smoke(samples, classes, scaled)

    def autoscale(self, calls: list[Call]) -> str:
        """Whichever fleet ended up serving gets the configured autoscaling. A failure here is reported,
        not a reason to call a good model bad."""
        try:
            for call in calls:
                self.executor(call)
        except MlopsError as exc:
            self.on_event(f"autoscaling not applied: {exc}")
            return f" (autoscaling NOT applied: {exc})"
        return ""

    def smoke(self, samples: list[Sample], classes: list[str], scaled: str) -> DeployOutcome:
        endpoint, version = self.endpoint, self.version
        if not samples:
            self.on_event("no held-out images: the smoke test is skipped")
            return self.outcome(
                True, f"v{version} is serving on {endpoint}; NOT smoke-tested (no held-out images){scaled}"
            )
        # An empty class list means the classes are unknown, not that no label is valid.
        result = smoke_test(
            lambda body, kind: invoke(self.aws, endpoint, body, kind), samples, classes or None
        )
        self.on_event(f"smoke test: {'passed' if result['ok'] else 'FAILED'} on {result['images']} images")
        if result["ok"]:
            return self.outcome(True, f"v{version} is serving on {endpoint}{scaled}", smoke=result)
        then = (
            f"roll back to {self.previous}"
            if self.previous
            else "this was the first deployment, so there is nothing to roll back to"
        )
        errors = "; ".join(result["errors"]) or "no answer"
        message = (
            f"v{version} is InService on {endpoint} but failed its smoke test ({errors}); {then}{scaled}"
        )
        return self.outcome(False, message, smoke=result)

    def rolled_back(self, serving: str | None, reason: str | None) -> str:
        endpoint, version = self.endpoint, self.version
        if reason:
            return (
                f"the update to v{version} ({self.name}) failed and {endpoint} stayed on {serving}: {reason}"
            )
        names = alarm_names(endpoint)
        try:
            with aws_errors("reading the rollback alarms"):
                answer = self.aws.client("cloudwatch").describe_alarms(AlarmNames=names)
            firing = [
                a["AlarmName"] for a in answer.get("MetricAlarms", []) if a.get("StateValue") == "ALARM"
            ]
            why = (
                f"alarm(s) in ALARM: {', '.join(firing)}"
                if firing
                else f"no alarm is in ALARM now ({', '.join(names)}); an alarm clears once traffic is "
                "back on the old fleet, so see their history"
            )
        except MlopsError as exc:
            why = f"the alarms could not be read ({exc})"
        return (
            f"the update to v{version} was rolled back automatically: {endpoint} is InService on the "
            f"previous config {serving}, not {self.name}; {why}"
        )


def _wait(
    aws: Aws,
    endpoint: str,
    *,
    poll_seconds: float,
    timeout_seconds: float,
    on_event: Events,
    old_config: str | None,
) -> tuple[dict[str, Any], bool]:
    """Poll DescribeEndpoint until the endpoint settles; (last answer, timed out)."""
    sagemaker = aws.client("sagemaker")
    waited, last, polls, moved = 0.0, "", 0, False
    while True:
        with aws_errors(f"waiting for endpoint {endpoint}"):
            answer: dict[str, Any] = sagemaker.describe_endpoint(EndpointName=endpoint)
        status = answer["EndpointStatus"]
        if status != last:
            reason = answer.get("FailureReason")
            on_event(f"endpoint {endpoint}: {status}" + (f" ({reason})" if reason else ""))
            last = status
        polls += 1
        moved = moved or status in IN_PROGRESS or answer.get("EndpointConfigName") != old_config
        stale = old_config is not None and not moved and polls <= STALE_POLLS
        if status not in IN_PROGRESS and not stale:
            return answer, False
        if waited >= timeout_seconds:
            return answer, True
        aws.sleep(poll_seconds)
        waited += poll_seconds


def _wait_deleted(aws: Aws, endpoint: str, poll_seconds: float, timeout_seconds: float) -> bool:
    waited = 0.0
    while describe(aws, endpoint) is not None:
        if waited >= timeout_seconds:
            return False
        aws.sleep(poll_seconds)
        waited += poll_seconds
    return True


def _instance_count(config: AwsConfig, previous: EndpointState | None) -> int:
    """The configured count, or the old fleet's current size when autoscaling has grown it (up to the
    autoscaling maximum): autoscaling is paused during an update, and a green fleet smaller than the
    blue one would take the full load at once."""
    count = config.endpoint_instance_count
    if previous is not None and previous.instance_type == config.endpoint_instance_type:
        count = max(count, min(previous.instance_count or 0, config.autoscaling.max_instances))
    return count


def _scaling_registered(aws: Aws, endpoint: str) -> bool:
    with aws_errors(f"reading the autoscaling target of {endpoint}"):
        answer = aws.client("application-autoscaling").describe_scalable_targets(
            ServiceNamespace="sagemaker",
            ResourceIds=[resource_id(endpoint)],
            ScalableDimension=SCALABLE_DIMENSION,
        )
    return bool(answer.get("ScalableTargets"))


def _existing_alarms(aws: Aws, names: list[str]) -> list[str]:
    with aws_errors("reading the rollback alarms"):
        answer = aws.client("cloudwatch").describe_alarms(AlarmNames=names)
    return [a["AlarmName"] for a in answer.get("MetricAlarms", [])]


def _look(executor: Executor, read: Callable[[], T], *, assume: T) -> tuple[T, bool]:
    """A read-only call's answer, and whether it was read. Only a dry run may go on without it (no
    credentials on a laptop): it then plans with `assume`."""
    try:
        return read(), True
    except MlopsError:
        if not executor.dry_run:
            raise
        return assume, False


def _error_text(body: str) -> str:
    try:
        payload = json.loads(body)
    except ValueError:
        return body[:500]
    return str(payload.get("error", payload)) if isinstance(payload, dict) else body[:500]


def _fit(name: str) -> str:
    """SageMaker names: letters, digits and inner hyphens, at most 63 characters."""
    cleaned = "".join(c if c.isascii() and (c.isalnum() or c == "-") else "-" for c in name)
    return cleaned.strip("-")[:63].rstrip("-")
