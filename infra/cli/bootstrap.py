"""`mlops bootstrap`: deploy (or update, or delete) the one CloudFormation stack a fork needs on AWS, then
print the GitHub variables and environments to set. The AWS side lives in `infra.aws.stack`."""

from __future__ import annotations

import argparse
import re
import shlex
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from infra.cli.context import console
from infra.errors import MlopsError, UsageError

if TYPE_CHECKING:
    from infra.aws.session import Aws
    from infra.cli.context import Context

BOOTSTRAP_HELP = """Create or update the bootstrap stack (infra/cloudformation/bootstrap.yaml), once per AWS
account and region, so that GitHub Actions of one repository can train and deploy on SageMaker.

It creates: the GitHub OIDC provider (unless --no-oidc-provider: the account already has one); a role
that only workflow jobs of OWNER/REPO bound to the `training` or `production` environment, or running
on main, can assume (least privilege: the project's SageMaker resources, ECR repositories and bucket);
the SageMaker execution role; a versioned, encrypted, private, TLS-only S3 bucket; the ECR repositories
<project>-train and <project>-serve (immutable tags, scan on push, old images expire); an empty Secrets
Manager secret <project>/wandb-api-key for the W&B key; and, with --budget-email, a monthly AWS Budgets
alert (80% actual, 100% forecasted).

The changes are shown as a CloudFormation change set and applied only after you confirm (or --yes).
Then the outputs are printed, with the `gh` commands that set the repository variables and create the
environments, and the command that stores the W&B key.

Cost: the stack itself is free (IAM, the OIDC provider and empty ECR repositories cost nothing). What
bills: the secret (0.40 USD a month), S3 storage of data and models, ECR storage of images; the budget
alert is free within AWS Budgets' free allowance of an account (see its pricing page). Training jobs
and endpoints are billed when the pipeline runs them, never by this stack.

--delete removes the stack; the bucket and its data stay (DeletionPolicy Retain). It is refused while
endpoints of the project serve, unless --force.

Exit codes: 0 done or up to date; 2 bad arguments, or confirmation needed (not a terminal: pass --yes);
1 not confirmed; 6 an AWS call or the stack failed (the message names the failed resources)."""

_OWNER = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})$")
_REPO = re.compile(r"^[A-Za-z0-9._-]{1,100}$")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# The template's ProjectName constraint (AllowedPattern, 2-14 characters): checked here first, so a bad
# name is one clear line instead of a failed change set.
_PROJECT = re.compile(r"^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$")


def add_bootstrap_command(sub: Any, dry_run_flag: Callable[[argparse.ArgumentParser], None]) -> None:
    boot = sub.add_parser(
        "bootstrap",
        help="create the AWS stack GitHub Actions needs (OIDC role, bucket, ECR, W&B secret, budget)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=BOOTSTRAP_HELP,
    )
    boot.add_argument(
        "--github-repo",
        metavar="OWNER/REPO",
        help="the GitHub repository whose workflows may assume the role (required unless --delete)",
    )
    boot.add_argument("--stack-name", help="CloudFormation stack name (default: <project>-bootstrap)")
    boot.add_argument(
        "--budget-email", metavar="ADDRESS", help="send budget alerts here (default: no budget)"
    )
    boot.add_argument(
        "--monthly-budget-usd", type=int, default=100, metavar="USD", help="monthly budget (default 100)"
    )
    boot.add_argument(
        "--no-oidc-provider",
        action="store_true",
        help="the account already has the token.actions.githubusercontent.com provider: use it",
    )
    boot.add_argument("--yes", "-y", action="store_true", help="apply without asking")
    boot.add_argument("--delete", action="store_true", help="delete the stack (the bucket is retained)")
    boot.add_argument("--force", action="store_true", help="with --delete: even while endpoints serve")
    dry_run_flag(boot)
    boot.set_defaults(handler=cmd_bootstrap)


def cmd_bootstrap(ctx: Context) -> int:
    from infra.aws.session import AwsSettings

    args = ctx.args
    settings = AwsSettings.from_env(ctx.config.project.name)
    project = _project(settings.project)
    from infra.aws import stack

    stack_name = stack.validate_stack_name(args.stack_name or f"{project}-bootstrap")
    if args.force and not args.delete:
        raise UsageError("--force only goes with --delete")
    if args.delete:
        return _delete(ctx, settings, project, stack_name)
    if not args.github_repo:
        raise UsageError("--github-repo OWNER/REPO is required: the repository whose workflows may use AWS")
    owner, repo = parse_github_repo(args.github_repo)
    email = (args.budget_email or "").strip()
    if email and not _EMAIL.match(email):
        raise UsageError(f"--budget-email {email!r} is not an e-mail address")
    if args.monthly_budget_usd < 1:
        raise UsageError("--monthly-budget-usd must be at least 1")
    _require_confirmation_possible(ctx)

    aws, executor = _session(ctx, settings)
    params = stack.BootstrapParameters(
        project=project,
        github_owner=owner,
        github_repo=repo,
        create_oidc_provider=not args.no_oidc_provider,
        budget_email=email,
        monthly_budget_usd=args.monthly_budget_usd,
    )
    template = stack.TEMPLATE_PATH.read_text(encoding="utf-8")
    tags = [{"Key": "mlops:project", "Value": project}]
    planned = stack.plan(aws, stack_name, template, stack.render_parameters(params), executor, tags=tags)
    if planned.dry_run:
        _print_summary(stack.summary(template), stack_name, planned.change_set_type)
        return 0
    if planned.up_to_date:
        console.print(f"the stack {stack_name} is up to date: nothing to change")
    else:
        _print_changes(planned)
        if not args.yes and not _confirm(f"Apply these {len(planned.changes)} changes? [y/N] "):
            stack.discard(planned, executor)
            raise MlopsError("not applied: the change set was discarded; nothing changed")
        status = stack.execute(aws, planned, executor, on_event=_event)
        console.print(f"the stack {stack_name} is {status}")
    _print_next_steps(stack.outputs(aws, stack_name), owner, repo, project, aws.region)
    return 0


def parse_github_repo(value: str) -> tuple[str, str]:
    owner, _, repo = value.strip().removesuffix(".git").partition("/")
    if not (_OWNER.match(owner) and _REPO.match(repo) and repo not in (".", "..")):
        raise UsageError(
            f"--github-repo {value!r}: expected OWNER/REPO as GitHub spells it, e.g. octo-org/cv-mlops"
        )
    return owner, repo


def _project(name: str) -> str:
    if not (2 <= len(name) <= 14 and _PROJECT.match(name)):
        raise UsageError(
            f"project name {name!r}: the bootstrap stack needs 2-14 lowercase letters, digits and inner "
            "hyphens (tuning job names keep 14 characters); set [project] name in mlops.toml or MLOPS_PROJECT"
        )
    return name


def _require_confirmation_possible(ctx: Context) -> None:
    if ctx.dry_run or ctx.args.yes or sys.stdin.isatty():
        return
    raise UsageError(
        "not a terminal, so the changes cannot be confirmed: pass --yes to apply them without asking "
        "(or --dry-run to only see the request)"
    )


def _confirm(prompt: str) -> bool:
    try:
        answer = input(prompt)
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def _session(ctx: Context, settings: Any) -> tuple[Aws, Any]:
    from infra.aws.plan import DryRunExecutor, LiveExecutor
    from infra.aws.session import Aws

    aws = Aws(settings)
    if ctx.dry_run:
        emit = lambda text: console.print(text, highlight=False, markup=False)  # noqa: E731
        return aws, DryRunExecutor(emit=emit, clients=aws.client)
    return aws, LiveExecutor(aws.client)


def _say(text: str) -> None:
    console.print(text, highlight=False, markup=False)


def _event(line: str) -> None:
    _say(f"  {line}")


def _delete(ctx: Context, settings: Any, project: str, stack_name: str) -> int:
    from infra.aws import stack

    _require_confirmation_possible(ctx)
    aws, executor = _session(ctx, settings)
    if not ctx.dry_run and not ctx.args.yes:
        question = f"Delete the stack {stack_name} (roles, ECR repositories and images, secret)? [y/N] "
        if not _confirm(question):
            raise MlopsError("not deleted: nothing changed")
    bucket = stack.delete(aws, stack_name, executor, project=project, force=ctx.args.force, on_event=_event)
    kept = f"the bucket {bucket} is retained with its data" if bucket else "the bucket is retained"
    if ctx.dry_run:
        console.print(f"dry run: nothing was deleted; after a real --delete {kept}")
    else:
        console.print(
            f"deleted the stack {stack_name}; {kept} (empty it and delete it by hand to remove it: "
            f"aws s3 rb s3://{bucket or '<bucket>'} --force removes current objects only, the bucket is "
            "versioned)"
        )
    return 0


def _print_summary(by_type: dict[str, list[str]], stack_name: str, change_set_type: str) -> None:
    from rich.table import Table

    verb = "create" if change_set_type == "CREATE" else "update"
    table = Table(title=f"the template's resources (the change set would {verb} {stack_name})")
    for col in ("type", "count", "logical ids"):
        table.add_column(col)
    for kind, logicals in by_type.items():
        table.add_row(kind, str(len(logicals)), ", ".join(logicals))
    console.print(table)
    console.print("dry run: nothing was created or changed")


def _print_changes(planned: Any) -> None:
    from rich.table import Table

    table = Table(title=f"change set {planned.change_set_name} for stack {planned.stack_name}")
    for col in ("action", "logical id", "type", "replacement"):
        table.add_column(col)
    for change in planned.changes:
        table.add_row(change.action, change.logical_id, change.resource_type, change.replacement)
    console.print(table)


# The repository variables the workflows read (`vars.*`): none of them is a secret, so none is stored
# as one (variables show in logs, which makes a wrong value easy to spot).
VARIABLES = (
    ("AWS_ROLE_ARN", "GitHubRoleArn"),
    ("AWS_REGION", "Region"),
    ("MLOPS_PROJECT", None),
    ("MLOPS_BUCKET", "BucketName"),
    ("MLOPS_SAGEMAKER_ROLE_ARN", "SageMakerRoleArn"),
    ("MLOPS_WANDB_SECRET_ARN", "WandbSecretArn"),
)


def next_steps(out: dict[str, str], owner: str, repo: str, project: str, region: str) -> list[str]:
    """The shell commands that connect the repository to the stack, in order."""
    slug = f"{owner}/{repo}"
    values = {**out, "Region": out.get("Region") or region}
    lines = []
    for variable, key in VARIABLES:
        value = project if key is None else values.get(key, f"<{key}>")
        lines.append(f"gh variable set {variable} --repo {slug} --body {shlex.quote(value)}")
    for environment in ("training", "production"):
        lines.append(f"gh api --method PUT repos/{slug}/environments/{environment}")
    secret = values.get("WandbSecretArn", "<WandbSecretArn>")
    lines.append(
        f"aws secretsmanager put-secret-value --region {shlex.quote(values['Region'])} "
        f'--secret-id {shlex.quote(secret)} --secret-string "$WANDB_API_KEY"'
    )
    return lines


def _print_next_steps(out: dict[str, str], owner: str, repo: str, project: str, region: str) -> None:
    from rich.table import Table

    table = Table(title="stack outputs")
    table.add_column("output")
    table.add_column("value")
    for key, value in sorted(out.items()):
        table.add_row(key, value)
    console.print(table)
    commands = next_steps(out, owner, repo, project, region)
    _say("\nNext: connect the repository (repository variables; none of them is a secret):")
    for line in commands[:6]:
        _say(f"  {line}")
    _say(
        "Create the two environments the role trusts; then add required reviewers to `production` "
        "(and `training`, to approve paid runs) under Settings > Environments:"
    )
    for line in commands[6:8]:
        _say(f"  {line}")
    _say("Store the W&B API key (the stack created the secret without one):")
    _say(f"  {commands[8]}")
    _say(f"The bucket {out.get('BucketName', '')} is retained if the stack is ever deleted (--delete).")
    missing = [key for _, key in VARIABLES if key and key != "Region" and key not in out]
    if missing:
        _say(f"warning: the stack reports no {', '.join(missing)}: read them in the CloudFormation console")
