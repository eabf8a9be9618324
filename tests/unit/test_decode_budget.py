"""The server's budget of decoding memory for the images in flight (serve.app.DecodeBudget)."""

from __future__ import annotations

import pytest

from serve.app import DecodeBudget
from serve.codecs import BadRequest

MB = 1024 * 1024


def test_reservations_add_up_to_the_limit_and_are_given_back_per_request() -> None:
    budget = DecodeBudget(10 * MB)
    first, second = budget.hold(), budget.hold()
    first.reserve(4 * MB)
    first.reserve(2 * MB)  # a JSON body's second image
    second.reserve(4 * MB)
    assert budget.used == 10 * MB
    with pytest.raises(BadRequest) as full:
        budget.hold().reserve(1)
    assert full.value.status == 503 and full.value.headers == {"Retry-After": "1"}
    assert "hold 10.0 of 10.0 MB" in full.value.message
    first.release()
    assert budget.used == 4 * MB
    budget.hold().reserve(6 * MB)  # room again once the first request is answered
    second.release()
    second.release()  # a second release gives nothing back twice
    assert budget.used == 6 * MB


def test_an_image_larger_than_the_whole_budget_is_413_not_503() -> None:
    budget = DecodeBudget(MB)
    hold = budget.hold()
    with pytest.raises(BadRequest) as refused:
        hold.reserve(2 * MB)
    assert refused.value.status == 413  # retrying would never help
    assert "MLOPS_MAX_DECODED_MB" in refused.value.message
    assert budget.used == 0 and hold.held == 0
