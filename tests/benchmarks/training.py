"""Training: images per second of our trainer against the textbook PyTorch loop.

Both train the same model (same initial weights) with the same optimiser settings and batch size on
the same synthetic ImageFolder data, with the same augmentation (4-px padded random crop, horizontal
flip, normalisation), in this process with the same torch threads:

  ours      the trainer's real code path: `train.data.load_channel` decodes the channel into one uint8
            tensor once (timed apart: a once-per-job cost), then `train.data.batches` augments whole
            batches on tensors and `train.engine.train_one_epoch` runs the steps, with the optimiser
            and schedule of `train.engine` built from the parsed hyperparameters;
  textbook  torchvision `ImageFolder` decoding every sample with PIL on every epoch, `transforms`
            per sample, a `DataLoader` with one worker per core, and the plain step loop.

Each round times `steps` steps after `warmup` steps (the first DataLoader workers and kernel set-up
excluded); rounds alternate ours/textbook, and the median round counts. Targets: ours >= 2x the
textbook for smallcnn, and no slower (>= 1x) for ResNet-18.
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.benchmarks.common import Result, median

TARGETS = {"smallcnn": 2.0, "resnet18": 1.0}


@dataclass(frozen=True)
class Plan:
    architecture: str
    batch_size: int
    warmup: int  # steps before the clock starts
    steps: int  # steps timed per round
    rounds: int


def plans(quick: bool) -> list[Plan]:
    # ResNet-18 trains at ~30 images/s on two cores: a few steps of it already take a minute.
    if quick:
        return [Plan("smallcnn", 64, 5, 30, 1), Plan("resnet18", 64, 1, 2, 1)]
    return [Plan("smallcnn", 64, 10, 100, 3), Plan("resnet18", 64, 2, 6, 2)]


def make_data(work: Path, quick: bool) -> Path:
    from infra.datasets import make_synthetic

    per_class = 150 if quick else 250
    info = make_synthetic(
        work / "train-data", classes=8, train_per_class=per_class, val_per_class=5, test_per_class=5
    )
    return Path(info.root) / "train"


def _config(plan: Plan) -> Any:
    from train.config import parse_hyperparameters

    return parse_hyperparameters(
        {"arch": plan.architecture, "batch_size": str(plan.batch_size), "epochs": "1000", "device": "cpu"}
    )


def ours(plan: Plan, train_dir: Path) -> Iterator[float]:
    """Images/s of each round; decoding the channel once happens before the first round."""
    import torch
    from torch import nn

    from artifact.architectures import build
    from train import engine
    from train.data import batches, channel_stats, load_channel

    config = _config(plan)
    data = load_channel(train_dir, config.image_size, name="train")
    mean, std = channel_stats(data.images)
    torch.manual_seed(config.seed)
    model = engine.place(build(config.arch, len(data.classes)), torch.device("cpu"))  # as train.main does
    optimizer = engine.build_optimizer(model, config)
    steps_per_epoch = -(-len(data) // config.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, engine.lr_factor(config, steps_per_epoch))
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)

    def stream() -> Iterator[Any]:
        for epoch in itertools.count(1):
            gen = torch.Generator().manual_seed(config.seed * 10_007 + epoch)
            yield from batches(
                data,
                config.batch_size,
                mean=mean,
                std=std,
                device=torch.device("cpu"),
                shuffle=True,
                augment=config.augment == "standard",
                generator=gen,
                pad=True,
            )

    source = stream()

    def steps(n: int) -> int:
        stats = engine.train_one_epoch(
            model,
            batches=itertools.islice(source, n),
            optimizer=optimizer,
            scheduler=scheduler,
            loss_fn=loss_fn,
            scaler=None,
            should_stop=lambda: False,
        )
        assert stats is not None
        return stats.images

    steps(plan.warmup)
    while True:
        tick = time.perf_counter()
        seen = steps(plan.steps)
        yield seen / (time.perf_counter() - tick)


def textbook(plan: Plan, train_dir: Path, workers: int) -> Iterator[float]:
    """The recipe of the PyTorch tutorials and torchvision's reference scripts, on the same model."""
    import torch
    from torch import nn
    from torch.utils.data import DataLoader
    from torchvision import datasets, transforms

    from artifact.architectures import build
    from train.data import channel_stats, load_channel

    config = _config(plan)
    # The same normalisation constants as ours (computed the same way), so only the data path differs.
    mean, std = channel_stats(load_channel(train_dir, config.image_size).images)
    transform = transforms.Compose(
        [
            transforms.RandomCrop(config.image_size, padding=4),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(mean, std),
        ]
    )
    dataset = datasets.ImageFolder(str(train_dir), transform=transform)
    loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=True, num_workers=workers)
    torch.manual_seed(config.seed)
    model = build(config.arch, len(dataset.classes))
    optimizer = torch.optim.SGD(
        model.parameters(),
        lr=config.learning_rate,
        momentum=config.momentum,
        nesterov=config.momentum > 0,
        weight_decay=config.weight_decay,
    )
    loss_fn = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    source = itertools.chain.from_iterable(loader for _ in itertools.count())  # epoch after epoch

    def steps(n: int) -> int:
        model.train()
        seen = 0
        for x, y in itertools.islice(source, n):
            loss = loss_fn(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            seen += y.shape[0]
        return seen

    steps(plan.warmup)
    while True:
        tick = time.perf_counter()
        seen = steps(plan.steps)
        yield seen / (time.perf_counter() - tick)


def decode_seconds(train_dir: Path, image_size: int) -> tuple[float, int]:
    from train.data import load_channel

    tick = time.perf_counter()
    data = load_channel(train_dir, image_size)
    return time.perf_counter() - tick, len(data)


COLUMNS = ["model", "batch", "steps x rounds", "ours img/s", "textbook img/s", "ratio"]


def run(work: Path, *, quick: bool, workers: int | None = None) -> list[Result]:
    import torch

    workers = workers if workers is not None else os.cpu_count() or 1
    train_dir = make_data(work, quick)
    result = Result("training", "training: our trainer vs the textbook loop", list(COLUMNS))
    seconds, images = decode_seconds(train_dir, 32)
    result.data = {
        "torch_threads": torch.get_num_threads(),
        "textbook_workers": workers,
        "train_images": images,
        "ours_decode_once_seconds": round(seconds, 3),
        "models": {},
    }
    for plan in plans(quick):
        mine, theirs = ours(plan, train_dir), textbook(plan, train_dir, workers)
        rounds_ours, rounds_textbook = [], []
        for _ in range(plan.rounds):  # alternate, so a burst of load elsewhere hits both alike
            rounds_ours.append(next(mine))
            rounds_textbook.append(next(theirs))
        a, b = median(rounds_ours), median(rounds_textbook)
        target = TARGETS[plan.architecture]
        result.add(
            plan.architecture,
            plan.batch_size,
            f"{plan.steps} x {plan.rounds}",
            a,
            b,
            f"{a / b:.2f}x",
            target=f">= {target:g}x",
            passed=a / b >= target,
        )
        result.data["models"][plan.architecture] = {
            "plan": plan.__dict__,
            "ours_images_per_s": rounds_ours,
            "textbook_images_per_s": rounds_textbook,
            "ratio": a / b,
            "target": target,
        }
        del mine, theirs  # ends the textbook's DataLoader workers before the next model
    result.notes.append(
        f"{torch.get_num_threads()} torch threads, textbook DataLoader num_workers={workers}; ours decodes "
        f"the {images} train images once per job in {seconds:.2f} s (not in its images/s)"
    )
    return [result]
