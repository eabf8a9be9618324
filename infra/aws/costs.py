"""What SageMaker time costs: a small price table and the arithmetic on it. Pure: no AWS calls.

PRICES are APPROXIMATE public list prices in US dollars per instance-hour for region us-east-1, taken
from the Amazon SageMaker AI pricing page (https://aws.amazon.com/sagemaker/pricing/, on-demand
training and real-time inference tables) as remembered in 2025. They are for reports and budgets (the
GitHub job summary, `mlops jobs`, cleanup), never for billing: other regions cost more, prices change,
and hosting prices differ from training prices by a few percent for some types. The AWS bill and Cost
Explorer are the truth.

SageMaker publishes no spot price list. Managed spot training typically saves about 70% (AWS says up
to 90%), so the spot column is the on-demand price less TYPICAL_SPOT_DISCOUNT.

One trap: SageMaker's `BillableTimeInSeconds` for a managed spot job already has the discount folded
in (savings = 1 - BillableTimeInSeconds / TrainingTimeInSeconds), and those seconds are billed at the
on-demand rate. So price reported billable seconds with `spot=False`; `spot=True` is for estimating
wall-clock seconds of a spot job (a plan, or a job whose billable time is not reported yet).

Endpoint modes (`deploy_cost_line`, printed by `mlops deploy` and its `--dry-run`):
  realtime    instance hours: count x hourly price x 730 hours a month, whether requests come or not
  serverless  compute seconds x memory: SERVERLESS_GB_SECOND per GB of configured memory per second of
              processing, plus SERVERLESS_DATA_GB per GB of request and answer data; no charge while idle
              and no per-request fee. Shown per million requests of SERVERLESS_REQUEST_SECONDS and
              SERVERLESS_REQUEST_BYTES each (assumptions, said in the line), not per month: the monthly
              figure is that times your traffic
  async       instance hours as real-time, for the instances that run: at async_min_instances = 0 an
              empty queue scales the fleet to zero and an idle hour costs nothing
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from infra.settings import AwsConfig

HOURS_PER_MONTH = 730  # 365 * 24 / 12, the month AWS's own calculators use
TYPICAL_SPOT_DISCOUNT = 0.70

# instance type -> on-demand $/hour (us-east-1, approximate, see the module docstring)
_ON_DEMAND: dict[str, float] = {
    "ml.t2.medium": 0.056,
    "ml.m5.large": 0.115,
    "ml.m5.xlarge": 0.23,
    "ml.m5.2xlarge": 0.461,
    "ml.m5.4xlarge": 0.922,
    "ml.c5.large": 0.102,
    "ml.c5.xlarge": 0.204,
    "ml.c5.2xlarge": 0.408,
    "ml.c5.4xlarge": 0.816,
    "ml.g4dn.xlarge": 0.736,
    "ml.g4dn.2xlarge": 0.94,
    "ml.g4dn.4xlarge": 1.505,
    "ml.g4dn.12xlarge": 4.89,
    "ml.g5.xlarge": 1.408,
    "ml.g5.2xlarge": 1.515,
    "ml.g5.4xlarge": 2.03,
    "ml.g5.12xlarge": 7.09,
    "ml.g6.xlarge": 1.006,
    "ml.g6.2xlarge": 1.222,
    "ml.p3.2xlarge": 3.825,
    "ml.p3.8xlarge": 14.688,
    "ml.p4d.24xlarge": 37.688,
}

# Serverless Inference, on-demand, us-east-1, from the same pricing page ("Serverless Inference" tab) as
# remembered in 2025: $0.0000200 per second at 1024 MB, rising linearly to $0.0001200 at 6144 MB, i.e.
# $0.00002 per GB-second; data processing $0.016 per GB in and per GB out. Approximate, like PRICES.
SERVERLESS_GB_SECOND = 0.00002
SERVERLESS_DATA_GB = 0.016
# The request the per-million line assumes: 100 ms of processing, 100 KB in and out together (a PNG or
# two and a JSON answer).
SERVERLESS_REQUEST_SECONDS = 0.1
SERVERLESS_REQUEST_BYTES = 100_000

# instance type -> (on-demand $/hour, typical spot $/hour)
PRICES: dict[str, tuple[float, float]] = {
    name: (price, round(price * (1 - TYPICAL_SPOT_DISCOUNT), 4)) for name, price in _ON_DEMAND.items()
}


def hourly_price(instance_type: str, *, spot: bool = False) -> float | None:
    """$/hour for one instance, or None when the type is not in the table."""
    prices = PRICES.get(instance_type)
    if prices is None:
        return None
    return prices[1] if spot else prices[0]


def job_cost(instance_type: str, instance_count: int, billable_seconds: float, spot: bool) -> float | None:
    """Dollars for `instance_count` instances over `billable_seconds`; None for an unknown type.

    `spot=True` prices the seconds at the typical spot rate. Do not combine it with SageMaker's
    BillableTimeInSeconds of a spot job, which is already discounted (see the module docstring).
    """
    if instance_count < 0 or billable_seconds < 0:
        raise ValueError(
            f"instance_count ({instance_count}) and seconds ({billable_seconds}) must not be negative"
        )
    price = hourly_price(instance_type, spot=spot)
    if price is None:
        return None
    return price * instance_count * billable_seconds / 3600


def endpoint_monthly_cost(instance_type: str, count: int, hours: float = HOURS_PER_MONTH) -> float | None:
    """Dollars for a real-time endpoint running `count` on-demand instances for `hours` (a month)."""
    if count < 0 or hours < 0:
        raise ValueError(f"count ({count}) and hours ({hours}) must not be negative")
    price = hourly_price(instance_type)
    if price is None:
        return None
    return price * count * hours


def serverless_cost(
    memory_mb: int,
    requests: float,
    *,
    seconds_per_request: float = SERVERLESS_REQUEST_SECONDS,
    bytes_per_request: float = SERVERLESS_REQUEST_BYTES,
) -> float:
    """Dollars for `requests` serverless invocations: compute (GB-seconds) plus data processed."""
    if min(memory_mb, requests, seconds_per_request, bytes_per_request) < 0:
        raise ValueError("memory, requests, seconds and bytes must not be negative")
    compute = requests * seconds_per_request * (memory_mb / 1024) * SERVERLESS_GB_SECOND
    data = requests * bytes_per_request / 1e9 * SERVERLESS_DATA_GB
    return compute + data


def deploy_cost_line(aws: AwsConfig) -> str:
    """One line: what the endpoint `aws` describes costs, by the model of its mode (module docstring)."""
    mode, kind, count = aws.endpoint_mode, aws.endpoint_instance_type, aws.endpoint_instance_count
    most = aws.autoscaling.max_instances
    if mode == "serverless":
        per_second = aws.serverless_memory_mb / 1024 * SERVERLESS_GB_SECOND
        million = serverless_cost(aws.serverless_memory_mb, 1_000_000)
        return (
            f"cost (serverless, {aws.serverless_memory_mb} MB, up to {aws.serverless_max_concurrency} at "
            f"once): ${per_second:.7f} per second of processing + ${SERVERLESS_DATA_GB} per GB of data; "
            f"{format_cost(million)} per 1M requests of {SERVERLESS_REQUEST_SECONDS * 1000:g} ms and "
            f"{SERVERLESS_REQUEST_BYTES // 1000} KB each; nothing while idle (no instance hours, no "
            "per-request fee)"
        )
    hourly = hourly_price(kind)
    if hourly is None:
        return f"cost ({mode}, {count} x {kind}): unknown (no price for {kind} in infra/aws/costs.py)"
    if mode == "async":
        low = aws.async_min_instances
        floor = (
            "scales to zero when the queue is empty: an idle month costs $0 in instances (the first "
            "request after that waits minutes for an instance)"
            if low == 0
            else f"at least {low} always running: {format_cost(hourly * low * HOURS_PER_MONTH)}/month when "
            "idle; async_min_instances = 0 lets an empty queue scale it to zero"
        )
        return (
            f"cost (async, {count} x {kind} at ${hourly:g}/hour): "
            f"{format_cost(hourly * count * HOURS_PER_MONTH)}/month with {count} running around the "
            f"clock, up to {format_cost(hourly * most * HOURS_PER_MONTH)} at {most}; billed per instance "
            f"hour as the queue's autoscaling runs them; {floor}"
        )
    return (
        f"cost (realtime, {count} x {kind} at ${hourly:g}/hour): "
        f"{format_cost(hourly * count * HOURS_PER_MONTH)}/month ({HOURS_PER_MONTH} instance hours each, "
        f"whether requests come or not), up to {format_cost(hourly * most * HOURS_PER_MONTH)} when "
        f"autoscaling reaches {most}"
    )


def format_cost(value: float | None) -> str:
    """Dollars for display: "$1.23", "<$0.01" when it would round to nothing, "unknown" for None."""
    if value is None:
        return "unknown"
    if 0 < value < 0.005:
        return "<$0.01"
    return f"${value:,.2f}"


def billing_line(billing: Mapping[str, Any]) -> str:
    """One line for a job's billing (TrainingOutcome.billing()): instances, seconds, savings, cost."""
    savings = billing.get("spot_savings")
    spot = " spot" if billing.get("spot") else ""
    return (
        f"{billing.get('instance_count')} x {billing.get('instance_type')}{spot}, "
        f"training {billing.get('training_seconds')} s, billable {billing.get('billable_seconds')} s, "
        f"spot savings {f'{savings:.0%}' if savings is not None else 'n/a'}, "
        f"estimated cost {format_cost(billing.get('estimated_cost'))}"
    )
