"""Following a SageMaker training job to its end: status changes, CloudWatch logs, Ctrl-C.

Stages:
1. `log_lines` reads the job's CloudWatch log lines (every stream, one per instance and per restart)
   after a cursor, oldest first; before the container starts there are none, and that is no error.
2. `wait` polls DescribeTrainingJob through `aws.sleep`, emits a line for every status and secondary
   status change (a spot job may go Training -> Interrupted -> Starting -> Training) and streams the
   CloudWatch log lines in between. Ctrl-C stops the job (StopTrainingJob) and keeps polling until it
   has stopped, so nothing is left running and billing. On a terminal status it returns the job's
   `TrainingOutcome` (`training.outcome_from`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from infra.aws.errors import AwsError, NotFound, aws_errors
from infra.aws.plan import Executor, LiveExecutor
from infra.aws.session import Aws
from infra.aws.training import TERMINAL, TrainingOutcome, _describe_raw, outcome_from, stop

LOG_GROUP = "/aws/sagemaker/TrainingJobs"

_HINTS = {
    "Interrupted": "spot capacity was reclaimed; SageMaker restarts the job, which resumes from its last "
    "checkpoint",
    "MaxWaitTimeExceeded": "the job ran out of MaxWaitTimeInSeconds (spot capacity plus training time)",
    "MaxRuntimeExceeded": "training ran past MaxRuntimeInSeconds",
}


# ---------------------------------------------------------------------------------------------------
# Logs


@dataclass(frozen=True)
class LogLine:
    stream: str  # "<job>/algo-1-1712345678": one stream per instance (and per restart)
    timestamp: int  # milliseconds since the epoch
    message: str

    @property
    def host(self) -> str:
        return _host(self.stream)


def _host(stream: str) -> str:
    """The instance ("algo-1") from a stream name ("<job>/algo-1-1712345678")."""
    name = stream.split("/", 1)[-1]
    head, _, tail = name.rpartition("-")
    return head if head and tail.isdigit() else name


@dataclass
class LogPage:
    lines: list[LogLine]
    cursor: dict[str, str]  # stream -> nextForwardToken; pass as start_from to get only newer lines

    def __iter__(self) -> Iterator[str]:
        """The lines as a person reads them: prefixed with their instance when there are several."""
        many = len({line.host for line in self.lines}) > 1
        for line in self.lines:
            yield f"[{line.host}] {line.message}" if many else line.message


def log_lines(
    aws: Aws, job_name: str, *, start_from: Mapping[str, str] | None = None, max_pages: int = 50
) -> LogPage:
    """The job's CloudWatch log lines after `start_from`, oldest first across all its streams.

    The log group and the streams appear only once the container starts: until then this returns no
    lines and the same cursor, not an error.
    """
    cursor = dict(start_from or {})
    client = aws.client("logs")
    streams: list[str] = []
    token: str | None = None
    try:
        while True:
            params: dict[str, Any] = {"logGroupName": LOG_GROUP, "logStreamNamePrefix": f"{job_name}/"}
            if token:
                params["nextToken"] = token
            with aws_errors(f"listing log streams of {job_name}"):
                page = client.describe_log_streams(**params)
            streams += [s["logStreamName"] for s in page.get("logStreams", [])]
            token = page.get("nextToken")
            if not token:
                break
    except NotFound:
        return LogPage([], cursor)

    lines: list[LogLine] = []
    for stream in streams:
        for _ in range(max_pages):
            params = {"logGroupName": LOG_GROUP, "logStreamName": stream, "startFromHead": True}
            if stream in cursor:
                params["nextToken"] = cursor[stream]
            try:
                with aws_errors(f"reading log stream {stream}"):
                    page = client.get_log_events(**params)
            except NotFound:
                break
            events = page.get("events", [])
            lines += [LogLine(stream, int(e.get("timestamp", 0)), str(e.get("message", ""))) for e in events]
            previous, cursor[stream] = cursor.get(stream), page["nextForwardToken"]
            # GetLogEvents signals the end of a stream by returning the token it was given.
            if not events or page["nextForwardToken"] == previous:
                break
    lines.sort(key=lambda line: line.timestamp)  # stable: order within a stream is kept
    return LogPage(lines, cursor)


# ---------------------------------------------------------------------------------------------------
# Waiting


class _Events:
    """Turns successive DescribeTrainingJob responses into the lines a person wants to see."""

    def __init__(self, job_name: str, emit: Callable[[str], None]) -> None:
        self.job_name = job_name
        self.emit = emit
        self.status = ""
        self.secondary = ""
        self.seen: list[tuple[str, str]] = []  # (Status, StatusMessage) per transition index

    def update(self, desc: Mapping[str, Any]) -> None:
        transitions = desc.get("SecondaryStatusTransitions", [])
        for index, transition in enumerate(transitions):
            entry = (str(transition.get("Status", "")), str(transition.get("StatusMessage", "")))
            if index < len(self.seen) and self.seen[index] == entry:
                continue
            # New transitions, and a message that changed on one already shown (progress updates).
            if index < len(self.seen):
                self.seen[index] = entry
            else:
                self.seen.append(entry)
            self.emit(self._line(entry[0], entry[1]))
        if transitions:
            self.secondary = str(transitions[-1].get("Status", ""))
        secondary = str(desc.get("SecondaryStatus", ""))
        if secondary and secondary != self.secondary:
            # SecondaryStatusTransitions lags or is absent: still say what changed.
            self.secondary = secondary
            self.emit(self._line(secondary, ""))
        status = str(desc.get("TrainingJobStatus", ""))
        if status != self.status:
            self.status = status
            self.emit(f"{self.job_name}: {status}")

    @staticmethod
    def _line(status: str, message: str) -> str:
        hint = _HINTS.get(status)
        text = f"{status}: {message}" if message else status
        return f"{text} ({hint})" if hint else text


def wait(
    aws: Aws,
    job_name: str,
    *,
    on_event: Callable[[str], None],
    poll_seconds: float = 30,
    stream_logs: bool = True,
    stop_on_interrupt: bool = True,
    executor: Executor | None = None,
) -> TrainingOutcome:
    """Follow the job until Completed, Failed or Stopped; emit status changes and log lines.

    Ctrl-C (KeyboardInterrupt) with `stop_on_interrupt` sends StopTrainingJob through `executor`
    (live by default) and keeps waiting until SageMaker reports Stopped, so no instance is left
    billing; a second Ctrl-C leaves at once. Without `stop_on_interrupt` the job keeps running.
    """
    events = _Events(job_name, on_event)
    cursor: dict[str, str] = {}
    logs_on = stream_logs
    stop_sent = False
    while True:
        try:
            desc = _describe_raw(aws, job_name)
            events.update(desc)
            if logs_on:
                try:
                    page = log_lines(aws, job_name, start_from=cursor)
                except AwsError as exc:
                    # Logs are a convenience: lacking logs:GetLogEvents must not lose the job.
                    on_event(f"log streaming off: {exc}")
                    logs_on = False
                else:
                    cursor = page.cursor
                    # Several instances write at once: say which. (A restarted spot job opens a
                    # second stream for the same instance; that needs no prefix.)
                    many = len({_host(stream) for stream in cursor}) > 1
                    for line in page.lines:
                        on_event(f"[{line.host}] {line.message}" if many else line.message)
            if desc.get("TrainingJobStatus") in TERMINAL:
                outcome = outcome_from(desc)
                on_event(outcome.summary())
                return outcome
            aws.sleep(poll_seconds)
        except KeyboardInterrupt:
            if not stop_on_interrupt:
                on_event(f"interrupted: {job_name} keeps running on SageMaker (StopTrainingJob stops it)")
                raise
            if stop_sent:
                on_event(f"interrupted again: no longer waiting; {job_name} is stopping on SageMaker")
                raise
            stop_sent = True
            on_event(
                f"interrupted: stopping {job_name} (StopTrainingJob); its checkpoints stay in S3. "
                "Waiting for it to stop; Ctrl-C again to leave now"
            )
            try:
                stop(aws, job_name, executor or LiveExecutor(aws.client))
            except NotFound:
                raise
            except AwsError as exc:
                # ValidationException: it reached a terminal status meanwhile; the next poll shows it.
                if exc.code != "ValidationException":
                    raise
                on_event(f"{job_name} could not be stopped: {exc}")
