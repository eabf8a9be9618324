"""The default recipe learns on small real data: `python -m train` with the default architecture and
hyperparameters on scikit-learn's handwritten digits (1,297 train images, 11 steps per epoch).

With the classifier at the full SGD rate the first steps overshoot (epoch-1 train loss ~7.5, validation
loss ~10^5) and the run ends near chance; the synthetic shapes are too easy to show it. Only `epochs`
and `image_size` differ from the defaults, to keep the run near half a minute on two CPU cores: the
digits are 8x8 pixels, so 16 loses nothing.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from infra.datasets.digits import write_digits
from train.metrics import parse_epoch, parse_line

pytestmark = pytest.mark.e2e

EPOCHS = 5
CHANCE_LOSS = math.log(10)


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "digits"
    info = write_digits(root, size=16)
    assert info.counts == {"train": 1297, "validation": 250, "test": 250}
    return root


def train(base: Path, data: Path, hyperparameters: dict[str, str]) -> list[str]:
    (base / "input" / "config").mkdir(parents=True)
    (base / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    (base / "input" / "data").mkdir(parents=True)
    for channel in ("train", "validation", "test"):
        (base / "input" / "data" / channel).symlink_to(data / channel)
    env = {**os.environ, "SAGEMAKER_BASE_DIR": str(base), "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "train"], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.splitlines()


def test_default_resnet18_recipe_learns_from_the_first_epoch_on_small_real_data(tmp_path, digits):
    lines = train(tmp_path / "job", digits, {"epochs": str(EPOCHS), "image_size": "16"})
    assert any("arch=resnet18" in line for line in lines)
    epochs = [parse_line(line) for line in lines if parse_epoch(line)]
    final = next(parse_line(line) for line in lines if line.startswith("final "))
    train_loss = [e["train_loss"] for e in epochs]
    report = "\n".join(line for line in lines if line.startswith(("epoch=", "final ")))

    assert len(epochs) == EPOCHS, report
    assert train_loss[0] < 1.5 * CHANCE_LOSS, report  # no overshoot: the first epoch is near chance or below
    assert all(b < a for a, b in itertools.pairwise(train_loss)), report
    assert epochs[-1]["val_loss"] < 0.5 * CHANCE_LOSS, report
    assert final["test_accuracy"] > 0.6, report  # chance is 0.1
