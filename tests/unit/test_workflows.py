"""The GitHub Actions workflows hold to the hardening rules, read from the files themselves.

Every `uses:` is pinned to a full commit SHA; top-level permissions are empty and each job grants its
own; `id-token: write` only where a job assumes the AWS role; every job has a timeout; checkouts keep no
credentials; no `${{ }}` expression is expanded inside a `run:` script (untrusted values reach shell
steps through `env:`); and every `mlops` command a step runs parses with the real CLI parser, so a
workflow cannot call a flag that does not exist.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from infra.cli.parser import build_parser

WORKFLOWS = sorted((Path(__file__).resolve().parents[2] / ".github" / "workflows").glob("*.yml"))
PINNED = re.compile(r"^[\w.-]+/[\w./-]+@[0-9a-f]{40}$")
AWS_CREDENTIALS = "aws-actions/configure-aws-credentials@"


def load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(path.read_text())
    return data


def jobs(path: Path) -> list[tuple[str, dict[str, Any]]]:
    return list(load(path)["jobs"].items())


def steps(job: dict[str, Any]) -> list[dict[str, Any]]:
    return list(job.get("steps", []))


def _assumes_aws(path: Path, job: dict[str, Any]) -> bool:
    """A job assumes the AWS role when one of its steps configures the credentials, or, for a call of a
    reusable workflow (`uses: ./.github/workflows/x.yml`), when one of that workflow's jobs does: the
    caller must grant what the called jobs need, and nothing more."""
    called = str(job.get("uses", ""))
    if called.startswith("./"):
        target = path.parents[2] / called[2:]
        return any(_assumes_aws(target, inner) for _name, inner in jobs(target))
    return any(str(step.get("uses", "")).startswith(AWS_CREDENTIALS) for step in steps(job))


OPERATORS = {"|", "||", "&&", ";", "&", ">", ">>", "<", "2>", "(", ")"}


def mlops_commands(script: str) -> list[list[str]]:
    """Each `mlops ...` command of a shell script, up to the next shell operator: continuations joined,
    variables given a value, and an array of optional flags (`"${flags[@]}"`) left out."""
    joined = re.sub(r"\\\n\s*", " ", script)
    commands = []
    for raw in joined.splitlines():
        line = re.sub(r"\$\{\w+\}|\$\w+", "1", re.sub(r'"?\$\{\w+\[@\]\}"?', "", raw))
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split, lexer.commenters = True, "#"
        words = list(lexer)
        for i, word in enumerate(words):
            if word.endswith("/mlops") or word == "mlops":
                rest = words[i + 1 :]
                cut = next((j for j, w in enumerate(rest) if w in OPERATORS), len(rest))
                commands.append(rest[:cut])
                break
    return commands


def test_there_are_workflows_to_check():
    assert [p.name for p in WORKFLOWS if p.name == "ci.yml"] == ["ci.yml"]


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_actions_are_pinned_to_a_full_commit_sha_with_the_version_in_a_comment(path):
    for name, job in jobs(path):
        for step in steps(job):
            if "uses" in step:
                assert PINNED.match(step["uses"]), (
                    f"{path.name}:{name}: {step['uses']} is not pinned to a SHA"
                )
    for line in path.read_text().splitlines():
        if re.search(r"uses:\s*\S+@[0-9a-f]{40}", line):
            assert re.search(r"#\s*v\d", line), f"{path.name}: no version comment on: {line.strip()}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_permissions_are_granted_per_job_and_id_token_only_where_aws_is_assumed(path):
    assert load(path).get("permissions") == {}, f"{path.name}: top-level permissions must be {{}}"
    for name, job in jobs(path):
        assert "permissions" in job, f"{path.name}:{name} grants no permissions of its own"
        assumes_aws = _assumes_aws(path, job)
        wants_token = (job["permissions"] or {}).get("id-token") == "write"
        assert wants_token == assumes_aws, f"{path.name}:{name}: id-token: write iff it assumes the AWS role"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_job_has_a_timeout_and_checkouts_keep_no_credentials(path):
    assert "pull_request_target" not in load(path).get(True, load(path).get("on", {}))
    for name, job in jobs(path):
        assert "timeout-minutes" in job or "uses" in job, f"{path.name}:{name} has no timeout-minutes"
        for step in steps(job):
            if str(step.get("uses", "")).startswith("actions/checkout@"):
                assert step.get("with", {}).get("persist-credentials") is False, f"{path.name}:{name}"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_no_expression_is_expanded_inside_a_shell_script(path):
    for name, job in jobs(path):
        for step in steps(job):
            assert "${{" not in str(step.get("run", "")), f"{path.name}:{name}: pass it through env:"


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_every_mlops_command_a_workflow_runs_exists(path):
    parser = build_parser()
    for _name, job in jobs(path):
        for step in steps(job):
            for argv in mlops_commands(str(step.get("run", ""))):
                parser.parse_args(argv)  # SystemExit (a test failure) on an unknown command or flag


def test_the_command_check_sees_continuations_and_variables():
    script = 'set -e\n.venv/bin/mlops validate --epochs "$EPOCHS" \\\n  --spot "${SPOT}"\necho done\n'
    assert mlops_commands(script) == [["validate", "--epochs", "1", "--spot", "1"]]
    piped = '.venv/bin/mlops cleanup "${apply[@]}" | tee -a "$GITHUB_STEP_SUMMARY"'
    assert mlops_commands(piped) == [["cleanup"]]
    with pytest.raises(SystemExit):
        build_parser().parse_args(["validate", "--no-such-flag"])


DISPATCHED = [p for p in WORKFLOWS if p.name in ("pipeline.yml", "tune.yml", "rollback.yml")]


def _dispatch_inputs(path: Path) -> dict[str, dict[str, Any]]:
    triggers = load(path).get(True) or load(path).get("on")  # YAML 1.1 reads `on` as True
    return dict(triggers["workflow_dispatch"]["inputs"])


@pytest.mark.parametrize("path", DISPATCHED, ids=lambda p: p.name)
def test_each_dispatch_input_reaches_a_validated_mlops_flag(path):
    """Every input travels `inputs.X` -> a step's env -> an mlops flag the parser knows (or, for a
    job switch such as `deploy`, a job condition): none is accepted and then silently ignored."""
    parser = build_parser()
    used: dict[str, list[str]] = {}
    conditions = " ".join(str(job.get("if", "")) for _name, job in jobs(path))
    for _name, job in jobs(path):
        for step in steps(job):
            env = {k: str(v) for k, v in (step.get("env") or {}).items()}
            script = str(step.get("run", ""))
            for var, value in env.items():
                match = re.fullmatch(r"\$\{\{\s*inputs\.(\w+)\s*\}\}", value)
                if not match:
                    continue
                flags = re.findall(rf'(--[\w-]+)\s+"?\$\{{?{var}\}}?"?', script)
                flags += re.findall(rf'\(\s*(--[\w-]+)\s+"\${var}"\s*\)', script)  # an optional-flag array
                used.setdefault(match[1], []).extend(flags)
            for argv in mlops_commands(script):
                parser.parse_args(argv)
    for name in _dispatch_inputs(path):
        assert used.get(name) or f"inputs.{name}" in conditions, f"{path.name}: input {name} is never used"


def test_every_instance_type_a_dispatch_offers_is_one_the_inputs_accept():
    from infra.cli.inputs import resolve
    from infra.settings import Config

    config = Config.from_mapping({"project": {"name": "t"}, "gate": {"version": 1}})
    for path in DISPATCHED:
        spec = _dispatch_inputs(path)
        for option in spec.get("instance_type", {}).get("options", []):
            args = build_parser().parse_args(["validate", "--instance-type", option])
            assert resolve(config, args, local=False).config.aws.train_instance_type == option
        for option in spec.get("task", {}).get("options", []):
            assert option in ("classification", "detection", "segmentation")
