"""The offline GitHub Actions harness (tests/harness): expression language and job/step semantics."""

from __future__ import annotations

import math
import os
import re
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.harness import expressions as ex
from tests.harness.workflow import (
    UsesCall,
    UsesResult,
    WorkflowError,
    WorkflowResult,
    parse_file_command,
    run_workflow,
)

# ----------------------------------------------------------------------------------------------- helpers


def _write(tmp_path: Path, text: str, name: str = "wf.yml") -> Path:
    path = tmp_path / ".github" / "workflows" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _run(tmp_path: Path, text: str, **kwargs: Any) -> WorkflowResult:
    path = _write(tmp_path, text)
    kwargs.setdefault("event", "workflow_dispatch" if "workflow_dispatch" in text else "push")
    kwargs.setdefault("cwd", tmp_path)
    kwargs.setdefault("env", {"PATH": os.environ["PATH"], "HOME": str(tmp_path)})
    kwargs.setdefault("timeout", 30)
    return run_workflow(path, **kwargs)


def _eval(expression: str, **contexts: Any) -> Any:
    functions = {"success": lambda: True, "failure": lambda: False, "always": lambda: True}
    return ex.evaluate(expression, contexts, functions)


# ----------------------------------------------------------------------------------------------- expressions


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("'it''s'", "it's"),
        ("42", 42),
        ("-1.5", -1.5),
        ("0xff", 255),
        ("true", True),
        ("null", None),
        ("1 == '1'", True),
        ("'' == 0", True),
        ("null == 0", True),
        ("true == 1", True),
        ("'abc' == 'ABC'", True),
        ("'abc' != 'ABD'", True),
        ("'a' < 'B'", True),
        ("2 > '10'", False),
        ("'x' == 0", False),
        ("!''", True),
        ("!'false'", False),  # a non-empty string is truthy
        ("1 && 'yes'", "yes"),
        ("0 && 'yes'", 0),
        ("'' || 'fallback'", "fallback"),
        ("'set' || 'fallback'", "set"),
        ("contains('Hello World', 'WORLD')", True),
        ("startsWith('refs/heads/main', 'REFS/heads')", True),
        ("endsWith('model.tar.gz', '.GZ')", True),
        ("format('{0}-{1}', 'a', 2)", "a-2"),
        ("format('{{0}} {0}', 'x')", "{0} x"),
        ("join(fromJSON('[1, \"b\", true]'), '+')", "1+b+true"),
        ("join('solo')", "solo"),
        ('fromJSON(\'{"a": {"b": [10, 20]}}\').a.b[1]', 20),
        ("toJSON(fromJSON('{\"a\":1}'))", '{\n  "a": 1\n}'),
        ("FORMAT('{0}', 1)", "1"),  # function names are case-insensitive
    ],
)
def test_expression_values(expression: str, expected: Any) -> None:
    assert _eval(expression) == expected
    assert type(_eval(expression)) is type(expected)


@pytest.mark.parametrize(
    ("a", "b", "c", "expected"),
    [
        (True, True, False, False),  # (!a && b) || c
        (False, True, False, True),
        (False, False, True, True),
        (True, False, True, True),
    ],
)
def test_precedence_not_and_or(a: bool, b: bool, c: bool, expected: bool) -> None:
    contexts = {"inputs": {"a": a, "b": b, "c": c}}
    assert ex.is_truthy(ex.evaluate("!inputs.a && inputs.b || inputs.c", contexts)) is expected


def test_comparison_binds_tighter_than_equality_and_and() -> None:
    assert _eval("1 < 2 == true") is True
    assert _eval("'a' == 'A' && 1 == 1 || false") is True
    assert _eval("!(1 == 1)") is False


def test_property_access_is_null_safe_and_case_insensitive() -> None:
    github = {"event": {"Inputs": {"epochs": "3"}}}
    assert _eval("github.event.inputs.epochs", github=github) == "3"
    assert _eval("github['event']['inputs']['EPOCHS']", github=github) == "3"
    assert _eval("github.event.missing.deeper", github=github) is None
    assert _eval("steps.my-step.outputs.x-y", steps={"my-step": {"outputs": {"x-y": "ok"}}}) == "ok"
    assert _eval("fromJSON('[1,2]')[5]") is None


def test_contains_on_arrays_uses_loose_equality() -> None:
    assert _eval("contains(fromJSON('[\"Push\", \"pr\"]'), 'push')") is True
    assert _eval("contains(fromJSON('[1, 2]'), '2')") is True
    assert _eval("contains(fromJSON('[1, 2]'), 3)") is False


def test_to_string_prints_like_github() -> None:
    assert ex.to_string(None) == ""
    assert ex.to_string(True) == "true"
    assert ex.to_string(3.0) == "3"
    assert ex.to_string(0.5) == "0.5"
    assert ex.to_string([1]) == "Array"
    assert ex.to_string({"a": 1}) == "Object"
    assert ex.to_string(math.nan) == "NaN"


def test_interpolation_and_typed_single_expressions() -> None:
    contexts = {"inputs": {"deploy": False, "epochs": 2}, "vars": {}}
    assert ex.interpolate("e=${{ inputs.epochs }} d=${{ inputs.deploy }} m=${{ vars.NOPE }}.", contexts) == (
        "e=2 d=false m=."
    )
    assert ex.evaluate_template("${{ inputs.deploy }}", contexts) is False
    assert ex.evaluate_template(" ${{ inputs.epochs }} ", contexts) == 2
    assert ex.evaluate_template("${{ format('}}{0}', 'x') }}", contexts) == "}x"
    assert ex.evaluate_template({"k": ["${{ inputs.epochs }}"]}, contexts) == {"k": [2]}


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("frobnicate('x')", "Unrecognized function: 'frobnicate'"),
        ("nosuch.context", "Unrecognized named-value: 'nosuch'"),
        ("format()", "takes 1..n argument"),
        ("'unterminated", "Unterminated string"),
        ("1 ==", "Unexpected end of expression"),
        ("(1", "Expected ')'"),
        ("github.*.x", "not supported"),
        ("format('{1}', 'a')", "more arguments than were supplied"),
        ("fromJSON('{nope')", "invalid JSON"),
    ],
)
def test_expression_errors_are_clear(expression: str, message: str) -> None:
    with pytest.raises(ex.ExpressionError, match=re.escape(message)):
        ex.evaluate(expression, {"github": {}})


def test_status_function_detection() -> None:
    assert ex.uses_status_function(ex.parse("!cancelled() && needs.a.result == 'success'"))
    assert not ex.uses_status_function(ex.parse("needs.a.result == 'success'"))


def test_parse_file_command_both_forms() -> None:
    text = "A=1\nB=x=y\n\nMULTI<<EOF\nline 1\nline=2\nEOF\nC<<X\nX\n"
    assert parse_file_command(text) == [("A", "1"), ("B", "x=y"), ("MULTI", "line 1\nline=2"), ("C", "")]
    with pytest.raises(WorkflowError, match="delimiter 'EOF' not found"):
        parse_file_command("M<<EOF\nnever closed\n")
    with pytest.raises(WorkflowError, match="Invalid format"):
        parse_file_command("no separator here\n")


# ----------------------------------------------------------------------------------------------- jobs


def test_needs_order_and_job_outputs_flow_to_a_later_jobs_env(tmp_path: Path) -> None:
    result = _run(
        tmp_path,
        """
        on: push
        jobs:
          deploy:
            needs: [train, lint]
            runs-on: ubuntu-24.04
            steps:
              - env:
                  MODEL: ${{ needs.train.outputs.model }}
                  CONFIG: ${{ fromJSON(needs.train.outputs.config).lr }}
                run: echo "deploying $MODEL lr=$CONFIG"
          train:
            runs-on: ubuntu-24.04
            outputs:
              model: ${{ steps.fit.outputs.uri }}
              config: ${{ steps.fit.outputs.config }}
            steps:
              - id: fit
                run: |
                  echo "uri=s3://bucket/model.tar.gz" >> "$GITHUB_OUTPUT"
                  echo 'config={"lr": 0.01}' >> "$GITHUB_OUTPUT"
          lint:
            runs-on: ubuntu-24.04
            steps:
              - run: echo lint
          report:
            needs: deploy
            runs-on: ubuntu-24.04
            steps:
              - run: echo report
        """,
    )
    assert result.order == ["train", "lint", "deploy", "report"]
    assert result.jobs["train"].outputs == {"model": "s3://bucket/model.tar.gz", "config": '{"lr": 0.01}'}
    assert "deploying s3://bucket/model.tar.gz lr=0.01" in result.jobs["deploy"].steps[0].output
    assert {job.result for job in result.jobs.values()} == {"success"}
    assert result.conclusion == "success"


def test_jobs_subset_runs_the_needed_jobs_only(tmp_path: Path) -> None:
    result = _run(
        tmp_path,
        """
        on: push
        jobs:
          a: {runs-on: x, steps: [{run: echo a}]}
          b: {runs-on: x, needs: a, steps: [{run: echo b}]}
          c: {runs-on: x, steps: [{run: echo c}]}
        """,
        jobs=["b"],
    )
    assert result.order == ["a", "b"]


def test_a_failing_step_fails_the_job_and_skips_dependents_but_always_and_failure_jobs_run(
    tmp_path: Path,
) -> None:
    result = _run(
        tmp_path,
        """
        on: push
        jobs:
          build:
            runs-on: x
            steps:
              - run: echo before
              - id: boom
                run: |
                  echo "about to fail"
                  exit 3
              - id: after
                run: echo "must not run"
              - id: on-failure
                if: failure()
                run: echo "cleaning up after ${{ steps.boom.outcome }}"
              - if: ${{ always() }}
                run: echo "status=${{ job.status }}"
          test:
            needs: build
            runs-on: x
            steps: [{run: echo test}]
          e2e:
            needs: test
            runs-on: x
            steps: [{run: echo e2e}]
          notify:
            needs: test
            if: failure()
            runs-on: x
            steps:
              - run: echo "notify ${{ needs.test.result }}"
          always-report:
            needs: [build]
            if: always() && needs.build.result == 'failure'
            runs-on: x
            steps: [{run: echo report}]
          if-success:
            needs: build
            if: success()
            runs-on: x
            steps: [{run: echo nope}]
        """,
    )
    build = result.jobs["build"]
    assert build.result == "failure"
    assert [(s.id, s.outcome) for s in build.steps] == [
        ("__run", "success"),
        ("boom", "failure"),
        ("after", "skipped"),
        ("on-failure", "success"),
        ("__run_2", "success"),
    ]
    assert build.step("boom").exit_code == 3
    assert "about to fail" in build.step("boom").output
    assert "cleaning up after failure" in build.step("on-failure").output
    assert "status=failure" in build.steps[-1].output
    assert result.jobs["test"].result == "skipped"
    assert result.jobs["e2e"].result == "skipped"
    assert result.jobs["notify"].result == "success"  # failure() sees the failed ancestor `build`
    assert "notify skipped" in result.jobs["notify"].steps[0].output
    assert result.jobs["always-report"].result == "success"
    assert result.jobs["if-success"].result == "skipped"
    assert result.conclusion == "failure"
    assert "about to fail" in result.log("build")


def test_continue_on_error(tmp_path: Path) -> None:
    result = _run(
        tmp_path,
        """
        on: push
        jobs:
          j:
            runs-on: x
            steps:
              - id: flaky
                continue-on-error: true
                run: exit 1
              - run: echo "outcome=${{ steps.flaky.outcome }} conclusion=${{ steps.flaky.conclusion }}"
              - if: failure()
                run: echo "must not run"
        """,
    )
    job = result.jobs["j"]
    assert job.result == "success"
    assert (job.steps[0].outcome, job.steps[0].conclusion) == ("failure", "success")
    assert "outcome=failure conclusion=success" in job.steps[1].output
    assert job.steps[2].outcome == "skipped"


def test_github_env_both_forms_and_github_path_reach_later_steps(tmp_path: Path) -> None:
    result = _run(
        tmp_path,
        """
        on: push
        env:
          LEVEL: workflow
        jobs:
          j:
            runs-on: x
            env:
              LEVEL: job
            steps:
              - run: |
                  echo "SIMPLE=one=1" >> "$GITHUB_ENV"
                  {
                    echo "MULTI<<EOF_MARK"
                    echo "first line"
                    echo "second line"
                    echo "EOF_MARK"
                  } >> "$GITHUB_ENV"
                  echo "LEVEL=from-github-env" >> "$GITHUB_ENV"
                  mkdir -p "$RUNNER_TEMP/bin"
                  printf '#!/bin/sh\\necho tool-ran\\n' > "$RUNNER_TEMP/bin/mytool"
                  chmod +x "$RUNNER_TEMP/bin/mytool"
                  echo "$RUNNER_TEMP/bin" >> "$GITHUB_PATH"
              - run: |
                  echo "simple=$SIMPLE"
                  printf 'multi=%s\\n' "$MULTI"
                  echo "level=$LEVEL ctx=${{ env.LEVEL }} simple-ctx=${{ env.SIMPLE }}"
                  mytool
              - env:
                  LEVEL: step
                run: echo "level=$LEVEL"
        """,
    )
    job = result.jobs["j"]
    assert job.result == "success", result.log("j")
    out = job.steps[1].output
    assert "simple=one=1" in out
    assert "multi=first line\nsecond line\n" in out
    assert "level=from-github-env ctx=from-github-env simple-ctx=one=1" in out
    assert "tool-ran" in out
    assert "level=step" in job.steps[2].output


def test_github_output_heredoc_and_step_outputs(tmp_path: Path) -> None:
    result = _run(
        tmp_path,
        """
        on: push
        jobs:
          j:
            runs-on: x
            outputs:
              notes: ${{ steps.produce.outputs.notes }}
            steps:
              - id: produce
                run: |
                  echo "plain=value with = sign" >> "$GITHUB_OUTPUT"
                  {
                    echo "notes<<NOTES"
                    echo "line a"
                    echo "line b"
                    echo "NOTES"
                  } >> "$GITHUB_OUTPUT"
              - run: echo "plain=[${{ steps.produce.outputs.plain }}]"
        """,
    )
    job = result.jobs["j"]
    assert job.step("produce").outputs == {"plain": "value with = sign", "notes": "line a\nline b"}
    assert job.outputs["notes"] == "line a\nline b"
    assert "plain=[value with = sign]" in job.steps[1].output


_DISPATCH = """
on:
  workflow_dispatch:
    inputs:
      epochs:
        type: number
        default: 3
      deploy:
        type: boolean
        default: false
      model:
        type: string
        required: false
      stage:
        type: choice
        options: [dev, prod]
        default: dev
jobs:
  show:
    runs-on: x
    steps:
      - run: |
          echo "epochs=${{ inputs.epochs }} deploy=${{ inputs.deploy }}"
          echo "model=${{ inputs.model || 'resnet18' }} stage=${{ inputs.stage }}"
          echo "event-deploy=${{ github.event.inputs.deploy }}"
          echo "is-prod=${{ inputs.stage == 'PROD' }}"
  deploy:
    if: inputs.deploy
    runs-on: x
    environment: ${{ inputs.stage == 'prod' && 'production' || 'staging' }}
    steps:
      - run: echo deploying
"""


def test_dispatch_defaults_boolean_typing_and_or_default_idiom(tmp_path: Path) -> None:
    result = _run(tmp_path, _DISPATCH)
    assert result.inputs == {"epochs": 3, "deploy": False, "model": "", "stage": "dev"}
    out = result.jobs["show"].steps[0].output
    assert "epochs=3 deploy=false" in out
    assert "model=resnet18 stage=dev" in out
    assert "event-deploy=false" in out
    assert "is-prod=false" in out
    assert result.jobs["deploy"].result == "skipped"
    assert result.jobs["deploy"].environment is None


def test_dispatch_given_inputs_case_insensitive_equality_and_environment(tmp_path: Path) -> None:
    result = _run(
        tmp_path, _DISPATCH, inputs={"deploy": "true", "stage": "prod", "model": "yolo", "epochs": "2"}
    )
    assert result.inputs["deploy"] is True
    assert result.inputs["epochs"] == "2"  # numbers stay as given
    out = result.jobs["show"].steps[0].output
    assert "model=yolo stage=prod" in out
    assert "is-prod=true" in out  # 'prod' == 'PROD'
    assert result.jobs["deploy"].result == "success"
    assert result.jobs["deploy"].environment == "production"


def test_invalid_dispatches_are_refused(tmp_path: Path) -> None:
    with pytest.raises(WorkflowError, match="Unexpected inputs"):
        _run(tmp_path, _DISPATCH, inputs={"epoch": "1"})
    with pytest.raises(WorkflowError, match="must be one of"):
        _run(tmp_path, _DISPATCH, inputs={"stage": "qa"})
    with pytest.raises(WorkflowError, match="boolean"):
        _run(tmp_path, _DISPATCH, inputs={"deploy": "maybe"})
    with pytest.raises(WorkflowError, match="not triggered by 'push'"):
        _run(tmp_path, _DISPATCH, event="push")


def test_uses_steps_are_skipped_listed_or_handled(tmp_path: Path) -> None:
    seen: list[UsesCall] = []

    def configure_aws(call: UsesCall) -> UsesResult:
        seen.append(call)
        return UsesResult(env={"AWS_REGION": call.with_["aws-region"]}, outputs={"aws-account-id": "123"})

    result = _run(
        tmp_path,
        """
        on: push
        jobs:
          j:
            runs-on: x
            steps:
              - uses: actions/checkout@v4
                with:
                  persist-credentials: false
              - name: creds
                id: aws
                uses: aws-actions/configure-aws-credentials@e6de054238d6b7531b4efff3b6587d9aade6a06c
                with:
                  aws-region: ${{ vars.REGION }}
              - if: false
                uses: actions/upload-artifact@v4
              - run: echo "region=$AWS_REGION account=${{ steps.aws.outputs.aws-account-id }}"
        """,
        vars={"REGION": "eu-west-1"},
        uses_handlers={"aws-actions/configure-aws-credentials": configure_aws},
    )
    job = result.jobs["j"]
    assert result.skipped_uses == [("j", "Run actions/checkout@v4", "actions/checkout@v4")]
    assert job.steps[0].kind == "uses"
    assert job.steps[0].with_ == {"persist-credentials": "false"}
    assert [call.with_ for call in seen] == [{"aws-region": "eu-west-1"}]
    assert job.step("aws").handled
    assert job.steps[2].outcome == "skipped"
    assert "region=eu-west-1 account=123" in job.steps[3].output


def test_step_summaries_are_collected_in_job_order(tmp_path: Path) -> None:
    result = _run(
        tmp_path,
        """
        on: push
        jobs:
          second:
            needs: first
            runs-on: x
            steps:
              - run: echo "## second" >> "$GITHUB_STEP_SUMMARY"
          first:
            runs-on: x
            steps:
              - run: echo "## first a" >> "$GITHUB_STEP_SUMMARY"
              - run: echo "no summary"
              - run: printf '## first b' >> "$GITHUB_STEP_SUMMARY"
        """,
    )
    assert result.jobs["first"].summary == "## first a\n## first b\n"
    assert result.summary == "## first a\n## first b\n## second\n"


def test_runner_environment_shell_and_working_directory(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    result = _run(
        tmp_path,
        """
        on: push
        jobs:
          j:
            runs-on: x
            defaults:
              run:
                working-directory: sub
            steps:
              - run: |
                  echo "pwd=$(pwd)"
                  echo "ci=$CI actions=$GITHUB_ACTIONS sha=$GITHUB_SHA ref=$GITHUB_REF run=$GITHUB_RUN_ID"
                  echo "repo=$GITHUB_REPOSITORY actor=$GITHUB_ACTOR event=$GITHUB_EVENT_NAME job=$GITHUB_JOB"
                  echo "ws=$GITHUB_WORKSPACE temp-set=${RUNNER_TEMP:+yes} os=${{ runner.os }}"
              - name: default shell has no pipefail
                run: false | true
              - name: explicit bash has pipefail
                shell: bash
                continue-on-error: true
                run: false | true
              - shell: python
                working-directory: .
                run: |
                  import os
                  print("python", os.getcwd())
        """,
        github={"sha": "abc123", "ref": "refs/heads/feature", "run_id": "77", "repository": "o/r"},
    )
    job = result.jobs["j"]
    out = job.steps[0].output
    assert f"pwd={tmp_path / 'sub'}" in out
    assert "ci=true actions=true sha=abc123 ref=refs/heads/feature run=77" in out
    assert "repo=o/r actor=harness event=push job=j" in out
    assert f"ws={tmp_path} temp-set=yes os=Linux" in out
    assert job.steps[1].outcome == "success"
    assert job.steps[2].outcome == "failure"
    assert f"python {tmp_path}" in job.steps[3].output
    assert result.github["ref_name"] == "feature"


def test_step_timeout_fails_the_step(tmp_path: Path) -> None:
    result = _run(
        tmp_path,
        """
        on: push
        jobs:
          j:
            runs-on: x
            steps:
              - run: sleep 5
        """,
        timeout=0.3,
    )
    step = result.jobs["j"].steps[0]
    assert step.outcome == "failure"
    assert "timed out" in step.output


def test_skipped_if_and_unknown_function_raise_before_running(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    with pytest.raises(ex.ExpressionError, match=r"wf\.yml\.jobs\.b\.steps\[0\]\.run: Unrecognized function"):
        _run(
            tmp_path,
            f"""
            on: push
            jobs:
              a: {{runs-on: x, steps: [{{run: touch {marker}}}]}}
              b: {{runs-on: x, steps: [{{run: "echo ${{{{ nosuch(1) }}}}"}}]}}
            """,
        )
    assert not marker.exists()


def test_a_runtime_expression_error_fails_the_step_not_the_harness(tmp_path: Path) -> None:
    result = _run(
        tmp_path,
        """
        on: push
        jobs:
          a:
            if: false
            runs-on: x
            outputs:
              config: ${{ steps.s.outputs.config }}
            steps:
              - id: s
                run: echo never
          b:
            needs: a
            if: always()
            runs-on: x
            steps:
              - env:
                  LR: ${{ fromJSON(needs.a.outputs.config).lr }}
                run: echo "must not run"
              - if: always()
                run: echo "after ${{ job.status }}"
        """,
    )
    b = result.jobs["b"]
    assert result.jobs["a"].result == "skipped"
    assert b.result == "failure"
    assert b.steps[0].outcome == "failure"
    assert "fromJSON: the input is empty" in b.steps[0].output
    assert "after failure" in b.steps[1].output


def test_matrix_is_not_supported(tmp_path: Path) -> None:
    with pytest.raises(NotImplementedError, match="matrix"):
        _run(
            tmp_path,
            """
            on: push
            jobs:
              j:
                runs-on: x
                strategy: {matrix: {py: ["3.11"]}}
                steps: [{run: echo}]
            """,
        )


def test_schedule_event_gets_empty_inputs(tmp_path: Path) -> None:
    result = _run(
        tmp_path,
        """
        on:
          schedule: [{cron: "17 6 * * *"}]
          workflow_dispatch:
            inputs:
              confirm: {type: string, default: "nope"}
        jobs:
          j:
            if: vars.ROLE != ''
            runs-on: x
            steps:
              - run: echo "confirm=[${{ inputs.confirm }}] cron=${{ github.event.schedule }}"
        """,
        event="schedule",
        vars={"ROLE": "arn:aws:iam::1:role/r"},
    )
    assert "confirm=[] cron=17 6 * * *" in result.jobs["j"].steps[0].output


def test_local_reusable_workflow_call(tmp_path: Path) -> None:
    _write(
        tmp_path,
        """
        on:
          workflow_call:
            inputs:
              size: {type: number, required: true}
              dry: {type: boolean, default: false}
            outputs:
              answer:
                value: ${{ jobs.inner.outputs.answer }}
        jobs:
          inner:
            runs-on: x
            outputs:
              answer: ${{ steps.s.outputs.answer }}
            steps:
              - uses: actions/checkout@v4
              - id: s
                run: |
                  answer="size-${{ inputs.size }}-dry-${{ inputs.dry }}-${{ secrets.TOKEN }}"
                  echo "answer=$answer" >> "$GITHUB_OUTPUT"
        """,
        name="called.yml",
    )
    result = _run(
        tmp_path,
        """
        on: push
        jobs:
          call:
            uses: ./.github/workflows/called.yml
            with:
              size: 4
              dry: ${{ github.ref == 'refs/heads/main' }}
            secrets: inherit
          after:
            needs: call
            runs-on: x
            steps:
              - run: echo "got ${{ needs.call.outputs.answer }}"
        """,
        secrets={"TOKEN": "t0k"},
    )
    assert result.jobs["call"].result == "success"
    assert result.jobs["call"].outputs == {"answer": "size-4-dry-true-t0k"}
    assert "got size-4-dry-true-t0k" in result.jobs["after"].steps[0].output
    assert result.skipped_uses == [("call/inner", "Run actions/checkout@v4", "actions/checkout@v4")]
