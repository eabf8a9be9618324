"""`mlops`: the command line for the pipeline, on this machine (`--local`) or on AWS.

    context.py   consoles, the per-process Context (settings, config, platform), shared helpers
    commands.py  the commands of both platforms: data, train, evaluate, register, versions, history,
                 deploy, rollback, endpoint, pipeline, serve
    aws.py       the AWS platform factory, the pipeline plan (--dry-run), and the AWS-only commands
    parser.py    every command and flag

Every command prints one clear line and exits non-zero on an expected failure. Exit codes: 1 general
(or an unexpected error in a pipeline stage), 2 usage or no data, 3 training failed, 4 gate rejected
(with --fail-on-reject), 5 deploy or verification failed and production is safe (the previous version
serves again, or nothing serves because nothing did before), 6 evaluate or register failed,
7 deploy or verification failed and production is NOT safe (a failed version may still serve).
"""

from __future__ import annotations

import os
from typing import Any

from infra.cli.context import Context, err
from infra.cli.inputs import InputError, annotation
from infra.cli.parser import build_parser
from infra.errors import MlopsError


def _interrupt_on_sigterm() -> None:
    """A cancelled GitHub workflow sends SIGINT, then SIGTERM: both must reach the code that stops a
    SageMaker job (StopTrainingJob) or a local trainer, which listens for KeyboardInterrupt. SIGINT is set
    explicitly too: a process started in the background by a script inherits it ignored, and Python then
    installs no handler of its own, so Ctrl-C (or a runner's SIGINT) would be lost."""
    import signal

    def handler(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _interrupt_on_sigterm()
    try:
        ctx = Context(args)
        return int(args.handler(ctx))
    except MlopsError as exc:
        if isinstance(exc, InputError) and os.environ.get("GITHUB_ACTIONS") == "true":
            print(annotation(exc), flush=True)  # on the workflow run's page, naming the input
        err.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
        return exc.exit_code
    except KeyboardInterrupt:
        err.print("interrupted")
        return 130


__all__ = ["build_parser", "main"]
