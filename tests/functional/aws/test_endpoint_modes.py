"""Endpoint modes on AWS: the exact CreateEndpointConfig of serverless and async (botocore Stubber, which
checks each request against the real SageMaker model), the limits refused before any request, the
smoke test through S3 for async (moto S3), autoscaling per mode (moto), the failure path of each mode,
and the `mlops deploy --mode` flags over mlops.toml (the real CLI, dry run on moto)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from botocore.stub import ANY, Stubber

from infra.aws import endpoints, registry, rollout
from infra.aws.plan import DryRunExecutor, LiveExecutor
from infra.aws.session import Aws
from infra.cli import main
from infra.errors import UsageError
from infra.settings import AwsConfig
from tests.functional.aws.conftest import ROLE
from tests.functional.aws.test_endpoints import (
    ACCOUNT,
    ENDPOINT,
    NAME,
    OLD,
    OLD_PACKAGE,
    PACKAGE,
    TAGS,
    answer,
    baking,
    run_deploy,
    smoke_datapoints,
    stub_create_endpoint,
    stub_missing,
    stub_model_error,
    stub_polls,
    stub_predictions,
)

WHEN = datetime(2023, 11, 14, tzinfo=UTC)
OUTPUT = "s3://demo-bucket/demo/async-output/"
CONFIG_ARN = f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:endpoint-config/{NAME}"
ANSWER = {"predictions": [{"top_k": [{"label": "circle", "probability": 0.9}]}]}


@pytest.fixture
def stubs(aws: Aws):
    """Stubbed sagemaker and sagemaker-runtime; S3, CloudWatch and Application Auto Scaling on moto."""
    sagemaker, runtime = Stubber(aws.client("sagemaker")), Stubber(aws.client("sagemaker-runtime"))
    with sagemaker, runtime:
        yield sagemaker, runtime
    sagemaker.assert_no_pending_responses()
    runtime.assert_no_pending_responses()


def serverless(**overrides: Any) -> AwsConfig:
    return AwsConfig(endpoint_mode="serverless", **overrides)


def asynchronous(**overrides: Any) -> AwsConfig:
    return AwsConfig(endpoint_mode="async", **overrides)


def stub_model(sagemaker: Stubber, cap: int) -> None:
    expected = {
        "ModelName": NAME,
        "PrimaryContainer": {
            "ModelPackageName": PACKAGE,
            "Environment": {"MLOPS_MAX_PAYLOAD_BYTES": str(cap)},
        },
        "ExecutionRoleArn": ROLE,
        "Tags": TAGS,
    }
    sagemaker.add_response("create_model", {"ModelArn": f"arn:aws:sagemaker:::model/{NAME}"}, expected)


def stub_existing_in(sagemaker: Stubber, variant: dict[str, Any], **extra: Any) -> None:
    """describe(): an endpoint serving OLD, whose config is `variant` (and `extra` top-level fields)."""
    sagemaker.add_response("describe_endpoint", answer("InService", OLD), {"EndpointName": ENDPOINT})
    config = {
        "EndpointConfigName": OLD,
        "EndpointConfigArn": f"arn:aws:sagemaker:us-east-1:{ACCOUNT}:endpoint-config/{OLD}",
        "ProductionVariants": [{"VariantName": "AllTraffic", "ModelName": OLD, **variant}],
        "CreationTime": WHEN,
        **extra,
    }
    sagemaker.add_response("describe_endpoint_config", config, {"EndpointConfigName": OLD})
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


SERVERLESS_VARIANT = {"ServerlessConfig": {"MemorySizeInMB": 2048, "MaxConcurrency": 10}}
ASYNC_VARIANT = {"InstanceType": "ml.m5.large", "InitialInstanceCount": 1}
ASYNC_EXTRA = {
    "AsyncInferenceConfig": {
        "OutputConfig": {"S3OutputPath": OUTPUT, "S3FailurePath": OUTPUT + "failures/"},
        "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 4},
    }
}


def scaling_targets(aws: Aws) -> list[dict[str, Any]]:
    scaling = aws.client("application-autoscaling")
    targets: list[dict[str, Any]] = scaling.describe_scalable_targets(ServiceNamespace="sagemaker")[
        "ScalableTargets"
    ]
    return targets


# serverless


def stub_async_config(sagemaker: Stubber) -> None:
    """The async CreateEndpointConfig of the default [aws] settings (one ml.m5.large, 4 in flight)."""
    cfg = endpoints.async_config_call(
        NAME,
        model_name=NAME,
        instance_type="ml.m5.large",
        instance_count=1,
        output_path=OUTPUT,
        max_concurrent_invocations=4,
        tags=TAGS,
    )
    sagemaker.add_response("create_endpoint_config", {"EndpointConfigArn": CONFIG_ARN}, cfg.params)


def alarm_once_smoke_fails(aws: Aws, wait: Callable[[float], None]) -> Callable[[float], None]:
    """The rollout's sleep, with SageMaker's side: once failed smoke requests are published, the smoke
    alarm goes to ALARM (what makes SageMaker roll the update back during the bake)."""

    def sleep_and_see(seconds: float) -> None:
        wait(seconds)
        if smoke_datapoints(aws):
            aws.client("cloudwatch").set_alarm_state(
                AlarmName="demo-endpoint-smoke", StateValue="ALARM", StateReason="smoke test failed"
            )

    return sleep_and_see


def test_a_serverless_deploy_sends_serverless_config_and_no_instances(aws, sleep, stubs):
    sagemaker, runtime = stubs
    stub_missing(sagemaker)
    stub_model(sagemaker, 4 * 1024 * 1024)  # the serverless front door's 4 MB, not real-time's 6 MB
    sagemaker.add_response(
        "create_endpoint_config",
        {"EndpointConfigArn": CONFIG_ARN},
        {
            "EndpointConfigName": NAME,
            "ProductionVariants": [
                {
                    "VariantName": "AllTraffic",
                    "ModelName": NAME,
                    "ServerlessConfig": {"MemorySizeInMB": 3072, "MaxConcurrency": 20},
                }
            ],
            "Tags": TAGS,
        },
    )
    stub_create_endpoint(sagemaker)
    stub_polls(sagemaker, answer("Creating", NAME), answer("InService", NAME))
    stub_predictions(runtime)  # the smoke test: plain InvokeEndpoint

    outcome, _ = run_deploy(aws, config=serverless(serverless_memory_mb=3072, serverless_max_concurrency=20))

    assert outcome.ok and outcome.smoke is not None and outcome.smoke["ok"], outcome.message
    assert scaling_targets(aws) == []  # nothing to scale: SageMaker scales it within MaxConcurrency
    alarms = aws.client("cloudwatch").describe_alarms()["MetricAlarms"]
    assert len(alarms) == 3  # the rollback alarms, as real-time


def test_a_serverless_update_is_all_at_once_whatever_the_instance_count(aws, stubs):
    sagemaker, _runtime = stubs
    stub_existing_in(sagemaker, SERVERLESS_VARIANT)
    lines: list[str] = []

    outcome, _ = run_deploy(
        aws, DryRunExecutor(emit=lines.append), config=serverless(endpoint_instance_count=4)
    )

    assert outcome.ok
    operations = [line.split()[0] for line in lines]
    assert operations == [
        "sagemaker.CreateModel",
        "sagemaker.CreateEndpointConfig",
        "cloudwatch.PutMetricAlarm",
        "cloudwatch.PutMetricAlarm",
        "cloudwatch.PutMetricAlarm",
        "sagemaker.UpdateEndpoint",
    ]
    update = json.loads(lines[5].split("\n", 1)[1])
    policy = update["DeploymentConfig"]["BlueGreenUpdatePolicy"]
    assert policy["TrafficRoutingConfiguration"] == {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 300}
    assert len(update["DeploymentConfig"]["AutoRollbackConfiguration"]["Alarms"]) == 3
    assert '"InstanceType"' not in lines[1] and '"InitialInstanceCount"' not in lines[1]


def test_a_serverless_candidate_failing_its_bake_smoke_test_is_rolled_back(aws, sleep, stubs):
    sagemaker, runtime = stubs
    stub_existing_in(sagemaker, SERVERLESS_VARIANT)
    stub_model(sagemaker, 4 * 1024 * 1024)
    cfg = endpoints.serverless_config_call(
        NAME, model_name=NAME, memory_mb=2048, max_concurrency=10, tags=TAGS
    )
    sagemaker.add_response("create_endpoint_config", {"EndpointConfigArn": CONFIG_ARN}, cfg.params)
    deployment = endpoints.deployment_config(
        endpoints.alarm_names(ENDPOINT), instance_count=1, bake_seconds=300, canary_percent=10
    )
    update = endpoints.update_endpoint_call(ENDPOINT, NAME, deployment)
    sagemaker.add_response(
        "update_endpoint", {"EndpointArn": answer("x", NAME)["EndpointArn"]}, update.params
    )
    stub_polls(sagemaker, answer("Updating", OLD), baking(), answer("InService", OLD))
    stub_model_error(runtime)
    stub_model_error(runtime)

    aws.sleep = alarm_once_smoke_fails(aws, sleep)
    outcome, _ = run_deploy(aws, config=serverless())

    assert not outcome.ok and outcome.rolled_back and not outcome.serving_candidate
    assert "demo-endpoint-smoke" in outcome.message and OLD in outcome.message


# async


class StartsWith:
    """Matches any string with this prefix (a request parameter whose tail is random)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def __eq__(self, other: object) -> bool:
        return isinstance(other, str) and other.startswith(self.prefix)

    def __ne__(self, other: object) -> bool:
        return not self == other

    def __hash__(self) -> int:
        return hash(self.prefix)

    def __repr__(self) -> str:
        return f"<a string starting {self.prefix!r}>"


def stub_async_invocations(runtime: Stubber, count: int) -> list[str]:
    """InvokeEndpointAsync x count, answered as SageMaker answers (locations, nothing processed yet);
    the output keys they name, in order."""
    keys = []
    for i in range(count):
        key = f"demo/async-output/answer-{i}.out"
        keys.append(key)
        runtime.add_response(
            "invoke_endpoint_async",
            {
                "InferenceId": f"id-{i}",
                "OutputLocation": f"s3://demo-bucket/{key}",
                "FailureLocation": f"s3://demo-bucket/demo/async-output/failures/answer-{i}-error.out",
            },
            {
                "EndpointName": ENDPOINT,
                "InputLocation": StartsWith(OUTPUT + "requests/mlops-"),
                "ContentType": "image/png",
                "Accept": "application/json",
                "InferenceId": ANY,
            },
        )
    return keys


class AsyncWorker:
    """What the async endpoint does between two polls: it finds the request under requests/ and writes
    the answer (or the failure) where InvokeEndpointAsync said it would."""

    def __init__(self, aws: Aws, sleep: Any, keys: list[str], fail: bool = False) -> None:
        self.aws, self.sleep, self.keys, self.fail = aws, sleep, list(keys), fail
        self.requests_seen: list[str] = []

    def __call__(self, seconds: float) -> None:
        self.sleep(seconds)
        s3 = self.aws.client("s3")
        listed = s3.list_objects_v2(Bucket="demo-bucket", Prefix="demo/async-output/requests/")
        self.requests_seen += [o["Key"] for o in listed.get("Contents", [])]
        if not self.keys or not listed.get("Contents"):
            return
        key = self.keys.pop(0)
        if self.fail:
            failure = key.replace("async-output/", "async-output/failures/").replace(".out", "-error.out")
            message = "Received server error (500) from primary with message internal error during inference"
            s3.put_object(Bucket="demo-bucket", Key=failure, Body=message.encode())
        else:
            s3.put_object(Bucket="demo-bucket", Key=key, Body=json.dumps(ANSWER).encode())


def test_an_async_deploy_sends_async_inference_config_and_smoke_tests_through_s3(aws, sleep, stubs):
    sagemaker, runtime = stubs
    stub_missing(sagemaker)
    stub_model(sagemaker, 1024 * 1024 * 1024)  # 1 GB: async requests come from S3
    sagemaker.add_response(
        "create_endpoint_config",
        {"EndpointConfigArn": CONFIG_ARN},
        {
            "EndpointConfigName": NAME,
            "ProductionVariants": [
                {
                    "VariantName": "AllTraffic",
                    "ModelName": NAME,
                    "InstanceType": "ml.m5.large",
                    "InitialInstanceCount": 1,
                    "InitialVariantWeight": 1.0,
                }
            ],
            "AsyncInferenceConfig": {
                "OutputConfig": {"S3OutputPath": OUTPUT, "S3FailurePath": OUTPUT + "failures/"},
                "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 8},
            },
            "Tags": TAGS,
        },
    )
    stub_create_endpoint(sagemaker)
    stub_polls(sagemaker, answer("Creating", NAME), answer("InService", NAME))
    keys = stub_async_invocations(runtime, 2)
    worker = AsyncWorker(aws, sleep, keys)
    aws.sleep = worker

    outcome, _ = run_deploy(aws, config=asynchronous(async_max_concurrent_invocations=8))

    assert outcome.ok and outcome.smoke is not None and outcome.smoke["ok"], outcome.message
    assert outcome.smoke["images"] == 2 and outcome.smoke["accuracy"] == 1.0
    assert len(worker.requests_seen) == 2  # each image was put in S3 before it was invoked
    # 30 s for the endpoint to come up, then one 1 s poll per image before its answer was there
    assert sleep.calls == [30, 1.0, 1.0]
    leftovers = aws.client("s3").list_objects_v2(Bucket="demo-bucket", Prefix="demo/async-output/")
    assert leftovers.get("KeyCount") == 0  # the test's requests and answers are cleaned up
    (target,) = scaling_targets(aws)
    assert (target["MinCapacity"], target["MaxCapacity"]) == (1, 2)
    policies = aws.client("application-autoscaling").describe_scaling_policies(ServiceNamespace="sagemaker")
    (policy,) = policies["ScalingPolicies"]
    metric = policy["TargetTrackingScalingPolicyConfiguration"]["CustomizedMetricSpecification"]
    assert metric["MetricName"] == "ApproximateBacklogSizePerInstance"  # async publishes no Invocations


def test_an_async_fleet_that_may_scale_to_zero_gets_a_wake_up_policy(aws, stubs):
    sagemaker, _runtime = stubs
    stub_existing_in(sagemaker, ASYNC_VARIANT, **ASYNC_EXTRA)
    executor = LiveExecutor(aws.client)

    rollout.run_scaling(
        executor,
        rollout._scaling_calls(asynchronous(async_min_instances=0), ENDPOINT, TAGS),
        ENDPOINT,
        TAGS,
    )

    (target,) = scaling_targets(aws)
    assert target["MinCapacity"] == 0
    policies = aws.client("application-autoscaling").describe_scaling_policies(ServiceNamespace="sagemaker")
    by_type = {p["PolicyType"]: p for p in policies["ScalingPolicies"]}
    assert set(by_type) == {"TargetTrackingScaling", "StepScaling"}
    (alarm,) = aws.client("cloudwatch").describe_alarms()["MetricAlarms"]
    assert alarm["MetricName"] == "HasBacklogWithoutCapacity"
    assert alarm["AlarmActions"] == [by_type["StepScaling"]["PolicyARN"]]
    assert alarm["AlarmName"] not in endpoints.alarm_names(ENDPOINT)  # never a rollback alarm
    # delete() removes it with the endpoint's other alarms
    endpoints.delete(aws, ENDPOINT, DryRunExecutor(emit=(lines := []).append))
    assert any(alarm["AlarmName"] in line for line in lines if line.startswith("cloudwatch.DeleteAlarms"))
    sagemaker.assert_no_pending_responses()


def test_an_async_candidate_failing_its_bake_smoke_test_is_rolled_back(aws, sleep, stubs):
    sagemaker, runtime = stubs
    stub_existing_in(sagemaker, ASYNC_VARIANT, **ASYNC_EXTRA)
    stub_model(sagemaker, 1024 * 1024 * 1024)
    stub_async_config(sagemaker)
    deployment = endpoints.deployment_config(
        endpoints.alarm_names(ENDPOINT), instance_count=1, bake_seconds=300, canary_percent=10
    )
    update = endpoints.update_endpoint_call(ENDPOINT, NAME, deployment)
    sagemaker.add_response(
        "update_endpoint", {"EndpointArn": answer("x", NAME)["EndpointArn"]}, update.params
    )
    stub_polls(sagemaker, answer("Updating", OLD), baking(), answer("InService", OLD))
    keys = stub_async_invocations(runtime, 2)
    worker = AsyncWorker(aws, sleep, keys, fail=True)

    aws.sleep = alarm_once_smoke_fails(aws, worker)
    outcome, _ = run_deploy(aws, config=asynchronous())

    assert not outcome.ok and outcome.rolled_back and not outcome.serving_candidate
    assert outcome.smoke is not None and outcome.smoke["errors"][0].startswith(
        "HTTP 500: Received server error"
    )
    assert "demo-endpoint-smoke" in outcome.message


def test_an_async_first_deploy_that_fails_its_smoke_test_reports_the_candidate_serving(aws, sleep, stubs):
    """No bake on a first deployment: the outcome says the failed candidate serves, for infra.guard to
    take the endpoint down (as in real-time)."""
    sagemaker, runtime = stubs
    stub_missing(sagemaker)
    stub_model(sagemaker, 1024 * 1024 * 1024)
    stub_async_config(sagemaker)
    stub_create_endpoint(sagemaker)
    stub_polls(sagemaker, answer("InService", NAME))
    aws.sleep = AsyncWorker(aws, sleep, stub_async_invocations(runtime, 2), fail=True)

    outcome, _ = run_deploy(aws, config=asynchronous())

    assert not outcome.ok and outcome.serving_candidate
    assert outcome.message.startswith("v2 is InService on demo-endpoint but failed its smoke test (HTTP 500")


def test_an_async_answer_that_never_comes_is_a_failed_smoke_request(aws, sleep):
    with Stubber(aws.client("sagemaker-runtime")) as runtime:
        stub_async_invocations(runtime, 1)
        status, payload = endpoints.invoke_async(
            aws, ENDPOINT, b"png", "image/png", input_prefix=OUTPUT + "requests/", timeout_seconds=3
        )
    assert (
        status == 504 and "no answer at s3://demo-bucket/demo/async-output/answer-0.out" in payload["error"]
    )
    assert sleep.calls == [1.0, 1.0, 1.0]


# limits: refused before any request


@pytest.fixture
def requests_sent(aws: Aws) -> list[str]:
    """Every request any client of `aws` is asked to send (botocore's before-parameter-build event, which
    fires before validation and before Stubber answers)."""
    sent: list[str] = []
    for service in ("sagemaker", "sagemaker-runtime", "s3", "cloudwatch", "application-autoscaling"):
        aws.client(service).meta.events.register(
            "before-parameter-build.*.*", lambda model, **_: sent.append(model.name)
        )
    return sent


BAD = [
    ({"serverless_memory_mb": 3000}, "serverless_memory_mb: 3000 MB is not a serverless memory size"),
    ({"serverless_memory_mb": 8192}, "1024-6144 MB in 1024 MB steps"),
    ({"serverless_max_concurrency": 0}, "serverless_max_concurrency: 0 is outside 1-200"),
    ({"serverless_max_concurrency": 201}, "201 is outside 1-200"),
    ({"endpoint_instance_type": "ml.g5.xlarge"}, "ml.g5.xlarge is an accelerated (GPU"),
    ({"endpoint_instance_type": "ml.inf2.xlarge"}, "serverless endpoints run on CPU only"),
]


@pytest.mark.parametrize(("bad", "message"), BAD)
def test_serverless_limits_are_refused_before_any_request(aws, requests_sent, bad, message):
    config = AwsConfig().model_copy(update={"endpoint_mode": "serverless", **bad})  # unvalidated, on purpose
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        run_deploy(aws, config=config)
    assert requests_sent == []


def test_a_gpu_serve_image_is_refused_for_serverless_before_any_request(aws, requests_sent):
    image = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/demo-serve-gpu@sha256:" + "a" * 64
    with pytest.raises(UsageError, match="is a GPU build, and serverless endpoints have no GPU"):
        run_deploy(aws, config=serverless(), image_uri=image)
    assert requests_sent == []


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"async_output": "bucket/prefix/"}, "'bucket/prefix/' is not an S3 URI"),
        ({"async_output": "https://demo-bucket.s3.amazonaws.com/x/"}, "is not an S3 URI"),
        ({"async_max_concurrent_invocations": 0}, "0 is outside 1-1000 invocations per instance"),
    ],
)
def test_async_limits_are_refused_before_any_request(aws, requests_sent, bad, message):
    config = AwsConfig().model_copy(update={"endpoint_mode": "async", **bad})
    with pytest.raises(UsageError, match=message):
        run_deploy(aws, config=config)
    assert requests_sent == []


def test_an_async_deploy_without_a_bucket_or_output_path_is_refused_before_any_request(aws, requests_sent):
    aws.settings = dataclasses.replace(aws.settings, bucket=None)
    with pytest.raises(UsageError, match="an async endpoint writes its answers to S3: set MLOPS_BUCKET"):
        run_deploy(aws, config=asynchronous())
    assert requests_sent == []


@pytest.mark.parametrize(
    ("variant", "extra", "mode"),
    [
        (ASYNC_VARIANT, {}, "serverless"),
        (SERVERLESS_VARIANT, {}, "async"),
        (ASYNC_VARIANT, ASYNC_EXTRA, "realtime"),
    ],
)
def test_a_deploy_in_another_mode_than_the_endpoints_changes_nothing(
    aws, stubs, requests_sent, variant, extra, mode
):
    sagemaker, _runtime = stubs
    stub_existing_in(sagemaker, variant, **extra)

    with pytest.raises(UsageError, match="cannot update an endpoint from one mode to another in place"):
        run_deploy(aws, config=AwsConfig(endpoint_mode=mode))
    assert requests_sent == ["DescribeEndpoint", "DescribeEndpointConfig", "DescribeModel"]  # reads only


# the CLI: --mode and its knobs over mlops.toml


@pytest.fixture
def approved(aws: Aws, monkeypatch: pytest.MonkeyPatch) -> None:
    """An Approved v1 in the registry of project demo, and the environment `mlops` reads."""
    registry.ensure_group(aws, "demo-classification", LiveExecutor(aws.client), TAGS)
    registry.register(
        aws,
        "demo-classification",
        image_uri=f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/demo-serve@sha256:" + "a" * 64,
        model_data_uri="s3://demo-bucket/demo/models/job/output/model.tar.gz",
        metrics={"test_accuracy": 0.9},
        metadata={"training_job": "job"},
        status="Approved",
        description="job: gate passed",
        executor=LiveExecutor(aws.client),
    )
    for name, value in {
        "MLOPS_PROJECT": "demo",
        "AWS_REGION": "us-east-1",
        "MLOPS_BUCKET": "demo-bucket",
        "MLOPS_SAGEMAKER_ROLE_ARN": ROLE,
    }.items():
        monkeypatch.setenv(name, value)


def test_deploy_mode_flags_override_mlops_toml(approved, capsys):
    # mlops.toml says endpoint_mode = "realtime" and serverless_memory_mb = 2048
    code = main(
        ["deploy", "--dry-run", "--version", "1", "--mode", "serverless", "--serverless-memory", "4096"]
    )

    out = capsys.readouterr().out
    assert code == 0, out
    assert "deploying v1: serverless endpoint (4096 MB, at most 10 at once)" in out
    assert "cost (serverless, 4096 MB, up to 10 at once): $0.0000800 per second of processing" in out
    assert '"MemorySizeInMB": 4096' in out and '"InstanceType"' not in out
    assert '"MLOPS_MAX_PAYLOAD_BYTES": "4194304"' in out
    assert "RegisterScalableTarget" not in out


def test_deploy_without_mode_flags_follows_mlops_toml(approved, capsys):
    code = main(["deploy", "--dry-run", "--version", "1"])

    out = capsys.readouterr().out
    assert code == 0, out
    assert "cost (realtime, 1 x ml.m5.large at $0.115/hour): $83.95/month" in out
    assert '"InstanceType": "ml.m5.large"' in out and "ServerlessConfig" not in out


def test_async_dry_run_shows_the_output_path_and_its_cost_model(approved, capsys):
    code = main(["deploy", "--dry-run", "--version", "1", "--mode", "async", "--async-min-instances", "0"])

    out = capsys.readouterr().out
    assert code == 0, out
    assert f'"S3OutputPath": "{OUTPUT}"' in out and f'"S3FailurePath": "{OUTPUT}failures/"' in out
    assert "scales to zero when the queue is empty: an idle month costs $0 in instances" in out
    assert '"MetricName": "HasBacklogWithoutCapacity"' in out


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--mode", "serverless", "--serverless-memory", "3000"],
            "input --serverless-memory: 3000 MB is not",
        ),
        (["--serverless-max-concurrency", "500"], "input --serverless-max-concurrency: 500 is outside 1-200"),
        (["--mode", "async", "--async-output", "not-s3"], "input --async-output: 'not-s3' is not an S3 URI"),
        (["--async-min-instances", "-1"], "input --async-min-instances:"),
    ],
)
def test_a_bad_mode_flag_is_refused_under_its_own_name(approved, capsys, flags, message):
    assert main(["deploy", "--dry-run", "--version", "1", *flags]) == 2
    assert message in capsys.readouterr().err.replace("\n", " ")


def test_mode_flags_are_refused_with_local(capsys):
    assert main(["deploy", "--local", "--mode", "serverless"]) == 2
    assert "--mode chooses a SageMaker endpoint mode (AWS)" in capsys.readouterr().err
