"""Hyperparameter tuning: typed ranges, the request checked by Stubber, waiting and ranking trials."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from infra.aws.plan import LiveExecutor
from infra.aws.tuning import (
    NAME_LIMIT,
    parameter_ranges,
    start_tuning,
    tuning_job_call,
    tuning_name,
    wait_tuning,
)
from infra.errors import UsageError
from infra.settings import REPO_ROOT, Config, TuningConfig
from tests.functional.aws.test_training import ARN, T0, InterruptOnce, Stubs, job_spec, stubbed
from train.metrics import sagemaker_metric_definitions

NAME = "demo-hpo-20250101"
TUNING_ARN = f"arn:aws:sagemaker:us-east-1:123456789012:hyper-parameter-tuning-job/{NAME}"


@pytest.fixture
def stubs() -> Iterator[Stubs]:
    yield from stubbed()


def tuning_config(**overrides: Any) -> TuningConfig:
    values: dict[str, Any] = {
        "strategy": "Bayesian",
        "objective": "validation:accuracy",
        "max_jobs": 12,
        "max_parallel_jobs": 3,
        "ranges": {
            "learning_rate": {"min": 0.01, "max": 0.4, "scaling": "Logarithmic"},
            "label_smoothing": {"min": 0.0, "max": 0.2},
            "epochs": {"min": 10, "max": 40},
            "optimizer": {"values": ["sgd", "adamw"]},
        },
    }
    values.update(overrides)
    return TuningConfig(**values)


def test_the_request_passes_the_service_model_with_typed_ranges_and_the_objective(stubs: Stubs):
    call = tuning_job_call(NAME, job_spec(), tuning_config())
    stubs.sagemaker.add_response(
        "create_hyper_parameter_tuning_job",
        {"HyperParameterTuningJobArn": TUNING_ARN},
        expected_params=call.params,
    )
    assert start_tuning(stubs.aws, NAME, job_spec(), tuning_config(), LiveExecutor(stubs.aws.client)) == NAME

    config = call.params["HyperParameterTuningJobConfig"]
    assert config["Strategy"] == "Bayesian"
    assert config["HyperParameterTuningJobObjective"] == {
        "Type": "Maximize",
        "MetricName": "validation:accuracy",
    }
    assert config["ResourceLimits"] == {"MaxNumberOfTrainingJobs": 12, "MaxParallelTrainingJobs": 3}
    assert config["ParameterRanges"] == {
        "ContinuousParameterRanges": [
            {"Name": "learning_rate", "MinValue": "0.01", "MaxValue": "0.4", "ScalingType": "Logarithmic"},
            {"Name": "label_smoothing", "MinValue": "0.0", "MaxValue": "0.2", "ScalingType": "Auto"},
        ],
        "IntegerParameterRanges": [
            {"Name": "epochs", "MinValue": "10", "MaxValue": "40", "ScalingType": "Auto"}
        ],
        "CategoricalParameterRanges": [{"Name": "optimizer", "Values": ["sgd", "adamw"]}],
    }
    definition = call.params["TrainingJobDefinition"]
    # Tuned keys leave the static hyperparameters; SageMaker refuses a key that is both.
    assert definition["StaticHyperParameters"] == {"arch": "resnet18", "batch_size": "128"}
    assert definition["AlgorithmSpecification"]["MetricDefinitions"] == sagemaker_metric_definitions()
    assert definition["EnableManagedSpotTraining"] is True
    assert definition["StoppingCondition"] == {"MaxRuntimeInSeconds": 7200, "MaxWaitTimeInSeconds": 14400}
    assert definition["CheckpointConfig"]["LocalPath"] == "/opt/ml/checkpoints"
    assert "MLOPS_WANDB_SECRET_ARN" in definition["Environment"]
    assert {"Key": "mlops:project", "Value": "demo"} in call.params["Tags"]


def test_the_shipped_tuning_config_builds_a_valid_request(stubs: Stubs):
    shipped = Config.load(REPO_ROOT / "mlops.toml").aws.tuning
    call = tuning_job_call(NAME, job_spec(), shipped)
    stubs.sagemaker.add_response(
        "create_hyper_parameter_tuning_job",
        {"HyperParameterTuningJobArn": TUNING_ARN},
        expected_params=call.params,
    )
    LiveExecutor(stubs.aws.client)(call)


def test_a_metric_to_minimise_is_minimised():
    call = tuning_job_call(NAME, job_spec(), tuning_config(objective="validation:loss"))
    objective = call.params["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"]
    assert objective == {"Type": "Minimize", "MetricName": "validation:loss"}


@pytest.mark.parametrize(
    ("ranges", "needle"),
    [
        ({"learning_rat": {"min": 0.01, "max": 0.1}}, "'learning_rat'"),
        ({"learning_rate": {"min": 0.4, "max": 0.01}}, "'learning_rate'"),
        ({"learning_rate": {"min": 0.0, "max": 0.1, "scaling": "Logarithmic"}}, "Logarithmic"),
        ({"learning_rate": {"min": 0.01, "max": 0.1, "scaling": "Exponential"}}, "Exponential"),
        ({"learning_rate": {"min": 0.01}}, "'learning_rate'"),
        ({"learning_rate": {"min": 0.01, "max": 50.0}}, "'learning_rate'"),  # the trainer accepts <= 10
        ({"epochs": {"min": 1.5, "max": 10}}, "'epochs'"),
        ({"epochs": {"min": 1, "max": 10, "scaling": "ReverseLogarithmic"}}, "ReverseLogarithmic"),
        ({"arch": {"min": 1, "max": 2}}, "'arch'"),
        ({"optimizer": {"values": ["sgd", "adam"]}}, "'optimizer'"),
        ({"optimizer": {"values": []}}, "'optimizer'"),
        ({"momentum": {"min": "0.1", "max": 0.9}}, "'momentum'"),
    ],
)
def test_bad_ranges_are_refused_naming_the_key(ranges: dict[str, Any], needle: str):
    with pytest.raises(UsageError) as err:
        tuning_job_call(NAME, job_spec(), tuning_config(ranges=ranges))
    assert needle in str(err.value)


def test_booleans_and_choices_tune_as_categorical_strings():
    ranges = parameter_ranges({"amp": {"values": [True, False]}, "scheduler": {"values": ["cosine", "step"]}})
    assert ranges == {
        "CategoricalParameterRanges": [
            {"Name": "amp", "Values": ["true", "false"]},
            {"Name": "scheduler", "Values": ["cosine", "step"]},
        ]
    }


def test_grid_search_takes_categorical_ranges_only_and_no_job_count():
    with pytest.raises(UsageError, match="Grid"):
        tuning_job_call(NAME, job_spec(), tuning_config(strategy="Grid"))
    grid = tuning_config(strategy="Grid", ranges={"optimizer": {"values": ["sgd", "adamw"]}})
    limits = tuning_job_call(NAME, job_spec(), grid).params["HyperParameterTuningJobConfig"]["ResourceLimits"]
    assert limits == {"MaxParallelTrainingJobs": 3}


def test_the_training_jobs_own_checks_apply_to_tuning(stubs: Stubs):
    with pytest.raises(UsageError, match="3600"):
        start_tuning(
            stubs.aws, NAME, job_spec(max_wait_seconds=3600), tuning_config(), LiveExecutor(stubs.aws.client)
        )
    with pytest.raises(UsageError, match="ranges is empty"):
        tuning_job_call(NAME, job_spec(), tuning_config(ranges={}))


def test_long_tuning_names_are_shortened_deterministically_and_bad_ones_refused():
    long_a, long_b = "cv-mlops-tune-20250101-120000-aaaa", "cv-mlops-tune-20250101-120000-bbbb"
    short_a, short_b = tuning_name(long_a), tuning_name(long_b)
    assert len(short_a) == NAME_LIMIT and short_a.startswith("cv-mlops-tune-20250101-1200")
    assert short_a != short_b and tuning_name(long_a) == short_a
    assert tuning_name(NAME) == NAME
    call = tuning_job_call(long_a, job_spec(), tuning_config())
    assert call.params["HyperParameterTuningJobName"] == short_a
    with pytest.raises(UsageError, match="tuning job name"):
        tuning_name("demo_hpo")


# ---------------------------------------------------------------------------------------------------
# Waiting


def tuning_described(
    status: str, counters: dict[str, int], best: dict[str, Any] | None = None
) -> dict[str, Any]:
    response: dict[str, Any] = {
        "HyperParameterTuningJobName": NAME,
        "HyperParameterTuningJobArn": TUNING_ARN,
        "HyperParameterTuningJobConfig": {
            "Strategy": "Bayesian",
            "HyperParameterTuningJobObjective": {"Type": "Maximize", "MetricName": "validation:accuracy"},
            "ResourceLimits": {"MaxNumberOfTrainingJobs": 3, "MaxParallelTrainingJobs": 2},
        },
        "HyperParameterTuningJobStatus": status,
        "CreationTime": T0,
        "TrainingJobStatusCounters": counters,
        "ObjectiveStatusCounters": {"Succeeded": counters.get("Completed", 0)},
    }
    if best:
        response["BestTrainingJob"] = best
    return response


def summary(index: int, status: str, accuracy: float | None, lr: str) -> dict[str, Any]:
    item: dict[str, Any] = {
        "TrainingJobName": f"{NAME}-00{index}-abcdef0{index}",
        "TrainingJobArn": f"{ARN}-{index}",
        "CreationTime": T0 + timedelta(minutes=index),
        "TrainingJobStatus": status,
        "TunedHyperParameters": {"learning_rate": lr, "optimizer": "sgd"},
    }
    if accuracy is not None:
        item["FinalHyperParameterTuningJobObjectiveMetric"] = {
            "MetricName": "validation:accuracy",
            "Value": accuracy,
        }
    return item


def expect_tuning_describe(stubs: Stubs, response: dict[str, Any]) -> None:
    stubs.sagemaker.add_response(
        "describe_hyper_parameter_tuning_job", response, expected_params={"HyperParameterTuningJobName": NAME}
    )


def test_waiting_reports_progress_then_ranks_the_trials_and_names_the_best(stubs: Stubs):
    first, second, third = (
        summary(1, "Completed", 0.81, "0.05"),
        summary(2, "Completed", 0.88, "0.12"),
        summary(3, "Failed", None, "0.39"),
    )
    expect_tuning_describe(stubs, tuning_described("InProgress", {"Completed": 0, "InProgress": 2}))
    expect_tuning_describe(stubs, tuning_described("InProgress", {"Completed": 0, "InProgress": 2}))
    expect_tuning_describe(
        stubs,
        tuning_described("Completed", {"Completed": 2, "NonRetryableError": 1, "InProgress": 0}, best=second),
    )
    stubs.sagemaker.add_response(
        "list_training_jobs_for_hyper_parameter_tuning_job",
        {"TrainingJobSummaries": [first, third], "NextToken": "page-2"},
        expected_params={"HyperParameterTuningJobName": NAME, "MaxResults": 100},
    )
    stubs.sagemaker.add_response(
        "list_training_jobs_for_hyper_parameter_tuning_job",
        {"TrainingJobSummaries": [second]},
        expected_params={"HyperParameterTuningJobName": NAME, "MaxResults": 100, "NextToken": "page-2"},
    )
    lines: list[str] = []
    outcome = wait_tuning(stubs.aws, NAME, on_event=lines.append)

    assert lines[0] == f"{NAME}: InProgress; trials: 0 completed, 2 running, 0 failed, 0 stopped"
    assert lines[1].startswith(f"{NAME}: Completed; trials: 2 completed, 0 running, 1 failed, 0 stopped")
    assert "best so far validation:accuracy=0.8800" in lines[1]
    assert (
        lines[2]
        == f"best: {second['TrainingJobName']} validation:accuracy=0.8800 learning_rate=0.12 optimizer=sgd"
    )
    assert len(lines) == 3  # an unchanged poll says nothing
    assert stubs.sleep.calls == [60, 60]
    assert outcome.status == "Completed" and outcome.objective == "validation:accuracy"
    assert outcome.best is not None and outcome.best.job_name == second["TrainingJobName"]
    assert outcome.best.hyperparameters == {"learning_rate": "0.12", "optimizer": "sgd"}
    assert [t.objective for t in outcome.trials] == [0.88, 0.81, None]  # best first, no objective last

    table = outcome.table().splitlines()
    assert table[0].split() == [
        "training",
        "job",
        "status",
        "validation:accuracy",
        "learning_rate",
        "optimizer",
    ]
    assert table[1].split()[:4] == [second["TrainingJobName"], "*", "Completed", "0.8800"]
    assert table[3].split()[:3] == [third["TrainingJobName"], "Failed", "-"]


def test_ctrl_c_stops_the_tuning_job_and_waits_for_it(stubs: Stubs):
    stubs.aws.sleep = sleep = InterruptOnce()
    expect_tuning_describe(stubs, tuning_described("InProgress", {"InProgress": 2}))
    stubs.sagemaker.add_response(
        "stop_hyper_parameter_tuning_job", {}, expected_params={"HyperParameterTuningJobName": NAME}
    )
    expect_tuning_describe(stubs, tuning_described("Stopped", {"Stopped": 2}))
    stubs.sagemaker.add_response(
        "list_training_jobs_for_hyper_parameter_tuning_job",
        {"TrainingJobSummaries": [summary(1, "Stopped", None, "0.1"), summary(2, "Stopped", None, "0.2")]},
        expected_params={"HyperParameterTuningJobName": NAME, "MaxResults": 100},
    )
    lines: list[str] = []
    outcome = wait_tuning(stubs.aws, NAME, on_event=lines.append, poll_seconds=5)

    assert any(line.startswith(f"interrupted: stopping {NAME}") for line in lines)
    assert outcome.status == "Stopped" and outcome.best is None and len(outcome.trials) == 2
    assert sleep.calls == [5]
