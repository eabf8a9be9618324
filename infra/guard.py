"""The deploy guard: whatever goes wrong, production keeps answering with a model that passed every check,
and what the summary and the registry say is what happened.

    deploy(platform, v)   read what serves -> platform.deploy(v) -> ok, or recover
    verify(platform, v)   after the switch: held-out test images through the endpoint -> ok, or recover
    recover(...)          after a failed deploy, or a verification that failed after the switch:
      1. mark v failed in the registry (Rejected, with the stage and the reason): never picked again
      2. read what the endpoint serves now: a fact, not what the deploy hoped for. SageMaker serves a new
         endpoint config as soon as it is InService, whatever its smoke test said; the local platform
         switches only after one. The guard relies on neither.
      3. v still serves: deploy the version that served before (a rollback); when nothing served before,
         take the endpoint out of service. Nothing serves but something did: bring that back.
      4. a message built from what each step did, and whether production is safe again

The policy lives here once; the platforms provide the mechanisms (deploy, mark_failed, take_down) and
report facts (`endpoint_status`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infra.errors import MlopsError, UsageError
from infra.history import DEPLOY, ROLLBACK
from infra.platform import DeployResult, Platform
from infra.smoke import held_out_samples, smoke_test

# Exit codes (also in infra/cli.py and the README): a failed deploy or verification after which
# production is safe (the previous version serves, or the failed first deployment was taken down), and
# one after which it is not (a failed version may still serve, or nothing serves although something
# did): a person must look.
DEPLOY_FAILED, UNSAFE = 5, 7


class _Unknown:
    def __repr__(self) -> str:
        return "unknown"


UNKNOWN = _Unknown()


@dataclass
class Recovery:
    safe: bool  # no failed version serves, and production serves whatever served before
    serving: int | _Unknown | None
    steps: list[str] = field(default_factory=list)  # what was found and done, in order
    rolled_back: bool = False  # the version that served before was deployed again, and serves

    @property
    def message(self) -> str:
        return "; ".join(self.steps)

    @property
    def exit_code(self) -> int:
        return DEPLOY_FAILED if self.safe else UNSAFE


@dataclass
class Guarded:
    """One guarded deploy: the platform's result, and the recovery when it failed."""

    version: int
    previous: int | None  # what served before the deploy
    result: DeployResult | None  # None when the platform raised
    recovery: Recovery | None = None

    @property
    def ok(self) -> bool:
        return self.result is not None and self.result.ok and self.recovery is None

    @property
    def message(self) -> str:
        if self.recovery is not None:
            return self.recovery.message
        return self.result.message if self.result else ""

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else (self.recovery.exit_code if self.recovery else DEPLOY_FAILED)


def serving(platform: Platform) -> int | _Unknown | None:
    """The version the endpoint serves now, read from the endpoint itself; UNKNOWN when it cannot be read."""
    try:
        status = platform.endpoint_status()
    except MlopsError:
        return UNKNOWN
    return status.version if status.running else None


def deploy(
    platform: Platform, version: int, *, action: str = DEPLOY, allow_untested: bool = False
) -> Guarded:
    """Deploy `version`; on any failure, recover. A UsageError (not Approved, no test images, a busy port)
    is a refusal before anything changed and is raised as it is."""
    before = serving(platform)
    previous = before if isinstance(before, int) else None
    try:
        result = platform.deploy(version, action=action, allow_untested=allow_untested)
    except UsageError:
        raise
    except MlopsError as exc:
        guarded = Guarded(version, previous, None)
        guarded.recovery = recover(
            platform, version, previous=previous, stage="deploy", reason=str(exc), allow_untested=True
        )
        return guarded
    guarded = Guarded(version, previous, result)
    if not result.ok:
        guarded.recovery = recover(
            platform,
            version,
            previous=previous,
            stage="deploy",
            reason=result.message,
            allow_untested=allow_untested,
        )
    return guarded


def verify(
    platform: Platform,
    version: int,
    *,
    previous: int | None,
    data: Path,
    count: int,
    classes: list[str],
) -> tuple[dict[str, Any], Recovery | None]:
    """After the switch: `count` held-out test images through the platform's invoke (the production
    path). A failure is recovered from as a failed deploy is; returns the check and the recovery."""
    samples = held_out_samples(data, count, classes)
    if samples:
        check = smoke_test(platform.invoke, samples, classes)
    else:
        check = {"ok": False, "images": 0, "errors": ["no test images to verify with"], "accuracy": 0.0}
    if check["ok"]:
        return check, None
    reason = "; ".join(check["errors"])
    return check, recover(platform, version, previous=previous, stage="verify", reason=reason)


def recover(  # noqa: PLR0911 -- one return per state the endpoint can be found in
    platform: Platform,
    version: int,
    *,
    previous: int | None,
    stage: str,
    reason: str,
    allow_untested: bool = False,
) -> Recovery:
    steps = [f"v{version} failed its {stage}: {reason}"]
    try:
        platform.mark_failed(version, stage, reason)
        steps.append(f"v{version} is marked Rejected ({stage} failed) in the registry")
    except MlopsError as exc:
        steps.append(f"v{version} could NOT be marked failed in the registry ({exc})")
    now = serving(platform)
    if isinstance(now, _Unknown):
        steps.append("what the endpoint serves now could not be read: check it before anything else")
        return Recovery(False, UNKNOWN, steps)
    if now == version:
        if previous is not None and previous != version:
            return _restore(platform, previous, steps, failed=version, allow_untested=allow_untested)
        try:
            done = platform.take_down(f"v{version} failed its {stage}")
        except MlopsError as exc:
            steps.append(
                f"v{version} STILL SERVES: nothing served before it, and taking it out of service "
                f"failed ({exc})"
            )
            return Recovery(False, version, steps)
        steps.append(f"nothing served before it, so it was taken out of service ({done}): nothing serves")
        return Recovery(True, None, steps)
    if now is None:
        if previous is None:
            steps.append("nothing serves, as before")
            return Recovery(True, None, steps)
        steps.append(f"nothing serves now, although v{previous} did before")
        return _restore(platform, previous, steps, failed=None, allow_untested=allow_untested)
    if now == previous:
        steps.append(f"v{now} still serves (the candidate does not)")
    else:
        steps.append(f"v{now} serves")
    return Recovery(True, now, steps)


def _restore(
    platform: Platform, previous: int, steps: list[str], *, failed: int | None, allow_untested: bool
) -> Recovery:
    try:
        back = platform.deploy(previous, action=ROLLBACK, allow_untested=allow_untested)
        problem = None if back.ok else back.message
    except MlopsError as exc:
        problem = str(exc)
    if problem is None:
        steps.append(f"rolled back to v{previous}, which serves again")
        return Recovery(True, previous, steps, rolled_back=True)
    now = serving(platform)
    if now == previous:
        steps.append(f"v{previous} serves again, although its rollback reported: {problem}")
        return Recovery(True, previous, steps)
    if failed is not None and now == failed:
        steps.append(f"v{failed} STILL SERVES: the rollback to v{previous} failed ({problem})")
    else:
        what = "what serves is unknown" if isinstance(now, _Unknown) else f"serving: {_label(now)}"
        steps.append(f"the rollback to v{previous} failed ({problem}); {what}")
    return Recovery(False, now, steps)


def _label(version: int | None) -> str:
    return f"v{version}" if version is not None else "nothing"
