"""Endpoint modes without AWS: the limits of each mode, how mlops.toml refuses them at load time, and the
cost model of each mode."""

from __future__ import annotations

from typing import Any

import pytest

from infra.aws import costs, modes
from infra.errors import UsageError
from infra.settings import AwsConfig, Config

GATE = {"version": 1, "min": {"test_accuracy": 0.5}}


def load(**aws: Any) -> Config:
    return Config.from_mapping({"project": {"name": "demo"}, "gate": GATE, "aws": aws}, source="mlops.toml")


def check(mode: str, **overrides: Any) -> list[str]:
    args: dict[str, Any] = {
        "instance_type": "ml.m5.large",
        "serverless_memory_mb": 2048,
        "serverless_max_concurrency": 10,
        "async_output": None,
        "async_max_concurrent_invocations": 4,
    }
    args.update(overrides)
    return [p.setting for p in modes.problems(mode, **args)]


def test_the_defaults_are_valid_in_every_mode():
    for mode in modes.MODES:
        assert check(mode) == []


@pytest.mark.parametrize("memory", [1024, 2048, 3072, 4096, 5120, 6144])
def test_serverless_memory_in_1024_mb_steps_is_accepted(memory):
    assert check("serverless", serverless_memory_mb=memory) == []


@pytest.mark.parametrize("memory", [0, 512, 1000, 1536, 7168])
def test_other_serverless_memory_sizes_are_refused(memory):
    assert check("serverless", serverless_memory_mb=memory) == ["serverless_memory_mb"]


@pytest.mark.parametrize(("value", "ok"), [(0, False), (1, True), (200, True), (201, False)])
def test_serverless_max_concurrency_is_1_to_200(value, ok):
    assert (check("serverless", serverless_max_concurrency=value) == []) is ok


@pytest.mark.parametrize(
    ("instance_type", "accelerated"),
    [
        ("ml.m5.large", False),
        ("ml.c5.xlarge", False),
        ("ml.t2.medium", False),
        ("ml.g4dn.xlarge", True),
        ("ml.g5.2xlarge", True),
        ("ml.p3.2xlarge", True),
        ("ml.inf2.xlarge", True),
        ("ml.trn1.2xlarge", True),
    ],
)
def test_accelerated_instance_types_are_refused_only_for_serverless(instance_type, accelerated):
    assert modes.is_accelerated(instance_type) is accelerated
    assert (check("serverless", instance_type=instance_type) == ["endpoint_instance_type"]) is accelerated
    assert check("realtime", instance_type=instance_type) == []
    assert check("async", instance_type=instance_type) == []


@pytest.mark.parametrize(
    ("image", "gpu"),
    [
        ("1.dkr.ecr.us-east-1.amazonaws.com/demo-serve@sha256:" + "a" * 64, False),
        ("1.dkr.ecr.us-east-1.amazonaws.com/demo-serve-gpu@sha256:" + "a" * 64, True),
        ("1.dkr.ecr.us-east-1.amazonaws.com/demo-serve:abc123-cuda", True),
        ("1.dkr.ecr.us-east-1.amazonaws.com/demo-serve:abc123-cu121", True),
        ("1.dkr.ecr.us-east-1.amazonaws.com/gpuless-serve:abc", False),  # a word, not a substring
    ],
)
def test_gpu_serve_images_are_told_by_their_name(image, gpu):
    assert modes.is_gpu_image(image) is gpu
    assert (check("serverless", image_uri=image) == ["endpoint_mode"]) is gpu


@pytest.mark.parametrize(
    ("output", "ok"),
    [
        ("s3://bucket/prefix/", True),
        ("s3://my.bucket-1", True),
        ("bucket/prefix/", False),
        ("https://bucket.s3.amazonaws.com/prefix/", False),
        ("s3://B/upper", False),
        ("s3://bucket/" + "k" * 510, False),
    ],
)
def test_the_async_output_must_be_an_s3_uri(output, ok):
    assert (check("async", async_output=output) == []) is ok


def test_async_max_concurrent_invocations_is_1_to_1000():
    assert check("async", async_max_concurrent_invocations=0) == ["async_max_concurrent_invocations"]
    assert check("async", async_max_concurrent_invocations=1001) == ["async_max_concurrent_invocations"]
    assert check("async", async_max_concurrent_invocations=1000) == []


def test_an_unknown_mode_is_refused():
    assert check("batch") == ["endpoint_mode"]


def test_payload_caps_match_sagemakers_front_door():
    assert modes.PAYLOAD_CAP == {"realtime": 6291456, "serverless": 4194304, "async": 1073741824}


def test_async_paths_default_under_the_project_bucket():
    output = modes.async_output_path(None, bucket="b", project="demo")
    assert output == "s3://b/demo/async-output/"
    assert modes.async_failure_path(output) == "s3://b/demo/async-output/failures/"
    assert modes.async_input_path(output) == "s3://b/demo/async-output/requests/"
    assert modes.async_output_path("s3://x/answers", bucket="b", project="demo") == "s3://x/answers/"
    assert modes.async_output_path(None, bucket=None, project="demo") is None


# mlops.toml


def test_mlops_toml_refuses_impossible_mode_settings_when_read():
    with pytest.raises(UsageError, match=r"mlops.toml: \[aws\] .*serverless_memory_mb: 1500 MB is not"):
        load(endpoint_mode="serverless", serverless_memory_mb=1500)
    with pytest.raises(UsageError, match=r"ml\.g5\.xlarge is an accelerated"):
        load(endpoint_mode="serverless", endpoint_instance_type="ml.g5.xlarge")
    with pytest.raises(UsageError, match="not one of realtime, serverless, async"):
        load(endpoint_mode="streaming")


def test_a_gpu_instance_type_is_fine_for_realtime_and_async():
    assert load(endpoint_instance_type="ml.g5.xlarge").aws.endpoint_mode == "realtime"
    assert load(endpoint_mode="async", endpoint_instance_type="ml.g5.xlarge").aws.endpoint_mode == "async"


def test_scale_to_zero_needs_room_above_it():
    assert load(endpoint_mode="async", async_min_instances=0).aws.async_min_instances == 0
    with pytest.raises(UsageError, match="async_min_instances"):
        load(async_min_instances=3, autoscaling={"max_instances": 2})


def test_the_repository_mlops_toml_is_realtime_with_valid_knobs():
    from infra.settings import REPO_ROOT

    aws = Config.load(REPO_ROOT / "mlops.toml").aws
    assert aws.endpoint_mode == "realtime" and aws.async_output is None
    for mode in modes.MODES:  # every mode could be switched on with the knobs as they are
        AwsConfig.model_validate({**aws.model_dump(), "endpoint_mode": mode})


# the cost model of each mode


def test_realtime_costs_instance_hours():
    line = costs.deploy_cost_line(AwsConfig(endpoint_instance_type="ml.m5.large", endpoint_instance_count=2))
    monthly = costs.PRICES["ml.m5.large"][0] * 730
    assert line.startswith("cost (realtime, 2 x ml.m5.large at $0.115/hour): ")
    assert f"${monthly * 2:,.2f}/month" in line and "up to" in line


def test_serverless_costs_compute_seconds_times_memory_plus_data():
    # 1M requests x 0.1 s x 2 GB x $0.00002 = $4.00 compute; 1M x 100 KB = 100 GB x $0.016 = $1.60 data
    assert costs.serverless_cost(2048, 1_000_000) == pytest.approx(5.60)
    assert costs.serverless_cost(
        1024, 1_000_000, seconds_per_request=1, bytes_per_request=0
    ) == pytest.approx(20.0)
    line = costs.deploy_cost_line(AwsConfig(endpoint_mode="serverless", serverless_memory_mb=2048))
    assert "$0.0000400 per second of processing" in line
    assert "$5.60 per 1M requests of 100 ms and 100 KB each" in line
    assert "nothing while idle" in line and "no per-request fee" in line
    with pytest.raises(ValueError, match="must not be negative"):
        costs.serverless_cost(2048, -1)


def test_async_costs_instance_hours_and_says_whether_it_scales_to_zero():
    always = costs.deploy_cost_line(AwsConfig(endpoint_mode="async", async_min_instances=1))
    assert always.startswith("cost (async, 1 x ml.m5.large at $0.115/hour): $83.95/month")
    assert "at least 1 always running: $83.95/month when idle" in always
    assert "async_min_instances = 0 lets an empty queue scale it to zero" in always
    idle = costs.deploy_cost_line(AwsConfig(endpoint_mode="async", async_min_instances=0))
    assert "scales to zero when the queue is empty: an idle month costs $0 in instances" in idle


def test_an_instance_type_without_a_price_is_said_to_be_unknown():
    line = costs.deploy_cost_line(AwsConfig(endpoint_instance_type="ml.x99.mega"))
    assert (
        line == "cost (realtime, 1 x ml.x99.mega): unknown (no price for ml.x99.mega in infra/aws/costs.py)"
    )


def test_endpoint_status_says_what_each_mode_runs_on() -> None:
    from infra.aws.endpoints import EndpointState
    from infra.aws.platform import _capacity

    def state(mode: str, instance_type: str | None, count: int | None) -> EndpointState:
        return EndpointState("e", "InService", "c", None, None, None, instance_type, count, mode)

    assert _capacity(state("serverless", None, None)) == "serverless"
    assert _capacity(state("realtime", "ml.m5.large", 2)) == "2 x ml.m5.large"
    assert _capacity(state("async", "ml.m5.large", 1)) == "1 x ml.m5.large, async"
