"""`python -m train [train]`: the training program on the SageMaker training contract.

Stages: parse hyperparameters (fail fast, before any work) -> load the train/validation/test channels
-> build model, optimiser, schedule -> resume from `checkpoints/last.pt` when present -> per epoch:
train, validate, print the metric line, log to W&B, checkpoint -> evaluate on test -> write the model
artifact (safetensors + manifest + evaluation) -> log it to W&B.

Exit codes: 0 done; 2 bad hyperparameters; 3 bad data or checkpoint; 1 any other failure (the reason is
in output/failure); 143 stopped by SIGTERM/SIGINT, resumable from the last checkpoint.

More than one process in all (several hosts in resourceconfig.json, several GPUs, or
MLOPS_NPROC_PER_NODE): the program checks its configuration, then re-executes itself under torchrun
(`train.distributed`) and each worker runs the same stages on its shard of the data, in step with the
others; rank 0 alone logs, talks to W&B and writes checkpoints and the model. A failed distributed job
exits 1 (the first failing worker's reason is in output/failure), a stopped one 143.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import sys
import time
import traceback
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from types import FrameType
from typing import TYPE_CHECKING, Any

from train import distributed
from train.config import (
    YOLO_TASKS,
    ConfigError,
    TrainConfig,
    check_supported,
    describe,
    parse_hyperparameters,
)
from train.contract import JobPaths, host_info, read_hyperparameters, write_failure
from train.distributed import World

if TYPE_CHECKING:
    from artifact.manifest import Manifest
    from train.tracking import Tracker

EXIT_CONFIG, EXIT_DATA, EXIT_STOPPED = 2, 3, 143
CHANNELS = ("train", "validation", "test")


class StopFlag:
    """Set by SIGTERM (spot reclaim, StopTrainingJob) or SIGINT; checked between steps."""

    def __init__(self) -> None:
        self.signal: int | None = None

    def __call__(self) -> bool:
        return self.signal is not None

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        self.signal = signum
        print(
            f"received {signal.Signals(signum).name}: stopping after this step; "
            "a checkpoint of this step is saved, and the job resumes from it",
            flush=True,
        )


@dataclass
class Outcome:
    stopped: bool
    metrics: dict[str, float]


def log(message: str) -> None:
    print(message, flush=True)


def write_evaluation(paths: JobPaths, evaluation: dict[str, Any]) -> None:
    """evaluation.json in the artifact (hashed with it) and in output/data, the job's output that a
    reviewer reads without unpacking the model. Either task family's trainer writes it here."""
    text = json.dumps(evaluation, indent=2) + "\n"
    paths.model_dir.mkdir(parents=True, exist_ok=True)
    (paths.model_dir / "evaluation.json").write_text(text)
    paths.output_data.mkdir(parents=True, exist_ok=True)
    (paths.output_data / "evaluation.json").write_text(text)


def publish(paths: JobPaths, manifest: Manifest, tracker: Tracker, started: float) -> None:
    """The artifact's last step: its files hashed into the manifest, the model logged to W&B."""
    from artifact.manifest import write_manifest

    write_manifest(paths.model_dir, manifest)
    tracker.log_model(paths.model_dir, {"metrics": manifest.metrics, "code_version": manifest.code_version})
    log(f"model written to {paths.model_dir} in {time.monotonic() - started:.1f}s")


def _parser() -> argparse.ArgumentParser:
    rows = "\n".join(f"  {k:<16} {d:<10} {h}" for k, _t, d, h in describe())
    return argparse.ArgumentParser(
        prog="python -m train",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Train an image classifier on the SageMaker training contract.",
        epilog=(
            "Files, rooted at $SAGEMAKER_BASE_DIR (default /opt/ml):\n"
            "  input/config/hyperparameters.json   hyperparameters, every value a string\n"
            "  input/data/{train,validation,test}/<class>/<image>   ImageFolder channels\n"
            "  checkpoints/last.pt                 resumed when present (MLOPS_CHECKPOINT_DIR overrides)\n"
            "  model/                              the model artifact (safetensors + manifest.json)\n"
            "  output/data/evaluation.json, output/failure\n"
            "  input/config/resourceconfig.json    hosts: more than one trains with DDP under torchrun\n\n"
            "Distributed: one process per GPU on every host (MLOPS_NPROC_PER_NODE overrides; master\n"
            "the first host, MLOPS_MASTER_ADDR and MLOPS_MASTER_PORT override); batch_size is per\n"
            "process, so a step sees batch_size x processes images.\n\n"
            f"Hyperparameters (key, default, accepted):\n{rows}\n\n"
            "W&B: online with WANDB_API_KEY, or with MLOPS_WANDB_SECRET_ARN (the key is fetched\n"
            "from Secrets Manager inside the container); else offline under output/data/wandb."
        ),
    )


def _device(config: TrainConfig, world: World) -> Any:
    import torch

    if config.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "hyperparameter 'device': 'cuda' was asked for but no CUDA device is available; use auto or cpu"
        )
    if config.device != "cpu" and torch.cuda.is_available():
        return torch.device("cuda", world.local_rank) if world.distributed else torch.device("cuda")
    return torch.device("cpu")


def run(  # noqa: PLR0912, PLR0915 -- the stages read top to bottom
    config: TrainConfig, paths: JobPaths, stop: Any, world: World | None = None
) -> Outcome:
    """The job. `stop()` is this process's stop flag; `world` is this process's rank (one by default)."""
    import torch
    from safetensors.torch import save_file
    from torch import nn

    from artifact.architectures import REVISIONS, build
    from artifact.manifest import Manifest
    from train import checkpoint, engine
    from train.data import batches, channel_stats, load_channel, shard_size
    from train.metrics import format_epoch_line, format_final_line
    from train.tracking import Tracker

    started = time.monotonic()
    world = world or World()
    say = log if world.is_main else (lambda _message: None)
    device = _device(config, world)
    torch.manual_seed(config.seed)  # the same initial weights on every rank (DDP broadcasts rank 0's too)
    ranks = f" processes={world.size} (batch_size per process)" if world.distributed else ""
    say(
        f"device={device.type} arch={config.arch} epochs={config.epochs} "
        f"batch_size={config.batch_size}{ranks}"
    )

    train_set = load_channel(paths.channel("train"), config.image_size, name="train")
    val_set = load_channel(
        paths.channel("validation"), config.image_size, train_set.classes, name="validation"
    )
    test_set = load_channel(paths.channel("test"), config.image_size, train_set.classes, name="test")
    for name, data in zip(CHANNELS, (train_set, val_set, test_set), strict=True):
        say(f"channel {name}: {len(data)} images, {len(data.classes)} classes")
        if data.skipped:
            shown = ", ".join(data.skipped[:5]) + (" ..." if len(data.skipped) > 5 else "")
            say(f"WARNING: channel {name}: skipped {len(data.skipped)} unreadable image(s): {shown}")
    classes = train_set.classes
    mean, std = channel_stats(train_set.images)

    # `model` is the plain module: the optimiser, checkpoints and the artifact use its state dict, so
    # they load in serving and in a single-process resume; `net` is what trains (DDP when distributed).
    model = engine.place(build(config.arch, len(classes)), device)
    optimizer = engine.build_optimizer(model, config)
    steps_per_epoch = -(-shard_size(len(train_set), world.size) // config.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, engine.lr_factor(config, steps_per_epoch))
    scaler = torch.amp.GradScaler("cuda") if device.type == "cuda" and config.amp else None
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

    start_epoch, history, wandb_id = 0, [], None
    partial: engine.EpochProgress | None = None  # set when the job stopped mid-epoch
    # Rank 0's checkpoint for every rank: hosts need not share a disk, and all must resume alike.
    state = world.broadcast(checkpoint.load(paths.checkpoints) if world.is_main else None)
    if state is not None:
        checkpoint.check_compatible(
            state,
            arch=config.arch,
            classes=classes,
            image_size=config.image_size,
            directory=paths.checkpoints,
        )
        model.load_state_dict(state["model"])
        try:
            optimizer.load_state_dict(state["optimizer"])
        except ValueError as exc:  # a checkpoint of an older trainer: other parameter groups
            raise checkpoint.CheckpointMismatch(
                f"the checkpoint in {paths.checkpoints} was written by a trainer with other optimizer "
                f"parameter groups ({exc}); start the job with an empty checkpoint directory"
            ) from None
        scheduler.load_state_dict(state["scheduler"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        checkpoint.restore_rng(state)
        start_epoch, history, wandb_id = state["epoch"], state["history"], state.get("wandb_id")
        if state.get("progress"):
            partial = engine.EpochProgress(**state["progress"])
            if not world.is_main:  # the saved totals are the job's: rank 0 carries them, the rest start at 0
                partial = engine.EpochProgress(step=partial.step)
        where = f" + {partial.step} steps of epoch {start_epoch + 1}" if partial else ""
        say(
            f"resumed from checkpoint {paths.checkpoints / checkpoint.LAST} "
            f"at epoch {start_epoch}/{config.epochs}{where}"
        )

    if world.rank > 0:  # dropout masks of their own (rank 0 keeps the single-process stream)
        torch.manual_seed(config.seed * 1_000_003 + world.rank * 10_007 + start_epoch)
    net: nn.Module = model
    if world.distributed:
        from torch.nn.parallel import DistributedDataParallel

        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    total = world.sum if world.distributed else None

    def should_stop() -> bool:
        # One rank's signal stops every rank at the same step: a rank that stopped alone would leave
        # the others waiting in the next gradient all-reduce.
        return world.any(stop())

    job_name = paths.env.get("MLOPS_JOB_NAME") or paths.env.get("TRAINING_JOB_NAME") or "local"
    project = paths.env.get("WANDB_PROJECT") or paths.env.get("MLOPS_PROJECT") or "cv-mlops"
    tracker = Tracker(
        paths.output_data,
        project=project,
        name=job_name,
        config=config.to_dict(),
        run_id=wandb_id,
        # Only rank 0 has a W&B run; the others neither create one nor fetch the key.
        env=paths.env if world.is_main else {**paths.env, "WANDB_MODE": "disabled"},
    )
    tracker.start()

    def loader(data: Any, *, train: bool, epoch: int = 0) -> Any:
        # Same order after a resume, and on every rank: each takes its own shard of it.
        gen = torch.Generator().manual_seed(config.seed * 10_007 + epoch)
        return batches(
            data,
            config.batch_size,
            mean=mean,
            std=std,
            device=device,
            shuffle=train,
            augment=train and config.augment == "standard",
            generator=gen,
            rank=world.rank,
            world=world.size,
            pad=train,
        )

    def evaluate(data: Any) -> engine.EvalResult:
        world.sync_buffers(model)  # evaluate, on every rank, the weights rank 0 saves
        return engine.evaluate(model, loader(data, train=False), len(classes), total)

    def snapshot(epoch: int, progress: engine.EpochProgress | None = None) -> dict[str, Any]:
        """What a resume needs: `epoch` epochs done, and `progress` steps into the next one."""
        return {
            "epoch": epoch,
            "progress": asdict(progress) if progress is not None else None,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            **checkpoint.rng_states(),
            "history": history,
            "config": config.to_dict(),
            "classes": classes,
            "wandb_id": tracker.run_id,
        }

    exit_code = 1
    try:
        for epoch in range(start_epoch + 1, config.epochs + 1):
            tick = time.monotonic()
            progress, partial = partial or engine.EpochProgress(), None
            stats = engine.train_one_epoch(
                net,
                batches=loader(train_set, train=True, epoch=epoch),
                optimizer=optimizer,
                scheduler=scheduler,
                loss_fn=loss_fn,
                scaler=scaler,
                should_stop=should_stop,
                progress=progress,
                total=total,
            )
            if stats is None:
                if total is not None:  # the job's running totals, so the resumed epoch ends with them
                    progress = engine.job_progress(progress, total)
                if world.is_main:
                    saved = checkpoint.save(paths.checkpoints, snapshot(epoch - 1, progress))
                    log(
                        f"stopped at step {progress.step}/{steps_per_epoch} of epoch {epoch}; checkpoint "
                        f"{saved} written: the job resumes from the next step"
                    )
                world.barrier()  # no rank exits before the checkpoint is on disk
                exit_code = EXIT_STOPPED
                return Outcome(stopped=True, metrics={})
            val = evaluate(val_set)
            values = {
                "train_loss": stats.loss,
                "train_accuracy": stats.accuracy,
                "val_loss": val.loss,
                "val_accuracy": val.accuracy,
                "lr": optimizer.param_groups[0]["lr"],
                "epoch_seconds": time.monotonic() - tick,
            }
            history.append({"epoch": epoch, **values})
            say(format_epoch_line(epoch, config.epochs, values))
            tracker.log(values, step=epoch)
            if world.is_main:
                checkpoint.save(paths.checkpoints, snapshot(epoch))

        test = evaluate(test_set)
        if not world.is_main:
            exit_code = 0
            return Outcome(stopped=False, metrics={})
        metrics = {
            "test_accuracy": test.accuracy,
            "test_loss": test.loss,
            "test_min_class_accuracy": test.min_class_accuracy,
            "best_val_accuracy": max((h["val_accuracy"] for h in history), default=0.0),
        }
        log(format_final_line(metrics))
        evaluation = {
            "metrics": metrics,
            "classes": classes,
            "per_class_accuracy": dict(zip(classes, test.per_class, strict=True)),
            "confusion_matrix": test.confusion,
            "test_images": len(test_set),
            "history": history,
        }
        tracker.log_final(metrics, classes, test.confusion)
        if tracker.run is not None:  # rank 0 with W&B on: a table of test images and what the model said
            tracker.log_samples(
                engine.sample_predictions(
                    model, test_set.images, test_set.labels, classes, mean=mean, std=std
                )
            )

        model_dir = paths.model_dir
        model_dir.mkdir(parents=True, exist_ok=True)
        cpu_state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
        save_file(cpu_state, str(model_dir / "model.safetensors"))
        write_evaluation(paths, evaluation)
        manifest = Manifest(
            task=config.task,
            architecture=config.arch,
            architecture_revision=REVISIONS[config.arch],
            classes=classes,
            input_size=config.image_size,
            mean=mean,
            std=std,
            metrics={k: round(v, 6) for k, v in metrics.items()},
            config=config.to_dict(),
            code_version=paths.env.get("MLOPS_CODE_VERSION", "unknown"),
            wandb=tracker.info(),
            dataset={
                name: {"images": len(d), "fingerprint": d.fingerprint, "skipped": len(d.skipped)}
                for name, d in zip(CHANNELS, (train_set, val_set, test_set), strict=True)
            },
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        publish(paths, manifest, tracker, started)
        exit_code = 0
        return Outcome(stopped=False, metrics=metrics)
    finally:
        tracker.finish(exit_code=exit_code)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["evaluate"]:  # score an artifact with the same code (the gate's champion re-evaluation)
        from train.evaluate import main as evaluate_main

        return evaluate_main(args[1:])
    if args[:1] == ["train"]:  # SageMaker starts the container as `<entrypoint> train`
        args = args[1:]
    _parser().parse_args(args)
    paths = JobPaths.from_env()
    from train.checkpoint import CheckpointMismatch
    from train.data import DataError

    worker = distributed.is_worker(paths.env)
    try:
        config = parse_hyperparameters(read_hyperparameters(paths))
        _current, hosts = host_info(paths)
        check_supported(config, hosts=len(hosts))
        cluster = None if worker else distributed.plan(paths, config)
    except (ConfigError, ValueError) as exc:
        write_failure(paths, str(exc))
        return EXIT_CONFIG
    if cluster is not None:  # the launcher, or a single-process job
        log("hyperparameters: " + json.dumps(config.to_hyperparameters(), sort_keys=True))
        if cluster.world_size > 1 and config.task not in YOLO_TASKS:  # YOLO trains in one process
            log(
                f"launching {cluster.world_size} processes with torchrun: {len(cluster.hosts)} host(s) x "
                f"{cluster.nproc_per_node}, this host {cluster.node_rank}, master "
                f"{cluster.master_addr}:{cluster.master_port}"
            )
            return distributed.launch(cluster, paths)
    os.environ.setdefault("WANDB_SILENT", "true")
    stop = StopFlag()
    stop.install()
    world: World | None = None
    fail = write_failure
    try:
        if worker:
            world = World.from_env(config)
            fail = functools.partial(distributed.write_first_failure, rank=world.rank)
        if config.task in YOLO_TASKS:  # Ultralytics YOLO (train/yolo.py): one process, one device
            from train.yolo import run_yolo

            outcome = run_yolo(config, paths, stop)
        else:
            outcome = run(config, paths, stop, world)
    except (DataError, CheckpointMismatch, ConfigError) as exc:
        fail(paths, str(exc))
        return EXIT_DATA
    except Exception as exc:  # noqa: BLE001 -- the job's last word: reason to output/failure, trace to the log
        traceback.print_exc()
        fail(paths, f"{type(exc).__name__}: {exc}")
        return 1
    finally:
        if world is not None:
            world.close()
    return EXIT_STOPPED if outcome.stopped else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:] if len(sys.argv) > 1 else None))
