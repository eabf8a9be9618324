"""Fetch the W&B API key from AWS Secrets Manager, inside the training container.

The one module of `infra` that `train` imports (DESIGN: arrows point one way, except this leaf), and the
only one copied into the training image with `infra/__init__.py`: it imports nothing else of the project
and only the standard library at import time (boto3 loads when a key is fetched). It exists because a
job's `Environment` and `HyperParameters` are readable by anyone allowed DescribeTrainingJob, so the job
gets the secret's ARN (MLOPS_WANDB_SECRET_ARN) and the container reads the value with its execution
role. The key is returned, never logged: error messages name the secret, never its content.
"""

from __future__ import annotations

import json
from typing import Any

# Field names accepted when the secret is stored as JSON (the console's key/value editor writes JSON).
KEY_FIELDS = ("WANDB_API_KEY", "api_key")

_HINTS = {
    "ResourceNotFoundException": "no such secret in that account and region",
    "AccessDeniedException": "the role in use needs secretsmanager:GetSecretValue on this secret "
    "(and kms:Decrypt when it is encrypted with a customer-managed key)",
    "DecryptionFailure": "the secret's KMS key cannot be used by the role in use (kms:Decrypt)",
    "InvalidRequestException": "the secret is scheduled for deletion or disabled",
}


def region_of(secret_arn: str) -> str | None:
    """The region inside a Secrets Manager ARN (arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME)."""
    parts = secret_arn.split(":")
    if len(parts) >= 7 and parts[0] == "arn" and parts[2] == "secretsmanager" and parts[3]:
        return parts[3]
    return None


def fetch_wandb_key(secret_arn: str, *, region: str | None = None, client: Any | None = None) -> str:
    """The W&B API key held by the secret: its SecretString is the bare key, or JSON with a
    WANDB_API_KEY or api_key field. Raises RuntimeError, naming the secret, on any failure."""
    secret_arn = secret_arn.strip()
    if not secret_arn:
        raise RuntimeError("no Secrets Manager ARN given for the W&B API key (MLOPS_WANDB_SECRET_ARN)")
    what = f"reading the W&B API key from Secrets Manager secret {secret_arn}"
    try:
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        raise RuntimeError(f"{what}: boto3 is not installed in this environment") from None
    try:
        if client is None:
            import boto3

            # The ARN's region, not the job's: a secret in another region is only reachable there.
            client = boto3.client("secretsmanager", region_name=region or region_of(secret_arn))
        response = client.get_secret_value(SecretId=secret_arn)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", "error"))
        hint = _HINTS.get(code)
        raise RuntimeError(
            f"{what}: GetSecretValue failed with {code}: {error.get('Message', '')}"
            + (f" ({hint})" if hint else "")
        ) from exc
    except BotoCoreError as exc:  # no credentials, no region, endpoint unreachable
        raise RuntimeError(f"{what}: {exc}") from exc
    return _key_from(response, what)


def _key_from(response: dict[str, Any], what: str) -> str:
    # Exceptions below are raised `from None`: a chained JSONDecodeError would carry the secret text.
    text = response.get("SecretString")
    if text is None and response.get("SecretBinary") is not None:
        try:
            text = bytes(response["SecretBinary"]).decode("utf-8")
        except UnicodeDecodeError:
            raise RuntimeError(f"{what}: the secret is binary, not UTF-8 text") from None
    text = (text or "").strip()
    if not text:
        raise RuntimeError(f"{what}: the secret is empty")
    if not text.startswith("{"):
        return text
    try:
        data = json.loads(text)
    except ValueError:
        raise RuntimeError(f"{what}: the secret starts like JSON but does not parse") from None
    if isinstance(data, dict):
        fields = {str(k).lower(): v for k, v in data.items()}
        for name in KEY_FIELDS:
            value = fields.get(name.lower())
            if isinstance(value, str) and value.strip():
                return value.strip()
    raise RuntimeError(
        f"{what}: the secret is JSON without a non-empty {' or '.join(KEY_FIELDS)} field; "
        "store the bare key or one of those fields"
    )
