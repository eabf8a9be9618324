"""Endpoints: request shapes checked by botocore Stubber against the real SageMaker model, alarms and
autoscaling on moto, and deploy lifecycles (create, blue/green update, silent rollback, failure, smoke
failure, dry run) scripted with Stubber because moto has no UpdateEndpoint and no endpoint states."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber

from infra.aws import endpoints, rollout
from infra.aws.errors import AwsError
from infra.aws.plan import DryRunExecutor, LiveExecutor
from infra.aws.session import Aws
from infra.settings import AlarmConfig, AwsConfig
from infra.smoke import Sample
from tests.factories import png_bytes
from tests.functional.aws.conftest import ROLE

ACCOUNT = "123456789012"
PACKAGE = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:model-package/demo-classification/2"
OLD_PACKAGE = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:model-package/demo-classification/1"
ENDPOINT = "demo-endpoint"
NOW = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
NAME = "demo-v2-20231114-221320"
OLD = "demo-v1-20231101-090000"
TAGS = [{"Key": "mlops:project", "Value": "demo"}]
CLASSES = ["circle", "square", "triangle"]
WHEN = datetime(2023, 11, 14, tzinfo=UTC)


def config(**overrides: Any) -> AwsConfig:
    return AwsConfig(**overrides)


def samples(count: int = 2) -> list[Sample]:
    return [Sample(png_bytes(seed=i), "image/png", "circle") for i in range(count)]


def answer(status: str, config_name: str, reason: str | None = None, count: int = 1) -> dict[str, Any]:
    """A DescribeEndpoint answer, as SageMaker shapes it."""
    body: dict[str, Any] = {
        "EndpointName": ENDPOINT,
        "EndpointArn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:endpoint/{ENDPOINT}",
        "EndpointConfigName": config_name,
        "EndpointStatus": status,
        "CreationTime": WHEN,
        "LastModifiedTime": WHEN,
        "ProductionVariants": [{"VariantName": "AllTraffic", "CurrentInstanceCount": count}],
    }
    if reason:
        body["FailureReason"] = reason
    return body


def stub_missing(sagemaker: Stubber) -> None:
    sagemaker.add_client_error(
        "describe_endpoint",
        "ValidationException",
        f'Could not find endpoint "arn:aws:sagemaker:us-east-1:{ACCOUNT}:endpoint/{ENDPOINT}".',
        400,
        expected_params={"EndpointName": ENDPOINT},
    )


def stub_existing(
    sagemaker: Stubber, *, status: str = "InService", instance_type: str = "ml.m5.large", count: int = 1
) -> None:
    """describe(): the endpoint, its config, its model (and through it the registry package)."""
    sagemaker.add_response("describe_endpoint", answer(status, OLD, count=count), {"EndpointName": ENDPOINT})
    sagemaker.add_response(
        "describe_endpoint_config",
        {
            "EndpointConfigName": OLD,
            "EndpointConfigArn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:endpoint-config/{OLD}",
            "ProductionVariants": [
                {
                    "VariantName": "AllTraffic",
                    "ModelName": OLD,
                    "InstanceType": instance_type,
                    "InitialInstanceCount": 1,
                }
            ],
            "CreationTime": WHEN,
        },
        {"EndpointConfigName": OLD},
    )
    sagemaker.add_response(
        "describe_model",
        {
            "ModelName": OLD,
            "PrimaryContainer": {"ModelPackageName": OLD_PACKAGE},
            "CreationTime": WHEN,
            "ModelArn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:model/{OLD}",
        },
        {"ModelName": OLD},
    )


def stub_creates(sagemaker: Stubber, *, count: int = 1) -> None:
    """CreateModel and CreateEndpointConfig, expected exactly as the builders make them; the container's
    payload cap is real-time's 6 MB, the size InvokeEndpoint itself accepts."""
    model = endpoints.model_call(
        NAME,
        package_arn=PACKAGE,
        role_arn=ROLE,
        tags=TAGS,
        environment={"MLOPS_MAX_PAYLOAD_BYTES": "6291456"},
    )
    sagemaker.add_response("create_model", {"ModelArn": f"arn:aws:sagemaker:::model/{NAME}"}, model.params)
    cfg = endpoints.endpoint_config_call(
        NAME, model_name=NAME, instance_type="ml.m5.large", instance_count=count, tags=TAGS
    )
    arn = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:endpoint-config/{NAME}"
    sagemaker.add_response("create_endpoint_config", {"EndpointConfigArn": arn}, cfg.params)


def stub_update(sagemaker: Stubber, *, count: int = 1, bake: int = 300) -> None:
    deployment = endpoints.deployment_config(
        endpoints.alarm_names(ENDPOINT), instance_count=count, bake_seconds=bake, canary_percent=10
    )
    update = endpoints.update_endpoint_call(ENDPOINT, NAME, deployment)
    sagemaker.add_response(
        "update_endpoint", {"EndpointArn": answer("x", NAME)["EndpointArn"]}, update.params
    )


def stub_create_endpoint(sagemaker: Stubber) -> None:
    create = endpoints.create_endpoint_call(ENDPOINT, NAME, TAGS)
    sagemaker.add_response(
        "create_endpoint", {"EndpointArn": answer("x", NAME)["EndpointArn"]}, create.params
    )


def stub_polls(sagemaker: Stubber, *answers: dict[str, Any]) -> None:
    for body in answers:
        sagemaker.add_response("describe_endpoint", body, {"EndpointName": ENDPOINT})


def stub_predictions(runtime: Stubber, count: int = 2, label: str = "circle") -> None:
    body = b'{"predictions": [{"top_k": [{"label": "%s", "probability": 0.9}]}]}' % label.encode()
    for _ in range(count):
        runtime.add_response(
            "invoke_endpoint",
            {"Body": StreamingBody(io.BytesIO(body), len(body)), "ContentType": "application/json"},
            {"EndpointName": ENDPOINT, "Body": ANY, "ContentType": "image/png", "Accept": "application/json"},
        )


def stub_model_error(runtime: Stubber) -> None:
    runtime.add_client_error(
        "invoke_endpoint",
        "ModelError",
        "Received server error (500) from primary with message ...",
        424,
        modeled_fields={
            "OriginalStatusCode": 500,
            "OriginalMessage": '{"error": "internal error during inference; see the server log"}',
        },
    )


@pytest.fixture
def stubs(aws: Aws):
    """Stubbed sagemaker and sagemaker-runtime; cloudwatch and application-autoscaling stay on moto."""
    sagemaker, runtime = Stubber(aws.client("sagemaker")), Stubber(aws.client("sagemaker-runtime"))
    with sagemaker, runtime:
        yield sagemaker, runtime
    sagemaker.assert_no_pending_responses()
    runtime.assert_no_pending_responses()


def run_deploy(aws: Aws, executor: Any = None, **overrides: Any) -> tuple[rollout.DeployOutcome, list[str]]:
    events: list[str] = []
    args: dict[str, Any] = {
        "project": "demo",
        "package_arn": PACKAGE,
        "version": 2,
        "role_arn": ROLE,
        "config": config(),
        "executor": executor or LiveExecutor(aws.client),
        "tags": TAGS,
        "samples": samples(),
        "classes": CLASSES,
        "on_event": events.append,
        "now": NOW,
    }
    args.update(overrides)
    return rollout.deploy(aws, **args), events


# names and request builders


def test_names_fit_sagemaker_names():
    assert endpoints.endpoint_name("demo") == ENDPOINT
    assert endpoints.resource_name("demo", 2, NOW) == NAME
    long = endpoints.resource_name("p" * 32, 123456, NOW)
    assert len(long) <= 63 and long.endswith("-v123456-20231114-221320")


def test_request_builders_are_valid_sagemaker_requests(aws):
    """Each builder's params go through botocore's validation of the real service model, then Stubber
    checks they arrive unchanged."""
    one = endpoints.deployment_config(
        ["a-5xx", "a-latency"], instance_count=1, bake_seconds=300, canary_percent=10
    )
    three = endpoints.deployment_config(
        ["a-5xx", "a-latency"], instance_count=3, bake_seconds=600, canary_percent=10
    )
    calls = [
        endpoints.model_call(
            NAME, package_arn=PACKAGE, role_arn=ROLE, tags=TAGS, environment={"LOG_LEVEL": "info"}
        ),
        endpoints.endpoint_config_call(
            NAME, model_name=NAME, instance_type="ml.m5.large", instance_count=3, tags=TAGS
        ),
        endpoints.create_endpoint_call(ENDPOINT, NAME, TAGS),
        endpoints.update_endpoint_call(ENDPOINT, NAME, one),
        endpoints.update_endpoint_call(ENDPOINT, NAME, three),
    ]
    responses = {
        "CreateModel": {"ModelArn": "arn:aws:sagemaker:us-east-1:123456789012:model/m"},
        "CreateEndpointConfig": {
            "EndpointConfigArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint-config/c"
        },
        "CreateEndpoint": {"EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/e"},
        "UpdateEndpoint": {"EndpointArn": "arn:aws:sagemaker:us-east-1:123456789012:endpoint/e"},
    }
    executor = LiveExecutor(aws.client)
    with Stubber(aws.client("sagemaker")) as stubber:
        for call in calls:
            stubber.add_response(call.method, responses[call.operation], expected_params=call.params)
        for call in calls:
            executor(call)
        stubber.assert_no_pending_responses()

    assert calls[0].params["PrimaryContainer"]["ModelPackageName"] == PACKAGE  # lineage to the registry
    assert one["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"] == {
        "Type": "ALL_AT_ONCE",
        "WaitIntervalInSeconds": 300,
    }
    assert three["BlueGreenUpdatePolicy"]["TrafficRoutingConfiguration"] == {
        "Type": "CANARY",
        "WaitIntervalInSeconds": 600,
        "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 10},
    }
    for deployment in (one, three):
        assert deployment["AutoRollbackConfiguration"] == {
            "Alarms": [{"AlarmName": "a-5xx"}, {"AlarmName": "a-latency"}]
        }


def test_deployment_limits_follow_the_api():
    def policy(count: int, bake: int, canary: int = 10) -> dict[str, Any]:
        config = endpoints.deployment_config(
            ["a"], instance_count=count, bake_seconds=bake, canary_percent=canary
        )
        return config["BlueGreenUpdatePolicy"]

    # CanarySize may be at most half the fleet.
    assert policy(4, 60, canary=80)["TrafficRoutingConfiguration"]["CanarySize"]["Value"] == 50
    # Provisioning plus every bake, within MaximumExecutionTimeoutInSeconds' 600-28800.
    assert policy(1, 300)["MaximumExecutionTimeoutInSeconds"] == 1800 + 300
    assert policy(2, 3600)["MaximumExecutionTimeoutInSeconds"] == 1800 + 2 * 3600
    assert policy(1, 0)["TerminationWaitInSeconds"] == 0
    assert "AutoRollbackConfiguration" not in endpoints.deployment_config(
        [], instance_count=1, bake_seconds=0, canary_percent=10
    )


# alarms and autoscaling on moto


def test_alarms_watch_errors_and_latency_in_microseconds(aws):
    executor = LiveExecutor(aws.client)
    for call in endpoints.alarm_calls(
        ENDPOINT, AlarmConfig(max_5xx_errors=5, max_model_latency_ms=250), tags=TAGS
    ):
        executor(call)

    alarms = {a["AlarmName"]: a for a in aws.client("cloudwatch").describe_alarms()["MetricAlarms"]}
    assert set(alarms) == {"demo-endpoint-5xx", "demo-endpoint-latency", "demo-endpoint-smoke"}
    errors, latency = alarms["demo-endpoint-5xx"], alarms["demo-endpoint-latency"]
    dimensions = [{"Name": "EndpointName", "Value": ENDPOINT}, {"Name": "VariantName", "Value": "AllTraffic"}]
    for alarm in (errors, latency):
        assert alarm["Namespace"] == "AWS/SageMaker" and alarm["Period"] == 60
        assert alarm["Dimensions"] == dimensions and alarm["TreatMissingData"] == "notBreaching"
    assert (errors["MetricName"], errors["Statistic"]) == ("Invocation5XXErrors", "Sum")
    assert (errors["Threshold"], errors["ComparisonOperator"]) == (5.0, "GreaterThanOrEqualToThreshold")
    assert (latency["MetricName"], latency["Statistic"]) == ("ModelLatency", "Average")
    assert (latency["Threshold"], latency["ComparisonOperator"]) == (250_000.0, "GreaterThanThreshold")
    smoke = alarms["demo-endpoint-smoke"]
    assert (smoke["Namespace"], smoke["MetricName"]) == ("MLOps", "SmokeTestFailures")
    assert smoke["Dimensions"] == [{"Name": "EndpointName", "Value": ENDPOINT}]
    assert (smoke["Threshold"], smoke["ComparisonOperator"]) == (1.0, "GreaterThanOrEqualToThreshold")
    assert (smoke["Period"], smoke["TreatMissingData"]) == (60, "notBreaching")


def test_a_zero_error_budget_alarms_on_the_first_error():
    errors = endpoints.alarm_calls(ENDPOINT, AlarmConfig(max_5xx_errors=0))[0]
    assert errors.params["Threshold"] == 1.0  # ">= 0" would fire on every error-free minute


def test_autoscaling_tracks_invocations_per_instance(aws):
    executor = LiveExecutor(aws.client)
    for call in endpoints.autoscaling_calls(
        ENDPOINT, min_instances=1, max_instances=4, invocations_per_instance=100, tags=TAGS
    ):
        executor(call)

    scaling = aws.client("application-autoscaling")
    (target,) = scaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"]
    assert target["ResourceId"] == "endpoint/demo-endpoint/variant/AllTraffic"
    assert target["ScalableDimension"] == "sagemaker:variant:DesiredInstanceCount"
    assert (target["MinCapacity"], target["MaxCapacity"]) == (1, 4)
    (policy,) = scaling.describe_scaling_policies(ServiceNamespace="sagemaker")["ScalingPolicies"]
    assert policy["PolicyType"] == "TargetTrackingScaling"
    tracking = policy["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["TargetValue"] == 100.0
    assert (
        tracking["PredefinedMetricSpecification"]["PredefinedMetricType"]
        == "SageMakerVariantInvocationsPerInstance"
    )


def make_endpoint_on_moto(aws: Aws) -> None:
    executor = LiveExecutor(aws.client)
    executor(endpoints.model_call(OLD, package_arn=OLD_PACKAGE, role_arn=ROLE, tags=TAGS))
    executor(
        endpoints.endpoint_config_call(
            OLD, model_name=OLD, instance_type="ml.m5.large", instance_count=1, tags=TAGS
        )
    )
    executor(endpoints.create_endpoint_call(ENDPOINT, OLD, TAGS))  # moto: InService at once
    for call in endpoints.alarm_calls(ENDPOINT, AlarmConfig()) + endpoints.autoscaling_calls(
        ENDPOINT, min_instances=1, max_instances=2, invocations_per_instance=100
    ):
        executor(call)


def test_describe_finds_the_registry_package_behind_the_endpoint(aws):
    assert endpoints.describe(aws, ENDPOINT) is None
    make_endpoint_on_moto(aws)
    state = endpoints.describe(aws, ENDPOINT)
    assert state is not None
    assert (state.status, state.config_name, state.model_name) == ("InService", OLD, OLD)
    assert (state.package_arn, state.instance_type, state.instance_count) == (OLD_PACKAGE, "ml.m5.large", 1)


def test_delete_removes_the_endpoint_its_scaling_target_and_alarms(aws):
    make_endpoint_on_moto(aws)
    lines: list[str] = []
    endpoints.delete(aws, ENDPOINT, DryRunExecutor(emit=lines.append))
    assert [line.split()[0] for line in lines] == [
        "application-autoscaling.DeregisterScalableTarget",
        "sagemaker.DeleteEndpoint",
        "cloudwatch.DeleteAlarms",
    ]
    assert endpoints.describe(aws, ENDPOINT) is not None  # the dry run changed nothing

    endpoints.delete(aws, ENDPOINT, LiveExecutor(aws.client))
    assert endpoints.describe(aws, ENDPOINT) is None
    assert aws.client("cloudwatch").describe_alarms()["MetricAlarms"] == []
    scaling = aws.client("application-autoscaling")
    assert scaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []


# deploy lifecycles (Stubber on sagemaker and sagemaker-runtime; moto for cloudwatch and autoscaling)


def test_first_deploy_creates_the_endpoint_and_smoke_tests_it(aws, sleep, stubs):
    sagemaker, runtime = stubs
    stub_missing(sagemaker)
    stub_creates(sagemaker)
    stub_create_endpoint(sagemaker)
    stub_polls(sagemaker, answer("Creating", NAME), answer("InService", NAME))
    stub_predictions(runtime)

    outcome, events = run_deploy(aws)

    assert outcome.ok, outcome.message
    assert (outcome.config_name, outcome.previous_config, outcome.rolled_back) == (NAME, None, False)
    assert outcome.smoke is not None and outcome.smoke["ok"] and outcome.smoke["accuracy"] == 1.0
    assert "endpoint demo-endpoint: Creating" in events and "endpoint demo-endpoint: InService" in events
    assert sleep.calls == [30]
    alarms = aws.client("cloudwatch").describe_alarms()["MetricAlarms"]
    assert sorted(a["AlarmName"] for a in alarms) == [
        "demo-endpoint-5xx",
        "demo-endpoint-latency",
        "demo-endpoint-smoke",
    ]
    targets = aws.client("application-autoscaling").describe_scalable_targets(ServiceNamespace="sagemaker")
    assert [t["MaxCapacity"] for t in targets["ScalableTargets"]] == [2]


def test_update_that_lands_on_the_new_config_is_a_success(aws, sleep, stubs):
    sagemaker, runtime = stubs
    stub_existing(sagemaker)
    stub_creates(sagemaker)
    stub_update(sagemaker)
    stub_polls(sagemaker, answer("Updating", OLD), answer("Updating", OLD), answer("InService", NAME))
    stub_predictions(runtime)

    outcome, events = run_deploy(aws)

    assert outcome.ok, outcome.message
    assert (outcome.config_name, outcome.previous_config, outcome.rolled_back) == (NAME, OLD, False)
    assert events.count("endpoint demo-endpoint: Updating") == 1  # status changes, not every poll
    assert sleep.calls == [30, 30]


def test_update_rolled_back_silently_is_a_failure_that_names_the_alarm(aws, sleep, stubs):
    sagemaker, _runtime = stubs
    stub_existing(sagemaker)
    stub_creates(sagemaker)
    stub_update(sagemaker)
    # What SageMaker shows after an automatic rollback: InService, no FailureReason, the OLD config.
    stub_polls(sagemaker, answer("Updating", OLD), answer("InService", OLD))

    def alarm_fires_during_the_bake(seconds: float) -> None:
        sleep(seconds)
        aws.client("cloudwatch").set_alarm_state(
            AlarmName="demo-endpoint-5xx", StateValue="ALARM", StateReason="7 errors in a minute"
        )

    aws.sleep = alarm_fires_during_the_bake
    outcome, _ = run_deploy(aws)

    assert not outcome.ok and outcome.rolled_back
    assert "rolled back" in outcome.message and "demo-endpoint-5xx" in outcome.message
    assert OLD in outcome.message and "demo-endpoint-latency" not in outcome.message
    assert (outcome.config_name, outcome.previous_config, outcome.smoke) == (NAME, OLD, None)
    assert sleep.calls == [30]


def test_a_stale_read_right_after_update_is_not_taken_for_a_rollback(aws, sleep, stubs):
    sagemaker, runtime = stubs
    stub_existing(sagemaker)
    stub_creates(sagemaker)
    stub_update(sagemaker)
    stub_polls(sagemaker, answer("InService", OLD), answer("Updating", OLD), answer("InService", NAME))
    stub_predictions(runtime)

    outcome, _ = run_deploy(aws)

    assert outcome.ok and not outcome.rolled_back
    assert sleep.calls == [30, 30]


def test_an_endpoint_that_fails_reports_the_failure_reason(aws, sleep, stubs):
    sagemaker, _runtime = stubs
    stub_missing(sagemaker)
    stub_creates(sagemaker)
    stub_create_endpoint(sagemaker)
    reason = "The primary container for production variant AllTraffic did not pass the ping health check."
    stub_polls(sagemaker, answer("Creating", NAME), answer("Failed", NAME, reason=reason))

    outcome, events = run_deploy(aws)

    assert not outcome.ok and not outcome.rolled_back
    assert outcome.message == f"endpoint demo-endpoint ended Failed: {reason}"
    assert not outcome.serving_candidate
    assert any("Failed" in e and reason in e for e in events)
    assert sleep.calls == [30]


def test_a_failed_smoke_test_once_the_new_config_serves_reports_the_candidate_serving(aws, sleep, stubs):
    """No bake was seen (the update went InService between two polls): the smoke test runs after the
    switch, and the outcome says the failed candidate serves, for infra.guard to roll back."""
    sagemaker, runtime = stubs
    stub_existing(sagemaker)
    stub_creates(sagemaker)
    stub_update(sagemaker)
    stub_polls(sagemaker, answer("Updating", OLD), answer("InService", NAME))
    stub_model_error(runtime)
    stub_model_error(runtime)

    outcome, _ = run_deploy(aws)

    assert not outcome.ok and not outcome.rolled_back and outcome.serving_candidate
    assert outcome.message.startswith("v2 is InService on demo-endpoint but failed its smoke test (HTTP 500")
    assert outcome.smoke is not None and not outcome.smoke["ok"]
    assert outcome.smoke["errors"][0].startswith("HTTP 500: ModelError: internal error during inference")
    assert sleep.calls == [30]


def test_a_failed_smoke_test_on_a_first_deploy_reports_the_candidate_serving(aws, stubs):
    sagemaker, runtime = stubs
    stub_missing(sagemaker)
    stub_creates(sagemaker)
    stub_create_endpoint(sagemaker)
    stub_polls(sagemaker, answer("InService", NAME))
    stub_predictions(runtime, count=1, label="hexagon")
    stub_predictions(runtime, count=1)

    outcome, _ = run_deploy(aws)

    assert not outcome.ok and outcome.serving_candidate and outcome.previous_config is None
    assert (
        outcome.message
        == "v2 is InService on demo-endpoint but failed its smoke test (unknown label 'hexagon')"
    )


def baking(config_name: str = OLD) -> dict[str, Any]:
    """DescribeEndpoint during a blue/green bake: traffic is on the green fleet, the blue one is kept."""
    body = answer("Updating", config_name)
    body["PendingDeploymentSummary"] = {
        "EndpointConfigName": NAME,
        "StartTime": WHEN,
        "ProductionVariants": [
            {"VariantName": "AllTraffic", "VariantStatus": [{"Status": "Baking", "StartTime": WHEN}]}
        ],
    }
    return body


def smoke_datapoints(aws: Aws) -> list[str]:
    metrics = aws.client("cloudwatch").list_metrics(Namespace="MLOps")["Metrics"]
    return [m["MetricName"] for m in metrics]


def test_a_smoke_test_that_fails_during_the_bake_raises_the_alarm_and_sagemaker_rolls_back(aws, sleep, stubs):
    sagemaker, runtime = stubs
    stub_existing(sagemaker)
    stub_creates(sagemaker)
    stub_update(sagemaker)
    # Baking twice (the same bake step: tested once), then what SageMaker shows after its rollback.
    stub_polls(sagemaker, answer("Updating", OLD), baking(), baking(), answer("InService", OLD))
    stub_model_error(runtime)
    stub_model_error(runtime)

    def sagemaker_sees_the_alarm(seconds: float) -> None:
        sleep(seconds)
        if smoke_datapoints(aws):  # CloudWatch evaluates the alarm on the datapoint the rollout put
            aws.client("cloudwatch").set_alarm_state(
                AlarmName="demo-endpoint-smoke", StateValue="ALARM", StateReason="smoke test failed"
            )

    aws.sleep = sagemaker_sees_the_alarm
    outcome, events = run_deploy(aws)

    assert smoke_datapoints(aws) == ["SmokeTestFailures"]
    assert not outcome.ok and outcome.rolled_back and not outcome.serving_candidate
    assert "rolled back automatically" in outcome.message and "demo-endpoint-smoke" in outcome.message
    assert "its smoke test during the bake failed: HTTP 500: ModelError" in outcome.message
    assert any("raising alarm demo-endpoint-smoke" in e for e in events)
    assert sleep.calls == [30, 30, 30]


def test_a_smoke_test_that_passes_during_the_bake_is_the_deploys_smoke_test(aws, sleep, stubs):
    sagemaker, runtime = stubs
    stub_existing(sagemaker)
    stub_creates(sagemaker)
    stub_update(sagemaker)
    stub_polls(sagemaker, baking(), baking(), answer("InService", NAME))
    stub_predictions(runtime)  # two images, sent once: during the bake, not again after it

    outcome, events = run_deploy(aws)

    assert outcome.ok and outcome.smoke["ok"] and outcome.smoke["images"] == 2
    assert any("smoke-testing it while the blue fleet is kept" in e for e in events)
    assert smoke_datapoints(aws) == []


def test_a_bake_that_ends_before_the_alarm_acts_reports_the_failed_candidate_serving(aws, sleep, stubs):
    sagemaker, runtime = stubs
    stub_existing(sagemaker)
    stub_creates(sagemaker)
    stub_update(sagemaker)
    stub_polls(sagemaker, baking(), answer("InService", NAME))
    stub_model_error(runtime)
    stub_model_error(runtime)

    outcome, _ = run_deploy(aws)

    assert not outcome.ok and outcome.serving_candidate and not outcome.rolled_back
    assert outcome.message.startswith(
        "v2 serves on demo-endpoint although it failed its smoke test during the bake (HTTP 500"
    )


def test_a_busy_endpoint_is_left_alone(aws, sleep, stubs):
    sagemaker, _runtime = stubs
    stub_existing(sagemaker, status="Updating")

    outcome, _ = run_deploy(aws)

    assert not outcome.ok and "Updating" in outcome.message and "nothing was changed" in outcome.message
    assert sleep.calls == []


def test_a_failed_endpoint_is_replaced(aws, stubs):
    sagemaker, runtime = stubs
    stub_existing(sagemaker, status="Failed")
    sagemaker.add_response("delete_endpoint", {}, {"EndpointName": ENDPOINT})
    stub_missing(sagemaker)  # deleted
    stub_creates(sagemaker)
    stub_create_endpoint(sagemaker)
    stub_polls(sagemaker, answer("InService", NAME))
    stub_predictions(runtime)

    outcome, events = run_deploy(aws)

    assert outcome.ok and outcome.previous_config is None
    assert any("deleting it to create it again" in e for e in events)


def test_dry_run_prints_every_request_and_calls_nothing(aws, sleep, stubs):
    sagemaker, _runtime = stubs
    stub_existing(sagemaker)  # reads only: any mutating call would find no stubbed answer
    lines: list[str] = []

    outcome, _ = run_deploy(aws, DryRunExecutor(emit=lines.append), config=config(endpoint_instance_count=3))

    assert outcome.ok and outcome.message == "dry run"
    assert [line.split()[0] for line in lines] == [
        "sagemaker.CreateModel",
        "sagemaker.CreateEndpointConfig",
        "cloudwatch.PutMetricAlarm",
        "cloudwatch.PutMetricAlarm",
        "cloudwatch.PutMetricAlarm",
        "sagemaker.UpdateEndpoint",
        "application-autoscaling.RegisterScalableTarget",
        "application-autoscaling.PutScalingPolicy",
    ]
    update = lines[5]
    assert '"Type": "CANARY"' in update and '"AutoRollbackConfiguration"' in update
    for alarm in ("demo-endpoint-5xx", "demo-endpoint-latency", "demo-endpoint-smoke"):
        assert f'"AlarmName": "{alarm}"' in update
    assert aws.client("cloudwatch").describe_alarms()["MetricAlarms"] == []
    scaling = aws.client("application-autoscaling")
    assert scaling.describe_scalable_targets(ServiceNamespace="sagemaker")["ScalableTargets"] == []
    assert sleep.calls == []


def test_dry_run_of_a_first_deploy_shows_the_create(aws, stubs):
    sagemaker, _runtime = stubs
    stub_missing(sagemaker)
    lines: list[str] = []

    outcome, _ = run_deploy(aws, DryRunExecutor(emit=lines.append))

    assert outcome.ok and any(line.startswith("sagemaker.CreateEndpoint ") for line in lines)
    assert not any("UpdateEndpoint" in line for line in lines)


def test_dry_run_that_cannot_read_the_endpoint_plans_an_update(aws, stubs):
    sagemaker, _runtime = stubs
    sagemaker.add_client_error("describe_endpoint", "UnrecognizedClientException", "invalid token", 400)
    lines: list[str] = []

    outcome, events = run_deploy(aws, DryRunExecutor(emit=lines.append))

    assert outcome.ok and any(line.startswith("sagemaker.UpdateEndpoint") for line in lines)
    assert any("cannot read endpoint" in e for e in events)


def test_a_live_deploy_that_cannot_read_the_endpoint_raises(aws, stubs):
    sagemaker, _runtime = stubs
    sagemaker.add_client_error("describe_endpoint", "AccessDeniedException", "no", 400)
    with pytest.raises(AwsError, match="AccessDeniedException"):
        run_deploy(aws)


def test_changing_the_instance_type_deregisters_autoscaling_first(aws, stubs):
    sagemaker, _runtime = stubs
    executor = LiveExecutor(aws.client)
    for call in endpoints.autoscaling_calls(
        ENDPOINT, min_instances=1, max_instances=2, invocations_per_instance=100
    ):
        executor(call)
    stub_existing(sagemaker, instance_type="ml.c5.xlarge")
    lines: list[str] = []

    run_deploy(aws, DryRunExecutor(emit=lines.append))

    operations = [line.split()[0] for line in lines]
    deregister = operations.index("application-autoscaling.DeregisterScalableTarget")
    assert deregister < operations.index("sagemaker.UpdateEndpoint")


def test_the_green_fleet_starts_as_large_as_the_blue_one_has_grown(aws, stubs):
    sagemaker, _runtime = stubs
    stub_existing(sagemaker, count=2)  # autoscaling has grown the fleet from 1 to 2
    lines: list[str] = []

    run_deploy(aws, DryRunExecutor(emit=lines.append))

    assert '"InitialInstanceCount": 2' in lines[1] and '"Type": "CANARY"' in lines[5]


# invoke


def test_invoke_turns_model_and_request_errors_into_statuses(aws):
    with Stubber(aws.client("sagemaker-runtime")) as runtime:
        stub_model_error(runtime)
        runtime.add_client_error(
            "invoke_endpoint", "ValidationError", "Endpoint demo-endpoint not found.", 400
        )
        runtime.add_client_error("invoke_endpoint", "AccessDeniedException", "not allowed", 403)

        assert endpoints.invoke(aws, ENDPOINT, b"x", "image/png") == (
            500,
            {"error": "ModelError: internal error during inference; see the server log"},
        )
        status, payload = endpoints.invoke(aws, ENDPOINT, b"x", "image/png")
        assert status == 400 and "not found" in payload["error"]
        with pytest.raises(AwsError, match="AccessDeniedException"):
            endpoints.invoke(aws, ENDPOINT, b"x", "image/png")
