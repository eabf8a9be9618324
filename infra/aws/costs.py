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
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

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
