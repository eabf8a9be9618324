"""Run inputs (what a workflow_dispatch passes): resolved in one order, and every bad one named."""

from __future__ import annotations

import json

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


def test_aws_overrides_are_applied_and_the_spot_wait_grows_with_the_runtime():
    run = resolve(
        CONFIG,
        args(
            "--instance-type",
            "ml.g5.2xlarge",
            "--instance-count",
            "2",
            "--spot",
            "true",
            "--max-runtime-minutes",
            "180",
        ),
        local=False,
    )
    aws = run.config.aws
    assert (aws.train_instance_type, aws.train_instance_count, aws.spot) == ("ml.g5.2xlarge", 2, True)
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
