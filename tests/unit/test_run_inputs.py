"""Run inputs (what a workflow_dispatch passes): resolved in one order, and every bad one named."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra.cli import main
from infra.cli.inputs import InputError, annotation, resolve
from infra.cli.parser import build_parser
from infra.settings import Config

CONFIG = Config.from_mapping(
    {
        "project": {"name": "t"},
        "gate": {"version": 1},
        "train": {"hyperparameters": {"arch": "resnet18", "epochs": "30", "learning_rate": "0.1"}},
        "local": {"hyperparameters": {"arch": "smallcnn", "epochs": "6"}},
        "aws": {"max_runtime_seconds": 7200, "max_wait_seconds": 14400},
    }
)


def args(*argv: str):
    return build_parser().parse_args(["validate", *argv])


def test_defaults_then_named_inputs_then_json_then_hp_pairs():
    run = resolve(
        CONFIG,
        args("--epochs", "5", "--hp-json", '{"epochs": 7, "seed": 3, "amp": false}', "--hp", "seed=4"),
        local=False,
    )
    assert run.hyperparameters == {
        "arch": "resnet18",
        "epochs": "7",
        "learning_rate": "0.1",
        "seed": "4",
        "amp": "false",
    }
    assert run.config is CONFIG  # no AWS override given


def test_blank_inputs_mean_the_defaults_as_a_dispatch_left_empty_sends_them():
    blank = ("--task", "", "--epochs", " ", "--hp-json", "", "--instance-type", "", "--spot", "")
    run = resolve(CONFIG, args(*blank, "--instance-count", "", "--max-runtime-minutes", ""), local=False)
    assert run.hyperparameters == {"arch": "resnet18", "epochs": "30", "learning_rate": "0.1"}
    assert run.config is CONFIG
    assert resolve(CONFIG, args("--spot", "", "--instance-type", ""), local=True).config is CONFIG


@pytest.mark.parametrize(
    ("argv", "name", "text"),
    [
        (("--task", "keypoints"), "--task", "task"),
        (
            ("--task", "detection", "--instance-count", "2"),
            "--instance-count",
            "implemented for classification",
        ),
    ],
)
def test_what_this_build_cannot_train_is_refused_before_anything_starts(argv, name, text):
    with pytest.raises(InputError) as caught:
        resolve(CONFIG, args(*argv), local=False)
    assert caught.value.name == name and text in str(caught.value)


def test_aws_overrides_are_applied_and_the_spot_wait_grows_with_the_runtime():
    run = resolve(
        CONFIG,
        args(
            "--instance-type",
            "ml.g5.2xlarge",
            "--instance-count",
            "1",
            "--spot",
            "true",
            "--max-runtime-minutes",
            "180",
        ),
        local=False,
    )
    aws = run.config.aws
    assert (aws.train_instance_type, aws.train_instance_count, aws.spot) == ("ml.g5.2xlarge", 1, True)
    assert (aws.max_runtime_seconds, aws.max_wait_seconds) == (10800, 21600)
    assert CONFIG.aws.train_instance_type == "ml.g5.xlarge"  # the loaded config itself is unchanged
    assert run.outputs()["max_runtime_minutes"] == "180" and run.outputs()["spot"] == "true"


@pytest.mark.parametrize(
    ("argv", "name", "text"),
    [
        (("--epochs", "many"), "--epochs", "'many' is not an integer"),
        (("--learning-rate", "0"), "--learning-rate", "out of range; accepted: > 0.0"),
        (("--arch", "vit"), "--arch", "'vit' is not one of: resnet18, smallcnn"),
        (("--hp-json", "{seed: 1}"), "--hp-json", "is not valid JSON"),
        (("--hp-json", '{"seed": [1]}'), "--hp-json", "values must be strings, numbers or booleans"),
        (("--hp", "seed"), "--hp", "expects key=value"),
        (("--instance-type", "ml.x1.huge"), "--instance-type", "is not a SageMaker instance type"),
        (("--instance-count", "0"), "--instance-count", "0 is out of range; accepted: 1 to 16"),
        (("--spot", "maybe"), "--spot", "'maybe' is not a boolean"),
        (("--max-runtime-minutes", "1.5"), "--max-runtime-minutes", "is not an integer"),
    ],
)
def test_each_bad_input_is_named_with_what_it_accepts(argv, name, text):
    with pytest.raises(InputError) as caught:
        resolve(CONFIG, args(*argv), local=False)
    assert caught.value.name == name and text in caught.value.detail
    assert caught.value.exit_code == 2


def test_aws_inputs_are_refused_for_a_local_run():
    with pytest.raises(InputError, match="--instance-type: sets a SageMaker training job"):
        resolve(CONFIG, args("--local", "--instance-type", "ml.g5.xlarge"), local=True)


def test_an_annotation_names_the_input_and_keeps_to_one_line():
    line = annotation(InputError("--hp-json", "bad\nvalue 100%"))
    assert line == "::error title=Invalid input --hp-json::bad%0Avalue 100%25"


def test_validate_writes_the_resolved_inputs_for_later_jobs(tmp_path, monkeypatch, capsys):
    output = tmp_path / "github_output"
    monkeypatch.setenv("GITHUB_OUTPUT", str(output))
    assert main(["validate", "--epochs", "3", "--spot", "false", "--max-runtime-minutes", "45"]) == 0
    values = dict(line.split("=", 1) for line in output.read_text().splitlines())
    assert json.loads(values["hyperparameters"])["epochs"] == "3"
    assert (values["spot"], values["max_runtime_minutes"], values["task"]) == (
        "false",
        "45",
        "classification",
    )
    assert "inputs are valid" in capsys.readouterr().out


def test_in_github_actions_a_bad_input_is_an_error_annotation(monkeypatch, capsys):
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    assert main(["validate", "--batch-size", "0"]) == 2
    out = capsys.readouterr().out
    assert out.startswith(
        "::error title=Invalid input --batch-size::hyperparameter 'batch_size': 0 is out of range"
    )


# --- the tune workflow's inputs ------------------------------------------------------------------------


class _Ctx:
    def __init__(self, *argv: str) -> None:
        self.args = build_parser().parse_args(["tune", *argv])
        self.config = Config.from_mapping(
            {
                "project": {"name": "t"},
                "gate": {"version": 1},
                "aws": {"tuning": {"ranges": {"learning_rate": {"min": 0.01, "max": 0.1}}}},
            }
        )


def test_tuning_inputs_override_the_config_and_blank_ones_keep_it():
    from infra.cli.aws import tuning_config

    ranges = '{"weight_decay": {"min": 0.00001, "max": 0.001, "scaling": "Logarithmic"}}'
    tuned = tuning_config(_Ctx("--ranges-json", ranges, "--max-jobs", "6", "--max-parallel-jobs", "2"))
    assert list(tuned.ranges) == ["weight_decay"] and (tuned.max_jobs, tuned.max_parallel_jobs) == (6, 2)
    kept = tuning_config(_Ctx("--ranges-json", "", "--max-jobs", "", "--objective", ""))
    assert list(kept.ranges) == ["learning_rate"] and kept.max_jobs == 12


@pytest.mark.parametrize(
    ("argv", "name", "text"),
    [
        (("--ranges-json", "{nope"), "--ranges-json", "not valid JSON"),
        (("--ranges-json", "[]"), "--ranges-json", "non-empty JSON object"),
        (("--ranges-json", '{"colour": {"values": ["red"]}}'), "--ranges-json", "not a hyperparameter"),
        (("--max-jobs", "0"), "--max-jobs", "greater than or equal to 1"),
        (("--max-jobs", "2", "--max-parallel-jobs", "3"), "--max-parallel-jobs", "more than --max-jobs 2"),
        (("--objective", "vibes"), "--objective", "not a metric the trainer prints"),
    ],
)
def test_each_bad_tuning_input_is_named(argv, name, text):
    from infra.cli.aws import tuning_config

    with pytest.raises(InputError) as caught:
        tuning_config(_Ctx(*argv))
    assert caught.value.name == name and text in str(caught.value)


def test_an_image_handed_on_by_a_workflow_must_be_pinned_by_digest():
    from infra.aws.plan import LiveExecutor
    from infra.aws.platform import AwsPlatform
    from infra.aws.session import Aws, AwsSettings
    from infra.errors import UsageError

    digest = "123456789012.dkr.ecr.us-east-1.amazonaws.com/t-train@sha256:" + "f" * 64
    good = AwsSettings(project="t", region="us-east-1", train_image=digest)
    platform = AwsPlatform(Aws(good), CONFIG, LiveExecutor(lambda s: None), git_sha="abc", cache=Path())
    assert platform.image("train") == digest  # no ECR lookup: the pushing job's digest is the truth
    bad = AwsSettings(project="t", region="us-east-1", train_image=digest.replace("@sha256:", ":"))
    platform = AwsPlatform(Aws(bad), CONFIG, LiveExecutor(lambda s: None), git_sha="abc", cache=Path())
    with pytest.raises(UsageError, match=r"MLOPS_TRAIN_IMAGE=.* is not an image by digest"):
        platform.image("train")


def test_validate_checks_the_tuning_inputs_before_any_image_is_built(monkeypatch, capsys):
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    assert main(["validate", "--max-jobs", "2", "--max-parallel-jobs", "5"]) == 2
    out = capsys.readouterr().out
    assert "::error title=Invalid input --max-parallel-jobs::" in out and "inputs are valid" not in out


@pytest.mark.parametrize("command", ["deploy", "rollback"])
def test_a_workflow_may_not_deploy_without_a_smoke_test(monkeypatch, capsys, command):
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    assert main([command, "--allow-untested"]) == 2
    assert "--allow-untested is refused inside GitHub Actions" in capsys.readouterr().err
