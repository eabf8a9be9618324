"""Hyperparameters arrive as strings; bad ones stop the job before any work with a message naming them."""

import pytest

from train.config import ARCHITECTURES, ConfigError, TrainConfig, describe, parse_hyperparameters


def test_empty_hyperparameters_give_the_documented_defaults():
    assert parse_hyperparameters({}) == TrainConfig()


def test_strings_are_parsed_into_typed_values():
    config = parse_hyperparameters(
        {"epochs": "12", "learning_rate": "0.01", "amp": "false", "arch": "SmallCNN"}
    )
    assert (config.epochs, config.learning_rate, config.amp, config.arch) == (12, 0.01, False, "smallcnn")


def test_values_json_encoded_by_the_sagemaker_sdk_are_unquoted():
    config = parse_hyperparameters({"optimizer": '"adamw"', "epochs": '"3"'})
    assert (config.optimizer, config.epochs) == ("adamw", 3)


def test_integers_written_as_floats_by_tuners_are_accepted():
    assert parse_hyperparameters({"batch_size": "64.0"}).batch_size == 64


def test_keys_sagemaker_adds_itself_are_ignored():
    config = parse_hyperparameters(
        {"_tuning_objective_metric": "validation:accuracy", "sagemaker_program": "x", "epochs": "2"}
    )
    assert config.epochs == 2


def test_unknown_key_is_named_with_a_suggestion_and_the_accepted_keys():
    with pytest.raises(ConfigError) as err:
        parse_hyperparameters({"lerning_rate": "0.1"})
    message = str(err.value)
    assert (
        "'lerning_rate'" in message and "did you mean 'learning_rate'" in message and "batch_size" in message
    )


@pytest.mark.parametrize(
    ("key", "value", "expected"),
    [
        ("epochs", "ten", "'epochs': 'ten' is not an integer"),
        ("epochs", "2.5", "is not an integer"),
        ("epochs", "0", "out of range; accepted: >= 1"),
        ("learning_rate", "0", "out of range; accepted: > 0.0"),
        ("learning_rate", "nan", "is not a number"),
        ("head_lr_scale", "0", "'head_lr_scale': 0 is out of range; accepted: > 0.0"),
        ("label_smoothing", "1.0", "accepted: >= 0.0 and < 1.0"),
        ("optimizer", "rmsprop", "'rmsprop' is not one of: sgd, adamw"),
        ("arch", "vit", "is not one of: resnet18, smallcnn"),
        ("amp", "maybe", "is not a boolean; accepted: true, false"),
        ("batch_size", "", "'batch_size' is empty"),
    ],
)
def test_bad_values_name_the_key_and_what_is_accepted(key, value, expected):
    with pytest.raises(ConfigError, match=expected.replace("(", r"\(").replace(".", r"\.")):
        parse_hyperparameters({key: value})


def test_warmup_must_be_shorter_than_training():
    with pytest.raises(ConfigError, match="warmup_epochs"):
        parse_hyperparameters({"epochs": "3", "warmup_epochs": "3"})


def test_config_round_trips_through_the_sagemaker_string_form():
    config = parse_hyperparameters(
        {"arch": "smallcnn", "epochs": "4", "amp": "false", "learning_rate": "0.05"}
    )
    hyperparameters = config.to_hyperparameters()
    assert all(isinstance(v, str) for v in hyperparameters.values())
    assert parse_hyperparameters(hyperparameters) == config


def test_help_rows_cover_every_key():
    assert [row[0] for row in describe()] == TrainConfig.keys()


def test_config_architectures_match_the_artifact_builders():
    from artifact.architectures import ARCHITECTURES as built

    assert tuple(ARCHITECTURES) == tuple(built)
