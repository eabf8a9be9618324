"""AWS settings, the boto3 session and its clients.

Settings come from the environment (documented in .env.example), project-wide defaults from
`mlops.toml` [aws]. Clients retry with botocore's adaptive mode and honour AWS_ENDPOINT_URL (and its
per-service variants), which is how a moto server on 127.0.0.1 stands in for AWS in tests.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import boto3
from botocore.config import Config as BotoConfig

from infra.aws.errors import aws_errors, translate
from infra.errors import UsageError

RETRIES = BotoConfig(retries={"max_attempts": 10, "mode": "adaptive"}, user_agent_extra="cv-mlops")

# name -> (environment variable, what it is for): the one-line error for a missing setting names both.
SETTINGS_HELP = {
    "region": ("AWS_REGION", "the AWS region to run in, e.g. us-east-1"),
    "bucket": ("MLOPS_BUCKET", "the S3 bucket for datasets, checkpoints and model artifacts"),
    "role_arn": (
        "MLOPS_SAGEMAKER_ROLE_ARN",
        "the IAM role SageMaker assumes for training jobs and endpoints",
    ),
    "wandb_secret_arn": ("MLOPS_WANDB_SECRET_ARN", "the Secrets Manager secret holding the W&B API key"),
}


@dataclass(frozen=True)
class AwsSettings:
    project: str
    region: str | None = None
    profile: str | None = None
    endpoint_url: str | None = None
    bucket: str | None = None
    role_arn: str | None = None
    wandb_secret_arn: str | None = None
    owner: str = "unknown"
    trigger: str = "cli"
    # Images by digest, handed on by the workflow job that pushed them (MLOPS_TRAIN_IMAGE/SERVE_IMAGE);
    # unset, the image tagged with the git SHA is looked up in ECR.
    train_image: str | None = None
    serve_image: str | None = None

    @classmethod
    def from_env(cls, project: str, env: Mapping[str, str] | None = None) -> AwsSettings:
        env = os.environ if env is None else env

        def get(*names: str) -> str | None:
            return next((env[n].strip() for n in names if env.get(n, "").strip()), None)

        return cls(
            project=get("MLOPS_PROJECT") or project,
            region=get("AWS_REGION", "AWS_DEFAULT_REGION"),
            profile=get("AWS_PROFILE"),
            endpoint_url=get("AWS_ENDPOINT_URL"),
            bucket=get("MLOPS_BUCKET"),
            role_arn=get("MLOPS_SAGEMAKER_ROLE_ARN"),
            wandb_secret_arn=get("MLOPS_WANDB_SECRET_ARN"),
            owner=get("MLOPS_OWNER", "GITHUB_ACTOR", "USER") or "unknown",
            trigger=get("MLOPS_TRIGGER", "GITHUB_EVENT_NAME") or "cli",
            train_image=get("MLOPS_TRAIN_IMAGE"),
            serve_image=get("MLOPS_SERVE_IMAGE"),
        )

    def require(self, *names: str) -> None:
        """Raise one line naming each missing setting, its variable, and what it is for."""
        missing = [n for n in names if not getattr(self, n)]
        if missing:
            parts = [f"{SETTINGS_HELP[n][0]} ({SETTINGS_HELP[n][1]})" for n in missing]
            raise UsageError("not set: " + "; ".join(parts) + ". See .env.example")


class Aws:
    """A boto3 session, cached clients, and the `sleep` that waits use (tests pass a fake)."""

    def __init__(
        self,
        settings: AwsSettings,
        *,
        session: boto3.Session | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self.sleep = sleep
        self._clients: dict[str, Any] = {}
        if session is None:
            settings.require("region")
            try:
                session = boto3.Session(profile_name=settings.profile, region_name=settings.region)
            except Exception as exc:  # ProfileNotFound and friends
                raise translate(exc, "opening the AWS session") from exc
        self.session = session

    @property
    def region(self) -> str:
        return str(self.session.region_name or self.settings.region)

    def client(self, service: str) -> Any:
        if service not in self._clients:
            with aws_errors(f"creating the {service} client"):
                self._clients[service] = self.session.client(
                    service, config=RETRIES, endpoint_url=self.settings.endpoint_url or None
                )
        return self._clients[service]

    def identity(self) -> dict[str, Any]:
        """Who we are (sts GetCallerIdentity): the cheapest proof that credentials work."""
        with aws_errors("checking AWS credentials"):
            response: dict[str, Any] = self.client("sts").get_caller_identity()
        return response

    def account(self) -> str:
        return str(self.identity()["Account"])


def tags(
    settings: AwsSettings, *, git_sha: str, expiry_days: int, now: float | None = None
) -> list[dict[str, str]]:
    """The tags on everything the pipeline creates: cleanup finds resources by them."""
    expires = time.strftime(
        "%Y-%m-%d", time.gmtime((time.time() if now is None else now) + expiry_days * 86400)
    )
    return [
        {"Key": "mlops:project", "Value": settings.project},
        {"Key": "mlops:git-sha", "Value": git_sha},
        {"Key": "mlops:trigger", "Value": settings.trigger},
        {"Key": "mlops:owner", "Value": settings.owner},
        {"Key": "mlops:expires", "Value": expires},
    ]
