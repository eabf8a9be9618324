"""Requests as data. Modules build `Call`s (operation name + exact parameters); an executor runs them.

`LiveExecutor` calls boto3. `DryRunExecutor` prints each mutating request as JSON and calls nothing
that mutates: read-only calls (Describe*, List*, Get*) may still run when credentials are there, so a
dry run can plan against real state, and are skipped otherwise.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from botocore import xform_name

from infra.aws.errors import aws_errors

_READ_ONLY = ("Describe", "List", "Get", "Head", "Search", "BatchGet", "BatchDescribe")


@dataclass(frozen=True)
class Call:
    service: str  # boto3 client name: "sagemaker", "s3", "ecr", ...
    operation: str  # API operation name as AWS documents it: "CreateTrainingJob"
    params: dict[str, Any] = field(default_factory=dict)
    why: str = ""  # one line for humans: what this call is for

    @property
    def mutating(self) -> bool:
        return not self.operation.startswith(_READ_ONLY)

    @property
    def method(self) -> str:
        return xform_name(self.operation)

    def render(self) -> str:
        body = json.dumps(self.params, indent=2, sort_keys=True, default=str)
        return f"{self.service}.{self.operation}" + (f"  # {self.why}" if self.why else "") + f"\n{body}"


class Executor(Protocol):
    dry_run: bool

    def __call__(self, call: Call) -> dict[str, Any]: ...


ClientFactory = Callable[[str], Any]


class LiveExecutor:
    dry_run = False

    def __init__(self, clients: ClientFactory) -> None:
        self.clients = clients
        self.executed: list[Call] = []

    def __call__(self, call: Call) -> dict[str, Any]:
        client = self.clients(call.service)
        with aws_errors(call.why or f"{call.service}.{call.operation}"):
            response: dict[str, Any] = getattr(client, call.method)(**call.params)
        self.executed.append(call)
        return response


class DryRunExecutor:
    dry_run = True

    def __init__(self, emit: Callable[[str], None] = print, clients: ClientFactory | None = None) -> None:
        self.emit = emit
        self.clients = clients
        self.planned: list[Call] = []

    def __call__(self, call: Call) -> dict[str, Any]:
        if not call.mutating and self.clients is not None:
            client = self.clients(call.service)
            with aws_errors(call.why or f"{call.service}.{call.operation}"):
                response: dict[str, Any] = getattr(client, call.method)(**call.params)
            return response
        self.planned.append(call)
        if call.mutating:
            self.emit(call.render())
        return {}
