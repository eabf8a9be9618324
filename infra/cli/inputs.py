"""Run inputs: what a person, or a `workflow_dispatch`, asks of one run, validated before anything starts.

    hyperparameters  the [train] (or [local]) defaults of mlops.toml, then the named inputs (--task,
                     --arch, --epochs, --learning-rate, --batch-size), then --hp-json (an object of extra
                     hyperparameters), then each --hp key=value; all checked by the trainer's own typed
                     config (`train.config.parse_hyperparameters`)
    AWS overrides    --instance-type (one the price table knows), --instance-count, --spot,
                     --max-runtime-minutes: merged into [aws] and validated with it (a spot job's
                     MaxWait must cover its MaxRuntime)

`mlops train`, `pipeline` and `tune` resolve their inputs here; `mlops validate` runs exactly these checks
and calls no AWS API (the first job of the pipeline workflow). A bad value is an `InputError` naming the
input, which `mlops validate` also prints as a GitHub annotation.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from infra.errors import UsageError
from infra.settings import AwsConfig, Config

# Named input flag -> trainer hyperparameter.
NAMED = {
    "task": "task",
    "arch": "arch",
    "epochs": "epochs",
    "learning_rate": "learning_rate",
    "batch_size": "batch_size",
}


AWS_FLAGS = ("instance_type", "instance_count", "spot", "max_runtime_minutes")


class InputError(UsageError):
    """A run input is malformed or out of range; `name` is the input as the user spelled it."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(f"input {name}: {message}")
        self.name, self.detail = name, message


@dataclass
class RunInputs:
    hyperparameters: dict[str, str]
    config: Config  # mlops.toml with the AWS overrides applied

    def outputs(self) -> dict[str, str]:
        """What later workflow jobs read (GITHUB_OUTPUT): one line each."""
        aws = self.config.aws
        return {
            "hyperparameters": json.dumps(self.hyperparameters, sort_keys=True),
            "task": self.hyperparameters.get("task", "classification"),
            "instance_type": aws.train_instance_type,
            "instance_count": str(aws.train_instance_count),
            "spot": str(aws.spot).lower(),
            "max_runtime_minutes": str(aws.max_runtime_seconds // 60),
        }


def add_flags(p: argparse.ArgumentParser, *, aws: bool = True) -> None:
    """The run inputs as flags. Values stay strings here: they are checked in `resolve`, as a dispatch
    input (always a string) would be."""
    p.add_argument("--task", help="classification (default), detection, segmentation")
    p.add_argument("--arch", help="model architecture (see `python -m train --help`)")
    p.add_argument("--epochs", help="passes over the training data")
    p.add_argument("--learning-rate", help="peak learning rate")
    p.add_argument("--batch-size", help="images per step")
    p.add_argument(
        "--hp-json", metavar="JSON", help="extra hyperparameters as a JSON object, e.g. '{\"seed\": 1}'"
    )
    if aws:
        p.add_argument("--instance-type", help="SageMaker training instance (default: [aws] in mlops.toml)")
        p.add_argument("--instance-count", help="training instances (more than one: distributed)")
        p.add_argument("--spot", help="managed spot training: true or false (default: [aws] spot)")
        p.add_argument("--max-runtime-minutes", help="MaxRuntimeInSeconds, in minutes")


def resolve(config: Config, args: argparse.Namespace, *, local: bool) -> RunInputs:
    from train.config import ConfigError, check_supported, parse_hyperparameters

    defaults = config.local if local else config.train
    task = _given(args, "task") or _json_task(getattr(args, "hp_json", None)) or _pair_task(args)
    hyperparameters = defaults.for_task(task) if task else dict(defaults.hyperparameters)
    for flag, key in NAMED.items():
        value = _given(args, flag)
        if value is not None:
            hyperparameters[key] = value
    raw_json = getattr(args, "hp_json", None)
    if raw_json is not None and raw_json.strip():
        hyperparameters.update(_json_object(raw_json))
    for pair in getattr(args, "hp", None) or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InputError("--hp", f"expects key=value, got {pair!r}")
        hyperparameters[key.strip()] = value.strip()
    try:
        check_supported(parse_hyperparameters(hyperparameters))
    except ConfigError as exc:
        raise InputError(_input_of(str(exc)), str(exc)) from None
    if local:
        given = [f for f in AWS_FLAGS if _given(args, f) is not None]
        if given:
            flag = "--" + given[0].replace("_", "-")
            raise InputError(flag, "sets a SageMaker training job; it has no meaning with --local")
        return RunInputs(hyperparameters, config)
    aws_config = _with_aws_overrides(config, args)
    hosts = aws_config.aws.train_instance_count
    try:  # a task that trains on one host only (YOLO) refuses several instances here, not in the job
        check_supported(parse_hyperparameters(hyperparameters), hosts=hosts)
    except ConfigError as exc:
        raise InputError("--instance-count", str(exc)) from None
    return RunInputs(hyperparameters, aws_config)


def _json_task(raw: str | None) -> str | None:
    """The task named in --hp-json, if any (it picks the task's defaults; the JSON is checked later)."""
    try:
        value = json.loads(raw) if raw and raw.strip() else None
    except json.JSONDecodeError:
        return None
    return str(value["task"]) if isinstance(value, dict) and value.get("task") else None


def _pair_task(args: argparse.Namespace) -> str | None:
    pairs = [p.partition("=") for p in getattr(args, "hp", None) or []]
    return next((v.strip() for k, sep, v in reversed(pairs) if sep and k.strip() == "task"), None)


def _given(args: argparse.Namespace, flag: str) -> str | None:
    """A flag's value, stripped; None when absent or blank (a dispatch input left empty means "default")."""
    value = getattr(args, flag, None)
    if value is None or not str(value).strip():
        return None
    return str(value).strip()


def _json_object(text: str) -> dict[str, str]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError("--hp-json", f"is not valid JSON ({exc.msg} at character {exc.pos})") from None
    if not isinstance(value, dict):
        raise InputError("--hp-json", f"must be a JSON object of name: value, got {type(value).__name__}")
    bad = [k for k, v in value.items() if isinstance(v, dict | list) or v is None]
    if bad:
        raise InputError("--hp-json", f"values must be strings, numbers or booleans; not for {bad}")
    return {str(k): (str(v).lower() if isinstance(v, bool) else str(v)) for k, v in value.items()}


def _input_of(message: str) -> str:
    """The input a trainer message is about: a named flag when one set that key, else the key."""
    for flag, key in NAMED.items():
        if f"'{key}'" in message:
            return "--" + flag.replace("_", "-")
    return "hyperparameters"


def _with_aws_overrides(config: Config, args: argparse.Namespace) -> Config:
    from infra.aws.costs import PRICES

    update: dict[str, Any] = {}
    instance_type = _given(args, "instance_type")
    if instance_type is not None:
        if instance_type not in PRICES:
            known = ", ".join(sorted(t for t in PRICES if t.startswith(("ml.g", "ml.p"))))
            raise InputError(
                "--instance-type",
                f"{instance_type!r} is not a SageMaker instance type this project knows; GPU types: {known}",
            )
        update["train_instance_type"] = instance_type
    count = _given(args, "instance_count")
    if count is not None:
        update["train_instance_count"] = _integer("--instance-count", count, low=1, high=16)
    spot = _given(args, "spot")
    if spot is not None:
        update["spot"] = _boolean("--spot", spot)
    minutes = _given(args, "max_runtime_minutes")
    if minutes is not None:
        seconds = _integer("--max-runtime-minutes", minutes, low=1, high=5 * 24 * 60) * 60
        update["max_runtime_seconds"] = seconds
        # The spot wait grows with the runtime it must cover (twice it, as the default does).
        update["max_wait_seconds"] = max(config.aws.max_wait_seconds, 2 * seconds)
    if not update:
        return config
    try:
        aws = AwsConfig.model_validate({**config.aws.model_dump(), **update})
    except ValidationError as exc:
        raise InputError("--spot/--max-runtime-minutes", exc.errors()[0]["msg"]) from None
    return config.model_copy(update={"aws": aws})


def _integer(name: str, text: str, *, low: int, high: int) -> int:
    try:
        value = int(str(text).strip())
    except ValueError:
        raise InputError(name, f"{text!r} is not an integer; accepted: {low} to {high}") from None
    if not low <= value <= high:
        raise InputError(name, f"{value} is out of range; accepted: {low} to {high}")
    return value


def _boolean(name: str, text: str) -> bool:
    low = str(text).strip().lower()
    if low in ("true", "1", "yes"):
        return True
    if low in ("false", "0", "no"):
        return False
    raise InputError(name, f"{text!r} is not a boolean; accepted: true, false")


def annotation(exc: InputError) -> str:
    """A GitHub Actions error annotation: shown on the run's page, naming the input."""
    text = exc.detail.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    return f"::error title=Invalid input {exc.name}::{text}"
