"""AWS test tier: moto for the stateful services, botocore Stubber for what moto does not emulate
(SageMaker lifecycles, UpdateEndpoint). Never a real account: the root conftest sets fake credentials."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from moto import mock_aws

from infra.aws.session import Aws, AwsSettings

REGION = "us-east-1"
ROLE = "arn:aws:iam::123456789012:role/sagemaker-execution"
SECRET = "arn:aws:secretsmanager:us-east-1:123456789012:secret:wandb-api-key-AbCdEf"


class FakeSleep:
    """Records waits instead of sleeping, so a 30 s poll loop runs in microseconds."""

    def __init__(self) -> None:
        self.calls: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def settings(**overrides: str) -> AwsSettings:
    values = {
        "project": "demo",
        "region": REGION,
        "bucket": "demo-bucket",
        "role_arn": ROLE,
        "wandb_secret_arn": SECRET,
        "owner": "tester",
        "trigger": "test",
    }
    values.update(overrides)
    return AwsSettings(**values)


@pytest.fixture
def sleep() -> FakeSleep:
    return FakeSleep()


@pytest.fixture
def aws(sleep: FakeSleep) -> Iterator[Aws]:
    """An Aws handle on moto's in-process emulation, with the project's bucket created."""
    import boto3

    with mock_aws():
        session = boto3.Session(region_name=REGION)
        handle = Aws(settings(), session=session, sleep=sleep)
        handle.client("s3").create_bucket(Bucket="demo-bucket")
        yield handle
