"""SageMaker endpoints: the requests a deploy is made of, and the plain operations on one.

What is here:
  1. names: `<project>-endpoint`, and `<project>-v<version>-<UTC stamp>` for models and endpoint configs
  2. request builders: CreateModel (from a registry package), CreateEndpointConfig per mode (real-time
     instances, ServerlessConfig, AsyncInferenceConfig; see `infra.aws.modes`), PutMetricAlarm x3
     (Invocation5XXErrors, ModelLatency, SmokeTestFailures), UpdateEndpoint's blue/green DeploymentConfig,
     CreateEndpoint / UpdateEndpoint, and autoscaling (RegisterScalableTarget, PutScalingPolicy,
     DeregisterScalableTarget): on invocations per instance for real-time, on the queue for async
  3. operations: `describe` (endpoint -> config -> model -> registry package, and the mode), `invoke` (one
     InvokeEndpoint), `invoke_async` (S3 in, InvokeEndpointAsync, S3 polled for the answer), `delete`
     (the endpoint with its autoscaling target and alarms)
The guarded rollout that puts these requests together (`deploy`) is in `infra.aws.rollout`.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from infra.aws.errors import NotFound, aws_errors, translate
from infra.aws.modes import ASYNC, REALTIME, SERVERLESS, async_failure_path
from infra.aws.plan import Call, Executor
from infra.aws.session import Aws
from infra.errors import MlopsError
from infra.settings import AlarmConfig

VARIANT = "AllTraffic"
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"
# Time for a green fleet to launch, pull the image, download the model and pass /ping, on top of its bakes.
PROVISION_SECONDS = 1800
# The CanarySize must be at most 50% of the variant's instances (TrafficRoutingConfig).
MAX_CANARY_PERCENT = 50
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
T = TypeVar("T")


def endpoint_name(project: str) -> str:
    return _fit(f"{project}-endpoint")


def resource_name(project: str, version: int, now: float | None = None) -> str:
    """`<project>-v<version>-<YYYYmmdd-HHMMSS>` (UTC), <= 63 characters: models and configs are immutable,
    so every deploy (a rollback included) makes new ones, and the name says what and when."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime(time.time() if now is None else now))
    suffix = f"-v{version}-{stamp}"
    return _fit(project[: 63 - len(suffix)].rstrip("-") + suffix)


# The smoke-test alarm: the rollout publishes failed smoke-test requests sent during the blue/green bake
# to this metric; the alarm on it is one of the update's AutoRollbackConfiguration alarms, so a
# candidate that fails its smoke test is rolled back by SageMaker before the old fleet is retired.
SMOKE_NAMESPACE, SMOKE_METRIC = "MLOps", "SmokeTestFailures"


def alarm_names(endpoint: str) -> list[str]:
    """The alarms an update rolls back on."""
    return [f"{endpoint}-5xx", f"{endpoint}-latency", f"{endpoint}-smoke"]


def wake_alarm_name(endpoint: str) -> str:
    """The alarm that scales an async endpoint out of zero. Never a rollback alarm: a queue waiting for
    an instance is what scale-to-zero looks like, not a bad model."""
    return f"{endpoint}-backlog-without-capacity"


def smoke_failure_call(endpoint: str, failures: int) -> Call:
    """PutMetricData of failed smoke-test requests: what moves the smoke alarm to ALARM."""
    params = {
        "Namespace": SMOKE_NAMESPACE,
        "MetricData": [
            {
                "MetricName": SMOKE_METRIC,
                "Dimensions": [{"Name": "EndpointName", "Value": endpoint}],
                "Value": float(failures),
                "Unit": "Count",
            }
        ],
    }
    return Call("cloudwatch", "PutMetricData", params, why="raise the smoke-test alarm: roll the update back")


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


def serverless_config_call(
    name: str, *, model_name: str, memory_mb: int, max_concurrency: int, tags: Tags
) -> Call:
    """A serverless variant: ServerlessConfig in place of InstanceType and InitialInstanceCount (the API
    refuses a variant with both)."""
    variant = {
        "VariantName": VARIANT,
        "ModelName": model_name,
        "ServerlessConfig": {"MemorySizeInMB": memory_mb, "MaxConcurrency": max_concurrency},
    }
    params = {"EndpointConfigName": name, "ProductionVariants": [variant], "Tags": tags}
    why = f"serverless, {memory_mb} MB, at most {max_concurrency} concurrent invocations"
    return Call("sagemaker", "CreateEndpointConfig", params, why=why)


def async_config_call(
    name: str,
    *,
    model_name: str,
    instance_type: str,
    instance_count: int,
    output_path: str,
    max_concurrent_invocations: int,
    tags: Tags,
) -> Call:
    """An instance variant that takes only InvokeEndpointAsync: answers to S3OutputPath, errors to
    S3FailurePath, at most `max_concurrent_invocations` requests in each container at once."""
    variant = {
        "VariantName": VARIANT,
        "ModelName": model_name,
        "InstanceType": instance_type,
        "InitialInstanceCount": instance_count,
        "InitialVariantWeight": 1.0,
    }
    params = {
        "EndpointConfigName": name,
        "ProductionVariants": [variant],
        "AsyncInferenceConfig": {
            "OutputConfig": {"S3OutputPath": output_path, "S3FailurePath": async_failure_path(output_path)},
            "ClientConfig": {"MaxConcurrentInvocationsPerInstance": max_concurrent_invocations},
        },
        "Tags": tags,
    }
    why = f"async, {instance_count} x {instance_type}, answers to {output_path}"
    return Call("sagemaker", "CreateEndpointConfig", params, why=why)


def alarm_calls(endpoint: str, alarms: AlarmConfig, *, tags: Tags | None = None) -> list[Call]:
    """The three alarms an update rolls back on. No data (no traffic) is not a breach."""
    five_xx, latency, smoke = alarm_names(endpoint)
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
    failed_smoke = {
        **{k: v for k, v in common.items() if k != "Dimensions"},
        "Namespace": SMOKE_NAMESPACE,
        "Dimensions": [{"Name": "EndpointName", "Value": endpoint}],
        "AlarmName": smoke,
        "AlarmDescription": f"{endpoint}: the deploy's smoke test failed during the blue/green bake; "
        "rolls the update back",
        "MetricName": SMOKE_METRIC,
        "Statistic": "Maximum",
        "EvaluationPeriods": 1,
        "DatapointsToAlarm": 1,
        "Threshold": 1.0,
        "ComparisonOperator": "GreaterThanOrEqualToThreshold",
    }
    return [
        Call("cloudwatch", "PutMetricAlarm", errors, why="roll back on 5xx errors"),
        Call("cloudwatch", "PutMetricAlarm", slow, why="roll back on model latency"),
        Call("cloudwatch", "PutMetricAlarm", failed_smoke, why="roll back on a failed smoke test"),
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


def _policy_of(endpoint: str, name: str, policy_type: str) -> dict[str, Any]:
    """What every PutScalingPolicy of the endpoint's variant starts with: `<endpoint>-<name>`."""
    return {
        "PolicyName": f"{endpoint}-{name}",
        "ServiceNamespace": "sagemaker",
        "ResourceId": resource_id(endpoint),
        "ScalableDimension": SCALABLE_DIMENSION,
        "PolicyType": policy_type,
    }


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
        **_policy_of(endpoint, "invocations", "TargetTrackingScaling"),
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


def async_autoscaling_calls(
    endpoint: str,
    *,
    min_instances: int,
    max_instances: int,
    backlog_per_instance: float,
    tags: Tags | None = None,
) -> list[Call]:
    """Autoscaling of an async endpoint on its queue. An async endpoint publishes no Invocations metric
    (async-inference-monitor.html), so it tracks ApproximateBacklogSizePerInstance instead. With
    min_instances 0 the fleet scales in to zero on an empty queue; target tracking cannot scale out of
    zero (no instance, no per-instance backlog), so a step policy adds one instance when
    HasBacklogWithoutCapacity fires (its alarm: `wake_alarm_call`, made once the policy's ARN is known)."""
    target, _ = autoscaling_calls(
        endpoint,
        min_instances=min_instances,
        max_instances=max_instances,
        invocations_per_instance=backlog_per_instance,
        tags=tags,
    )
    tracking = {
        **_policy_of(endpoint, "backlog", "TargetTrackingScaling"),
        "TargetTrackingScalingPolicyConfiguration": {
            "TargetValue": float(backlog_per_instance),
            "CustomizedMetricSpecification": {
                "MetricName": "ApproximateBacklogSizePerInstance",
                "Namespace": "AWS/SageMaker",
                "Dimensions": [{"Name": "EndpointName", "Value": endpoint}],
                "Statistic": "Average",
            },
            "ScaleOutCooldown": 60,
            "ScaleInCooldown": 300,
        },
    }
    calls = [
        Call("application-autoscaling", "RegisterScalableTarget", target.params, why=target.why),
        Call("application-autoscaling", "PutScalingPolicy", tracking, why="track the queue per instance"),
    ]
    if min_instances == 0:
        wake = {
            **_policy_of(endpoint, "wake", "StepScaling"),
            "StepScalingPolicyConfiguration": {
                "AdjustmentType": "ChangeInCapacity",
                "MetricAggregationType": "Average",
                "Cooldown": 300,
                "StepAdjustments": [{"MetricIntervalLowerBound": 0.0, "ScalingAdjustment": 1}],
            },
        }
        calls.append(
            Call("application-autoscaling", "PutScalingPolicy", wake, why="scale out of zero on a backlog")
        )
    return calls


def wake_alarm_call(endpoint: str, policy_arn: str, tags: Tags | None = None) -> Call:
    """HasBacklogWithoutCapacity (1 while requests wait and no instance runs) -> the step policy."""
    params: dict[str, Any] = {
        "AlarmName": wake_alarm_name(endpoint),
        "AlarmDescription": f"{endpoint}: requests are queued and no instance runs; adds one instance",
        "Namespace": "AWS/SageMaker",
        "MetricName": "HasBacklogWithoutCapacity",
        "Dimensions": [{"Name": "EndpointName", "Value": endpoint}],
        "Statistic": "Average",
        "Period": 60,
        "EvaluationPeriods": 2,
        "DatapointsToAlarm": 2,
        "Threshold": 1.0,
        "ComparisonOperator": "GreaterThanOrEqualToThreshold",
        "TreatMissingData": "missing",
        "AlarmActions": [policy_arn],
    }
    if tags:
        params["Tags"] = tags
    return Call("cloudwatch", "PutMetricAlarm", params, why="wake the async fleet from zero")


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
    # realtime, serverless or async (infra.aws.modes); "" when the endpoint's config cannot be read
    mode: str = REALTIME


def config_mode(config: dict[str, Any]) -> str:
    """The mode of a DescribeEndpointConfig answer."""
    if config.get("AsyncInferenceConfig"):
        return ASYNC
    variant = (config.get("ProductionVariants") or [{}])[0]
    return SERVERLESS if variant.get("ServerlessConfig") else REALTIME


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
    mode = ""
    try:
        with aws_errors(f"reading endpoint config {config_name}"):
            config = sagemaker.describe_endpoint_config(EndpointConfigName=config_name)
        variant = (config.get("ProductionVariants") or [{}])[0]
        model_name, instance_type = variant.get("ModelName"), variant.get("InstanceType")
        mode = config_mode(config)
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
        mode=mode,
    )


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


# How often, and for how long, an asynchronous answer is looked for in S3.
ASYNC_POLL_SECONDS = 1.0
ASYNC_RESULT_SECONDS = 180.0


def invoke_async(
    aws: Aws,
    endpoint: str,
    body: bytes,
    content_type: str,
    *,
    input_prefix: str,
    poll_seconds: float = ASYNC_POLL_SECONDS,
    timeout_seconds: float = ASYNC_RESULT_SECONDS,
) -> tuple[int, dict[str, Any]]:
    """One asynchronous invocation, awaited: the body is put under `input_prefix` (s3://...), sent with
    InvokeEndpointAsync, and its OutputLocation / FailureLocation are polled (aws.sleep between reads)
    until one exists. (200, answer), or (status, {"error": ...}) as `invoke` answers, so the smoke test
    and the verification judge both modes alike. The request and answer objects are removed afterwards."""
    s3 = aws.client("s3")
    inference_id = f"mlops-{uuid.uuid4().hex}"
    bucket, prefix = _split_s3(input_prefix)
    key = f"{prefix.rstrip('/')}/{inference_id}" if prefix.strip("/") else inference_id
    with aws_errors(f"uploading an async request to s3://{bucket}/{key}"):
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType=content_type)
    try:
        answer = aws.client("sagemaker-runtime").invoke_endpoint_async(
            EndpointName=endpoint,
            InputLocation=f"s3://{bucket}/{key}",
            ContentType=content_type,
            Accept="application/json",
            InferenceId=inference_id,
        )
    except ClientError as exc:
        _remove(s3, f"s3://{bucket}/{key}")
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        if code not in RUNTIME_ERRORS:
            raise translate(exc, f"invoking endpoint {endpoint} asynchronously") from exc
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 500))
        return status, {"error": f"{code}: {error.get('Message', '')}"}
    except BotoCoreError as exc:
        raise translate(exc, f"invoking endpoint {endpoint} asynchronously") from exc
    output, failure = answer.get("OutputLocation", ""), answer.get("FailureLocation", "")
    waited = 0.0
    try:
        while True:
            text = _read_s3(s3, output)
            if text is not None:
                return _answer(text)
            failed = _read_s3(s3, failure) if failure else None
            if failed is not None:
                # The failure object holds SageMaker's message, e.g. "Received server error (500) from
                # model ..."; the container's own status is the one in it.
                message = failed.decode("utf-8", errors="replace")
                found = re.search(r"\((\d{3})\)", message)
                return (int(found.group(1)) if found else 500), {"error": _error_text(message)}
            if waited >= timeout_seconds:
                return 504, {"error": f"no answer at {output} after {timeout_seconds:g} s"}
            aws.sleep(poll_seconds)
            waited += poll_seconds
    finally:
        for uri in (f"s3://{bucket}/{key}", output, failure):
            if uri:
                _remove(s3, uri)


def _answer(text: bytes) -> tuple[int, dict[str, Any]]:
    try:
        payload = json.loads(text)
    except ValueError:
        return 200, {"error": f"answer is not JSON: {text[:200]!r}"}
    if not isinstance(payload, dict):
        return 200, {"error": f"unexpected answer: {str(payload)[:200]}"}
    return 200, payload


def _read_s3(s3: Any, uri: str) -> bytes | None:
    """The object's bytes; None while it does not exist yet."""
    bucket, key = _split_s3(uri)
    try:
        data: bytes = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
            return None
        raise translate(exc, f"reading the async answer {uri}") from exc
    except BotoCoreError as exc:
        raise translate(exc, f"reading the async answer {uri}") from exc
    return data


def _remove(s3: Any, uri: str) -> None:
    bucket, key = _split_s3(uri)
    # A leftover object costs cents and lies under the project's prefix; the answer matters more.
    with contextlib.suppress(ClientError, BotoCoreError):
        s3.delete_object(Bucket=bucket, Key=key)


def _split_s3(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


def delete(aws: Aws, endpoint: str, executor: Executor) -> None:
    """DeleteEndpoint, with its autoscaling target and its alarms (rollback, and the async wake alarm).
    Models and configs stay for cleanup (they are tagged), so a deleted endpoint can be recreated from
    its last config."""
    registered, _ = _look(executor, lambda: _scaling_registered(aws, endpoint), assume=True)
    if registered:
        executor(deregister_call(endpoint))
    current, known = _look(executor, lambda: describe(aws, endpoint), assume=None)
    if current is not None or not known:
        executor(Call("sagemaker", "DeleteEndpoint", {"EndpointName": endpoint}, why=f"delete {endpoint}"))
    names = [*alarm_names(endpoint), wake_alarm_name(endpoint)]
    existing, _ = _look(executor, lambda: _existing_alarms(aws, names), assume=alarm_names(endpoint))
    if existing:
        # DeleteAlarms fails as a whole when one name does not exist: only delete what is there.
        executor(Call("cloudwatch", "DeleteAlarms", {"AlarmNames": existing}, why="the rollback alarms"))


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
