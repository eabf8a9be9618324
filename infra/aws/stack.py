"""CloudFormation: the bootstrap stack (infra/cloudformation/bootstrap.yaml), planned, then applied.

Stages: `render_parameters` -> `plan` (CreateChangeSet through the executor, CREATE or UPDATE as the stack
exists; DescribeChangeSet polled until it is ready; its changes as data) -> `execute` (ExecuteChangeSet;
the stack's events are passed to `on_event` until it reaches *_COMPLETE, or the failed resources'
StatusReasons are raised) -> `outputs`. `delete` refuses while the project's endpoints serve, then
DeleteStack and waits; the bucket stays (DeletionPolicy Retain).

Under a dry run the executor prints the CreateChangeSet request and sends nothing mutating, so there is no
change set to describe: the plan is then the template's resources (`summary`), all marked as planned.
Waits use `aws.sleep` and count the seconds they slept, so tests with a fake sleep never wait.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from infra.aws.errors import AwsError, NotFound, aws_errors
from infra.aws.plan import Call, Executor, LiveExecutor
from infra.errors import MlopsError, UsageError

TEMPLATE_PATH = Path(__file__).resolve().parents[1] / "cloudformation" / "bootstrap.yaml"
# The stack names its IAM roles and policies (RoleName, ManagedPolicyName): CloudFormation wants the
# NAMED variant of the IAM capability for that.
CAPABILITIES = ["CAPABILITY_NAMED_IAM"]
# CloudFormation's answer to a change set that changes nothing (CreateChangeSet then FAILS it).
_NO_CHANGES = ("didn't contain changes", "No updates are to be performed")
_STACK_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,127}$")

EventSink = Callable[[str], None]


class StackFailed(AwsError):
    """The stack (or its change set) ended in a failed state; the message names the failed resources."""


@dataclass(frozen=True)
class BootstrapParameters:
    """The template's parameters, typed; `render_parameters` turns them into CloudFormation's list."""

    project: str
    github_owner: str
    github_repo: str
    create_oidc_provider: bool = True
    budget_email: str = ""
    monthly_budget_usd: int = 100


def render_parameters(params: BootstrapParameters) -> list[dict[str, str]]:
    values = {
        "ProjectName": params.project,
        "GitHubOwner": params.github_owner,
        "GitHubRepo": params.github_repo,
        "CreateOidcProvider": "true" if params.create_oidc_provider else "false",
        "BudgetEmail": params.budget_email,
        "MonthlyBudgetUsd": str(params.monthly_budget_usd),
    }
    return [{"ParameterKey": k, "ParameterValue": v} for k, v in values.items()]


@dataclass(frozen=True)
class Change:
    action: str  # Add | Modify | Remove | Import | Dynamic (| Planned, in a dry run)
    logical_id: str
    resource_type: str
    replacement: str = ""  # True | False | Conditional, for Modify


@dataclass
class Plan:
    stack_name: str
    change_set_name: str
    change_set_type: str  # CREATE | UPDATE
    changes: list[Change]
    change_set_id: str = ""
    up_to_date: bool = False  # nothing to change: the change set was deleted again
    dry_run: bool = False  # only printed: there is no change set to execute


def summary(template_body: str) -> dict[str, list[str]]:
    """resource type -> logical ids, read from the template text without a YAML library: the top-level
    `Resources:` block, two-space indented logical ids, each with its `Type:` (JSON templates too)."""
    if template_body.lstrip().startswith("{"):
        resources = json.loads(template_body).get("Resources", {})
        pairs = [(str(v.get("Type", "?")), str(k)) for k, v in resources.items()]
    else:
        pairs, section, logical = [], "", ""
        for line in template_body.splitlines():
            if top := re.match(r"^([A-Za-z]+):", line):
                section = top.group(1)
            elif section == "Resources" and (res := re.match(r"^  ([A-Za-z0-9]+):\s*$", line)):
                logical = res.group(1)
            elif section == "Resources" and logical and (typ := re.match(r"^    Type:\s*(\S+)", line)):
                pairs.append((typ.group(1), logical))
                logical = ""
    by_type: dict[str, list[str]] = {}
    for kind, logical_id in pairs:
        by_type.setdefault(kind, []).append(logical_id)
    return dict(sorted(by_type.items()))


def validate_stack_name(name: str) -> str:
    if not _STACK_NAME.match(name):
        raise UsageError(
            f"stack name {name!r}: start with a letter; letters, digits and hyphens, at most 128 characters"
        )
    return name


def describe_stack(aws: Any, stack_name: str) -> dict[str, Any] | None:
    """DescribeStacks' answer for the stack, or None when there is no such stack."""
    try:
        with aws_errors(f"looking up the CloudFormation stack {stack_name}"):
            stacks = aws.client("cloudformation").describe_stacks(StackName=stack_name)["Stacks"]
    except AwsError as exc:
        if _missing(exc):
            return None
        raise
    return dict(stacks[0]) if stacks else None


def _missing(exc: AwsError) -> bool:
    # CloudFormation says ValidationError (not ValidationException) "Stack with id X does not exist".
    return isinstance(exc, NotFound) or (exc.code == "ValidationError" and "does not exist" in str(exc))


def change_set_call(
    stack_name: str,
    change_set_name: str,
    template_body: str,
    parameters: list[dict[str, str]],
    *,
    change_set_type: str,
    tags: Iterable[Mapping[str, str]] = (),
) -> Call:
    params: dict[str, Any] = {
        "StackName": stack_name,
        "ChangeSetName": change_set_name,
        "ChangeSetType": change_set_type,
        "TemplateBody": template_body,
        "Parameters": parameters,
        "Capabilities": CAPABILITIES,
        "Description": "mlops bootstrap",
    }
    if tags:
        params["Tags"] = [{"Key": t["Key"], "Value": t["Value"]} for t in tags]
    verb = "create" if change_set_type == "CREATE" else "update"
    return Call("cloudformation", "CreateChangeSet", params, why=f"plan: {verb} the stack {stack_name}")


def plan(
    aws: Any,
    stack_name: str,
    template_body: str,
    parameters: list[dict[str, str]],
    executor: Executor | None = None,
    *,
    tags: Iterable[Mapping[str, str]] = (),
    change_set_name: str | None = None,
    poll_seconds: float = 5,
    timeout_seconds: float = 600,
) -> Plan:
    """A change set for `template_body`, and its changes. Nothing is applied (see `execute`)."""
    executor = executor or LiveExecutor(aws.client)
    validate_stack_name(stack_name)
    name = change_set_name or f"mlops-{time.strftime('%Y%m%d-%H%M%S', time.gmtime())}"
    change_set_type = _change_set_type(aws, stack_name, dry_run=executor.dry_run)
    call = change_set_call(
        stack_name, name, template_body, parameters, change_set_type=change_set_type, tags=tags
    )
    if executor.dry_run:
        # The printed request carries a digest in place of the template text (tens of kB of YAML).
        digest = hashlib.sha256(template_body.encode()).hexdigest()[:16]
        shown = {**call.params, "TemplateBody": f"<{len(template_body)} bytes, sha256 {digest}...>"}
        executor(Call(call.service, call.operation, shown, why=call.why))
        changes = [
            Change("Planned", logical, kind)
            for kind, logicals in summary(template_body).items()
            for logical in logicals
        ]
        return Plan(stack_name, name, change_set_type, changes, dry_run=True)
    response = executor(call)
    change_set_id = str(response.get("Id") or name)
    description = _wait_for_change_set(aws, stack_name, change_set_id, poll_seconds, timeout_seconds)
    if description["Status"] == "FAILED":
        reason = str(description.get("StatusReason", ""))
        _delete_change_set(stack_name, change_set_id, executor)
        if any(text in reason for text in _NO_CHANGES):
            return Plan(stack_name, name, change_set_type, [], change_set_id, up_to_date=True)
        raise StackFailed(f"the change set for stack {stack_name} failed: {reason or 'no reason given'}")
    changes = [
        Change(
            action=str(rc.get("Action", "")),
            logical_id=str(rc.get("LogicalResourceId", "")),
            resource_type=str(rc.get("ResourceType", "")),
            replacement=str(rc.get("Replacement", "")),
        )
        for item in _change_set_changes(aws, stack_name, change_set_id, description)
        if (rc := item.get("ResourceChange"))
    ]
    return Plan(stack_name, name, change_set_type, changes, change_set_id)


def discard(planned: Plan, executor: Executor) -> None:
    """Delete a change set that will not be executed (the user said no)."""
    if planned.change_set_id and not planned.dry_run:
        _delete_change_set(planned.stack_name, planned.change_set_id, executor)


def execute(
    aws: Any,
    planned: Plan,
    executor: Executor,
    *,
    on_event: EventSink = lambda _line: None,
    poll_seconds: float = 10,
    timeout_seconds: float = 3600,
) -> str:
    """ExecuteChangeSet, then wait for *_COMPLETE, reporting each new stack event; the final status.
    Raises StackFailed naming each failed resource and its reason on *_FAILED or a rollback."""
    if planned.dry_run or planned.up_to_date:
        return "UNCHANGED"
    seen = {e["EventId"] for e in _recent_events(aws, planned.stack_name)}
    executor(
        Call(
            "cloudformation",
            "ExecuteChangeSet",
            {"ChangeSetName": planned.change_set_id, "StackName": planned.stack_name},
            why=f"apply {len(planned.changes)} change(s) to the stack {planned.stack_name}",
        )
    )
    return _wait_for_stack(
        aws, planned.stack_name, seen, on_event=on_event, poll=poll_seconds, timeout=timeout_seconds
    )


def outputs(aws: Any, stack_name: str) -> dict[str, str]:
    """The stack's outputs (OutputKey -> OutputValue)."""
    stack = describe_stack(aws, stack_name)
    if stack is None:
        raise NotFound(f"no CloudFormation stack named {stack_name} in {aws.region}: run `mlops bootstrap`")
    return {str(o["OutputKey"]): str(o.get("OutputValue", "")) for o in stack.get("Outputs") or []}


# Endpoint states in which an endpoint still serves (or is about to): deleting the roles and images
# under it would break it.
_SERVING = ("InService", "Updating", "SystemUpdating", "RollingBack", "Creating")


def serving_endpoints(aws: Any, project: str) -> list[str]:
    """Names of SageMaker endpoints whose name contains `project` and that serve (or are about to)."""
    names = []
    with aws_errors(f"listing the SageMaker endpoints of project {project}"):
        paginator = aws.client("sagemaker").get_paginator("list_endpoints")
        for page in paginator.paginate(NameContains=project):
            names += [
                e["EndpointName"] for e in page.get("Endpoints", []) if e.get("EndpointStatus") in _SERVING
            ]
    return sorted(names)


def delete(
    aws: Any,
    stack_name: str,
    executor: Executor,
    *,
    project: str,
    force: bool = False,
    on_event: EventSink = lambda _line: None,
    poll_seconds: float = 10,
    timeout_seconds: float = 3600,
) -> str | None:
    """DeleteStack and wait; returns the name of the bucket that stays (DeletionPolicy Retain), if any.
    Refuses (UsageError) while endpoints of the project serve, unless `force`: they run as the stack's
    SageMaker role and pull its images."""
    stack = describe_stack(aws, stack_name)
    if stack is None:
        raise UsageError(f"no CloudFormation stack named {stack_name} in {aws.region}: nothing to delete")
    serving = serving_endpoints(aws, project)
    if serving and not force:
        raise UsageError(
            f"{len(serving)} SageMaker endpoint(s) of project {project} still serve ({', '.join(serving)}); "
            "they run as the stack's role and pull its images. Delete them first (`mlops endpoint delete`) "
            "or pass --force"
        )
    kept = {str(o["OutputKey"]): str(o.get("OutputValue", "")) for o in stack.get("Outputs") or []}
    stack_id = str(stack.get("StackId") or stack_name)
    seen = {e["EventId"] for e in _recent_events(aws, stack_id)}
    executor(
        Call(
            "cloudformation",
            "DeleteStack",
            {"StackName": stack_name},
            why=f"delete the stack {stack_name} (its bucket is retained)",
        )
    )
    if not executor.dry_run:
        # By id: a deleted stack is no longer found by name, but by id it answers DELETE_COMPLETE.
        _wait_for_stack(aws, stack_id, seen, on_event=on_event, poll=poll_seconds, timeout=timeout_seconds)
    return kept.get("BucketName")


# Helpers.


def _change_set_type(aws: Any, stack_name: str, *, dry_run: bool) -> str:
    try:
        stack = describe_stack(aws, stack_name)
    except MlopsError:
        if dry_run:  # no credentials for a dry run: plan it as the first creation
            return "CREATE"
        raise
    if stack is None:
        return "CREATE"
    status = str(stack.get("StackStatus", ""))
    if status == "REVIEW_IN_PROGRESS":  # created by a change set that was never executed
        return "CREATE"
    if status in ("ROLLBACK_COMPLETE", "ROLLBACK_FAILED", "CREATE_FAILED", "DELETE_FAILED"):
        raise UsageError(
            f"the stack {stack_name} is {status} and cannot be updated: delete it with "
            "`mlops bootstrap --delete` (the bucket is retained), then bootstrap again"
        )
    if status.endswith("_IN_PROGRESS"):
        raise UsageError(f"the stack {stack_name} is busy ({status}); try again when it is done")
    return "UPDATE"


def _wait_for_change_set(
    aws: Any, stack_name: str, change_set_id: str, poll: float, timeout: float
) -> dict[str, Any]:
    waited = 0.0
    while True:
        with aws_errors(f"reading the change set of stack {stack_name}"):
            description: dict[str, Any] = aws.client("cloudformation").describe_change_set(
                ChangeSetName=change_set_id, StackName=stack_name
            )
        if description.get("Status") in ("CREATE_COMPLETE", "FAILED"):
            return description
        if waited >= timeout:
            raise StackFailed(
                f"the change set for stack {stack_name} is still {description.get('Status')} after "
                f"{timeout:.0f} s"
            )
        aws.sleep(poll)
        waited += poll


def _change_set_changes(
    aws: Any, stack_name: str, change_set_id: str, first: dict[str, Any]
) -> list[dict[str, Any]]:
    changes, page = list(first.get("Changes", [])), first
    while page.get("NextToken"):
        with aws_errors(f"reading the change set of stack {stack_name}"):
            page = aws.client("cloudformation").describe_change_set(
                ChangeSetName=change_set_id, StackName=stack_name, NextToken=page["NextToken"]
            )
        changes += page.get("Changes", [])
    return changes


def _delete_change_set(stack_name: str, change_set_id: str, executor: Executor) -> None:
    executor(
        Call(
            "cloudformation",
            "DeleteChangeSet",
            {"ChangeSetName": change_set_id, "StackName": stack_name},
            why="discard the change set",
        )
    )


def _recent_events(aws: Any, stack: str) -> list[dict[str, Any]]:
    """The newest page of the stack's events (newest first); none when the stack is gone."""
    try:
        with aws_errors(f"reading the events of stack {stack}"):
            events = aws.client("cloudformation").describe_stack_events(StackName=stack)
    except AwsError as exc:
        if _missing(exc):
            return []
        raise
    return list(events.get("StackEvents", []))


def _event_line(event: Mapping[str, Any]) -> str:
    stamp = event.get("Timestamp")
    when = stamp.strftime("%H:%M:%S") if isinstance(stamp, datetime) else ""
    reason = event.get("ResourceStatusReason")
    return (
        f"{when} {event.get('LogicalResourceId')} ({event.get('ResourceType')}) "
        f"{event.get('ResourceStatus')}" + (f": {reason}" if reason else "")
    ).strip()


def _wait_for_stack(
    aws: Any, stack: str, seen: set[str], *, on_event: EventSink, poll: float, timeout: float
) -> str:
    """Poll until the stack leaves *_IN_PROGRESS; report new events in order; raise on failure.

    A terminal status counts only once the stack itself has reported a new event: right after
    ExecuteChangeSet, DescribeStacks may still answer the status of the previous operation."""
    waited, failed, moved = 0.0, [], False
    while True:
        new = [e for e in _recent_events(aws, stack) if e["EventId"] not in seen]
        for event in reversed(new):  # DescribeStackEvents answers newest first
            seen.add(event["EventId"])
            on_event(_event_line(event))
            moved = moved or event.get("ResourceType") == "AWS::CloudFormation::Stack"
            if str(event.get("ResourceStatus", "")).endswith("_FAILED"):
                failed.append(event)
        described = describe_stack(aws, stack)
        status = "DELETE_COMPLETE" if described is None else str(described.get("StackStatus", ""))
        if status == "DELETE_COMPLETE" or (moved and not status.endswith("_IN_PROGRESS")):
            break
        if waited >= timeout:
            raise StackFailed(f"the stack {stack} is still {status} after {timeout:.0f} s; see the console")
        aws.sleep(poll)
        waited += poll
    if status.endswith("_FAILED") or "ROLLBACK" in status:
        raise StackFailed(_failure_message(stack, status, failed, described))
    return status


def _failure_message(
    stack: str, status: str, failed: list[Mapping[str, Any]], described: Mapping[str, Any] | None
) -> str:
    # "Resource creation cancelled" marks the resources stopped because another one failed: the root
    # causes are the other reasons, listed first.
    reasons = [
        f"{e.get('LogicalResourceId')} ({e.get('ResourceType')}) {e.get('ResourceStatus')}: "
        f"{e.get('ResourceStatusReason') or 'no reason given'}"
        for e in sorted(failed, key=lambda e: "cancelled" in str(e.get("ResourceStatusReason", "")))
        if e.get("ResourceType") != "AWS::CloudFormation::Stack"
    ]
    if not reasons and described and described.get("StackStatusReason"):
        reasons = [str(described["StackStatusReason"])]
    text = f"the stack {stack} ended {status}: " + ("; ".join(reasons) or "no failed resource reported")
    if status == "ROLLBACK_COMPLETE":
        text += (
            ". A stack whose creation rolled back cannot be updated: `mlops bootstrap --delete`, then again"
        )
    return text
