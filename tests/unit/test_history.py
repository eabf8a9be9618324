"""Production history: the intervals a person reads, and where a rollback goes."""

from __future__ import annotations

from infra.history import DEPLOY, DOWN, ROLLBACK, ProductionEvent, intervals, rollback_target


def events(*steps: tuple[int | None, str]) -> list[ProductionEvent]:
    return [
        ProductionEvent(v, action, f"2026-01-0{i + 1}T00:00:00+00:00") for i, (v, action) in enumerate(steps)
    ]


def test_intervals_say_which_version_served_from_when_to_when():
    spans = intervals(events((1, DEPLOY), (2, DEPLOY), (1, ROLLBACK)))
    assert [(s.version, s.start[:10], s.end and s.end[:10], s.action) for s in spans] == [
        (1, "2026-01-01", "2026-01-02", DEPLOY),
        (2, "2026-01-02", "2026-01-03", DEPLOY),
        (1, "2026-01-03", None, ROLLBACK),
    ]


def test_redeploying_the_serving_version_is_one_stretch_and_down_closes_it():
    spans = intervals(events((1, DEPLOY), (1, DEPLOY), (None, DOWN)))
    assert [(s.version, s.start[:10], s.end and s.end[:10]) for s in spans] == [
        (1, "2026-01-01", "2026-01-03")
    ]


def test_rollbacks_walk_back_never_forth():
    history = events((1, DEPLOY), (2, DEPLOY), (3, DEPLOY))
    assert rollback_target(history, 3, lambda _v: True) == 2
    history += events((2, ROLLBACK))
    assert rollback_target(history, 2, lambda _v: True) == 1
    history += events((1, ROLLBACK))
    assert rollback_target(history, 1, lambda _v: True) is None


def test_a_rollback_passes_over_versions_no_longer_approved():
    history = events((1, DEPLOY), (2, DEPLOY), (3, DEPLOY))
    assert rollback_target(history, 3, lambda v: v != 2) == 1


def test_after_the_endpoint_went_down_a_rollback_brings_back_the_last_good_version():
    history = events((1, DEPLOY), (2, DEPLOY), (None, DOWN))
    assert rollback_target(history, None, lambda v: v != 2) == 1


def test_events_round_trip_through_json():
    event = ProductionEvent(
        None, DOWN, "2026-01-01T00:00:00+00:00", previous=3, reason="v3 failed its verify"
    )
    assert ProductionEvent.from_dict(event.to_dict()) == event
