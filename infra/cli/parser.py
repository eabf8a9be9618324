"""The `mlops` command line: one flat declaration of every command and flag."""

from __future__ import annotations

import argparse

from infra.cli import inputs
from infra.cli.aws import add_aws_commands, add_data_upload, add_mode_flags, add_tuning_flags
from infra.cli.batch import add_batch_command
from infra.cli.bootstrap import add_bootstrap_command
from infra.cli.commands import (
    cmd_data,
    cmd_data_prepare,
    cmd_data_yolo,
    cmd_deploy,
    cmd_endpoint,
    cmd_evaluate,
    cmd_history,
    cmd_pipeline,
    cmd_register,
    cmd_rollback,
    cmd_serve,
    cmd_train,
    cmd_validate,
    cmd_versions,
)
from infra.cli.runs import add_runs_command


def _local_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--local",
        action="store_true",
        help="run on this machine (subprocesses, a local registry and endpoint) instead of AWS",
    )


def _dry_run_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="print the exact AWS requests (operation and JSON parameters); change nothing",
    )


def _untested_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--allow-untested",
        action="store_true",
        help="deploy even without held-out test images to smoke-test with (the output and the job "
        "summary say it was NOT smoke-tested); without it such a deploy is refused",
    )


DEPLOY_HELP = """Deploy a registered Approved version (default: the latest Approved one).

Locally: the version starts on a scratch port, answers /ping and is smoke-tested with held-out test
images; only then does it replace the serving process.
On AWS: the first deploy creates the endpoint; later ones are a blue/green UpdateEndpoint. While the new
fleet bakes (the old one still kept) the smoke test runs through InvokeEndpoint; a failure raises the
smoke alarm, and SageMaker rolls the update back, as it does on the 5xx and latency alarms.
The endpoint mode ([aws] endpoint_mode, or --mode): realtime; serverless (no instances, always
all-at-once blue/green, no autoscaling); async (smoke test through S3 and InvokeEndpointAsync, autoscaling
on the queue, optionally to zero). Its limits are checked before any AWS call, and the first lines say
what the endpoint will cost by the mode's own model.

Whatever fails (the smoke test, the endpoint, an AWS error), the version is marked Rejected in the
registry with the reason (so it is never picked by default again), and production goes back to the
version that served before; when nothing served before, the failed version is taken out of service.
Each line printed says what happened. Without held-out test images (--data) a deploy is refused unless
--allow-untested is given.

Exit codes: 0 deployed; 2 refused (not Approved, no test images, bad settings, a mode the endpoint does
not serve in), nothing changed; 5 failed, and production is safe (the previous version serves again, or
nothing serves because nothing did before); 7 failed, and production is NOT safe (the rollback failed:
read the message)."""

ROLLBACK_HELP = """Return the endpoint to the version that served before the current one, from the
production history (`mlops history`): repeated rollbacks walk further back, never forth, and skip
versions that are no longer Approved. --to N names a version instead.

A rollback is a deploy of that version, guarded the same way (smoke test, and back to what served if it
fails); exit codes as for `mlops deploy`."""


def _hp_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--hp",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="hyperparameter override, repeatable (see `python -m train --help` for keys)",
    )


def build_parser() -> argparse.ArgumentParser:  # noqa: PLR0915 -- one flat declaration of the CLI
    parser = argparse.ArgumentParser(
        prog="mlops",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train, gate, register, deploy and roll back computer-vision models.\n"
        "Local state lives in MLOPS_HOME (default ./.mlops); gate thresholds in mlops.toml.",
        epilog="Start with: mlops pipeline --local   (the whole loop on this machine, no AWS account)",
    )
    parser.add_argument("--home", help="local state directory (default: $MLOPS_HOME or ./.mlops)")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = sub.add_parser("data", help="create or prepare a dataset (ImageFolder train/validation/test)")
    dsub = data.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    syn = dsub.add_parser(
        "synthetic",
        help="a deterministic, learnable dataset of shapes (no download): classification (32x32 "
        "ImageFolder) or detection/segmentation (64x64 YOLO layout)",
    )
    syn.add_argument(
        "--task",
        choices=("classification", "detection", "segmentation"),
        default="classification",
        help="classification (default): ImageFolder train/validation/test; detection or segmentation: "
        "YOLO layout (data.yaml, images/ and labels/ with train/val/test), 1-3 shapes per image",
    )
    syn.add_argument(
        "--out", help="output directory (default: $MLOPS_HOME/data/synthetic, or synthetic-TASK for YOLO)"
    )
    syn.add_argument("--seed", type=int, default=0)
    syn.add_argument(
        "--classes",
        type=int,
        help="number of classes: 2-10 (default 8); detection/segmentation 1-4 (default 3)",
    )
    # For YOLO tasks an image holds several objects of random classes: these count images per split.
    syn.add_argument(
        "--train-per-class", type=int, help="train images per class (default 250); YOLO: train images (120)"
    )
    syn.add_argument(
        "--val-per-class", type=int, help="validation images per class (default 50); YOLO: val images (30)"
    )
    syn.add_argument(
        "--test-per-class", type=int, help="test images per class (default 50); YOLO: test images (30)"
    )
    syn.add_argument("--size", type=int, help="image side in pixels (default 32; detection/segmentation 64)")
    syn.add_argument("--force", action="store_true", help="overwrite an existing dataset")
    cif = dsub.add_parser("cifar10", help="real CIFAR-10 (45k/5k/10k) from the official binary archive")
    cif.add_argument("--out", help="output directory (default: $MLOPS_HOME/data/cifar10)")
    cif.add_argument("--archive", help="a local cifar-10-binary.tar.gz (otherwise downloaded)")
    cif.add_argument("--seed", type=int, default=0, help="seed of the train/validation split")
    cif.add_argument("--force", action="store_true", help="overwrite an existing dataset")
    dig = dsub.add_parser(
        "digits",
        help="scikit-learn's 8x8 handwritten digits (1,297/250/250, 10 classes): small real data, offline",
    )
    dig.add_argument("--out", help="output directory (default: $MLOPS_HOME/data/digits)")
    dig.add_argument("--seed", type=int, default=0, help="seed of the split")
    dig.add_argument("--size", type=int, default=32, help="image side in pixels (upscaled from 8)")
    dig.add_argument("--force", action="store_true", help="overwrite an existing dataset")
    for dataset in (syn, cif, dig):
        dataset.set_defaults(handler=cmd_data)
    add_data_upload(dsub, _dry_run_flag)
    yolo = dsub.add_parser(
        "yolo",
        help="validate a detection/segmentation dataset in YOLO layout, and copy it to --out normalised",
        description="PATH is a YOLO dataset: its data.yaml or the directory holding it (train, val, optional "
        "test, names), images/<split>/ and labels/<split>/*.txt. Prints the counts, classes, instances and "
        "background images; a bad dataset exits 2 listing each problem as file:line. With --out the "
        "dataset is copied there with a data.yaml whose paths are relative, ready for `mlops data upload`.",
    )
    yolo.add_argument("path", metavar="PATH", help="data.yaml, or the directory that holds it")
    yolo.add_argument("--out", help="copy the validated dataset here (default: validate only)")
    yolo.add_argument(
        "--task", choices=("detection", "segmentation"), help="segmentation requires polygon labels"
    )
    yolo.add_argument("--force", action="store_true", help="replace an existing --out directory")
    yolo.set_defaults(handler=cmd_data_yolo)
    prep = dsub.add_parser(
        "prepare",
        help="make a built-in dataset or download one from S3: the one step a bare workflow job runs",
        description="SOURCE is a built-in dataset (synthetic, digits, cifar10: made here with its defaults, "
        "the same bytes every time) or an s3:// prefix holding train/ validation/ test/ (as `mlops data "
        "upload` prints it), downloaded to --out. Files already there with the same size are kept.",
    )
    prep.add_argument("source", metavar="SOURCE", help="synthetic | digits | cifar10 | s3://BUCKET/PREFIX/")
    prep.add_argument("--out", help="output directory (default: $MLOPS_HOME/data/prepared)")
    prep.add_argument(
        "--split",
        action="append",
        choices=("train", "validation", "test"),
        help="download only this split (repeatable; s3:// sources): a deploy needs only test",
    )
    prep.set_defaults(handler=cmd_data_prepare)

    train = sub.add_parser("train", help="run a training job")
    _local_flag(train)
    _hp_flag(train)
    inputs.add_flags(train)
    train.add_argument("--data", help="dataset directory with train/ validation/ test/ (default: synthetic)")
    train.add_argument("--job-name", help="name the job (default: <project>-<UTC time>-<random>)")
    train.add_argument(
        "--resume", metavar="JOB", help="start an interrupted local job again from its checkpoint"
    )
    train.add_argument("--verbose", "-v", action="store_true", help="show every line the trainer prints")
    _dry_run_flag(train)
    train.set_defaults(handler=cmd_train)

    ev = sub.add_parser("evaluate", help="check a finished job against the gate and production")
    _local_flag(ev)
    ev.add_argument("--job", help="training job name (default: the latest)")
    ev.add_argument("--data", help="dataset whose test/ split scores production when its test set differs")
    ev.add_argument("--json", action="store_true", help="also print the decision as JSON")
    ev.set_defaults(handler=cmd_evaluate)

    reg = sub.add_parser("register", help="register a job's model (Approved or Rejected by the gate)")
    _local_flag(reg)
    reg.add_argument("--job", help="training job name (default: the latest)")
    reg.add_argument("--data", help="dataset whose test/ split scores production when its test set differs")
    reg.add_argument(
        "--fail-on-reject",
        action="store_true",
        help="exit 4 when the gate rejects the candidate (it is still registered, as Rejected)",
    )
    _dry_run_flag(reg)
    reg.set_defaults(handler=cmd_register)

    ver = sub.add_parser("versions", help="list registered model versions")
    _local_flag(ver)
    ver.set_defaults(handler=cmd_versions)

    dep = sub.add_parser(
        "deploy",
        help="deploy a registered version, smoke-tested; a failure rolls back to what served before",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=DEPLOY_HELP,
    )
    _local_flag(dep)
    dep.add_argument("--version", type=int, help="version number (default: the latest Approved)")
    dep.add_argument("--data", help="dataset whose test/ split smoke-tests the endpoint (default: synthetic)")
    dep.add_argument(
        "--verify",
        action="store_true",
        help="after the switch, send [local] verify_images held-out test images through the endpoint, as "
        "the pipeline does; a failure rolls back like a failed deploy",
    )
    _untested_flag(dep)
    _dry_run_flag(dep)
    add_mode_flags(dep)
    dep.set_defaults(handler=cmd_deploy)

    rb = sub.add_parser(
        "rollback",
        help="return the endpoint to the version that served before the current one",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=ROLLBACK_HELP,
    )
    _local_flag(rb)
    rb.add_argument("--to", type=int, metavar="VERSION", help="a specific Approved version instead")
    rb.add_argument(
        "--endpoint",
        help="refuse unless this is the project's endpoint (<project>-endpoint; `local` with --local)",
    )
    rb.add_argument("--data", help="dataset whose test/ split smoke-tests the endpoint (default: synthetic)")
    _untested_flag(rb)
    _dry_run_flag(rb)
    rb.set_defaults(handler=cmd_rollback)

    hist = sub.add_parser("history", help="which version served production, from when to when")
    _local_flag(hist)
    hist.set_defaults(handler=cmd_history)

    ep = sub.add_parser("endpoint", help="the serving endpoint: status, invoke, stop")
    esub = ep.add_subparsers(dest="action", required=True, metavar="ACTION")
    est = esub.add_parser("status", help="which version serves, where, and whether it answers /ping")
    _local_flag(est)
    inv = esub.add_parser("invoke", help="send image files to the endpoint and print the top-k predictions")
    inv.add_argument("files", nargs="+", help="images (.png, .jpg), .npy arrays or JSON request bodies")
    inv.add_argument("--content-type", help="override the content type guessed from the file suffix")
    inv.add_argument("--json", action="store_true", help="print the raw JSON answer")
    _local_flag(inv)
    stp = esub.add_parser("stop", help="stop the endpoint's server process")
    _local_flag(stp)
    dele = esub.add_parser(
        "delete", help="delete the SageMaker endpoint, its autoscaling target and alarms (AWS)"
    )
    _dry_run_flag(dele)
    ep.set_defaults(handler=cmd_endpoint)

    pipe = sub.add_parser("pipeline", help="data -> train -> evaluate -> register -> deploy -> verify")
    _local_flag(pipe)
    _hp_flag(pipe)
    inputs.add_flags(pipe)
    pipe.add_argument("--data", help="dataset directory (default: synthetic, created when missing)")
    pipe.add_argument("--job-name", help="name the training job (default: <project>-<UTC time>-<random>)")
    pipe.add_argument(
        "--fail-on-reject", action="store_true", help="exit 4 when the gate rejects the candidate"
    )
    pipe.add_argument("--verbose", "-v", action="store_true", help="show every line the trainer prints")
    _dry_run_flag(pipe)
    pipe.set_defaults(handler=cmd_pipeline)

    add_aws_commands(sub, _dry_run_flag)
    add_runs_command(sub, _local_flag)
    add_batch_command(sub, _local_flag, _dry_run_flag)
    add_bootstrap_command(sub, _dry_run_flag)

    val = sub.add_parser(
        "validate",
        help="check a run's inputs (hyperparameters, instance, spot, runtime) without calling AWS",
        description="Check what a run would be started with, exactly as `mlops pipeline` checks it, and "
        "call nothing. In GitHub Actions a bad input is an error annotation naming it, and the resolved "
        "values go to $GITHUB_OUTPUT (hyperparameters as JSON, task, instance_type, instance_count, spot, "
        "max_runtime_minutes, job_name). Tuning inputs (--ranges-json, --max-jobs, --max-parallel-jobs, "
        "--objective) are checked as `mlops tune` checks them. Exit 2 on a bad input.",
    )
    _local_flag(val)
    _hp_flag(val)
    inputs.add_flags(val)
    add_tuning_flags(val)
    val.set_defaults(handler=cmd_validate)

    srv = sub.add_parser("serve", help="run the inference server in the foreground")
    group = srv.add_mutually_exclusive_group()
    group.add_argument("--version", type=int, help="a registry version (default: production)")
    group.add_argument("--model-dir", help="a model artifact directory")
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=8080)
    srv.set_defaults(handler=cmd_serve)
    return parser
