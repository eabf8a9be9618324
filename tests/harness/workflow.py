"""Run a GitHub Actions workflow file's jobs on this machine, offline, for tests.

Jobs run one after another in ``needs`` order; ``run:`` steps execute as real shell scripts with the
environment a GitHub-hosted runner would give them (``GITHUB_*`` variables and file commands included);
``uses:`` steps are not executed but listed in :attr:`WorkflowResult.skipped_uses` (or handed to a
caller-supplied handler). Conditions, job outputs and every ``${{ }}`` are evaluated with
:mod:`tests.harness.expressions`.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tests.harness import expressions as ex

__all__ = [
    "JobResult",
    "StepResult",
    "UsesCall",
    "UsesResult",
    "WorkflowError",
    "WorkflowResult",
    "load_workflow",
    "parse_file_command",
    "run_workflow",
]

DEFAULT_SHA = "0123456789abcdef0123456789abcdef01234567"
MAX_CALL_DEPTH = 4  # GitHub allows four levels of nested reusable workflows


class WorkflowError(ValueError):
    """The workflow (or the way it was invoked) is invalid: GitHub would refuse to start it."""


# ----------------------------------------------------------------------------------------------- results


@dataclass
class StepResult:
    name: str
    id: str
    kind: str  # "run" | "uses"
    outcome: str  # "success" | "failure" | "skipped" | "cancelled"
    conclusion: str
    outputs: dict[str, str] = field(default_factory=dict)
    exit_code: int | None = None
    output: str = ""  # stdout and stderr, interleaved
    uses: str | None = None
    with_: dict[str, str] = field(default_factory=dict)
    script: str | None = None  # the interpolated `run:` text
    env: dict[str, str] = field(
        default_factory=dict
    )  # the env context the step saw (workflow+job+GITHUB_ENV+step)
    summary: str = ""
    handled: bool = False  # a `uses:` step that a uses_handler ran


@dataclass
class JobResult:
    id: str
    name: str
    result: str = "skipped"  # "success" | "failure" | "skipped" | "cancelled"
    outputs: dict[str, str] = field(default_factory=dict)
    steps: list[StepResult] = field(default_factory=list)
    needs: list[str] = field(default_factory=list)
    environment: str | None = None
    environment_url: str | None = None
    summary: str = ""
    env: dict[str, str] = field(default_factory=dict)
    runs_on: Any = None
    permissions: Any = None
    concurrency: Any = None
    timeout_minutes: Any = None
    uses: str | None = None  # a reusable-workflow call
    called: WorkflowResult | None = None
    error: str | None = None  # an expression that failed at run time (GitHub fails the job)

    def step(self, key: str) -> StepResult:
        """The step whose id or name is ``key``."""
        for step in self.steps:
            if key in (step.id, step.name):
                return step
        raise KeyError(f"job {self.id!r} has no step {key!r}; steps: {[s.id for s in self.steps]}")

    def log(self) -> str:
        parts = [f"[harness] job error: {self.error}"] if self.error else []
        for step in self.steps:
            parts.append(f"--- {step.name} [{step.id}] ({step.kind}: {step.outcome}/{step.conclusion}) ---")
            if step.output:
                parts.append(step.output.rstrip("\n"))
        if self.called is not None:
            parts.extend(self.called.log(job) for job in self.called.order)
        return "\n".join(parts)


@dataclass
class WorkflowResult:
    path: Path
    name: str
    event: str
    inputs: dict[str, Any]
    jobs: dict[str, JobResult] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)
    skipped_uses: list[tuple[str, str, str]] = field(default_factory=list)
    concurrency: Any = None
    permissions: Any = None
    github: dict[str, Any] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        return "".join(self.jobs[job].summary for job in self.order)

    @property
    def conclusion(self) -> str:
        results = {self.jobs[job].result for job in self.order}
        if "failure" in results:
            return "failure"
        if "cancelled" in results:
            return "cancelled"
        return "success"

    def log(self, job: str) -> str:
        return f"=== job {job} ({self.jobs[job].result}) ===\n{self.jobs[job].log()}"

    def logs(self) -> str:
        return "\n".join(self.log(job) for job in self.order)


@dataclass
class UsesCall:
    """What a uses_handler receives for one `uses:` step."""

    job: str
    step: str
    uses: str
    with_: dict[str, str]
    env: dict[str, str]
    cwd: Path


@dataclass
class UsesResult:
    """What a uses_handler may return (a plain mapping is taken as ``env``)."""

    env: dict[str, str] = field(default_factory=dict)  # exported for later steps, like GITHUB_ENV
    outputs: dict[str, str] = field(default_factory=dict)
    path: list[str] = field(default_factory=list)  # prepended to PATH, like GITHUB_PATH
    exit_code: int = 0
    output: str = ""


UsesHandler = Callable[[UsesCall], "Mapping[str, str] | UsesResult | None"]


# ----------------------------------------------------------------------------------------------- YAML


class _Loader(yaml.SafeLoader):
    """YAML as GitHub reads it: only true/false are booleans (`on:`, `yes`, `no` stay strings)."""


_Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def load_workflow(path: str | Path) -> dict[str, Any]:
    document = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_Loader)
    if not isinstance(document, dict) or "jobs" not in document:
        raise WorkflowError(f"{path}: not a workflow (no `jobs:` mapping)")
    return document


def _triggers(document: Mapping[str, Any]) -> dict[str, Any]:
    on = document.get("on")
    if on is None:
        raise WorkflowError("the workflow has no `on:`")
    if isinstance(on, str):
        return {on: {}}
    if isinstance(on, list):
        return {str(name): {} for name in on}
    return {str(name): (spec or {}) for name, spec in on.items()}


# ----------------------------------------------------------------------------------------- file commands


def parse_file_command(text: str) -> list[tuple[str, str]]:
    """Parse a GITHUB_ENV / GITHUB_OUTPUT file: ``NAME=value`` lines and ``NAME<<DELIM`` heredocs."""
    pairs: list[tuple[str, str]] = []
    lines = text.replace("\r\n", "\n").split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        if line == "":
            continue
        equals = line.find("=")
        heredoc = line.find("<<")
        if equals >= 0 and (heredoc < 0 or equals < heredoc):
            name, value = line[:equals], line[equals + 1 :]
            if not name:
                raise WorkflowError(f"Invalid format {line!r}: empty name")
            pairs.append((name, value))
        elif heredoc >= 0:
            name, delimiter = line[:heredoc], line[heredoc + 2 :]
            if not name or not delimiter:
                raise WorkflowError(f"Invalid format {line!r}: empty name or delimiter")
            body: list[str] = []
            while i < len(lines) and lines[i] != delimiter:
                body.append(lines[i])
                i += 1
            if i >= len(lines):
                raise WorkflowError(f"Invalid value for {name!r}: matching delimiter {delimiter!r} not found")
            i += 1
            pairs.append((name, "\n".join(body)))
        else:
            raise WorkflowError(f"Invalid format {line!r}")
    return pairs


# ----------------------------------------------------------------------------------------------- inputs


def _resolve_inputs(declared: Any, given: Mapping[str, Any], event: str) -> dict[str, Any]:
    declared = declared or {}
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise WorkflowError(f"Unexpected inputs provided to {event}: {unknown}; declared: {sorted(declared)}")
    resolved: dict[str, Any] = {}
    for name, raw_spec in declared.items():
        spec = raw_spec or {}
        kind = spec.get("type", "string")
        if name in given:
            value = given[name]
        elif "default" in spec:
            value = spec["default"]
        elif spec.get("required"):
            raise WorkflowError(f"Required input {name!r} not provided to {event}")
        else:
            value = (
                False
                if kind == "boolean"
                else ("" if event == "workflow_dispatch" or kind != "number" else 0)
            )
        if kind == "boolean" and not isinstance(value, bool):
            text = ex.to_string(value).lower()
            if text not in ("true", "false"):
                raise WorkflowError(f"Input {name!r} is a boolean; got {value!r}")
            value = text == "true"
        if kind == "choice" and "options" in spec and ex.to_string(value) not in map(str, spec["options"]):
            raise WorkflowError(f"Input {name!r} must be one of {spec['options']}; got {value!r}")
        if value is None:
            value = ""
        resolved[name] = value
    return resolved


# ----------------------------------------------------------------------------------------------- helpers


def _deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    return [str(item) for item in value]


def _validate_expressions(node: Any, where: str) -> None:
    """Parse every expression in the document up front, as GitHub does before starting a run."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            location = f"{where}.{key}"
            if key == "if" and value is not None:
                expression = ex.condition_expression(value)
                if expression is not None:
                    _parse_at(expression, location)
                    continue
            _validate_expressions(value, location)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            _validate_expressions(value, f"{where}[{index}]")
    elif isinstance(node, str) and "${{" in node:
        try:
            found = list(ex.find_expressions(node))
        except ex.ExpressionError as exc:
            raise ex.ExpressionError(f"{where}: {exc}") from exc
        for _, _, expression in found:
            _parse_at(expression, where)


def _parse_at(expression: str, where: str) -> None:
    try:
        ex.parse(expression)
    except ex.ExpressionError as exc:
        raise ex.ExpressionError(f"{where}: {exc}") from exc


def _job_order(jobs: Mapping[str, Any], wanted: Iterable[str] | None) -> list[str]:
    needs = {job_id: _as_list((spec or {}).get("needs")) for job_id, spec in jobs.items()}
    for job_id, deps in needs.items():
        for dep in deps:
            if dep not in jobs:
                raise WorkflowError(f"Job {job_id!r} depends on unknown job {dep!r}")
    selected = set(jobs)
    if wanted is not None:
        selected = set()
        pending = list(wanted)
        while pending:
            job_id = pending.pop()
            if job_id not in jobs:
                raise WorkflowError(f"No job {job_id!r} in the workflow; jobs: {list(jobs)}")
            if job_id not in selected:
                selected.add(job_id)
                pending.extend(needs[job_id])
    order: list[str] = []
    done: set[str] = set()
    remaining = [job_id for job_id in jobs if job_id in selected]
    while remaining:
        wave = [job_id for job_id in remaining if all(dep in done for dep in needs[job_id])]
        if not wave:
            raise WorkflowError(f"Dependency cycle among jobs {remaining}")
        order.extend(wave)
        done.update(wave)
        remaining = [job_id for job_id in remaining if job_id not in done]
    return order


def _shell_command(shell: str | None, script: Path, path_env: str) -> list[str]:
    def which(name: str) -> str:
        found = shutil.which(name, path=path_env)
        if found is None:
            raise WorkflowError(f"shell {name!r} not found on PATH")
        return found

    if shell is None:
        if shutil.which("bash", path=path_env):
            return [which("bash"), "-e", str(script)]
        return [which("sh"), "-e", str(script)]
    if shell == "bash":
        return [which("bash"), "--noprofile", "--norc", "-eo", "pipefail", str(script)]
    if shell == "sh":
        return [which("sh"), "-e", str(script)]
    if shell == "python":
        return [which("python"), str(script)]
    if shell in ("pwsh", "powershell", "cmd"):
        raise NotImplementedError(f"shell {shell!r} is not supported by the workflow harness")
    if "{0}" not in shell:
        raise WorkflowError(f"custom shell {shell!r} must contain {{0}}")
    parts = [part.replace("{0}", str(script)) for part in shlex.split(shell)]
    return [which(parts[0]), *parts[1:]]


def _run_process(command: list[str], cwd: Path, env: Mapping[str, str], timeout: float) -> tuple[int, str]:
    process = subprocess.Popen(
        command,
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        raw, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        raw, _ = process.communicate()
        text = raw.decode("utf-8", errors="replace")
        return -signal.SIGKILL, f"{text}\n[harness] the step timed out after {timeout:g} s and was killed\n"
    return process.returncode, raw.decode("utf-8", errors="replace")


# ----------------------------------------------------------------------------------------------- runner


class _Runner:
    def __init__(
        self,
        *,
        document: dict[str, Any],
        path: Path,
        event: str,
        inputs: dict[str, Any],
        vars: dict[str, Any],
        secrets: dict[str, Any],
        github: dict[str, Any],
        cwd: Path,
        base_env: dict[str, str],
        timeout: float,
        uses_handlers: Mapping[str, UsesHandler],
        temp_root: Path,
        depth: int = 0,
    ) -> None:
        self.document = document
        self.path = path
        self.event = event
        self.inputs = inputs
        self.vars = vars
        self.secrets = secrets
        self.github = github
        self.cwd = cwd
        self.base_env = base_env
        self.timeout = timeout
        self.uses_handlers = uses_handlers
        self.temp_root = temp_root
        self.depth = depth
        self.jobs: dict[str, Any] = document["jobs"]
        self.result = WorkflowResult(
            path=path, name=str(document.get("name") or path.name), event=event, inputs=inputs, github=github
        )
        self.workflow_env: dict[str, str] = {}

    # -- contexts

    def _base_contexts(self, **extra: Any) -> dict[str, Any]:
        contexts: dict[str, Any] = {"github": self.github, "inputs": self.inputs, "vars": self.vars}
        contexts.update(extra)
        return contexts

    def _evaluate(self, value: Any, where: str, contexts: Mapping[str, Any], functions: Any = None) -> Any:
        try:
            return ex.evaluate_template(value, contexts, functions)
        except ex.ExpressionError as exc:
            raise type(exc)(f"{self.path.name}: {where}: {exc}") from exc

    def _condition(
        self, value: Any, where: str, contexts: Mapping[str, Any], functions: Mapping[str, Any]
    ) -> bool:
        expression = "success()" if value is None or value == "" else ex.condition_expression(value)
        try:
            if expression is None:  # text around ${{ }}: a non-empty string, always true
                return ex.is_truthy(ex.interpolate(str(value), contexts, functions))
            node = ex.parse(expression)
            if not ex.uses_status_function(node):
                node = ex.Binary("&&", ex.Call("success", ()), node)
            return ex.is_truthy(ex.evaluate(node, contexts, functions))
        except ex.ExpressionError as exc:
            raise type(exc)(f"{self.path.name}: {where}: {exc}") from exc

    def _env_block(
        self, block: Any, where: str, contexts: Mapping[str, Any], functions: Any = None
    ) -> dict[str, str]:
        if not block:
            return {}
        if not isinstance(block, Mapping):
            value = self._evaluate(block, where, contexts, functions)
            if not isinstance(value, Mapping):
                raise WorkflowError(f"{where}: env must be a mapping, got {value!r}")
            return {str(k): ex.to_string(v) for k, v in value.items()}
        return {
            str(name): ex.to_string(self._evaluate(value, f"{where}.{name}", contexts, functions))
            for name, value in block.items()
        }

    # -- workflow

    def run(self, wanted: Iterable[str] | None) -> WorkflowResult:
        document = self.document
        if self.depth > MAX_CALL_DEPTH:
            raise WorkflowError(f"reusable workflows nested deeper than {MAX_CALL_DEPTH} levels")
        _validate_expressions(document, self.path.name)
        self.result.permissions = document.get("permissions")
        self.result.concurrency = self._evaluate(
            document.get("concurrency"), "concurrency", self._base_contexts()
        )
        self.workflow_env = self._env_block(
            document.get("env"), "env", self._base_contexts(secrets=self.secrets)
        )
        for job_id in _job_order(self.jobs, wanted):
            self.result.order.append(job_id)
            self.result.jobs[job_id] = self._run_job(job_id, self.jobs[job_id] or {})
        return self.result

    # -- jobs

    def _ancestors(self, job_id: str) -> set[str]:
        seen: set[str] = set()
        pending = _as_list(self.jobs[job_id].get("needs"))
        while pending:
            dep = pending.pop()
            if dep not in seen:
                seen.add(dep)
                pending.extend(_as_list(self.jobs[dep].get("needs")))
        return seen

    def _run_job(self, job_id: str, spec: Mapping[str, Any]) -> JobResult:
        needs = _as_list(spec.get("needs"))
        job = JobResult(id=job_id, name=str(spec.get("name") or job_id), needs=needs)
        job.permissions = spec.get("permissions")
        needs_ctx = {
            dep: {"result": self.result.jobs[dep].result, "outputs": dict(self.result.jobs[dep].outputs)}
            for dep in needs
        }
        ancestors = self._ancestors(job_id)
        job_functions = {
            "success": lambda: all(self.result.jobs[dep].result == "success" for dep in needs),
            "failure": lambda: any(self.result.jobs[dep].result == "failure" for dep in ancestors),
            "cancelled": lambda: any(self.result.jobs[dep].result == "cancelled" for dep in ancestors),
            "always": lambda: True,
        }
        where = f"jobs.{job_id}"
        try:
            run_it = self._condition(
                spec.get("if"), f"{where}.if", self._base_contexts(needs=needs_ctx), job_functions
            )
        except ex.ExpressionRuntimeError as exc:
            job.result, job.error = "failure", str(exc)
            return job
        if not run_it:
            job.result = "skipped"
            return job

        matrix_ctx: dict[str, Any] = {}
        strategy_ctx = {"fail-fast": True, "job-index": 0, "job-total": 1, "max-parallel": 1}
        if isinstance(spec.get("strategy"), Mapping) and "matrix" in spec["strategy"]:
            raise NotImplementedError(f"{where}: strategy.matrix is not supported by the workflow harness")
        for unsupported in ("container", "services"):
            if spec.get(unsupported):
                raise NotImplementedError(
                    f"{where}: `{unsupported}:` is not supported by the workflow harness"
                )
        job_contexts = self._base_contexts(needs=needs_ctx, matrix=matrix_ctx, strategy=strategy_ctx)
        job.name = ex.to_string(self._evaluate(spec.get("name") or job_id, f"{where}.name", job_contexts))
        job.concurrency = self._evaluate(spec.get("concurrency"), f"{where}.concurrency", job_contexts)
        job.runs_on = self._evaluate(spec.get("runs-on"), f"{where}.runs-on", job_contexts)
        job.timeout_minutes = self._evaluate(
            spec.get("timeout-minutes"), f"{where}.timeout-minutes", job_contexts
        )
        environment = self._evaluate(spec.get("environment"), f"{where}.environment", job_contexts)
        if isinstance(environment, Mapping):
            job.environment = ex.to_string(environment.get("name")) or None
            job.environment_url = ex.to_string(environment.get("url")) or None
        elif environment is not None:
            job.environment = ex.to_string(environment) or None

        if spec.get("uses"):
            return self._run_called_workflow(job, spec, job_contexts)

        try:
            job.env = self._env_block(
                spec.get("env"), f"{where}.env", {**job_contexts, "secrets": self.secrets}
            )
        except ex.ExpressionRuntimeError as exc:
            job.result, job.error = "failure", str(exc)
            return job
        self._run_steps(job, spec, job_contexts)
        return job

    def _run_steps(self, job: JobResult, spec: Mapping[str, Any], job_contexts: dict[str, Any]) -> None:
        job_id = job.id
        where = f"jobs.{job_id}"
        runner_temp = self.temp_root / f"runner-temp-{job_id}-{uuid.uuid4().hex[:8]}"
        commands_dir = runner_temp / "_runner_file_commands"
        commands_dir.mkdir(parents=True)
        defaults = _deep_merge(
            dict((self.document.get("defaults") or {}).get("run") or {}),
            (spec.get("defaults") or {}).get("run") or {},
        )
        event_path = self.temp_root / "event.json"
        if not event_path.exists():
            event_path.write_text(json.dumps(self.github.get("event") or {}, indent=2), encoding="utf-8")

        status = {"job": "success"}
        steps_ctx: dict[str, dict[str, Any]] = {}
        exported: dict[str, str] = {}  # GITHUB_ENV, accumulated
        prepended: list[str] = []  # GITHUB_PATH, accumulated
        summaries: list[str] = []
        runner_ctx = {
            "os": "Linux",
            "arch": "X64",
            "name": "harness",
            "environment": "self-hosted",  # this machine runs the steps, as a self-hosted runner would
            "temp": str(runner_temp),
            "tool_cache": str(self.temp_root / "toolcache"),
            "debug": "",
        }
        step_functions: dict[str, Callable[..., Any]] = {
            "success": lambda: status["job"] == "success",
            "failure": lambda: status["job"] == "failure",
            "cancelled": lambda: False,
            "always": lambda: True,
            "hashfiles": lambda *patterns: ex.hash_files(self.cwd, *patterns),
        }
        github_ctx = {**self.github, "job": job_id}
        used_ids: set[str] = {str(s.get("id")) for s in spec.get("steps") or [] if s.get("id")}

        for index, step in enumerate(spec.get("steps") or []):
            step_where = f"{where}.steps[{index}]"
            kind = "uses" if step.get("uses") else "run" if "run" in step else ""
            if not kind:
                raise WorkflowError(f"{step_where}: a step needs `run:` or `uses:`")
            step_id = str(step.get("id") or self._generated_id(step, used_ids))
            github_ctx["action"] = step_id
            env_ctx = {**self.workflow_env, **job.env, **exported}
            contexts = {
                **job_contexts,
                "github": github_ctx,
                "secrets": self.secrets,
                "steps": steps_ctx,
                "job": {"status": status["job"], "container": {}, "services": {}},
                "runner": runner_ctx,
                "env": env_ctx,
            }
            default_name = (
                f"Run {step['uses']}"
                if kind == "uses"
                else f"Run {str(step['run']).strip().splitlines()[0] if str(step['run']).strip() else ''}"
            )
            record = StepResult(
                name=default_name, id=step_id, kind=kind, outcome="skipped", conclusion="skipped"
            )
            record.uses = str(step["uses"]) if kind == "uses" else None
            job.steps.append(record)
            try:
                step_env = self._env_block(step.get("env"), f"{step_where}.env", contexts, step_functions)
                env_ctx.update(step_env)
                contexts["env"] = env_ctx
                record.env = dict(env_ctx)
                record.name = ex.to_string(
                    self._evaluate(
                        step.get("name") or default_name, f"{step_where}.name", contexts, step_functions
                    )
                )
                run_it = self._condition(step.get("if"), f"{step_where}.if", contexts, step_functions)
            except ex.ExpressionRuntimeError as exc:  # GitHub fails the step
                record.outcome = record.conclusion = status["job"] = "failure"
                record.output = f"[harness] {exc}\n"
                steps_ctx[step_id] = {"outputs": {}, "outcome": "failure", "conclusion": "failure"}
                continue
            if not run_it:
                steps_ctx[step_id] = {"outputs": {}, "outcome": "skipped", "conclusion": "skipped"}
                continue

            files = {
                kind_name: commands_dir / f"{kind_name}_{uuid.uuid4().hex}"
                for kind_name in ("output", "env", "path", "step_summary", "state")
            }
            for file in files.values():
                file.touch()
            process_env = self._process_env(
                job_id, step_id, runner_temp, event_path, files, env_ctx, exported, prepended
            )
            exit_code = 0
            extra_messages: list[str] = []
            try:
                exit_code = self._execute(
                    job,
                    record,
                    step,
                    step_where,
                    contexts,
                    step_functions,
                    process_env,
                    exported,
                    prepended,
                    defaults,
                    runner_temp,
                )
            except ex.ExpressionRuntimeError as exc:  # GitHub fails the step
                exit_code = 1
                record.output = f"[harness] {exc}\n"

            # file commands are processed whatever the step's exit status
            try:
                for name_, value in parse_file_command(files["env"].read_text(encoding="utf-8")):
                    exported[name_] = value
                outputs = dict(parse_file_command(files["output"].read_text(encoding="utf-8")))
            except WorkflowError as exc:
                extra_messages.append(f"[harness] invalid file command: {exc}")
                outputs = {}
                exit_code = exit_code or 1
            record.outputs.update(outputs)
            for line in files["path"].read_text(encoding="utf-8").splitlines():
                if line.strip():
                    prepended.append(line.strip())
            record.summary = files["step_summary"].read_text(encoding="utf-8")
            if record.summary:
                summaries.append(record.summary if record.summary.endswith("\n") else record.summary + "\n")
            if extra_messages:
                record.output += "\n".join(extra_messages) + "\n"

            continue_on_error = ex.is_truthy(
                self._evaluate(
                    step.get("continue-on-error", False), f"{step_where}.continue-on-error", contexts
                )
            )
            record.outcome = "success" if exit_code == 0 else "failure"
            record.conclusion = (
                "success" if record.outcome == "failure" and continue_on_error else record.outcome
            )
            if record.conclusion == "failure":
                status["job"] = "failure"
            steps_ctx[step_id] = {
                "outputs": dict(record.outputs),
                "outcome": record.outcome,
                "conclusion": record.conclusion,
            }

        job.result = status["job"]
        job.summary = "".join(summaries)
        output_contexts = {
            **job_contexts,
            "github": github_ctx,
            "secrets": self.secrets,
            "steps": steps_ctx,
            "job": {"status": status["job"], "container": {}, "services": {}},
            "runner": runner_ctx,
            "env": {**self.workflow_env, **job.env, **exported},
        }
        for name, value in (spec.get("outputs") or {}).items():
            try:
                job.outputs[str(name)] = ex.to_string(
                    self._evaluate(value, f"{where}.outputs.{name}", output_contexts)
                )
            except ex.ExpressionRuntimeError as exc:
                job.result, job.error = "failure", str(exc)

    def _execute(
        self,
        job: JobResult,
        record: StepResult,
        step: Mapping[str, Any],
        step_where: str,
        contexts: Mapping[str, Any],
        step_functions: Mapping[str, Any],
        process_env: Mapping[str, str],
        exported: dict[str, str],
        prepended: list[str],
        defaults: Mapping[str, Any],
        runner_temp: Path,
    ) -> int:
        if record.kind == "uses":
            return self._run_uses(
                job, record, step, step_where, contexts, step_functions, process_env, exported, prepended
            )
        record.script = ex.to_string(
            self._evaluate(str(step["run"]), f"{step_where}.run", contexts, step_functions)
        )
        workdir_value = step.get("working-directory") or defaults.get("working-directory")
        workdir = self.cwd
        if workdir_value:
            workdir = self.cwd / ex.to_string(
                self._evaluate(workdir_value, f"{step_where}.working-directory", contexts, step_functions)
            )
        shell_value = step.get("shell") or defaults.get("shell")
        shell = (
            ex.to_string(self._evaluate(shell_value, f"{step_where}.shell", contexts))
            if shell_value
            else None
        )
        suffix = ".py" if shell == "python" else ".sh"
        script_path = runner_temp / f"{uuid.uuid4()}{suffix}"
        script_path.write_text(record.script, encoding="utf-8")
        timeout = self.timeout
        minutes = self._evaluate(step.get("timeout-minutes"), f"{step_where}.timeout-minutes", contexts)
        if minutes not in (None, ""):
            timeout = min(timeout, float(minutes) * 60)
        if not workdir.is_dir():
            exit_code = 1
            record.output = f"[harness] working-directory {workdir} does not exist\n"
        else:
            command = _shell_command(shell, script_path, process_env.get("PATH", ""))
            exit_code, record.output = _run_process(command, workdir, process_env, timeout)
        record.exit_code = exit_code
        return exit_code

    @staticmethod
    def _generated_id(step: Mapping[str, Any], used: set[str]) -> str:
        if step.get("uses"):
            base = "__" + re.sub(r"[^A-Za-z0-9]+", "_", str(step["uses"]).split("@")[0]).strip("_")
        else:
            base = "__run"
        candidate, counter = base, 2
        while candidate in used:
            candidate = f"{base}_{counter}"
            counter += 1
        used.add(candidate)
        return candidate

    def _process_env(
        self,
        job_id: str,
        step_id: str,
        runner_temp: Path,
        event_path: Path,
        files: Mapping[str, Path],
        env_ctx: Mapping[str, str],
        exported: Mapping[str, str],
        prepended: list[str],
    ) -> dict[str, str]:
        github = self.github
        protected = {
            "GITHUB_ACTIONS": "true",
            "GITHUB_WORKSPACE": str(github.get("workspace") or self.cwd),
            "GITHUB_SHA": ex.to_string(github.get("sha")),
            "GITHUB_REF": ex.to_string(github.get("ref")),
            "GITHUB_REF_NAME": ex.to_string(github.get("ref_name")),
            "GITHUB_REF_TYPE": ex.to_string(github.get("ref_type")),
            "GITHUB_HEAD_REF": ex.to_string(github.get("head_ref")),
            "GITHUB_BASE_REF": ex.to_string(github.get("base_ref")),
            "GITHUB_RUN_ID": ex.to_string(github.get("run_id")),
            "GITHUB_RUN_NUMBER": ex.to_string(github.get("run_number")),
            "GITHUB_RUN_ATTEMPT": ex.to_string(github.get("run_attempt")),
            "GITHUB_REPOSITORY": ex.to_string(github.get("repository")),
            "GITHUB_REPOSITORY_OWNER": ex.to_string(github.get("repository_owner")),
            "GITHUB_ACTOR": ex.to_string(github.get("actor")),
            "GITHUB_TRIGGERING_ACTOR": ex.to_string(github.get("triggering_actor")),
            "GITHUB_EVENT_NAME": ex.to_string(github.get("event_name")),
            "GITHUB_EVENT_PATH": str(event_path),
            "GITHUB_SERVER_URL": ex.to_string(github.get("server_url")),
            "GITHUB_API_URL": ex.to_string(github.get("api_url")),
            "GITHUB_GRAPHQL_URL": ex.to_string(github.get("graphql_url")),
            "GITHUB_WORKFLOW": ex.to_string(github.get("workflow")),
            "GITHUB_WORKFLOW_REF": ex.to_string(github.get("workflow_ref")),
            "GITHUB_JOB": job_id,
            "GITHUB_ACTION": step_id,
            "GITHUB_OUTPUT": str(files["output"]),
            "GITHUB_ENV": str(files["env"]),
            "GITHUB_PATH": str(files["path"]),
            "GITHUB_STEP_SUMMARY": str(files["step_summary"]),
            "GITHUB_STATE": str(files["state"]),
            "RUNNER_TEMP": str(runner_temp),
            "RUNNER_OS": "Linux",
            "RUNNER_ARCH": "X64",
            "RUNNER_NAME": "harness",
            "RUNNER_ENVIRONMENT": "self-hosted",
            "RUNNER_TOOL_CACHE": str(self.temp_root / "toolcache"),
        }
        env = {**self.base_env, "CI": "true", **exported, **env_ctx, **protected}
        if prepended:
            env["PATH"] = os.pathsep.join([*reversed(prepended), env.get("PATH", "")])
        return env

    def _run_uses(
        self,
        job: JobResult,
        record: StepResult,
        step: Mapping[str, Any],
        where: str,
        contexts: Mapping[str, Any],
        functions: Mapping[str, Any],
        process_env: Mapping[str, str],
        exported: dict[str, str],
        prepended: list[str],
    ) -> int:
        uses = str(step["uses"])
        record.with_ = {
            str(key): ex.to_string(self._evaluate(value, f"{where}.with.{key}", contexts, functions))
            for key, value in (step.get("with") or {}).items()
        }
        handler = self.uses_handlers.get(uses) or self.uses_handlers.get(uses.split("@", maxsplit=1)[0])
        if handler is None:
            self.result.skipped_uses.append((job.id, record.name, uses))
            record.output = f"[harness] skipped `uses: {uses}`\n"
            return 0
        record.handled = True
        returned = handler(
            UsesCall(
                job=job.id,
                step=record.name,
                uses=uses,
                with_=dict(record.with_),
                env=dict(process_env),
                cwd=self.cwd,
            )
        )
        if returned is None:
            returned = UsesResult()
        elif not isinstance(returned, UsesResult):
            returned = UsesResult(env={str(k): str(v) for k, v in returned.items()})
        exported.update(returned.env)
        prepended.extend(returned.path)
        record.outputs.update(returned.outputs)
        record.output = returned.output
        record.exit_code = returned.exit_code
        return returned.exit_code

    # -- reusable workflows

    def _run_called_workflow(
        self, job: JobResult, spec: Mapping[str, Any], contexts: dict[str, Any]
    ) -> JobResult:
        uses = str(spec["uses"])
        where = f"jobs.{job.id}"
        job.uses = uses
        if not uses.startswith("./"):
            raise NotImplementedError(
                f"{where}: only local reusable workflows (./.github/workflows/x.yml) are supported, "
                f"not {uses!r}"
            )
        path = self.cwd / uses.split("@", maxsplit=1)[0]
        document = load_workflow(path)
        trigger = _triggers(document).get("workflow_call")
        if trigger is None:
            raise WorkflowError(f"{where}: {uses} is not a reusable workflow (no `on: workflow_call`)")
        with_values = {
            str(key): self._evaluate(value, f"{where}.with.{key}", contexts)
            for key, value in (spec.get("with") or {}).items()
        }
        inputs = _resolve_inputs(trigger.get("inputs"), with_values, "workflow_call")
        secrets_spec = spec.get("secrets")
        if secrets_spec == "inherit":
            secrets = dict(self.secrets)
        else:
            secrets = {
                str(key): ex.to_string(
                    self._evaluate(value, f"{where}.secrets.{key}", {**contexts, "secrets": self.secrets})
                )
                for key, value in (secrets_spec or {}).items()
            }
        called = _Runner(
            document=document,
            path=path,
            event=self.event,
            inputs=inputs,
            vars=self.vars,
            secrets=secrets,
            github=self.github,
            cwd=self.cwd,
            base_env=self.base_env,
            timeout=self.timeout,
            uses_handlers=self.uses_handlers,
            temp_root=self.temp_root / f"call-{job.id}-{uuid.uuid4().hex[:8]}",
            depth=self.depth + 1,
        )
        called.temp_root.mkdir(parents=True)
        result = called.run(None)
        job.called = result
        self.result.skipped_uses.extend(
            (f"{job.id}/{inner}", name, uses_) for inner, name, uses_ in result.skipped_uses
        )
        job.summary = result.summary
        job.result = "failure" if result.conclusion == "failure" else result.conclusion
        jobs_ctx = {
            inner: {"result": result.jobs[inner].result, "outputs": dict(result.jobs[inner].outputs)}
            for inner in result.order
        }
        output_contexts = {"github": self.github, "inputs": inputs, "vars": self.vars, "jobs": jobs_ctx}
        for name, output in (trigger.get("outputs") or {}).items():
            value = output.get("value") if isinstance(output, Mapping) else output
            job.outputs[str(name)] = ex.to_string(
                called._evaluate(value, f"on.workflow_call.outputs.{name}", output_contexts)
            )
        return job


# ----------------------------------------------------------------------------------------------- entry point


def _github_context(
    event: str,
    overrides: Mapping[str, Any],
    cwd: Path,
    workflow_name: str,
    rel_path: str,
    inputs: Mapping[str, Any],
    triggers: Mapping[str, Any],
) -> dict[str, Any]:
    github: dict[str, Any] = {
        "sha": DEFAULT_SHA,
        "ref": "refs/heads/main",
        "run_id": "1",
        "run_number": "1",
        "run_attempt": "1",
        "repository": "owner/repo",
        "actor": "harness",
        "event_name": event,
        "server_url": "https://github.com",
        "api_url": "https://api.github.com",
        "graphql_url": "https://api.github.com/graphql",
        "workspace": str(cwd),
        "workflow": workflow_name,
        "job": "",
        "action": "",
        "head_ref": "",
        "base_ref": "",
        "token": "",
        "retention_days": "90",
        "event": {},
    }
    github = _deep_merge(github, {k: v for k, v in overrides.items() if k != "event"})
    ref = str(github["ref"])
    if "ref_name" not in overrides:
        github["ref_name"] = ref.split("/", 2)[-1] if ref.startswith("refs/") else ref
    if "ref_type" not in overrides:
        github["ref_type"] = "tag" if ref.startswith("refs/tags/") else "branch"
    if "repository_owner" not in overrides:
        github["repository_owner"] = str(github["repository"]).split("/")[0]
    if "triggering_actor" not in overrides:
        github["triggering_actor"] = github["actor"]
    if "workflow_ref" not in overrides:
        github["workflow_ref"] = f"{github['repository']}/{rel_path}@{ref}"
    sender = {"login": github["actor"]}
    repository = {"full_name": github["repository"], "name": str(github["repository"]).split("/")[-1]}
    event_payload: dict[str, Any] = {"sender": sender, "repository": repository}
    if event == "workflow_dispatch":
        event_payload.update(
            inputs={name: ex.to_string(value) for name, value in inputs.items()}, ref=ref, workflow=rel_path
        )
    elif event == "schedule":
        schedules = triggers.get("schedule") or [{}]
        event_payload["schedule"] = (
            (schedules[0] or {}).get("cron", "") if isinstance(schedules, list) else ""
        )
    elif event == "push":
        event_payload.update(
            ref=ref, after=github["sha"], before="0" * 40, head_commit={"id": github["sha"], "message": ""}
        )
    github["event"] = _deep_merge(event_payload, overrides.get("event") or {})
    return github


def run_workflow(
    path: str | Path,
    event: str = "workflow_dispatch",
    inputs: Mapping[str, Any] | None = None,
    vars: Mapping[str, Any] | None = None,
    secrets: Mapping[str, Any] | None = None,
    github: Mapping[str, Any] | None = None,
    cwd: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    jobs: Iterable[str] | None = None,
    timeout: float = 600,
    uses_handlers: Mapping[str, UsesHandler] | None = None,
    temp_dir: str | Path | None = None,
) -> WorkflowResult:
    """Run the workflow at ``path`` as if ``event`` had triggered it; see the module docstring.

    ``env`` is the runner's base environment (default: this process's); ``cwd`` is the workspace every
    step starts in (default: the current directory); ``jobs`` limits the run to those jobs and what they
    need; ``timeout`` bounds each step in seconds; ``uses_handlers`` maps an action (``owner/name``, with
    or without ``@ref``) to a callable that stands in for it; ``temp_dir`` keeps RUNNER_TEMP and the file
    commands there instead of a directory removed afterwards.
    """
    path = Path(path)
    workspace = Path(cwd) if cwd is not None else Path.cwd()
    document = load_workflow(path)
    triggers = _triggers(document)
    if event not in triggers:
        raise WorkflowError(f"{path.name} is not triggered by {event!r}; it runs on {sorted(triggers)}")
    if event in ("workflow_dispatch", "workflow_call"):
        resolved = _resolve_inputs((triggers[event] or {}).get("inputs"), dict(inputs or {}), event)
    elif inputs:
        raise WorkflowError(f"inputs are only given to workflow_dispatch/workflow_call runs, not {event!r}")
    else:
        resolved = {}
    try:
        rel_path = str(path.resolve().relative_to(workspace.resolve()))
    except ValueError:
        rel_path = path.name
    github_ctx = _github_context(
        event,
        dict(github or {}),
        workspace,
        str(document.get("name") or rel_path),
        rel_path,
        resolved,
        triggers,
    )
    base_env = dict(os.environ if env is None else env)

    def execute(temp_root: Path) -> WorkflowResult:
        runner = _Runner(
            document=document,
            path=path,
            event=event,
            inputs=resolved,
            vars=dict(vars or {}),
            secrets=dict(secrets or {}),
            github=github_ctx,
            cwd=workspace,
            base_env=base_env,
            timeout=timeout,
            uses_handlers=dict(uses_handlers or {}),
            temp_root=temp_root,
        )
        return runner.run(jobs)

    if temp_dir is not None:
        root = Path(temp_dir)
        root.mkdir(parents=True, exist_ok=True)
        return execute(root)
    with tempfile.TemporaryDirectory(prefix="gha-harness-") as directory:
        return execute(Path(directory))
