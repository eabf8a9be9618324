"""Channels in ImageFolder layout, decoded once into uint8 tensors, then batched with augmentation.

Stages: scan `<channel>/<class>/<image>` -> decode in a thread pool (PIL releases the GIL) -> one
(N, 3, H, W) uint8 tensor per channel -> per-step batches: random 4-px-padded crop and horizontal flip
applied to the whole batch, then normalised with the train channel's per-channel mean and std. Keeping
decoded pixels in memory (CIFAR-10 is 150 MB) makes each epoch cost only the model, on CPU or GPU.
Corrupt images are skipped and reported, never silently dropped.

Under distributed training each rank (`rank` of `world`) takes a disjoint shard of the same per-epoch
order: for training padded to a multiple of `world` (as torch's DistributedSampler does), so every rank
runs the same number of steps; for evaluation strided without padding, so the reduced sums count each
image once. `batch_size` is per rank (the torchrun convention): a step sees `batch_size * world` images.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".gif", ".tif", ".tiff"}


class DataError(ValueError):
    """A channel is missing, empty or inconsistent; the message names the path."""


@dataclass
class ImageSet:
    images: torch.Tensor  # (N, 3, S, S) uint8
    labels: torch.Tensor  # (N,) int64
    classes: list[str]
    skipped: list[str] = field(default_factory=list)
    fingerprint: str = ""

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _decode(path: Path, size: int) -> tuple[np.ndarray | None, bytes]:
    data = path.read_bytes()
    try:
        with Image.open(path) as img:
            rgb = img.convert("RGB")
            if rgb.size != (size, size):
                rgb = rgb.resize((size, size), Image.Resampling.BILINEAR)
            return np.asarray(rgb, dtype=np.uint8), data
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None, data


def load_channel(
    root: Path, image_size: int, classes: list[str] | None = None, *, name: str = ""
) -> ImageSet:
    """Decode `root/<class>/*` into an ImageSet. `classes` (from train) fixes the label order."""
    label = name or root.name
    if not root.is_dir():
        raise DataError(f"channel {label!r} is missing: expected an ImageFolder directory at {root}")
    found = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not found:
        raise DataError(f"channel {label!r} at {root} has no class directories (<channel>/<class>/<image>)")
    if classes is None:
        classes = found
        if len(classes) < 2:
            raise DataError(
                f"channel {label!r} at {root} has {len(classes)} class; a classifier needs 2 or more"
            )
    else:
        unknown = sorted(set(found) - set(classes))
        if unknown:
            raise DataError(f"channel {label!r} has classes not in train: {', '.join(unknown)}")
    files: list[tuple[Path, int]] = []
    for index, cls in enumerate(classes):
        cls_dir = root / cls
        if cls_dir.is_dir():
            files += [
                (p, index)
                for p in sorted(cls_dir.iterdir())
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
            ]
    if not files:
        raise DataError(f"channel {label!r} at {root} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")

    with ThreadPoolExecutor(max_workers=8) as pool:
        decoded = list(pool.map(lambda item: _decode(item[0], image_size), files))
    digest = hashlib.sha256()
    arrays, labels, skipped = [], [], []
    for (path, index), (pixels, raw) in zip(files, decoded, strict=True):
        digest.update(path.relative_to(root).as_posix().encode())
        digest.update(hashlib.sha256(raw).digest())
        if pixels is None:
            skipped.append(str(path.relative_to(root)))
            continue
        arrays.append(pixels)
        labels.append(index)
    if not arrays:
        raise DataError(f"channel {label!r} at {root}: all {len(files)} images are unreadable")
    images = torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()
    return ImageSet(
        images, torch.tensor(labels, dtype=torch.int64), list(classes), skipped, digest.hexdigest()
    )


def channel_stats(images: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std on the [0, 1] scale, stored in the manifest for serving."""
    as_float = images.float().div_(255)
    mean = as_float.mean(dim=(0, 2, 3))
    std = as_float.std(dim=(0, 2, 3)).clamp_min(1e-3)
    return [round(float(v), 6) for v in mean], [round(float(v), 6) for v in std]


def _augment(batch: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    n, _, h, w = batch.shape
    padded = F.pad(batch, (pad, pad, pad, pad))
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).tolist()
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).tolist()
    flip = torch.rand(n, generator=generator).lt(0.5).tolist()
    out = torch.empty_like(batch)
    for i in range(n):
        crop = padded[i, :, dy[i] : dy[i] + h, dx[i] : dx[i] + w]
        out[i] = crop.flip(-1) if flip[i] else crop
    return out


def shard_size(n: int, world: int) -> int:
    """Images each rank gets of a padded shard (and rank 0, the largest, of an unpadded one)."""
    return -(-n // world)


def shard(order: torch.Tensor, rank: int, world: int, *, pad: bool) -> torch.Tensor:
    """Rank `rank`'s part of `order`; with `pad`, the order is first extended by its own head to a
    multiple of `world` (a few images are seen twice an epoch) so every rank gets as many."""
    if world == 1:
        return order
    if pad:
        total = shard_size(len(order), world) * world
        order = torch.cat([order, order[: total - len(order)]])
    return order[rank::world]


def batches(
    data: ImageSet,
    batch_size: int,
    *,
    mean: list[float],
    std: list[float],
    device: torch.device,
    shuffle: bool = False,
    augment: bool = False,
    generator: torch.Generator | None = None,
    rank: int = 0,
    world: int = 1,
    pad: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Normalised float batches on `device`; augmentation runs on uint8 on the CPU, before the copy.

    The order comes from `generator`, the same on every rank; this rank's shard of it is batched."""
    gen = generator or torch.Generator().manual_seed(0)
    order = torch.randperm(len(data), generator=gen) if shuffle else torch.arange(len(data))
    order = shard(order, rank, world, pad=pad)
    # Rank 0 draws its crops from `gen` itself (a single process is unchanged); the others from their
    # own stream, so ranks do not apply the same crops and flips to their different images.
    aug_gen = gen
    if rank > 0:
        aug_gen = torch.Generator().manual_seed((gen.initial_seed() * 1_000_003 + rank) % 2**63)
    mean_t = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, 3, 1, 1)
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        images = data.images[index]
        if augment:
            images = _augment(images, aug_gen)
        # Channels-last, the layout `train.engine.place` gives the model (float() keeps the layout).
        x = images.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        x = x.float().div_(255).sub_(mean_t).div_(std_t)
        yield x, data.labels[index].to(device, non_blocking=True)
