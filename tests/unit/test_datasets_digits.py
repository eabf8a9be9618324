"""infra.datasets.digits: scikit-learn's bundled digits as a deterministic ImageFolder dataset."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from infra.datasets import SPLITS, DatasetError, read_metadata
from infra.datasets.digits import DIGITS_CLASSES, write_digits


def test_digits_split_every_image_once_into_rgb_pngs_the_same_way_each_time(tmp_path):
    first = write_digits(tmp_path / "a", size=16)
    again = write_digits(tmp_path / "b", size=16)
    assert first.counts == {"train": 1297, "validation": 250, "test": 250}
    assert first.classes == list(DIGITS_CLASSES)
    names = {
        split: {p.name for p in (first.root / split).rglob("*.png")} for split in SPLITS
    }  # file names are the index in load_digits()
    assert sum(len(n) for n in names.values()) == len(set().union(*names.values())) == 1797
    meta_a, meta_b = read_metadata(first.root), read_metadata(again.root)
    assert meta_a is not None and meta_b is not None and meta_a["fingerprint"] == meta_b["fingerprint"]
    with Image.open(next((first.root / "test" / "3").iterdir())) as image:
        assert image.mode == "RGB" and image.size == (16, 16)
        assert np.asarray(image).max() > 200  # 0..16 ink levels scaled to 0..255
    assert write_digits(tmp_path / "a", size=16).created is False  # reused, not rewritten


def test_digits_refuse_splits_that_leave_too_little_to_train_on(tmp_path):
    with pytest.raises(DatasetError, match="must leave 100 for train"):
        write_digits(tmp_path / "d", val_images=900, test_images=900)
