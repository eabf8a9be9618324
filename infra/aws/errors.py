"""AWS failures become the project's own exceptions, each with a message that says what to do."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
    PartialCredentialsError,
    ProfileNotFound,
)

from infra.errors import MlopsError, UsageError


class AwsError(MlopsError):
    """An AWS API call failed; `code` is AWS's error code (e.g. AccessDeniedException)."""

    exit_code = 6

    def __init__(self, message: str, code: str = "", operation: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.operation = operation


class NotFound(AwsError):
    """The resource does not exist (ValidationException '... does not exist', ResourceNotFound, 404)."""


_DENIED = "the credentials in use lack permission for this call; check the IAM role's policy"
_EXPIRED = "the session token expired; sign in again (aws sso login, or re-run the workflow)"
_INVALID = "the credentials are not valid in this account or region"
_HINTS = {
    "AccessDenied": _DENIED,
    "AccessDeniedException": _DENIED,
    "ExpiredToken": _EXPIRED,
    "ExpiredTokenException": _EXPIRED,
    "UnrecognizedClientException": _INVALID,
    "InvalidClientTokenId": _INVALID,
    "ResourceLimitExceeded": "an account quota is exhausted; request an increase in Service Quotas "
    "(spot training instances have their own quota)",
    "ThrottlingException": "AWS is throttling this account; retried already, try again in a minute",
    "NoSuchBucket": "the bucket does not exist; create it or fix MLOPS_BUCKET",
}


def _is_not_found(code: str, message: str) -> bool:
    return code in (
        "ResourceNotFound",
        "ResourceNotFoundException",
        "NoSuchKey",
        "404",
        "NotFound",
        "RepositoryNotFoundException",
        "ImageNotFoundException",
        "NoSuchEntity",
    ) or (code == "ValidationException" and ("does not exist" in message or "Could not find" in message))


def translate(exc: Exception, what: str) -> MlopsError:
    """One exception a user can act on, for any botocore failure while doing `what`."""
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return UsageError(
            "no AWS credentials found: run `aws configure` or `aws sso login`, set AWS_PROFILE, or in GitHub "
            "Actions assume the role with OIDC (aws-actions/configure-aws-credentials)"
        )
    if isinstance(exc, NoRegionError):
        return UsageError("no AWS region: set AWS_REGION (for example AWS_REGION=us-east-1)")
    if isinstance(exc, ProfileNotFound):
        return UsageError(f"{exc}: fix AWS_PROFILE or add the profile with `aws configure --profile NAME`")
    if isinstance(exc, EndpointConnectionError):
        return AwsError(
            f"{what}: cannot reach {exc.kwargs.get('endpoint_url', 'AWS')}; check the network, "
            "AWS_REGION and AWS_ENDPOINT_URL"
        )
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code, message = str(error.get("Code", "")), str(error.get("Message", ""))
        operation = exc.operation_name
        hint = _HINTS.get(code)
        text = f"{what}: {operation} failed with {code}: {message}" + (f" ({hint})" if hint else "")
        cls = NotFound if _is_not_found(code, message) else AwsError
        return cls(text, code=code, operation=operation)
    if isinstance(exc, BotoCoreError):
        return AwsError(f"{what}: {exc}")
    raise exc


@contextlib.contextmanager
def aws_errors(what: str) -> Iterator[None]:
    """Translate botocore exceptions raised inside the block; anything else passes through."""
    try:
        yield
    except (ClientError, BotoCoreError) as exc:
        raise translate(exc, what) from exc
