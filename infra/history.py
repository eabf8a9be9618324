"""Production history: which version served, from when to when, and where a rollback goes.

Both platforms record one event each time what the endpoint serves changes: a deploy or rollback that
left a version serving (`version`), or the endpoint taken out of service (`version` None). The events are
the record; the intervals and the rollback target are derived from them here, the same way on both.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

DEPLOY, ROLLBACK, DOWN = "deploy", "rollback", "down"


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class ProductionEvent:
    version: int | None  # what serves from `at` on; None: nothing
    action: str  # deploy | rollback | down
    at: str  # ISO 8601, UTC
    previous: int | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "action": self.action,
            "at": self.at,
            "previous": self.previous,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProductionEvent:
        version = data.get("version")
        previous = data.get("previous")
        return cls(
            version=None if version is None else int(version),
            action=str(data.get("action", DEPLOY)),
            at=str(data.get("at", "")),
            previous=None if previous is None else int(previous),
            reason=str(data.get("reason", "")),
        )


@dataclass(frozen=True)
class Interval:
    version: int
    start: str
    end: str | None  # None: still serving
    action: str  # how it came to serve


def intervals(events: Iterable[ProductionEvent]) -> list[Interval]:
    """Each stretch of time one version served, oldest first."""
    spans: list[Interval] = []
    for event in events:
        if spans and spans[-1].end is None:
            last = spans[-1]
            if last.version == event.version:
                continue  # the same version deployed again: one unbroken stretch
            spans[-1] = Interval(last.version, last.start, event.at, last.action)
        if event.version is not None:
            spans.append(Interval(event.version, event.at, None, event.action))
    return spans


def rollback_target(
    events: Iterable[ProductionEvent], current: int | None, eligible: Callable[[int], bool]
) -> int | None:
    """The version that served before `current`: replay the history as a stack where a deploy pushes
    and a rollback pops back to its target, so repeated rollbacks walk further back, never forth.
    Versions no longer eligible (marked failed since, deleted) are passed over."""
    stack: list[int] = []
    for event in events:
        if event.version is None:
            continue  # out of service for a while: what served before still counts as before
        if event.action == ROLLBACK and event.version in stack:
            del stack[len(stack) - stack[::-1].index(event.version) :]
        else:
            stack.append(event.version)
    for version in reversed(stack):
        if version != current and eligible(version):
            return version
    return None
