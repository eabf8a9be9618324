"""The W&B key leaf and the tracker's mode: the job carries a secret's ARN, the container fetches the key,
and a W&B problem leaves the run offline with a warning that never shows key material.

Secrets Manager is moto's in-process emulation; wandb.init is never called (the mode decision is
`Tracker.resolve_mode`, run by the constructor)."""

from __future__ import annotations

import ast
import json
import os
import sys
from pathlib import Path

import boto3
import pytest
from moto import mock_aws

import infra.wandb_secret
from infra.wandb_secret import fetch_wandb_key, region_of
from train.tracking import Tracker

KEY = "0123456789abcdef0123456789abcdef01234567"  # the shape of a W&B key; not a real one


@pytest.fixture
def secrets():
    with mock_aws():
        yield boto3.client("secretsmanager", region_name="us-east-1")


@pytest.fixture
def process_env():
    """The tracker writes the fetched key into os.environ; take it out again after the test (the root
    conftest's delenv records nothing when the variable was absent, so it would not)."""
    yield os.environ
    os.environ.pop("WANDB_API_KEY", None)


def secret(client, name: str, value: str, region: str = "us-east-1") -> str:
    if region != "us-east-1":
        client = boto3.client("secretsmanager", region_name=region)
    return str(client.create_secret(Name=name, SecretString=value)["ARN"])


def tracker(tmp_path: Path, env: dict[str, str] | None = None) -> Tracker:
    return Tracker(tmp_path / "wandb", project="demo", name="job-1", config={}, env=env)


def test_a_raw_string_secret_is_the_key(secrets):
    assert fetch_wandb_key(secret(secrets, "wandb-raw", f"  {KEY}\n")) == KEY


@pytest.mark.parametrize("field", ["WANDB_API_KEY", "api_key"])
def test_a_json_secret_holds_the_key_in_a_named_field(secrets, field):
    arn = secret(secrets, f"wandb-json-{field}", json.dumps({field: KEY, "note": "team key"}))
    assert fetch_wandb_key(arn) == KEY


def test_the_region_comes_from_the_arn(secrets, monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    arn = secret(secrets, "wandb-eu", KEY, region="eu-west-1")
    assert region_of(arn) == "eu-west-1"
    assert fetch_wandb_key(arn) == KEY  # found only because the client was built for eu-west-1
    with pytest.raises(RuntimeError, match="ResourceNotFoundException"):
        fetch_wandb_key(arn, region="us-east-1")  # an explicit region wins


def test_a_missing_secret_is_a_runtime_error_naming_the_arn(secrets):
    secret(secrets, "wandb-present", KEY)
    arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:wandb-absent-AbCdEf"
    with pytest.raises(RuntimeError) as err:
        fetch_wandb_key(arn)
    assert arn in str(err.value) and "ResourceNotFoundException" in str(err.value)
    assert KEY not in str(err.value)


def test_a_json_secret_without_a_key_field_is_refused_without_showing_its_content(secrets):
    arn = secret(secrets, "wandb-wrong-field", json.dumps({"token": KEY}))
    with pytest.raises(RuntimeError, match="WANDB_API_KEY or api_key") as err:
        fetch_wandb_key(arn)
    assert KEY not in str(err.value) and err.value.__cause__ is None


def test_the_leaf_imports_only_the_standard_library_at_import_time():
    # The training image carries infra/__init__.py and this file alone, and boto3 loads only on use.
    tree = ast.parse(Path(infra.wandb_secret.__file__).read_text())
    imported = {
        (node.module or "").split(".")[0] if isinstance(node, ast.ImportFrom) else alias.name.split(".")[0]
        for node in tree.body
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}


def test_with_only_the_secret_arn_the_tracker_fetches_the_key_and_goes_online(
    secrets, process_env, monkeypatch, tmp_path, capsys
):
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setenv("MLOPS_WANDB_SECRET_ARN", secret(secrets, "wandb", json.dumps({"WANDB_API_KEY": KEY})))
    assert tracker(tmp_path).mode == "online"
    assert process_env["WANDB_API_KEY"] == KEY  # where wandb reads it, in this process only
    assert KEY not in "".join(capsys.readouterr())


def test_a_failed_fetch_leaves_the_run_offline_with_a_warning_that_shows_no_key(
    secrets, process_env, tmp_path, capsys
):
    arn = secret(secrets, "wandb-broken", json.dumps({"token": KEY}))
    assert tracker(tmp_path, env={"MLOPS_WANDB_SECRET_ARN": arn}).mode == "offline"
    err = capsys.readouterr().err
    assert err.startswith("WARNING: W&B API key not loaded") and arn in err and "logging offline" in err
    assert KEY not in err
    assert "WANDB_API_KEY" not in process_env


def test_an_explicit_wandb_mode_wins_and_fetches_nothing(secrets, process_env, tmp_path, capsys):
    arn = secret(secrets, "wandb", KEY)
    assert tracker(tmp_path, env={"WANDB_MODE": "offline", "MLOPS_WANDB_SECRET_ARN": arn}).mode == "offline"
    assert tracker(tmp_path, env={"WANDB_MODE": "disabled", "MLOPS_WANDB_SECRET_ARN": arn}).mode == "disabled"
    assert "WANDB_API_KEY" not in process_env and capsys.readouterr().err == ""


def test_a_key_in_the_environment_is_used_as_is(tmp_path, process_env):
    env = {"WANDB_API_KEY": KEY, "MLOPS_WANDB_SECRET_ARN": "arn:aws:secretsmanager:us-east-1:1:secret:x"}
    assert tracker(tmp_path, env=env).mode == "online"
    assert "WANDB_API_KEY" not in process_env  # no fetch, nothing written


def test_without_key_or_arn_the_run_is_offline(tmp_path):
    assert tracker(tmp_path, env={}).mode == "offline"
