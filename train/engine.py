"""One epoch of training and one evaluation pass; the loop that calls them lives in `main`.

Under distributed training `model` is the DistributedDataParallel wrapper for training and the plain
module for evaluation, and `total` sums a tensor over all ranks, so the numbers returned are those of the
whole data; `should_stop` is then itself a collective, called by every rank before every step."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from train.config import TrainConfig


def place(model: nn.Module, device: torch.device) -> nn.Module:
    """The model on `device` in channels-last layout, as `train.data.batches` lays out its inputs.

    oneDNN (CPU) and cuDNN (GPU, with AMP's tensor cores) run convolutions fastest on NHWC: measured on
    two CPU cores at batch 64, smallcnn trains 1.2-1.7x and ResNet-18 1.1-1.25x faster than in NCHW
    (tests/benchmarks/training.py). The layout changes no value: state dicts, checkpoints and the
    artifact are the same tensors (the artifact is saved contiguous)."""
    return model.to(device).to(memory_format=torch.channels_last)


@dataclass
class EpochStats:
    loss: float
    accuracy: float
    images: int


@dataclass
class EpochProgress:
    """How far an epoch got: the batches done and their running totals. Saved in a checkpoint when a job
    stops mid-epoch (spot reclaim, StopTrainingJob), so the resumed epoch continues at the next batch and
    ends with the same totals as one that never stopped."""

    step: int = 0
    loss_sum: float = 0.0
    correct: int = 0
    seen: int = 0


@dataclass
class EvalResult:
    loss: float
    accuracy: float
    per_class: list[float]
    confusion: list[list[int]]  # confusion[true][predicted]

    @property
    def min_class_accuracy(self) -> float:
        return min(self.per_class)


def classifier(model: nn.Module) -> nn.Linear:
    """The layer that produces the logits: the last `nn.Linear` of every architecture we build."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(f"{type(model).__name__} has no linear classifier layer")
    return linears[-1]


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """Parameter groups: body then classifier, each split into decayed weights and undecayed norms/biases.

    The classifier runs at `learning_rate * head_lr_scale`. Its step moves the logits by about
    lr * |features|^2, and the pooled features of a fresh ResNet-18 have norm ~19 on any data (digits,
    shapes, photo crops), so at lr 0.1 with momentum 0.9 the first steps overshoot: the loss climbs to
    5-10, the gradients blow up the body's weights, and the run stayed near chance for all 330 steps
    of 30 epochs on 1,300 images (and 237 steps on 10k). The body's convolutions sit behind batch norm,
    are scale-invariant, and keep the full rate. Group 0 stays the body's: the logged `lr`.
    """
    head = {id(p) for p in classifier(model).parameters()}
    groups = []
    for lr, in_head in ((config.learning_rate, False), (config.learning_rate * config.head_lr_scale, True)):
        params = [p for p in model.parameters() if (id(p) in head) == in_head]
        # No weight decay on norms and biases: decaying them only hurts (standard since ResNet recipes).
        groups += [
            {"params": [p for p in params if p.ndim > 1], "weight_decay": config.weight_decay, "lr": lr},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0, "lr": lr},
        ]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=config.learning_rate)
    return torch.optim.SGD(
        groups, lr=config.learning_rate, momentum=config.momentum, nesterov=config.momentum > 0
    )


def lr_factor(config: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """Multiplier of the peak learning rate at a global step: linear warm-up, then the schedule."""
    total = config.epochs * steps_per_epoch
    warmup = config.warmup_epochs * steps_per_epoch
    if config.scheduler == "onecycle" and warmup == 0:
        warmup = max(1, int(0.3 * total))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        if config.scheduler in ("cosine", "onecycle"):
            return 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        if config.scheduler == "step":
            return 0.1 ** sum(progress >= m for m in (0.5, 0.75))
        return 1.0

    return factor


def train_one_epoch(
    model: nn.Module,
    *,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    loss_fn: nn.Module,
    scaler: torch.amp.GradScaler | None,
    should_stop: Callable[[], bool],
    progress: EpochProgress | None = None,
    total: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> EpochStats | None:
    """Train over `batches`, continuing `progress` (updated after every step); None when `should_stop()`
    turned true, with `progress` saying where the epoch stopped.

    A resumed epoch draws its first `progress.step` batches again and discards them: the batch order and
    augmentation come from the epoch's own generator, so drawing them replays its state exactly, and the
    global RNG (restored from the checkpoint) is not touched by the data."""
    progress = progress if progress is not None else EpochProgress()
    model.train()
    device_type = next(model.parameters()).device.type
    for index, (x, y) in enumerate(batches):
        if index < progress.step:
            continue
        if should_stop():
            return None
        with torch.autocast(device_type, enabled=scaler is not None):
            logits = model(x)
            loss = loss_fn(logits, y)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        scheduler.step()
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"training diverged (loss={loss.item()}); "
                f"lower learning_rate (now {optimizer.param_groups[0]['lr']:.4g})"
            )
        n = y.shape[0]
        progress.loss_sum += loss.item() * n
        progress.correct += int((logits.argmax(1) == y).sum())
        progress.seen += n
        progress.step = index + 1
    # `progress` stays this rank's own (a checkpoint reduces it itself); the stats are the job's.
    done = job_progress(progress, total) if total is not None else progress
    seen = max(done.seen, 1)
    return EpochStats(done.loss_sum / seen, done.correct / seen, done.seen)


def job_progress(progress: EpochProgress, total: Callable[[torch.Tensor], torch.Tensor]) -> EpochProgress:
    """The whole job's running totals from each rank's own (every rank calls it at the same step)."""
    local = torch.tensor([progress.loss_sum, progress.correct, progress.seen], dtype=torch.float64)
    loss_sum, correct, seen = total(local).tolist()
    return EpochProgress(progress.step, loss_sum, int(correct), int(seen))


@torch.inference_mode()
def evaluate(
    model: nn.Module,
    batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
    num_classes: int,
    total: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> EvalResult:
    model.eval()
    loss_fn = nn.CrossEntropyLoss(reduction="sum")
    confusion = torch.zeros(num_classes, num_classes, dtype=torch.int64)
    total_loss, seen = 0.0, 0
    for x, y in batches:
        logits = model(x).float()
        total_loss += float(loss_fn(logits, y))
        seen += y.shape[0]
        pairs = y.cpu() * num_classes + logits.argmax(1).cpu()
        confusion += torch.bincount(pairs, minlength=num_classes * num_classes).view(num_classes, num_classes)
    if total is not None:  # each rank saw its own shard: the job's numbers are the sums
        confusion = total(confusion)
        total_loss, seen_f = total(torch.tensor([total_loss, seen], dtype=torch.float64)).tolist()
        seen = int(seen_f)
    support = confusion.sum(1).clamp_min(1)
    per_class = (confusion.diag().float() / support.float()).tolist()
    accuracy = float(confusion.diag().sum()) / max(seen, 1)
    return EvalResult(total_loss / max(seen, 1), accuracy, per_class, confusion.tolist())


@torch.inference_mode()
def sample_predictions(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    classes: list[str],
    *,
    mean: list[float],
    std: list[float],
    count: int = 16,
) -> list[tuple[Any, str, str, float]]:
    """The first `count` images (uint8 NCHW) with their label, the prediction and its probability: the
    sample table a reviewer scans in W&B. Images are returned HWC uint8 (what wandb.Image takes)."""
    model.eval()
    device = next(model.parameters()).device
    batch = images[:count]
    mean_t = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, 3, 1, 1)
    x = batch.to(device).contiguous(memory_format=torch.channels_last).float()
    x = x.div_(255).sub_(mean_t).div_(std_t)
    probs = torch.softmax(model(x).float(), dim=1).cpu()
    top = probs.max(dim=1)
    return [
        (
            batch[i].permute(1, 2, 0).numpy(),
            classes[int(labels[i])],
            classes[int(top.indices[i])],
            round(float(top.values[i]), 4),
        )
        for i in range(batch.shape[0])
    ]
