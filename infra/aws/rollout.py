"""SageMaker endpoint rollouts: guarded blue/green deploys, and an honest account of how they ended.

Stages of `deploy`:
  1. read the endpoint: DescribeEndpoint -> its endpoint config -> its model -> the registry package
  2. CreateModel (PrimaryContainer.ModelPackageName: the registry version, so lineage is recorded) and
     CreateEndpointConfig, both named `<project>-v<version>-<UTC stamp>`
  3. PutMetricAlarm x2 (Invocation5XXErrors, ModelLatency): the alarms the rollout is guarded by
  4. no endpoint yet: CreateEndpoint. Otherwise UpdateEndpoint with a blue/green DeploymentConfig:
     ALL_AT_ONCE on one instance, CANARY on more, a bake period, AutoRollbackConfiguration on the alarms
  5. wait (aws.sleep between DescribeEndpoint polls) while Creating/Updating/RollingBack, reporting each
     status change
  6. judge. InService on the NEW config: deployed. InService on the OLD config: SageMaker rolled back on
     its own, which DescribeEndpoint does not call a failure (no FailureReason, status InService): only
     comparing EndpointConfigName tells, and that is reported as a failure naming the alarm(s) that fired.
     Failed: the FailureReason.
  7. autoscaling (target tracking on invocations per instance) whenever the endpoint ends InService
  8. smoke test: held-out images through InvokeEndpoint (`infra.smoke.smoke_test`)
Nothing here rolls back after a failed smoke test: the caller does, by deploying an older package.
The requests themselves, and `describe` / `invoke`, are built in `infra.aws.endpoints`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from infra.aws.endpoints import (
    PROVISION_SECONDS,
    EndpointState,
    Tags,
    _look,
    _scaling_registered,
    alarm_calls,
    alarm_names,
    autoscaling_calls,
    create_endpoint_call,
    deployment_config,
    deregister_call,
    describe,
    endpoint_config_call,
    endpoint_name,
    invoke,
    model_call,
    resource_name,
    update_endpoint_call,
)
from infra.aws.errors import aws_errors
from infra.aws.plan import Call, Executor
from infra.aws.session import Aws
from infra.errors import MlopsError
from infra.settings import AwsConfig
from infra.smoke import Sample, smoke_test

IN_PROGRESS = ("Creating", "Updating", "SystemUpdating", "RollingBack")
# SageMaker sets Updating when UpdateEndpoint returns. Should a read still show the old config InService
# before any sign of the update, that is not believed for this many polls: a rollback needs the update
# to have run first (minutes of provisioning), so it cannot be what the first read shows.
STALE_POLLS = 2

Events = Callable[[str], None]


@dataclass
class DeployOutcome:
    ok: bool
    message: str
    endpoint: str
    config_name: str  # the config this deploy created
    previous_config: str | None  # what served before it (None on a first deployment)
    rolled_back: bool = False  # True when the endpoint is back on previous_config
    smoke: dict[str, Any] | None = None


def deploy(
    aws: Aws,
    *,
    project: str,
    package_arn: str,
    version: int,
    role_arn: str,
    config: AwsConfig,
    executor: Executor,
    tags: Tags,
    samples: list[Sample],
    classes: list[str],
    on_event: Events,
    poll_seconds: float = 30,
    timeout_seconds: float = 3600,
    now: float | None = None,
) -> DeployOutcome:
    endpoint = endpoint_name(project)
    name = resource_name(project, version, now)
    current, known = _look(executor, lambda: describe(aws, endpoint), assume=None)
    if not known:
        on_event(f"dry run: cannot read endpoint {endpoint}; planning an update of an existing endpoint")
    if current is not None and current.status not in ("InService", "Failed"):
        reason = f" ({current.failure_reason})" if current.failure_reason else ""
        return DeployOutcome(
            False,
            f"endpoint {endpoint} is {current.status}{reason}: another deployment is in progress or the "
            "endpoint needs attention; nothing was changed",
            endpoint,
            name,
            current.config_name,
        )
    # A Failed endpoint serves nothing and cannot be updated: it is deleted and created again.
    replacing = current is not None and current.status == "Failed"
    previous = None if replacing else current
    rollout = _Rollout(aws, executor, on_event, endpoint, name, version, previous, replacing)
    count = _instance_count(config, previous)
    plan = [
        model_call(name, package_arn=package_arn, role_arn=role_arn, tags=tags),
        endpoint_config_call(
            name,
            model_name=name,
            instance_type=config.endpoint_instance_type,
            instance_count=count,
            tags=tags,
        ),
        *alarm_calls(endpoint, config.alarms, tags=tags),
    ]
    deadline = timeout_seconds
    if previous is not None or not known:
        deployment = deployment_config(
            alarm_names(endpoint),
            instance_count=count,
            bake_seconds=config.bake_seconds,
            canary_percent=config.canary_percent,
        )
        # SageMaker bounds the update by MaximumExecutionTimeoutInSeconds, then rolls back: stop watching
        # only after that, or an update SageMaker is still finishing would be reported as failed.
        limit = deployment["BlueGreenUpdatePolicy"]["MaximumExecutionTimeoutInSeconds"]
        deadline = max(timeout_seconds, limit + PROVISION_SECONDS)
        if previous is not None and previous.instance_type != config.endpoint_instance_type:
            # UpdateEndpoint refuses to change the instance type of a variant that is an autoscaling target.
            registered, _ = _look(executor, lambda: _scaling_registered(aws, endpoint), assume=False)
            if registered:
                plan.append(deregister_call(endpoint))
        plan.append(update_endpoint_call(endpoint, name, deployment))
    else:
        plan.append(create_endpoint_call(endpoint, name, tags))
    # Registered on every deploy, not only when max_instances > 1: RegisterScalableTarget is idempotent,
    # and lowering max_instances to 1 then takes effect instead of a stale target still scaling out.
    scale = autoscaling_calls(
        endpoint,
        min_instances=config.autoscaling.min_instances,
        max_instances=config.autoscaling.max_instances,
        invocations_per_instance=config.autoscaling.invocations_per_instance,
        tags=tags,
    )
    if executor.dry_run:
        for call in rollout.removal() + plan + scale:
            executor(call)
        return rollout.outcome(True, "dry run")
    if replacing and current is not None:
        on_event(f"endpoint {endpoint} is Failed ({current.failure_reason}); deleting it to create it again")
        executor(rollout.removal()[0])
        if not _wait_deleted(aws, endpoint, poll_seconds, timeout_seconds):
            return rollout.outcome(
                False, f"endpoint {endpoint} was still being deleted after {timeout_seconds:g} s"
            )
    for call in plan:
        executor(call)
    on_event(f"{plan[-1].operation} {endpoint}: v{version} as {name} ({plan[-1].why})")
    answer, timed_out = _wait(
        aws,
        endpoint,
        poll_seconds=poll_seconds,
        timeout_seconds=deadline,
        on_event=on_event,
        old_config=rollout.previous,
    )
    if timed_out:
        return rollout.outcome(
            False,
            f"gave up waiting after {deadline:g} s: endpoint {endpoint} is still {answer['EndpointStatus']}; "
            "SageMaker carries on without us, so check it again before deploying anything else",
        )
    return rollout.judge(answer, scale, samples=samples, classes=classes)


@dataclass
class _Rollout:
    """One deploy's names and effects, and how to tell its outcome."""

    aws: Aws
    executor: Executor
    on_event: Events
    endpoint: str
    name: str  # of the model and endpoint config this deploy creates
    version: int
    current: EndpointState | None  # what served before, when anything did
    replacing: bool  # a Failed endpoint is deleted first

    @property
    def previous(self) -> str | None:
        return self.current.config_name if self.current else None

    def removal(self) -> list[Call]:
        delete_call = Call(
            "sagemaker", "DeleteEndpoint", {"EndpointName": self.endpoint}, why="replace Failed"
        )
        return [delete_call] if self.replacing else []

    def outcome(
        self, ok: bool, message: str, *, rolled_back: bool = False, smoke: dict[str, Any] | None = None
    ) -> DeployOutcome:
        return DeployOutcome(ok, message, self.endpoint, self.name, self.previous, rolled_back, smoke)

    def judge(
        self, answer: dict[str, Any], scale: list[Call], *, samples: list[Sample], classes: list[str]
    ) -> DeployOutcome:
        status, serving = answer["EndpointStatus"], answer.get("EndpointConfigName")
        if status != "InService":
            first = (
                "" if self.current else "; this was the first deployment, so there is nothing to roll back to"
            )
            reason = answer.get("FailureReason") or "no reason given"
            return self.outcome(False, f"endpoint {self.endpoint} ended {status}: {reason}{first}")
        scaled = self.autoscale(scale)
        if serving != self.name:
            return self.outcome(
                False, self.rolled_back(serving, answer.get("FailureReason")) + scaled, rolled_back=True
            )
        return self.smoke(samples, classes, scaled)

    def autoscale(self, calls: list[Call]) -> str:
        """Whichever fleet ended up serving gets the configured autoscaling. A failure here is reported,
        not a reason to call a good model bad."""
        try:
            for call in calls:
                self.executor(call)
        except MlopsError as exc:
            self.on_event(f"autoscaling not applied: {exc}")
            return f" (autoscaling NOT applied: {exc})"
        return ""

    def smoke(self, samples: list[Sample], classes: list[str], scaled: str) -> DeployOutcome:
        endpoint, version = self.endpoint, self.version
        if not samples:
            self.on_event("no held-out images: the smoke test is skipped")
            return self.outcome(
                True, f"v{version} is serving on {endpoint}; NOT smoke-tested (no held-out images){scaled}"
            )
        # An empty class list means the classes are unknown, not that no label is valid.
        result = smoke_test(
            lambda body, kind: invoke(self.aws, endpoint, body, kind), samples, classes or None
        )
        self.on_event(f"smoke test: {'passed' if result['ok'] else 'FAILED'} on {result['images']} images")
        if result["ok"]:
            return self.outcome(True, f"v{version} is serving on {endpoint}{scaled}", smoke=result)
        then = (
            f"roll back to {self.previous}"
            if self.previous
            else "this was the first deployment, so there is nothing to roll back to"
        )
        errors = "; ".join(result["errors"]) or "no answer"
        message = (
            f"v{version} is InService on {endpoint} but failed its smoke test ({errors}); {then}{scaled}"
        )
        return self.outcome(False, message, smoke=result)

    def rolled_back(self, serving: str | None, reason: str | None) -> str:
        endpoint, version = self.endpoint, self.version
        if reason:
            return (
                f"the update to v{version} ({self.name}) failed and {endpoint} stayed on {serving}: {reason}"
            )
        names = alarm_names(endpoint)
        try:
            with aws_errors("reading the rollback alarms"):
                answer = self.aws.client("cloudwatch").describe_alarms(AlarmNames=names)
            firing = [
                a["AlarmName"] for a in answer.get("MetricAlarms", []) if a.get("StateValue") == "ALARM"
            ]
            why = (
                f"alarm(s) in ALARM: {', '.join(firing)}"
                if firing
                else f"no alarm is in ALARM now ({', '.join(names)}); an alarm clears once traffic is "
                "back on the old fleet, so see their history"
            )
        except MlopsError as exc:
            why = f"the alarms could not be read ({exc})"
        return (
            f"the update to v{version} was rolled back automatically: {endpoint} is InService on the "
            f"previous config {serving}, not {self.name}; {why}"
        )


def _wait(
    aws: Aws,
    endpoint: str,
    *,
    poll_seconds: float,
    timeout_seconds: float,
    on_event: Events,
    old_config: str | None,
) -> tuple[dict[str, Any], bool]:
    """Poll DescribeEndpoint until the endpoint settles; (last answer, timed out)."""
    sagemaker = aws.client("sagemaker")
    waited, last, polls, moved = 0.0, "", 0, False
    while True:
        with aws_errors(f"waiting for endpoint {endpoint}"):
            answer: dict[str, Any] = sagemaker.describe_endpoint(EndpointName=endpoint)
        status = answer["EndpointStatus"]
        if status != last:
            reason = answer.get("FailureReason")
            on_event(f"endpoint {endpoint}: {status}" + (f" ({reason})" if reason else ""))
            last = status
        polls += 1
        moved = moved or status in IN_PROGRESS or answer.get("EndpointConfigName") != old_config
        stale = old_config is not None and not moved and polls <= STALE_POLLS
        if status not in IN_PROGRESS and not stale:
            return answer, False
        if waited >= timeout_seconds:
            return answer, True
        aws.sleep(poll_seconds)
        waited += poll_seconds


def _wait_deleted(aws: Aws, endpoint: str, poll_seconds: float, timeout_seconds: float) -> bool:
    waited = 0.0
    while describe(aws, endpoint) is not None:
        if waited >= timeout_seconds:
            return False
        aws.sleep(poll_seconds)
        waited += poll_seconds
    return True


def _instance_count(config: AwsConfig, previous: EndpointState | None) -> int:
    """The configured count, or the old fleet's current size when autoscaling has grown it (up to the
    autoscaling maximum): autoscaling is paused during an update, and a green fleet smaller than the
    blue one would take the full load at once."""
    count = config.endpoint_instance_count
    if previous is not None and previous.instance_type == config.endpoint_instance_type:
        count = max(count, min(previous.instance_count or 0, config.autoscaling.max_instances))
    return count
