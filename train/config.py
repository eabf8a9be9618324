"""Hyperparameters: strings in, one typed and validated `TrainConfig` out, before any work starts.

SageMaker passes every hyperparameter as a string (the SageMaker SDK even JSON-encodes them, so `"sgd"`
may arrive as `"\"sgd\""`). Keys SageMaker adds itself (`_tuning_objective_metric`, `sagemaker_*`) are
accepted and ignored. Anything else unknown, or any bad value, raises `ConfigError` naming the key and
what it accepts.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Mirrors artifact.architectures.ARCHITECTURES (a unit test keeps them equal); no torch import here.
ARCHITECTURES = ("resnet18", "smallcnn")
TASKS = ("classification", "detection", "segmentation")
IMPLEMENTED_TASKS = ("classification", "detection", "segmentation")
YOLO_TASKS = ("detection", "segmentation")  # trained by Ultralytics YOLO (train/yolo.py)
# Ultralytics names the other heads in its model files; a name with one of them builds the wrong model.
_OTHER_HEADS = ("-seg", "-cls", "-pose", "-obb")
DISTRIBUTED_TASKS = ("classification",)  # the tasks that train on more than one host


class ConfigError(ValueError):
    """A hyperparameter is unknown or has a bad value; the message says which and what is accepted."""


def _choice(*options: str) -> dict[str, Any]:
    return {"choices": options}


@dataclass(frozen=True)
class TrainConfig:
    task: str = field(default="classification", metadata={**_choice(*TASKS), "help": "task family"})
    arch: str = field(
        default="resnet18",
        metadata={
            **_choice(*ARCHITECTURES),
            "help": "classification: resnet18 (CIFAR stem, for GPUs) or smallcnn (fast CPU demos); "
            "detection and segmentation ignore it (see model)",
        },
    )
    epochs: int = field(default=30, metadata={"min": 1, "max": 10_000, "help": "passes over train"})
    # Per process (the torchrun convention): a distributed step sees batch_size x processes images.
    batch_size: int = field(
        default=128,
        metadata={"min": 1, "max": 65_536, "help": "images per step on each process (GPU)"},
    )
    learning_rate: float = field(
        default=0.1, metadata={"min_exclusive": 0.0, "max": 10.0, "help": "peak learning rate"}
    )
    # The classifier's step moves the logits by about lr * |features|^2 (|features| ~ 19 for a fresh
    # ResNet-18): at the full rate it overshoots from the first step on any data, and a run of a few
    # hundred steps never recovers. A tenth for that one layer keeps lr 0.1 for the rest (engine.py).
    head_lr_scale: float = field(
        default=0.1,
        metadata={
            "min_exclusive": 0.0,
            "max": 10.0,
            "help": "learning-rate multiplier for the classifier layer",
        },
    )
    optimizer: str = field(default="sgd", metadata={**_choice("sgd", "adamw"), "help": "optimiser"})
    momentum: float = field(default=0.9, metadata={"min": 0.0, "max_exclusive": 1.0, "help": "SGD momentum"})
    weight_decay: float = field(
        default=5e-4, metadata={"min": 0.0, "max": 1.0, "help": "L2 / decoupled decay"}
    )
    scheduler: str = field(
        default="cosine",
        metadata={
            **_choice("cosine", "onecycle", "step", "constant"),
            "help": "learning-rate schedule (per step)",
        },
    )
    warmup_epochs: int = field(default=0, metadata={"min": 0, "max": 1000, "help": "linear warm-up epochs"})
    label_smoothing: float = field(
        default=0.0, metadata={"min": 0.0, "max_exclusive": 1.0, "help": "cross-entropy label smoothing"}
    )
    augment: str = field(
        default="standard",
        metadata={
            **_choice("standard", "none"),
            "help": "standard = 4-px padded random crop + horizontal flip",
        },
    )
    image_size: int = field(default=32, metadata={"min": 8, "max": 1024, "help": "input side in pixels"})
    seed: int = field(default=42, metadata={"min": 0, "max": 2**31 - 1, "help": "random seed"})
    device: str = field(
        default="auto", metadata={**_choice("auto", "cpu", "cuda"), "help": "auto picks cuda when available"}
    )
    amp: bool = field(default=True, metadata={"help": "mixed precision on cuda (ignored on cpu)"})
    # Detection and segmentation (Ultralytics YOLO, train/yolo.py). The classifier ignores these, and YOLO
    # ignores arch, learning_rate, head_lr_scale, scheduler, label_smoothing and image_size: their
    # defaults are the classifier's (lr 0.1, 32 px), wrong for YOLO. Shared: epochs, batch_size, optimizer,
    # momentum, weight_decay, warmup_epochs, augment, seed, device, amp.
    model: str = field(
        default="auto",
        metadata={
            "accepted": "auto, <name>.yaml, <file>.pt",
            "help": "YOLO: auto (yolov8n.yaml; yolov8n-seg.yaml for segmentation), an Ultralytics "
            "architecture .yaml (built from scratch), or a .pt file in the weights channel (fine-tuned); "
            "never downloaded",
        },
    )
    base_weights: str = field(
        default="auto",
        metadata={
            "accepted": "auto, none, <file>.pt",
            "help": "YOLO: a .pt file in the weights channel; with model=auto the run starts from it, with "
            "model=<name>.yaml its matching layers are loaded into that architecture; auto: the channel's "
            "only .pt when the channel exists; none: ignore the channel",
        },
    )
    imgsz: int = field(
        default=640,
        metadata={"min": 32, "max": 4096, "help": "YOLO: image side in pixels, a multiple of 32"},
    )
    lr0: float = field(
        default=0.01,
        metadata={"min_exclusive": 0.0, "max": 10.0, "help": "YOLO: initial learning rate"},
    )
    patience: int = field(
        default=100,
        metadata={"min": 0, "max": 10_000, "help": "YOLO: stop after this many epochs without gain; 0 never"},
    )
    deterministic: bool = field(
        default=True, metadata={"help": "YOLO: deterministic algorithms (reproducible, may be slower)"}
    )

    @classmethod
    def keys(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_hyperparameters(self) -> dict[str, str]:
        """The SageMaker form: every value a string."""
        return {k: _to_string(v) for k, v in self.to_dict().items()}


def _to_string(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _is_sagemaker_key(key: str) -> bool:
    return key.startswith("_") or key.startswith("sagemaker_")


def _unquote(raw: Any) -> str:
    text = raw if isinstance(raw, str) else json.dumps(raw)
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == '"':
        try:
            decoded = json.loads(text)
        except json.JSONDecodeError:
            return text
        if isinstance(decoded, str):
            return decoded.strip()
    return text


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _parse_bool(key: str, text: str) -> bool:
    low = text.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ConfigError(
        f"hyperparameter {key!r}: {text!r} is not a boolean; accepted: true, false, 1, 0, yes, no"
    )


def _parse_number(key: str, text: str, kind: type, meta: Mapping[str, Any]) -> Any:
    label = "an integer" if kind is int else "a number"
    try:
        number = float(text)
    except ValueError:
        raise ConfigError(f"hyperparameter {key!r}: {text!r} is not {label}; {_range(meta)}") from None
    if not math.isfinite(number) or (kind is int and not number.is_integer()):
        raise ConfigError(f"hyperparameter {key!r}: {text!r} is not {label}; {_range(meta)}")
    # "10.0" is an integer written as a float, as tuners write them.
    value = int(number) if kind is int else number
    bad = (
        ("min" in meta and value < meta["min"])
        or ("max" in meta and value > meta["max"])
        or ("min_exclusive" in meta and value <= meta["min_exclusive"])
        or ("max_exclusive" in meta and value >= meta["max_exclusive"])
    )
    if bad:
        raise ConfigError(f"hyperparameter {key!r}: {text} is out of range; {_range(meta)}")
    return value


def _range(meta: Mapping[str, Any]) -> str:
    low = (
        f"> {meta['min_exclusive']}"
        if "min_exclusive" in meta
        else f">= {meta['min']}"
        if "min" in meta
        else ""
    )
    high = (
        f"< {meta['max_exclusive']}"
        if "max_exclusive" in meta
        else f"<= {meta['max']}"
        if "max" in meta
        else ""
    )
    return "accepted: " + " and ".join(p for p in (low, high) if p) if (low or high) else "accepted: any"


def describe() -> list[tuple[str, str, str, str]]:
    """(key, type, default, accepted values / help) for --help and the README."""
    rows = []
    for f in dataclasses.fields(TrainConfig):
        meta = f.metadata
        accepted = (
            ", ".join(meta["choices"])
            if "choices" in meta
            else meta["accepted"]
            if "accepted" in meta
            else ("true/false" if f.type in (bool, "bool") else _range(meta).removeprefix("accepted: "))
        )
        rows.append(
            (f.name, str(f.type), _to_string(f.default), f"{accepted}. {meta.get('help', '')}".strip())
        )
    return rows


def check_supported(config: TrainConfig, *, hosts: int = 1) -> None:
    """What this build can train: a valid config may still ask for a task or a cluster it cannot run.
    The trainer checks it at start; `mlops validate` checks it before anything is built or started.
    The classifier trains on any number of hosts (DDP under torchrun, `train.distributed`)."""
    if config.task not in IMPLEMENTED_TASKS:
        raise ConfigError(
            f"hyperparameter 'task': {config.task!r} is not implemented yet; "
            f"this build trains: {', '.join(IMPLEMENTED_TASKS)}"
        )
    if hosts > 1 and config.task not in DISTRIBUTED_TASKS:
        raise ConfigError(
            f"distributed training over {hosts} hosts is implemented for {', '.join(DISTRIBUTED_TASKS)} "
            f"only, not {config.task!r}; run with one instance"
        )


def parse_hyperparameters(raw: Mapping[str, Any]) -> TrainConfig:
    """Parse SageMaker-style hyperparameters (strings) into a validated TrainConfig."""
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    values: dict[str, Any] = {}
    for key, raw_value in raw.items():
        if not isinstance(key, str):
            raise ConfigError(f"hyperparameter names must be strings, got {key!r}")
        if _is_sagemaker_key(key):
            continue
        if key not in fields:
            close = difflib.get_close_matches(key, list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"unknown hyperparameter {key!r}{hint}; accepted: {', '.join(sorted(fields))}")
        f = fields[key]
        text = _unquote(raw_value)
        if text == "":
            raise ConfigError(f"hyperparameter {key!r} is empty; default is {_to_string(f.default)!r}")
        meta = f.metadata
        if "choices" in meta:
            low = text.lower()
            if low not in meta["choices"]:
                raise ConfigError(
                    f"hyperparameter {key!r}: {text!r} is not one of: {', '.join(meta['choices'])}"
                )
            values[key] = low
        elif f.type in (bool, "bool"):
            values[key] = _parse_bool(key, text)
        elif f.type in (int, "int"):
            values[key] = _parse_number(key, text, int, meta)
        elif f.type in (str, "str"):
            values[key] = text
        else:
            values[key] = _parse_number(key, text, float, meta)
    config = TrainConfig(**values)
    if config.warmup_epochs >= config.epochs and config.warmup_epochs > 0:
        raise ConfigError(
            f"hyperparameter 'warmup_epochs': {config.warmup_epochs} "
            f"must be smaller than epochs ({config.epochs})"
        )
    _check_yolo(config)
    return config


def _check_yolo(config: TrainConfig) -> None:
    """The YOLO fields: file names, never paths or URLs (nothing is downloaded), and a model file whose
    head matches the task. Checked for every task, so a typo fails at once whichever task runs."""
    model, weights = config.model, config.base_weights
    if model != "auto" and (not model.endswith((".yaml", ".yml", ".pt")) or "/" in model or "\\" in model):
        raise ConfigError(
            f"hyperparameter 'model': {model!r} is not auto, an Ultralytics architecture file name "
            "ending in .yaml (yolov8n.yaml) or a .pt file name in the weights channel (best.pt)"
        )
    if weights not in ("auto", "none") and (not weights.endswith(".pt") or "/" in weights or "\\" in weights):
        raise ConfigError(
            f"hyperparameter 'base_weights': {weights!r} is not auto, none or a .pt file name "
            "in the weights channel"
        )
    if model.endswith(".pt") and weights not in ("auto", "none"):
        raise ConfigError(
            f"hyperparameters 'model' ({model}) and 'base_weights' ({weights}) both name weights to start "
            "from: give one (model=<name>.yaml with base_weights loads those weights into that architecture)"
        )
    if config.imgsz % 32:
        raise ConfigError(
            f"hyperparameter 'imgsz': {config.imgsz} is not a multiple of 32 (the YOLO stride); "
            f"try {max(32, round(config.imgsz / 32) * 32)}"
        )
    if config.task in YOLO_TASKS and model.endswith((".yaml", ".yml")):
        stem = model.rsplit(".", 1)[0].lower()
        wanted = "-seg" if config.task == "segmentation" else ""
        heads = [head for head in _OTHER_HEADS if head in stem]
        if (wanted and wanted not in heads) or (not wanted and heads):
            example = "yolov8n-seg.yaml" if wanted else "yolov8n.yaml"
            raise ConfigError(
                f"hyperparameter 'model': {model} does not build a {config.task} model; "
                f"use a{' -seg' if wanted else ' detection'} architecture such as {example}"
            )
