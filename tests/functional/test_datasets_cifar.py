"""infra.datasets at realistic sizes: the default synthetic dataset and a multi-chunk CIFAR-10 archive."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

from infra.datasets import SPLITS, fingerprint, make_synthetic, prepare_cifar10, read_metadata

NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def test_default_synthetic_dataset(tmp_path: Path) -> None:
    messages: list[str] = []
    info = make_synthetic(tmp_path / "shapes", progress=messages.append)
    assert info.counts == {"train": 2000, "validation": 400, "test": 400}
    assert len(info.classes) == 8
    assert info.seconds < 30
    # Progress is sparing: a handful of lines per split, not one per image.
    assert len(messages) <= 20
    meta = read_metadata(info.root)
    assert meta is not None
    assert meta["fingerprint"] == fingerprint(info.root)
    for split in SPLITS:
        assert sum(1 for _ in (info.root / split).rglob("*.png")) == info.counts[split]
    again = make_synthetic(tmp_path / "shapes")
    assert again.created is False


def test_cifar_archive_larger_than_one_write_chunk(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    per_batch = 120  # per class: 6,000 training records, many thread-pool chunks per split
    batches = []
    for _ in range(5):
        labels = np.repeat(np.arange(10, dtype=np.uint8), per_batch)
        rng.shuffle(labels)
        batches.append(
            np.concatenate([labels[:, None], rng.integers(0, 256, (len(labels), 3072), np.uint8)], 1)
        )
    test = np.concatenate(
        [np.repeat(np.arange(10, dtype=np.uint8), 50)[:, None], rng.integers(0, 256, (500, 3072), np.uint8)],
        1,
    )
    files = {f"data_batch_{i + 1}.bin": b.tobytes() for i, b in enumerate(batches)}
    files |= {"test_batch.bin": test.tobytes(), "batches.meta.txt": "\n".join(NAMES).encode()}
    archive = tmp_path / "cifar.tar.gz"
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        for name, data in files.items():
            member = tarfile.TarInfo(f"./cifar-10-batches-bin/{name}")
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))

    messages: list[str] = []
    info = prepare_cifar10(tmp_path / "cifar10", archive=archive, expected_md5=None, progress=messages.append)
    assert info.counts == {"train": 5400, "validation": 600, "test": 500}
    for name in NAMES:
        assert len(list((info.root / "validation" / name).glob("*.png"))) == 60
    assert "writing train: 5400/5400" in messages
    assert len(messages) <= 25

    train = np.concatenate(batches)
    for png in sorted((info.root / "validation").rglob("*.png"))[::50]:
        with Image.open(png) as img:
            pixels = np.asarray(img)
        record = train[int(png.stem)]
        assert png.parent.name == NAMES[record[0]]
        assert np.array_equal(pixels, record[1:].reshape(3, 32, 32).transpose(1, 2, 0))
