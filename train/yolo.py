"""Detection and segmentation with Ultralytics YOLO on the training contract: the one module that uses it.

Stages: an offline environment for Ultralytics (set before it is imported: it reads its settings then)
-> the `train` channel's data.yaml, validated by `train.yolo_data` before anything trains -> a work tree
of symlinks to the channel with a data.yaml of absolute paths (Ultralytics writes label caches next to
the labels: into the work tree, never into the channel) -> the model: resume from the job's checkpoint,
or a `.yaml` architecture, or a `.pt` in the `weights` channel (nothing is downloaded) ->
`YOLO(...).train` with our callbacks: a metric line per epoch, the checkpoint copied out after every
epoch, the stop flag -> test metrics of best.pt, per-class AP and sample boxes (`train.yolo_evaluation`)
-> the artifact (model.pt, evaluation.json, manifest).

Channels: `train` holding data.yaml next to images/<split> and labels/<split> (the YOLO layout, all
splits in one channel); optional `weights` holding .pt files. Separate `train`/`validation`/`test`
channels in YOLO layout are not supported yet (a clear DataError says so).

Checkpoints: `checkpoints/yolo-last.pt` (Ultralytics' own last.pt, resumable) and `yolo-best.pt`, each
replaced atomically after every epoch, and `yolo-state.json` (the W&B run id). A stop (SIGTERM) before an
epoch ends aborts at once: Ultralytics cannot resume mid-epoch, so the resumed job redoes that epoch from
its start rather than spend the two minutes a spot reclaim allows on validating a partial one.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from train.config import ConfigError, TrainConfig
from train.yolo_evaluation import box_and_mask, detection_samples, evaluate_weights, per_class_ap

if TYPE_CHECKING:
    from train.contract import JobPaths
    from train.main import Outcome
    from train.yolo_data import YoloReport

YOLO_TASKS = ("detection", "segmentation")
ULTRALYTICS_TASKS = {"detection": "detect", "segmentation": "segment"}
DEFAULT_MODELS = {"detection": "yolov8n.yaml", "segmentation": "yolov8n-seg.yaml"}
LAST, BEST, STATE = "yolo-last.pt", "yolo-best.pt", "yolo-state.json"
WEIGHTS = "model.pt"
WEIGHTS_CHANNEL = "weights"
# Integrations Ultralytics enables by default when their package is importable; W&B is ours (tracking.py).
_INTEGRATIONS = ("sync", "clearml", "comet", "dvc", "mlflow", "raytune", "tensorboard", "wandb")
_OPTIMIZERS = {"sgd": "SGD", "adamw": "AdamW"}
_SPLITS = {"train": "train", "val": "validation", "test": "test"}  # YOLO split -> our channel-style name


class _Stopped(Exception):
    """Raised from a callback to leave Ultralytics' loop at once when the stop flag is set."""


def log(message: str) -> None:
    print(message, flush=True)


def offline_environment(config_dir: Path) -> None:
    """What Ultralytics needs to run with no network: set before `import ultralytics`, which reads it.

    The font check ignores YOLO_OFFLINE and downloads Arial.ttf unless one is there; any TTF will do."""
    font = config_dir / "Ultralytics" / "Arial.ttf"
    if not font.is_file():
        import matplotlib

        font.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf", font)
    if "ultralytics" in sys.modules and os.environ.get("YOLO_CONFIG_DIR") != str(config_dir):
        log("WARNING: ultralytics was imported before its offline environment was set")
    os.environ["YOLO_OFFLINE"] = "1"
    os.environ["YOLO_CONFIG_DIR"] = str(config_dir)
    # An Ultralytics Platform key would switch its upload of the training run back on: this job's metrics
    # and model go to W&B and the artifact only.
    os.environ.pop("ULTRALYTICS_API_KEY", None)


def _settings(work: Path) -> None:
    from ultralytics.utils import SETTINGS

    # Persisted in $YOLO_CONFIG_DIR/Ultralytics/settings.json, a directory this job owns.
    SETTINGS.update(
        {
            **dict.fromkeys(_INTEGRATIONS, False),
            "datasets_dir": str(work / "dataset"),
            "weights_dir": str(work / "weights"),
            "runs_dir": str(work / "runs"),
        }
    )


def dataset_yaml(directory: Path) -> Path | None:
    """A YOLO dataset's data.yaml (or data.yml) in `directory`, if there is one."""
    return next((directory / n for n in ("data.yaml", "data.yml") if (directory / n).is_file()), None)


def workspace(report: YoloReport, work: Path) -> Path:
    """What Ultralytics runs in, under `work`: its offline environment and settings (before and as it is
    imported), and the dataset's work tree; the work tree's data.yaml."""
    offline_environment(work / "config")
    _settings(work)
    return work_dataset(report, work / "dataset")


def scored_split(report: YoloReport) -> str:
    """The split final metrics are measured on: test, else val."""
    return "test" if "test" in report.split_dirs else "val"


def find_dataset(paths: JobPaths) -> Path:
    """The data.yaml of the `train` channel; DataError naming what is there instead."""
    from train.data import DataError

    channel = paths.channel("train")
    if (found := dataset_yaml(channel)) is not None:
        return found
    if not channel.is_dir():
        raise DataError(f"channel 'train' ({channel}) is missing: give it a YOLO dataset with a data.yaml")
    if paths.channel("validation").is_dir():
        raise DataError(
            f"channel 'train' ({channel}) holds no data.yaml: separate train/validation channels are not "
            "supported for YOLO yet; put the whole dataset (data.yaml, images/<split>, labels/<split>) "
            "in the train channel"
        )
    raise DataError(f"channel 'train' ({channel}) holds no data.yaml: not a YOLO dataset")


def validate_dataset(yaml_path: Path, task: str) -> YoloReport:
    """`train.yolo_data.validate`, its errors (file:line) turned into the program's DataError."""
    from train.data import DataError
    from train.yolo_data import YoloDataError, validate

    try:
        return validate(yaml_path, task=task)
    except YoloDataError as exc:
        raise DataError(str(exc)) from None


def work_dataset(report: YoloReport, directory: Path) -> Path:
    """A tree of symlinks to the channel's files, and a data.yaml with its absolute paths.

    Ultralytics derives a label's path from its image's (the last `images` part becomes `labels`) and
    writes `<labels dir>.cache` beside it; the channel may be read-only or shared, so both live here."""
    import yaml

    from train.yolo_data import image_files, label_path

    if directory.exists():
        shutil.rmtree(directory)
    config: dict[str, Any] = {"path": str(directory), "names": dict(enumerate(report.names))}
    for split, dirs in report.split_dirs.items():
        targets = []
        for index, source in enumerate(dirs):
            target = directory / "images" / split / (str(index) if len(dirs) > 1 else "")
            for image in image_files(source):
                link = target / image.relative_to(source)
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(image.resolve())
                labels = label_path(image)
                if labels.is_file():
                    label_link = label_path(link)
                    label_link.parent.mkdir(parents=True, exist_ok=True)
                    label_link.symlink_to(labels.resolve())
            targets.append(str(target))
        config[split] = targets[0] if len(targets) == 1 else targets
    yaml_path = directory / "data.yaml"
    yaml_path.write_text(yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    return yaml_path


def _device(config: TrainConfig) -> str:
    import torch

    if config.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "hyperparameter 'device': 'cuda' was asked for but no CUDA device is available; use auto or cpu"
        )
    return "0" if config.device != "cpu" and torch.cuda.is_available() else "cpu"


def _amp(config: TrainConfig, device: str) -> bool | str:
    """bf16 where the GPU has it. Ultralytics' fp16 check downloads a model first (offline: minutes of
    retries), so a GPU without bf16 trains in fp32."""
    import torch

    if device == "cpu" or not config.amp:
        return False
    if torch.cuda.is_bf16_supported():
        return "bf16"
    log("amp: this GPU lacks bf16 and the fp16 check needs a download; training in fp32")
    return False


def _weights_file(config: TrainConfig, paths: JobPaths) -> Path | None:
    """The .pt to start from: `model=<file>.pt` or `base_weights`, in the `weights` channel."""
    from train.data import DataError

    channel = paths.channel(WEIGHTS_CHANNEL)
    named = config.model if config.model.endswith(".pt") else None
    if named is None and config.base_weights not in ("auto", "none"):
        named = config.base_weights
    if named is not None:
        if not (channel / named).is_file():
            raise DataError(f"weights {named!r} are not in channel {WEIGHTS_CHANNEL!r} ({channel})")
        return channel / named
    if config.base_weights == "none" or not channel.is_dir():
        return None
    found = sorted(p for p in channel.glob("*.pt") if p.is_file())
    if len(found) > 1:
        raise DataError(
            f"channel {WEIGHTS_CHANNEL!r} holds {len(found)} .pt files ({', '.join(p.name for p in found)}): "
            "name one with the hyperparameter base_weights"
        )
    return found[0] if found else None


def _load_start(config: TrainConfig, paths: JobPaths) -> Any:
    """A new YOLO model: the architecture `.yaml` and/or the `.pt` weights of the weights channel."""
    from ultralytics import YOLO

    weights = _weights_file(config, paths)
    architecture = config.model if config.model.endswith((".yaml", ".yml")) else None
    model: Any
    if weights is None:
        model = YOLO(architecture or DEFAULT_MODELS[config.task])
    elif architecture is None:
        model = YOLO(str(weights))
        log(f"starting from weights {weights}")
    else:
        model = YOLO(architecture).load(str(weights))
        log(f"starting from {architecture} with the matching layers of {weights}")
    if model.task != ULTRALYTICS_TASKS[config.task]:
        raise ConfigError(
            f"the model ({weights or architecture}) is a YOLO {model.task} model, but task is "
            f"{config.task!r}: give a model for {ULTRALYTICS_TASKS[config.task]}"
        )
    return model


def _checkpoint(directory: Path, config: TrainConfig, names: list[str]) -> dict[str, Any] | None:
    """The job's own checkpoint when there is one; CheckpointMismatch when it is of another model."""
    from ultralytics.nn.tasks import torch_safe_load

    from train.checkpoint import CheckpointMismatch, refuse_mismatch

    path = directory / LAST
    if not path.is_file():
        return None
    try:
        ckpt, _ = torch_safe_load(str(path))
        args, model = ckpt["train_args"], ckpt["ema"]
        theirs = {"task": args["task"], "classes": [model.names[i] for i in sorted(model.names)]}
    except Exception as exc:  # noqa: BLE001 -- any unreadable file is the same problem for the user
        raise CheckpointMismatch(
            f"{path} is not a YOLO training checkpoint ({type(exc).__name__}: {exc}); "
            "start the job with an empty checkpoint directory"
        ) from None
    refuse_mismatch({"task": ULTRALYTICS_TASKS[config.task], "classes": names}, theirs, directory)
    return {"epoch": int(ckpt["epoch"]), "epochs": int(args["epochs"])}


def _copy_atomic(source: Path, target: Path) -> None:
    tmp = target.with_name(f".{target.name}.tmp")
    with source.open("rb") as src, tmp.open("wb") as dst:
        shutil.copyfileobj(src, dst)
        dst.flush()
        os.fsync(dst.fileno())
    tmp.replace(target)


def _write_state(directory: Path, state: dict[str, Any]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{STATE}.tmp"
    tmp.write_text(json.dumps(state) + "\n")
    tmp.replace(directory / STATE)


def _read_state(directory: Path) -> dict[str, Any]:
    try:
        state = json.loads((directory / STATE).read_text())
    except (OSError, ValueError):
        return {}
    return state if isinstance(state, dict) else {}


class _Callbacks:
    """Ultralytics callbacks: our metric line per epoch, the checkpoint copy, the stop flag."""

    def __init__(self, checkpoints: Path, stop: Callable[[], bool], on_epoch: Callable[..., None]) -> None:
        self.checkpoints = checkpoints
        self.stop = stop
        self.on_epoch = on_epoch
        self.in_epoch = False  # on_fit_epoch_end fires once more for the final validation: not an epoch
        self.last_epoch = 0

    def install(self, model: Any) -> None:
        model.add_callback("on_train_start", self._check_stop)
        model.add_callback("on_train_epoch_start", self._epoch_start)
        model.add_callback("on_train_batch_end", self._check_stop)
        model.add_callback("on_model_save", self._save)
        model.add_callback("on_fit_epoch_end", self._epoch_end)

    def _check_stop(self, _trainer: Any) -> None:
        if self.stop():
            raise _Stopped

    def _epoch_start(self, trainer: Any) -> None:
        self._check_stop(trainer)
        self.in_epoch = True

    def _save(self, trainer: Any) -> None:
        # Ultralytics has just written weights/last.pt (and best.pt when it improved) of this epoch.
        self.checkpoints.mkdir(parents=True, exist_ok=True)
        for source, name in ((trainer.last, LAST), (trainer.best, BEST)):
            if Path(source).is_file():
                _copy_atomic(Path(source), self.checkpoints / name)

    def _epoch_end(self, trainer: Any) -> None:
        if not self.in_epoch:
            return
        self.in_epoch = False
        self.last_epoch = trainer.epoch + 1
        metrics = dict(trainer.metrics or {})
        values: dict[str, float] = {}
        if trainer.tloss:
            values["train_loss"] = float(sum(float(v) for v in trainer.tloss.values()))
        val_losses = [float(v) for k, v in metrics.items() if k.startswith("val/")]
        if val_losses:
            values["val_loss"] = sum(val_losses)
        values.update(box_and_mask(metrics, "val"))
        if getattr(trainer, "lr", None):
            values["lr"] = float(next(iter(trainer.lr.values())))
        if trainer.epoch_time is not None:
            values["epoch_seconds"] = float(trainer.epoch_time)
        self.on_epoch(trainer.epoch + 1, trainer.epochs, values)
        self._check_stop(trainer)


def _train_arguments(config: TrainConfig, data: Path, runs: Path, device: str) -> dict[str, Any]:
    arguments: dict[str, Any] = {
        "data": str(data),
        "epochs": config.epochs,
        "batch": config.batch_size,
        "imgsz": config.imgsz,
        "optimizer": _OPTIMIZERS[config.optimizer],
        "lr0": config.lr0,
        "momentum": config.momentum,
        "weight_decay": config.weight_decay,
        "warmup_epochs": float(config.warmup_epochs),
        "patience": config.patience,
        "seed": config.seed,
        "deterministic": config.deterministic,
        # Ultralytics uses 0 on CPU anyway; on a GPU instance loading in the main process starves it.
        "workers": 0 if device == "cpu" else min(8, os.cpu_count() or 1),
        "device": device,
        "amp": _amp(config, device),
        "project": str(runs),  # absolute: a relative project lands under Ultralytics' runs_dir
        "name": "train",
        "exist_ok": True,
        "plots": False,
        "val": True,
    }
    if config.augment == "none":
        arguments.update(mosaic=0.0, fliplr=0.0, hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, translate=0.0, scale=0.0)
    return arguments


def split_fingerprint(dirs: list[Path]) -> str:
    import hashlib

    from train.yolo_data import fingerprint, label_path

    digest = hashlib.sha256()
    for directory in dirs:
        digest.update(fingerprint(directory).encode())
        digest.update(fingerprint(label_path(directory / "x.png").parent).encode())
    return f"sha256:{digest.hexdigest()}"


def run_yolo(  # noqa: PLR0915 -- the stages read top to bottom
    config: TrainConfig, paths: JobPaths, stop: Callable[[], bool]
) -> Outcome:
    """Train `config.task` (detection or segmentation) on the job's `train` channel; see the module doc.

    Raises DataError (bad dataset or weights channel), CheckpointMismatch, ConfigError: the program's
    data exit code, as for the classifier."""
    from train.main import EXIT_STOPPED, Outcome, publish, write_evaluation

    if config.task not in YOLO_TASKS:
        raise ConfigError(f"run_yolo trains {', '.join(YOLO_TASKS)}, not {config.task!r}")
    started = time.monotonic()
    work = paths.output_dir / "yolo"
    yaml_path = find_dataset(paths)
    report = validate_dataset(yaml_path, config.task)
    counts = ", ".join(f"{n} {split}" for split, n in report.counts.items())
    log(f"channel train: {yaml_path}: {counts} images, {len(report.names)} classes ({report.task})")
    device = _device(config)

    data = workspace(report, work)
    from ultralytics import YOLO

    runs = work / "runs"
    resume = _checkpoint(paths.checkpoints, config, report.names)
    if resume is None and runs.exists():  # a fresh run: nothing of an earlier one in its directory
        shutil.rmtree(runs)
    finished = resume is not None and resume["epoch"] + 1 >= resume["epochs"]
    log(
        f"device={'cpu' if device == 'cpu' else 'cuda'} task={config.task} model={config.model} "
        f"epochs={config.epochs} batch_size={config.batch_size} imgsz={config.imgsz}"
    )

    from train.metrics import format_epoch_line, format_final_line
    from train.tracking import Tracker

    job_name = paths.env.get("MLOPS_JOB_NAME") or paths.env.get("TRAINING_JOB_NAME") or "local"
    project = paths.env.get("WANDB_PROJECT") or paths.env.get("MLOPS_PROJECT") or "cv-mlops"
    state = _read_state(paths.checkpoints) if resume is not None else {}
    tracker = Tracker(
        paths.output_data,
        project=project,
        name=job_name,
        config=config.to_dict(),
        run_id=state.get("wandb_id"),
        env=paths.env,
    )
    tracker.start()
    _write_state(paths.checkpoints, {"wandb_id": tracker.run_id})
    history: list[dict[str, float]] = list(state.get("history", []))

    def on_epoch(epoch: int, epochs: int, values: dict[str, float]) -> None:
        log(format_epoch_line(epoch, epochs, values))
        tracker.log(values, step=epoch)
        history.append({"epoch": epoch, **values})
        _write_state(paths.checkpoints, {"wandb_id": tracker.run_id, "history": history})

    exit_code = 1
    try:
        callbacks = _Callbacks(paths.checkpoints, stop, on_epoch)
        if finished:  # stopped after its last epoch, before the artifact: evaluate what it trained
            log(f"the checkpoint in {paths.checkpoints} has finished training: evaluating it")
        else:
            if resume is not None:
                model = YOLO(str(paths.checkpoints / LAST))
                arguments: dict[str, Any] = {
                    "resume": True,
                    "data": str(data),
                    "device": device,
                    # The checkpoint records the first run's directories; these are the allowed overrides.
                    "save_dir": str(runs / "train"),
                    "workers": 0 if device == "cpu" else min(8, os.cpu_count() or 1),
                }
                log(
                    f"resumed from checkpoint {paths.checkpoints / LAST} "
                    f"at epoch {resume['epoch'] + 1}/{resume['epochs']}"
                )
            else:
                model = _load_start(config, paths)
                arguments = _train_arguments(config, data, runs, device)
            callbacks.install(model)
            try:
                model.train(**arguments)
            except _Stopped:
                done = callbacks.last_epoch
                where = f"after epoch {done}" if done else "before an epoch ended"
                log(
                    f"stopped {where}; checkpoint {paths.checkpoints / LAST} holds the last finished epoch: "
                    "the job resumes from the epoch after it"
                )
                exit_code = EXIT_STOPPED
                return Outcome(stopped=True, metrics={})

        best = runs / "train" / "weights" / "best.pt"
        if not best.is_file():
            best = paths.checkpoints / (BEST if (paths.checkpoints / BEST).is_file() else LAST)
        split = scored_split(report)
        if split == "val":
            log("no test split in data.yaml: the final metrics are of the val split")
        result = evaluate_weights(
            best, data, split=split, imgsz=config.imgsz, batch=config.batch_size, device=device, runs=runs
        )
        metrics = box_and_mask(dict(result.results_dict), "test")
        log(format_final_line(metrics))

        model_dir = paths.model_dir
        model_dir.mkdir(parents=True, exist_ok=True)
        from ultralytics.utils.torch_utils import strip_optimizer

        # Ultralytics' own file, without the optimizer state: what YOLO(model.pt) loads for inference.
        strip_optimizer(str(best), s=str(model_dir / WEIGHTS))
        trained: Any = YOLO(str(model_dir / WEIGHTS)).model
        architecture = Path(str(trained.yaml.get("yaml_file") or config.model)).stem
        per_class = per_class_ap(result, report.names, config.task)
        headline = "mask_ap50_95" if config.task == "segmentation" else "ap50_95"
        evaluation = {
            "metrics": metrics,
            "classes": report.names,
            "split": split,
            "per_class_map50_95": {row["class"]: row[headline] for row in per_class},
            "per_class_ap": per_class,
            "test_images": report.counts.get(split, 0),
            "history": history,
        }
        write_evaluation(paths, evaluation)
        results_csv = runs / "train" / "results.csv"
        if results_csv.is_file():
            shutil.copyfile(results_csv, paths.output_data / "results.csv")
        tracker.log(metrics, step=max([int(h["epoch"]) for h in history] + [0]) + 1)
        if tracker.run is not None:  # W&B on: per-class AP, and test images with their boxes
            columns = list(per_class[0]) if per_class else []
            tracker.log_table(f"{split}/per_class_ap", columns, [list(r.values()) for r in per_class])
            from train.yolo_data import image_files

            images = [image for d in report.split_dirs[split] for image in image_files(d)]
            samples = detection_samples(model_dir / WEIGHTS, images, config=config, device=device)
            tracker.log_detections(samples, report.names)

        from artifact.manifest import Manifest
        from train.yolo_data import fingerprint

        manifest = Manifest(
            task=config.task,
            architecture=architecture,
            classes=report.names,
            input_size=config.imgsz,
            # Ultralytics scales pixels to [0, 1] and normalises nothing else.
            mean=[0.0, 0.0, 0.0],
            std=[1.0, 1.0, 1.0],
            weights=WEIGHTS,
            metrics={k: round(v, 6) for k, v in metrics.items()},
            config=config.to_dict(),
            code_version=paths.env.get("MLOPS_CODE_VERSION", "unknown"),
            wandb=tracker.info(),
            dataset={
                _SPLITS[split_name]: {
                    "images": report.counts.get(split_name, 0),
                    "fingerprint": split_fingerprint(dirs),
                }
                for split_name, dirs in report.split_dirs.items()
            }
            | {"all": {"images": sum(report.counts.values()), "fingerprint": fingerprint(report.root)}},
            created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        publish(paths, manifest, tracker, started)
        exit_code = 0
        return Outcome(stopped=False, metrics=metrics)
    finally:
        tracker.finish(exit_code=exit_code)
