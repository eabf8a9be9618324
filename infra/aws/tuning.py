"""SageMaker hyperparameter tuning: ranges from mlops.toml [aws.tuning], one request, trials ranked.

Stages:
1. `parameter_ranges` types each range from the trainer's own config (float fields -> Continuous,
   int fields -> Integer, {"values": [...]} -> Categorical) and checks the bounds with the trainer's
   parser, so a tuner never proposes a value the trainer would refuse.
2. `tuning_job_call` builds CreateHyperParameterTuningJob. Its TrainingJobDefinition is taken from
   `training.training_job_call(spec)` (same image, metric definitions, channels, spot, checkpoints,
   environment, and the same checks), with the tuned keys moved out of the static hyperparameters.
3. `wait_tuning` polls DescribeHyperParameterTuningJob through `aws.sleep`, emits progress, and on the
   end lists every trial (ListTrainingJobsForHyperParameterTuningJob) ranked by the objective.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from infra.aws.errors import AwsError, NotFound, aws_errors
from infra.aws.plan import Call, Executor, LiveExecutor
from infra.aws.session import Aws
from infra.aws.training import JobSpec, check_job_name, training_job_call
from infra.errors import UsageError
from infra.settings import TuningConfig
from train.config import ConfigError, TrainConfig, parse_hyperparameters
from train.metrics import METRICS

NAME_LIMIT = 32  # HyperParameterTuningJobName: SageMaker appends "-NNN-xxxxxxxx" for each trial's name
TERMINAL = ("Completed", "Failed", "Stopped")
SCALINGS = ("Auto", "Linear", "Logarithmic", "ReverseLogarithmic")
MAX_CATEGORICAL_VALUES = 30  # SageMaker's limit per CategoricalParameterRange

_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}
_DEFINITION_KEYS = (
    "AlgorithmSpecification",
    "RoleArn",
    "InputDataConfig",
    "OutputDataConfig",
    "ResourceConfig",
    "StoppingCondition",
    "EnableManagedSpotTraining",
    "CheckpointConfig",
    "Environment",
)


def tuning_name(name: str) -> str:
    """`name` as a valid tuning job name: unchanged when it fits, else shortened with a hash suffix.

    The suffix (4 hex characters of the full name's sha256) keeps two long names that share a prefix
    apart, and the result is deterministic, so `wait_tuning(name)` finds what `start_tuning(name)` made.
    """
    check_job_name(name, what="tuning job name", limit=63)
    if len(name) <= NAME_LIMIT:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:4]
    return f"{name[: NAME_LIMIT - 5].rstrip('-')}-{digest}"


def _kind(key: str) -> str:
    kind = _FIELDS[key].type
    # `from __future__ import annotations` in train.config makes field types strings.
    return kind if isinstance(kind, str) else kind.__name__


def _as_hyperparameter(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _check_value(key: str, value: str) -> None:
    try:
        parse_hyperparameters({key: value})
    except ConfigError as exc:
        raise UsageError(f"tuning range {key!r}: {exc}") from None


def _number(key: str, bound: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise UsageError(f"tuning range {key!r}: {bound} must be a number, got {value!r}")
    return float(value)


def _categorical(key: str, spec: Mapping[str, Any]) -> dict[str, Any]:
    extra = set(spec) - {"values"}
    values = spec["values"]
    if extra:
        raise UsageError(f"tuning range {key!r}: 'values' cannot be combined with {sorted(extra)}")
    if not isinstance(values, list) or not 1 <= len(values) <= MAX_CATEGORICAL_VALUES:
        raise UsageError(
            f"tuning range {key!r}: values must be a list of 1 to {MAX_CATEGORICAL_VALUES} items"
        )
    texts = [_as_hyperparameter(v) for v in values]
    for text in texts:
        _check_value(key, text)
    return {"Name": key, "Values": texts}


def _numeric(key: str, spec: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """("IntegerParameterRanges" or "ContinuousParameterRanges", the range) for a {min, max} table."""
    extra = set(spec) - {"min", "max", "scaling"}
    if extra or "min" not in spec or "max" not in spec:
        raise UsageError(
            f"tuning range {key!r} needs min and max (and optionally scaling), or values; got {sorted(spec)}"
        )
    kind = _kind(key)
    if kind not in ("int", "float"):
        raise UsageError(f"tuning range {key!r} is a {kind} hyperparameter: give a list of values")
    low, high = _number(key, "min", spec["min"]), _number(key, "max", spec["max"])
    if low >= high:
        raise UsageError(f"tuning range {key!r}: min ({spec['min']}) must be below max ({spec['max']})")
    scaling = spec.get("scaling", "Auto")
    if scaling not in SCALINGS:
        raise UsageError(f"tuning range {key!r}: scaling {scaling!r} is not one of {', '.join(SCALINGS)}")
    if scaling == "Logarithmic" and low <= 0:
        raise UsageError(f"tuning range {key!r}: Logarithmic scaling needs min > 0")
    if scaling == "ReverseLogarithmic" and (kind == "int" or low < 0 or high >= 1):
        raise UsageError(
            f"tuning range {key!r}: ReverseLogarithmic scaling works only on a float range within [0, 1)"
        )
    if kind == "int":
        if not (low.is_integer() and high.is_integer()):
            raise UsageError(f"tuning range {key!r}: {key} is an integer; min and max must be integers")
        bounds = (str(int(low)), str(int(high)))
    else:
        bounds = (_as_hyperparameter(spec["min"]), _as_hyperparameter(spec["max"]))
    for bound in bounds:
        _check_value(key, bound)
    target = "IntegerParameterRanges" if kind == "int" else "ContinuousParameterRanges"
    return target, {"Name": key, "MinValue": bounds[0], "MaxValue": bounds[1], "ScalingType": scaling}


def parameter_ranges(ranges: Mapping[str, Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """SageMaker ParameterRanges from [aws.tuning] ranges; UsageError naming the first bad one."""
    result: dict[str, list[dict[str, Any]]] = {
        "IntegerParameterRanges": [],
        "ContinuousParameterRanges": [],
        "CategoricalParameterRanges": [],
    }
    for key, spec in ranges.items():
        if key not in _FIELDS:
            raise UsageError(
                f"tuning range {key!r} is not a hyperparameter the trainer knows; "
                f"known: {', '.join(TrainConfig.keys())}"
            )
        if not isinstance(spec, Mapping):
            raise UsageError(f"tuning range {key!r} must be a table: {{min, max, scaling}} or {{values}}")
        if "values" in spec:
            result["CategoricalParameterRanges"].append(_categorical(key, spec))
        else:
            target, parameter_range = _numeric(key, spec)
            result[target].append(parameter_range)
    return {k: v for k, v in result.items() if v}


def _goal(objective: str) -> str:
    metric = next((m for m in METRICS if m.name == objective), None)
    if metric is None:
        raise UsageError(
            f"objective {objective!r} is not a metric the trainer prints; "
            f"known: {', '.join(m.name for m in METRICS)}"
        )
    return "Maximize" if metric.goal == "maximize" else "Minimize"


def tuning_job_call(name: str, spec: JobSpec, tuning: TuningConfig) -> Call:
    """The CreateHyperParameterTuningJob request; every check runs before anything is built."""
    job_name = tuning_name(name)
    training = training_job_call(spec).params  # the same checks and the same definition as one job
    ranges = parameter_ranges(tuning.ranges)
    if not ranges:
        raise UsageError("[aws.tuning] ranges is empty: give at least one hyperparameter range")
    if tuning.strategy == "Grid" and set(ranges) != {"CategoricalParameterRanges"}:
        raise UsageError("the Grid strategy tunes categorical ranges only: give each range as values")
    tuned = {r["Name"] for group in ranges.values() for r in group}
    definition: dict[str, Any] = {key: training[key] for key in _DEFINITION_KEYS}
    # SageMaker rejects a hyperparameter that is both static and tuned.
    definition["StaticHyperParameters"] = {
        k: v for k, v in training["HyperParameters"].items() if k not in tuned
    }
    limits: dict[str, int] = {"MaxParallelTrainingJobs": tuning.max_parallel_jobs}
    if tuning.strategy != "Grid":
        # Grid runs every combination; SageMaker derives the number of jobs from the ranges.
        limits["MaxNumberOfTrainingJobs"] = tuning.max_jobs
    params: dict[str, Any] = {
        "HyperParameterTuningJobName": job_name,
        "HyperParameterTuningJobConfig": {
            "Strategy": tuning.strategy,
            "HyperParameterTuningJobObjective": {
                "Type": _goal(tuning.objective),
                "MetricName": tuning.objective,
            },
            "ResourceLimits": limits,
            "ParameterRanges": ranges,
        },
        "TrainingJobDefinition": definition,
        # The tuner copies these tags onto every training job it launches, so cleanup finds them.
        "Tags": training["Tags"],
    }
    return Call(
        "sagemaker",
        "CreateHyperParameterTuningJob",
        params,
        why=f"start tuning job {job_name} ({tuning.strategy}, up to {tuning.max_jobs} jobs, "
        f"{tuning.max_parallel_jobs} at a time, {_goal(tuning.objective).lower()} {tuning.objective})",
    )


def start_tuning(aws: Aws, name: str, spec: JobSpec, tuning: TuningConfig, executor: Executor) -> str:
    """Start the tuning job (or print it on a dry run); returns its name, shortened if it had to be."""
    call = tuning_job_call(name, spec, tuning)
    executor(call)
    return str(call.params["HyperParameterTuningJobName"])


def stop_tuning(aws: Aws, name: str, executor: Executor) -> None:
    """StopHyperParameterTuningJob: stops the tuner and every training job it is running."""
    job_name = tuning_name(name)
    executor(
        Call(
            "sagemaker",
            "StopHyperParameterTuningJob",
            {"HyperParameterTuningJobName": job_name},
            why=f"stop tuning job {job_name} and its running training jobs",
        )
    )


@dataclass
class Trial:
    job_name: str
    status: str
    objective: float | None  # FinalHyperParameterTuningJobObjectiveMetric; None until it reports
    hyperparameters: dict[str, str]  # the tuned values only


@dataclass
class TuningOutcome:
    name: str
    status: str
    best: Trial | None
    trials: list[Trial]  # best first; trials without an objective last
    objective: str = ""
    failure_reason: str | None = None
    goal: str = field(default="Maximize")

    def table(self) -> str:
        """The trials as a plain-text table, best first (for the console and the job summary)."""
        keys = sorted({k for t in self.trials for k in t.hyperparameters})
        header = ["training job", "status", self.objective or "objective", *keys]
        rows = [
            [
                t.job_name + (" *" if self.best and t.job_name == self.best.job_name else ""),
                t.status,
                "-" if t.objective is None else f"{t.objective:.4f}",
                *(t.hyperparameters.get(k, "") for k in keys),
            ]
            for t in self.trials
        ]
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
        return "\n".join(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
            for row in [header, *rows]
        )


def _trial(summary: Mapping[str, Any]) -> Trial:
    metric = summary.get("FinalHyperParameterTuningJobObjectiveMetric") or {}
    return Trial(
        job_name=str(summary["TrainingJobName"]),
        status=str(summary.get("TrainingJobStatus", "")),
        objective=float(metric["Value"]) if "Value" in metric else None,
        hyperparameters={k: str(v) for k, v in summary.get("TunedHyperParameters", {}).items()},
    )


def trials(aws: Aws, name: str) -> list[Trial]:
    """Every training job the tuner launched (ListTrainingJobsForHyperParameterTuningJob, all pages)."""
    client = aws.client("sagemaker")
    found: list[Trial] = []
    token: str | None = None
    while True:
        params: dict[str, Any] = {"HyperParameterTuningJobName": name, "MaxResults": 100}
        if token:
            params["NextToken"] = token
        with aws_errors(f"listing the training jobs of tuning job {name}"):
            page = client.list_training_jobs_for_hyper_parameter_tuning_job(**params)
        found += [_trial(s) for s in page.get("TrainingJobSummaries", [])]
        token = page.get("NextToken")
        if not token:
            return found


def _rank(found: list[Trial], goal: str) -> list[Trial]:
    sign = -1.0 if goal == "Maximize" else 1.0
    return sorted(found, key=lambda t: (t.objective is None, sign * (t.objective or 0.0)))


def _progress(name: str, desc: Mapping[str, Any]) -> str:
    counts = desc.get("TrainingJobStatusCounters", {})
    failed = counts.get("NonRetryableError", 0) + counts.get("RetryableError", 0)
    text = (
        f"{name}: {desc.get('HyperParameterTuningJobStatus', '')}; trials: "
        f"{counts.get('Completed', 0)} completed, {counts.get('InProgress', 0)} running, "
        f"{failed} failed, {counts.get('Stopped', 0)} stopped"
    )
    best = desc.get("BestTrainingJob")
    if best and "FinalHyperParameterTuningJobObjectiveMetric" in best:
        metric = best["FinalHyperParameterTuningJobObjectiveMetric"]
        name_of = metric.get("MetricName", "objective")
        text += f"; best so far {name_of}={metric['Value']:.4f} ({best['TrainingJobName']})"
    return text


def wait_tuning(
    aws: Aws,
    name: str,
    *,
    on_event: Callable[[str], None],
    poll_seconds: float = 60,
    stop_on_interrupt: bool = True,
    executor: Executor | None = None,
) -> TuningOutcome:
    """Follow the tuning job to Completed, Failed or Stopped; then rank its trials.

    Ctrl-C with `stop_on_interrupt` stops the tuner (and its running trials) and waits until it has
    stopped; a second Ctrl-C leaves at once.
    """
    job_name = tuning_name(name)
    client = aws.client("sagemaker")
    last = ""
    stop_sent = False
    while True:
        try:
            with aws_errors(f"describing tuning job {job_name}"):
                desc = client.describe_hyper_parameter_tuning_job(HyperParameterTuningJobName=job_name)
            line = _progress(job_name, desc)
            if line != last:
                on_event(line)
                last = line
            status = str(desc.get("HyperParameterTuningJobStatus", ""))
            if status in TERMINAL:
                break
            aws.sleep(poll_seconds)
        except KeyboardInterrupt:
            if not stop_on_interrupt or stop_sent:
                on_event(f"interrupted: no longer waiting; {job_name} continues on SageMaker unless stopped")
                raise
            stop_sent = True
            on_event(f"interrupted: stopping {job_name} and its running trials; Ctrl-C again to leave now")
            try:
                stop_tuning(aws, job_name, executor or LiveExecutor(aws.client))
            except NotFound:
                raise
            except AwsError as exc:
                if exc.code != "ValidationException":  # already ending: the next poll shows it
                    raise
                on_event(f"{job_name} could not be stopped: {exc}")

    objective = desc.get("HyperParameterTuningJobConfig", {}).get("HyperParameterTuningJobObjective", {})
    goal = str(objective.get("Type", "Maximize"))
    ranked = _rank(trials(aws, job_name), goal)
    best_summary = desc.get("BestTrainingJob")
    best = _trial(best_summary) if best_summary else None
    outcome = TuningOutcome(
        name=job_name,
        status=status,
        best=best,
        trials=ranked,
        objective=str(objective.get("MetricName", "")),
        failure_reason=desc.get("FailureReason"),
        goal=goal,
    )
    if best:
        value = "-" if best.objective is None else f"{best.objective:.4f}"
        tuned = " ".join(f"{k}={v}" for k, v in sorted(best.hyperparameters.items()))
        on_event(f"best: {best.job_name} {outcome.objective}={value} {tuned}".rstrip())
    return outcome
