"""Cost arithmetic: job and endpoint costs from the price table, and how they are shown."""

from __future__ import annotations

import pytest

from infra.aws.costs import (
    PRICES,
    TYPICAL_SPOT_DISCOUNT,
    endpoint_monthly_cost,
    format_cost,
    hourly_price,
    job_cost,
)


def test_the_table_covers_the_types_the_project_uses():
    for name in (
        "ml.m5.large",
        "ml.m5.xlarge",
        "ml.m5.2xlarge",
        "ml.c5.xlarge",
        "ml.c5.2xlarge",
        "ml.g4dn.xlarge",
        "ml.g4dn.2xlarge",
        "ml.g5.xlarge",
        "ml.g5.2xlarge",
        "ml.g5.4xlarge",
        "ml.p3.2xlarge",
        "ml.g6.xlarge",
        "ml.p4d.24xlarge",
    ):
        assert name in PRICES


def test_spot_prices_are_the_typical_discount_off_on_demand():
    for on_demand, spot in PRICES.values():
        assert 0 < spot < on_demand
        assert spot == pytest.approx(on_demand * (1 - TYPICAL_SPOT_DISCOUNT), abs=1e-4)


def test_an_hour_on_one_instance_costs_its_hourly_price():
    on_demand, spot = PRICES["ml.g5.xlarge"]
    assert job_cost("ml.g5.xlarge", 1, 3600, spot=False) == pytest.approx(on_demand)
    assert job_cost("ml.g5.xlarge", 1, 3600, spot=True) == pytest.approx(spot)


def test_job_cost_scales_with_instances_and_seconds():
    one = job_cost("ml.p3.2xlarge", 1, 1800, spot=False)
    assert one is not None
    assert job_cost("ml.p3.2xlarge", 4, 1800, spot=False) == pytest.approx(4 * one)
    assert job_cost("ml.p3.2xlarge", 1, 3600, spot=False) == pytest.approx(2 * one)
    assert job_cost("ml.p3.2xlarge", 2, 0, spot=True) == 0


def test_an_unknown_instance_type_has_no_price():
    assert job_cost("ml.x99.mega", 1, 3600, spot=True) is None
    assert endpoint_monthly_cost("ml.x99.mega", 1) is None
    assert hourly_price("ml.x99.mega") is None


def test_negative_inputs_are_a_programming_error():
    with pytest.raises(ValueError, match="negative"):
        job_cost("ml.m5.large", 1, -1, spot=False)
    with pytest.raises(ValueError, match="negative"):
        endpoint_monthly_cost("ml.m5.large", -1)


def test_an_endpoint_month_is_730_hours_on_demand():
    assert endpoint_monthly_cost("ml.m5.large", 1) == pytest.approx(PRICES["ml.m5.large"][0] * 730)
    assert endpoint_monthly_cost("ml.m5.large", 2, hours=24) == pytest.approx(PRICES["ml.m5.large"][0] * 48)


@pytest.mark.parametrize(
    ("value", "shown"),
    [(None, "unknown"), (1.234, "$1.23"), (0.0, "$0.00"), (0.001, "<$0.01"), (1234.5, "$1,234.50")],
)
def test_costs_are_shown_in_dollars_or_as_unknown(value, shown):
    assert format_cost(value) == shown
