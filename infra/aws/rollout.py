"""SageMaker endpoint rollouts: guarded blue/green deploys, and an honest account of how they ended.

Stages of `deploy`:
  1. read the endpoint: DescribeEndpoint -> its endpoint config -> its model -> the registry package
  2. CreateModel (PrimaryContainer.ModelPackageName: the registry version, so lineage is recorded) and
     CreateEndpointConfig, both named `<project>-v<version>-<UTC stamp>`
  3. PutMetricAlarm x3 (Invocation5XXErrors, ModelLatency, and our own SmokeTestFailures metric): the
     alarms the rollout is guarded by
  4. no endpoint yet: CreateEndpoint. Otherwise UpdateEndpoint with a blue/green DeploymentConfig:
     ALL_AT_ONCE on one instance, CANARY on more, a bake period, AutoRollbackConfiguration on the alarms
  5. wait (aws.sleep between DescribeEndpoint polls) while Creating/Updating/RollingBack, reporting each
     status change. When PendingDeploymentSummary shows a variant Baking (traffic is on the green fleet,
     the blue one still kept), the smoke test runs; when it fails, PutMetricData raises the smoke alarm
     and SageMaker rolls the update back before the old fleet is retired
  6. judge. InService on the NEW config: deployed. InService on the OLD config: SageMaker rolled back on
     its own, which DescribeEndpoint does not call a failure (no FailureReason, status InService): only
     comparing EndpointConfigName tells, and that is reported as a failure naming the alarm(s) that fired.
     Failed: the FailureReason.
  7. autoscaling (target tracking on invocations per instance) whenever the endpoint ends InService
  8. smoke test, unless it already passed during the bake: held-out images through InvokeEndpoint
     (`infra.smoke.smoke_test`). A first deployment has no bake, so it is tested here, once it serves
Nothing here rolls back after a smoke test that failed once the new config serves (the bake ended before
the alarm acted, or a first deployment): the outcome says the candidate serves, and `infra.guard` rolls
back or takes the endpoint down.
The requests themselves, and `describe` / `invoke`, are built in `infra.aws.endpoints`.

Endpoint modes (`[aws] endpoint_mode`, `mlops deploy --mode`; limits in `infra.aws.modes`). Before any
call the mode's limits are checked (a refusal is a UsageError: nothing changed, nothing is Rejected), and
an endpoint that serves in another mode is refused as well: SageMaker cannot UpdateEndpoint a real-time
endpoint to serverless, and a switch to or from async changes the API every client calls, so a mode
change is `mlops endpoint delete` and a first deployment, on purpose. CreateModel sets the container's
MLOPS_MAX_PAYLOAD_BYTES to the mode's cap (6 MB, 4 MB, 1 GB), so the server's 413 matches SageMaker's.
  realtime    as above.
  serverless  ServerlessConfig, no instances. Updates are blue/green ALL_AT_ONCE with the bake and the
              same three rollback alarms (serverless variants publish Invocation5XXErrors and
              ModelLatency): CANARY and LINEAR shift a share of instances, and a serverless variant has
              none. No autoscaling target: SageMaker scales it up to MaxConcurrency by itself. The smoke
              test runs through InvokeEndpoint, during the bake or after a first deployment.
  async       an instance variant with AsyncInferenceConfig. Blue/green as real-time (ALL_AT_ONCE on one
              instance, CANARY on more), the same alarms (async endpoints publish both metrics too). The
              smoke test puts each image under `<output>requests/`, calls InvokeEndpointAsync and polls S3
              for its OutputLocation or FailureLocation (`endpoints.invoke_async`), during the bake or
              after a first deployment. Autoscaling tracks ApproximateBacklogSizePerInstance between
              async_min_instances and autoscaling.max_instances; at 0 a step policy on
              HasBacklogWithoutCapacity brings the first instance back.
In every mode a candidate that fails its smoke test is rolled back by SageMaker during the bake or,
once it serves, reported serving for `infra.guard` to replace: it never keeps serving.
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
    async_autoscaling_calls,
    async_config_call,
    autoscaling_calls,
    create_endpoint_call,
    deployment_config,
    deregister_call,
    describe,
    endpoint_config_call,
    endpoint_name,
    invoke,
    invoke_async,
    model_call,
    resource_name,
    serverless_config_call,
    smoke_failure_call,
    update_endpoint_call,
    wake_alarm_call,
)
from infra.aws.errors import aws_errors
from infra.aws.modes import (
    ASYNC,
    PAYLOAD_CAP,
    SERVERLESS,
    async_input_path,
    async_output_path,
    problems_of,
)
from infra.aws.plan import Call, Executor
from infra.aws.session import Aws
from infra.errors import MlopsError, UsageError
from infra.settings import AwsConfig
from infra.smoke import Sample, Send, smoke_test

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
    serving_candidate: bool = False  # the endpoint ended InService on config_name


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
    image_uri: str | None = None,
) -> DeployOutcome:
    mode = config.endpoint_mode
    check(config, image_uri)  # before any call, reads included
    output = _async_output(aws, project, config)
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
    _same_mode(previous, mode)
    send = sender(aws, endpoint, mode, output)
    rollout = _Rollout(aws, executor, on_event, endpoint, name, version, previous, replacing, send)
    count = _instance_count(config, previous)
    environment = {"MLOPS_MAX_PAYLOAD_BYTES": str(PAYLOAD_CAP[mode])}
    plan = [
        model_call(name, package_arn=package_arn, role_arn=role_arn, tags=tags, environment=environment),
        _config_call(config, name, count, output, tags),
        *alarm_calls(endpoint, config.alarms, tags=tags),
    ]
    deadline = timeout_seconds
    if previous is not None or not known:
        deployment = update_deployment(config, endpoint, count)
        # SageMaker bounds the update by MaximumExecutionTimeoutInSeconds, then rolls back: stop watching
        # only after that, or an update SageMaker is still finishing would be reported as failed.
        limit = deployment["BlueGreenUpdatePolicy"]["MaximumExecutionTimeoutInSeconds"]
        deadline = max(timeout_seconds, limit + PROVISION_SECONDS)
        if (
            mode != SERVERLESS
            and previous is not None
            and previous.instance_type != config.endpoint_instance_type
        ):
            # UpdateEndpoint refuses to change the instance type of a variant that is an autoscaling target.
            registered, _ = _look(executor, lambda: _scaling_registered(aws, endpoint), assume=False)
            if registered:
                plan.append(deregister_call(endpoint))
        plan.append(update_endpoint_call(endpoint, name, deployment))
    else:
        plan.append(create_endpoint_call(endpoint, name, tags))
    scale = _scaling_calls(config, endpoint, tags)
    if executor.dry_run:
        for call in rollout.removal() + plan:
            executor(call)
        run_scaling(executor, scale, endpoint, tags)
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
    bake = _BakeSmoke(rollout, samples, classes) if rollout.current is not None else None
    answer, timed_out = _wait(
        aws,
        endpoint,
        poll_seconds=poll_seconds,
        timeout_seconds=deadline,
        on_event=on_event,
        old_config=rollout.previous,
        on_poll=bake,
    )
    if timed_out:
        return rollout.outcome(
            False,
            f"gave up waiting after {deadline:g} s: endpoint {endpoint} is still {answer['EndpointStatus']}; "
            "SageMaker carries on without us, so check it again before deploying anything else",
        )
    return rollout.judge(answer, scale, samples=samples, classes=classes, bake=bake, tags=tags)


def mode_line(config: AwsConfig) -> str:
    """How a deploy in the configured mode goes, in a few words (the CLI's first line)."""
    if config.endpoint_mode == SERVERLESS:
        return (
            f"serverless endpoint ({config.serverless_memory_mb} MB, at most "
            f"{config.serverless_max_concurrency} at once): blue/green all at once, smoke-tested during "
            "the bake, auto-rollback alarms"
        )
    if config.endpoint_mode == ASYNC:
        return (
            "async endpoint (InvokeEndpointAsync through S3): blue/green update, smoke-tested through S3 "
            "during the bake, auto-rollback alarms, autoscaling on the queue"
        )
    return "blue/green update, smoke-tested during the bake, auto-rollback alarms"


def _same_mode(previous: EndpointState | None, mode: str) -> None:
    # An unknown mode (the config was deleted under the endpoint) is left to SageMaker to judge.
    if previous is None or not previous.mode or previous.mode == mode:
        return
    raise UsageError(
        f"endpoint {previous.name} serves in {previous.mode} mode ({previous.config_name}), and this "
        f"deploy is {mode}: SageMaker cannot update an endpoint from one mode to another in place (and "
        "clients call each mode differently). Nothing was changed. Deploy in "
        f'{previous.mode} mode ([aws] endpoint_mode = "{previous.mode}" or --mode {previous.mode}), or '
        f"take the endpoint down (`mlops endpoint delete`) and deploy again to create it as {mode}"
    )


def check(config: AwsConfig, image_uri: str | None = None) -> None:
    """Refuse, before any call, a mode SageMaker would refuse or that could not serve this image."""
    found = problems_of(config, image_uri)
    if found:
        raise UsageError(f"cannot deploy a {config.endpoint_mode} endpoint: " + "; ".join(map(str, found)))


def _async_output(aws: Aws, project: str, config: AwsConfig) -> str | None:
    if config.endpoint_mode != ASYNC:
        return None
    output = async_output_path(config.async_output, bucket=aws.settings.bucket, project=project)
    if output is None:
        raise UsageError(
            "an async endpoint writes its answers to S3: set MLOPS_BUCKET (the answers then go to "
            f"s3://<bucket>/{project}/async-output/), or [aws] async_output / --async-output s3://..."
        )
    return output


def sender(aws: Aws, endpoint: str, mode: str, output: str | None) -> Send:
    """How one request reaches the endpoint in `mode`: InvokeEndpoint, or for async S3 and
    InvokeEndpointAsync (`output` is its S3OutputPath). The smoke test and the verification use it."""
    if mode == ASYNC:
        if output is None:
            raise UsageError("an async endpoint needs its S3 output path to be invoked")
        prefix = async_input_path(output)
        return lambda body, kind: invoke_async(aws, endpoint, body, kind, input_prefix=prefix)
    return lambda body, kind: invoke(aws, endpoint, body, kind)


def platform_sender(aws: Aws, project: str, config: AwsConfig) -> Send:
    """`sender` for the project's endpoint in the configured mode (`mlops endpoint invoke`, verify)."""
    return sender(aws, endpoint_name(project), config.endpoint_mode, _async_output(aws, project, config))


def update_deployment(config: AwsConfig, endpoint: str, instance_count: int) -> dict[str, Any]:
    """UpdateEndpoint's DeploymentConfig in the configured mode: a serverless variant has no instances
    to shift a canary share of, so it is always ALL_AT_ONCE (still baked, still rolled back on alarms)."""
    return deployment_config(
        alarm_names(endpoint),
        instance_count=1 if config.endpoint_mode == SERVERLESS else instance_count,
        bake_seconds=config.bake_seconds,
        canary_percent=config.canary_percent,
    )


def _config_call(config: AwsConfig, name: str, count: int, output: str | None, tags: Tags) -> Call:
    if config.endpoint_mode == SERVERLESS:
        return serverless_config_call(
            name,
            model_name=name,
            memory_mb=config.serverless_memory_mb,
            max_concurrency=config.serverless_max_concurrency,
            tags=tags,
        )
    if config.endpoint_mode == ASYNC:
        assert output is not None  # _async_output refused an async deploy without one
        return async_config_call(
            name,
            model_name=name,
            instance_type=config.endpoint_instance_type,
            instance_count=count,
            output_path=output,
            max_concurrent_invocations=config.async_max_concurrent_invocations,
            tags=tags,
        )
    return endpoint_config_call(
        name,
        model_name=name,
        instance_type=config.endpoint_instance_type,
        instance_count=count,
        tags=tags,
    )


def _scaling_calls(config: AwsConfig, endpoint: str, tags: Tags) -> list[Call]:
    """Registered on every deploy, not only when max_instances > 1: RegisterScalableTarget is idempotent,
    and lowering max_instances to 1 then takes effect instead of a stale target still scaling out.
    Serverless has no instance count to scale (SageMaker scales it within MaxConcurrency)."""
    if config.endpoint_mode == SERVERLESS:
        return []
    if config.endpoint_mode == ASYNC:
        return async_autoscaling_calls(
            endpoint,
            min_instances=config.async_min_instances,
            max_instances=config.autoscaling.max_instances,
            backlog_per_instance=config.async_backlog_per_instance,
            tags=tags,
        )
    return autoscaling_calls(
        endpoint,
        min_instances=config.autoscaling.min_instances,
        max_instances=config.autoscaling.max_instances,
        invocations_per_instance=config.autoscaling.invocations_per_instance,
        tags=tags,
    )


def run_scaling(executor: Executor, calls: list[Call], endpoint: str, tags: Tags) -> None:
    """Execute the scaling calls; a step policy's alarm is made from the ARN PutScalingPolicy returns."""
    for call in calls:
        answer = executor(call)
        if call.params.get("PolicyType") == "StepScaling":
            arn = str(answer.get("PolicyARN") or "<the PolicyARN PutScalingPolicy returns>")
            executor(wake_alarm_call(endpoint, arn, tags))


class _BakeSmoke:
    """The smoke test during a blue/green bake, once per bake step (a canary has two: the canary share,
    then all traffic). A failure raises the smoke alarm, and SageMaker rolls the update back."""

    def __init__(self, rollout: _Rollout, samples: list[Sample], classes: list[str]) -> None:
        self.rollout, self.samples, self.classes = rollout, samples, classes
        self.tested: set[str] = set()
        self.result: dict[str, Any] | None = None  # the last bake smoke test
        self.failed: dict[str, Any] | None = None  # the first one that failed

    def __call__(self, answer: dict[str, Any]) -> None:
        step = _baking(answer)
        if step is None or step in self.tested or not self.samples:
            return
        self.tested.add(step)
        rollout = self.rollout
        rollout.on_event("the green fleet is baking: smoke-testing it while the blue fleet is kept")
        result = rollout.run_smoke(self.samples, self.classes)
        self.result = result
        if result["ok"]:
            return
        self.failed = self.failed or result
        failures = max(1, len(result["errors"]))
        rollout.on_event(
            f"smoke test FAILED during the bake ({'; '.join(result['errors']) or 'no answer'}): raising "
            f"alarm {alarm_names(rollout.endpoint)[-1]} so that SageMaker rolls the update back"
        )
        try:
            rollout.executor(smoke_failure_call(rollout.endpoint, failures))
        except MlopsError as exc:  # the backstop (infra.guard) still rolls back once the update ends
            rollout.on_event(f"could not raise the smoke alarm: {exc}")


def _baking(answer: dict[str, Any]) -> str | None:
    """The start of the bake step under way, when the pending deployment shows one."""
    pending = answer.get("PendingDeploymentSummary") or {}
    for variant in pending.get("ProductionVariants") or []:
        for status in variant.get("VariantStatus") or []:
            if status.get("Status") == "Baking":
                return str(status.get("StartTime", "")) or "baking"
    return None


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
    send: Send  # one request to the endpoint in its mode (`sender`)

    @property
    def previous(self) -> str | None:
        return self.current.config_name if self.current else None

    def removal(self) -> list[Call]:
        delete_call = Call(
            "sagemaker", "DeleteEndpoint", {"EndpointName": self.endpoint}, why="replace Failed"
        )
        return [delete_call] if self.replacing else []

    def outcome(
        self,
        ok: bool,
        message: str,
        *,
        rolled_back: bool = False,
        smoke: dict[str, Any] | None = None,
        serving: bool = False,
    ) -> DeployOutcome:
        return DeployOutcome(
            ok, message, self.endpoint, self.name, self.previous, rolled_back, smoke, serving
        )

    def run_smoke(self, samples: list[Sample], classes: list[str]) -> dict[str, Any]:
        # An empty class list means the classes are unknown, not that no label is valid.
        return smoke_test(self.send, samples, classes or None)

    def judge(
        self,
        answer: dict[str, Any],
        scale: list[Call],
        *,
        samples: list[Sample],
        classes: list[str],
        bake: _BakeSmoke | None = None,
        tags: Tags | None = None,
    ) -> DeployOutcome:
        status, serving = answer["EndpointStatus"], answer.get("EndpointConfigName")
        if status != "InService":
            reason = answer.get("FailureReason") or "no reason given"
            return self.outcome(False, f"endpoint {self.endpoint} ended {status}: {reason}")
        scaled = self.autoscale(scale, tags or [])
        failed_bake = bake.failed if bake else None
        if serving != self.name:
            message = self.rolled_back(serving, answer.get("FailureReason"))
            if failed_bake is not None:
                message += f"; its smoke test during the bake failed: {_errors(failed_bake)}"
            return self.outcome(False, message + scaled, rolled_back=True, smoke=failed_bake)
        if failed_bake is not None:
            return self.outcome(
                False,
                f"v{self.version} serves on {self.endpoint} although it failed its smoke test during "
                f"the bake ({_errors(failed_bake)}): the update ended before the smoke alarm rolled it "
                f"back{scaled}",
                smoke=failed_bake,
                serving=True,
            )
        if bake is not None and bake.result is not None:
            return self.outcome(
                True,
                f"v{self.version} is serving on {self.endpoint}{scaled}",
                smoke=bake.result,
                serving=True,
            )
        return self.smoke(samples, classes, scaled)

    def autoscale(self, calls: list[Call], tags: Tags) -> str:
        """Whichever fleet ended up serving gets the configured autoscaling. A failure here is reported,
        not a reason to call a good model bad."""
        try:
            run_scaling(self.executor, calls, self.endpoint, tags)
        except MlopsError as exc:
            self.on_event(f"autoscaling not applied: {exc}")
            return f" (autoscaling NOT applied: {exc})"
        return ""

    def smoke(self, samples: list[Sample], classes: list[str], scaled: str) -> DeployOutcome:
        endpoint, version = self.endpoint, self.version
        if not samples:
            # Only reached when the caller allowed an untested deploy (AwsPlatform refuses otherwise).
            self.on_event("no held-out images: the smoke test is skipped, as asked (--allow-untested)")
            return self.outcome(
                True,
                f"v{version} is serving on {endpoint}; NOT smoke-tested (deployed with --allow-untested)"
                f"{scaled}",
                serving=True,
            )
        result = self.run_smoke(samples, classes)
        self.on_event(f"smoke test: {'passed' if result['ok'] else 'FAILED'} on {result['images']} images")
        if result["ok"]:
            return self.outcome(
                True, f"v{version} is serving on {endpoint}{scaled}", smoke=result, serving=True
            )
        message = (
            f"v{version} is InService on {endpoint} but failed its smoke test ({_errors(result)}){scaled}"
        )
        return self.outcome(False, message, smoke=result, serving=True)

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


def _errors(result: dict[str, Any]) -> str:
    return "; ".join(result["errors"]) or "no answer"


def _wait(
    aws: Aws,
    endpoint: str,
    *,
    poll_seconds: float,
    timeout_seconds: float,
    on_event: Events,
    old_config: str | None,
    on_poll: Callable[[dict[str, Any]], None] | None = None,
) -> tuple[dict[str, Any], bool]:
    """Poll DescribeEndpoint until the endpoint settles; (last answer, timed out). `on_poll` sees every
    answer while the endpoint is in progress (the bake's smoke test)."""
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
        if on_poll is not None and status in IN_PROGRESS:
            on_poll(answer)
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
