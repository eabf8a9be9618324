"""Synthetic YOLO datasets (exact boxes and polygons, byte-identical per seed), prepare_yolo, and the CLI."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image

from infra.cli import main
from infra.datasets import (
    YOLO_SHAPES,
    DatasetError,
    fingerprint,
    make_synthetic_yolo,
    prepare_yolo,
    read_metadata,
)
from infra.datasets.yolo import _inside
from train.yolo_data import validate

SMALL: dict[str, Any] = {"train": 12, "val": 4, "test": 4}
COLOURS = np.array(list(YOLO_SHAPES.values()), dtype=np.int16)
# Pixel noise has sigma 4: 40 per channel is ten sigmas, and still far from the grey background.
NEAR = 40


def flat(text: str) -> str:
    """Printed text with rich's line wrapping undone."""
    return " ".join(text.split())


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def labels(root: Path, split: str, stem: str) -> list[list[float]]:
    text = (root / "labels" / split / f"{stem}.txt").read_text()
    return [[float(v) for v in line.split()] for line in text.splitlines()]


def pixels(root: Path, split: str, stem: str) -> np.ndarray:
    return np.asarray(Image.open(root / "images" / split / f"{stem}.png").convert("RGB"), dtype=np.int16)


def colour_mask(image: np.ndarray, class_id: int) -> np.ndarray:
    return np.all(np.abs(image - COLOURS[class_id]) <= NEAR, axis=-1)


@pytest.fixture(scope="module")
def detection(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("yolo") / "detection"
    make_synthetic_yolo(root, task="detection", classes=4, **SMALL)
    return root


@pytest.fixture(scope="module")
def segmentation(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("yolo") / "segmentation"
    make_synthetic_yolo(root, task="segmentation", classes=4, **SMALL)
    return root


# --- the synthetic generator ---------------------------------------------------------------------------


def test_layout_counts_and_metadata(detection: Path) -> None:
    for split, count in SMALL.items():
        assert len(list((detection / "images" / split).glob("*.png"))) == count
        assert len(list((detection / "labels" / split).glob("*.txt"))) == count
    config = yaml.safe_load((detection / "data.yaml").read_text())
    assert config == {
        "train": "images/train",
        "val": "images/val",
        "test": "images/test",
        "nc": 4,
        "names": {0: "circle", 1: "square", 2: "triangle", 3: "diamond"},
    }
    meta = read_metadata(detection)
    assert meta is not None
    assert meta["name"] == "synthetic-yolo"
    assert meta["task"] == "detection"
    assert meta["classes"] == ["circle", "square", "triangle", "diamond"]
    assert meta["counts"] == SMALL
    assert meta["fingerprint"] == fingerprint(detection)
    assert validate(detection).counts == SMALL


@pytest.mark.parametrize("task", ["detection", "segmentation"])
def test_the_same_seed_gives_byte_identical_files(tmp_path: Path, task: str) -> None:
    first = make_synthetic_yolo(tmp_path / "a", task=task, seed=3, **SMALL)
    second = make_synthetic_yolo(tmp_path / "b", task=task, seed=3, **SMALL)
    assert first.created and second.created
    assert tree(tmp_path / "a") == tree(tmp_path / "b")
    other = make_synthetic_yolo(tmp_path / "c", task=task, seed=4, **SMALL)
    assert tree(other.root)["images/train/00000.png"] != tree(tmp_path / "a")["images/train/00000.png"]


def test_every_image_holds_one_to_three_objects(detection: Path) -> None:
    per_image = [len(labels(detection, "train", p.stem)) for p in (detection / "labels/train").glob("*.txt")]
    assert set(per_image) <= {1, 2, 3}
    assert len(set(per_image)) > 1


def test_boxes_are_the_exact_extent_of_their_shape(detection: Path) -> None:
    size = 64
    for image_path in sorted((detection / "images").rglob("*.png")):
        split, stem = image_path.parent.name, image_path.stem
        image = pixels(detection, split, stem)
        covered = np.zeros(image.shape[:2], dtype=bool)
        for class_id, cx, cy, w, h in labels(detection, split, stem):
            x1, y1 = round((cx - w / 2) * size), round((cy - h / 2) * size)
            x2, y2 = round((cx + w / 2) * size), round((cy + h / 2) * size)
            inside = colour_mask(image[y1:y2, x1:x2], int(class_id))
            # Tight: the shape's colour reaches all four edges of its box.
            assert inside[0].any() and inside[-1].any() and inside[:, 0].any() and inside[:, -1].any()
            assert inside.mean() > 0.4  # a triangle or diamond fills half its box, a square all of it
            covered[y1:y2, x1:x2] = True
        # Outside every box there is only background: not one pixel of any shape's colour.
        for class_id in range(len(COLOURS)):
            assert not colour_mask(image, class_id)[~covered].any(), (image_path, class_id)


def test_segmentation_draws_the_same_images_with_polygon_labels(detection: Path, segmentation: Path) -> None:
    assert tree(detection / "images") == tree(segmentation / "images")
    size = 64
    centres = (np.arange(size) + 0.5)[None, :], (np.arange(size) + 0.5)[:, None]
    for label_path in sorted((segmentation / "labels").rglob("*.txt")):
        split, stem = label_path.parent.name, label_path.stem
        image = pixels(segmentation, split, stem)
        boxes = labels(detection, split, stem)
        polygons = labels(segmentation, split, stem)
        assert len(polygons) == len(boxes)
        for (class_id, *coords), (box_class, cx, cy, w, h) in zip(polygons, boxes, strict=True):
            assert class_id == box_class
            assert len(coords) % 2 == 0 and len(coords) >= 6
            xs, ys = np.array(coords[0::2]), np.array(coords[1::2])
            slack = 1 / size  # the box is in whole pixels, the polygon in between them
            assert xs.min() >= cx - w / 2 - slack and xs.max() <= cx + w / 2 + slack
            assert ys.min() >= cy - h / 2 - slack and ys.max() <= cy + h / 2 + slack
            # The polygon is the shape's outline: every pixel centre inside it has the shape's colour.
            polygon = np.stack([xs, ys], axis=1) * size
            filled = _inside(polygon, *centres)
            assert filled.any()
            assert colour_mask(image, int(class_id))[filled].all()


def test_reuse_different_parameters_and_force(tmp_path: Path) -> None:
    out = tmp_path / "d"
    first = make_synthetic_yolo(out, **SMALL)
    again = make_synthetic_yolo(out, **SMALL)
    assert first.created and not again.created
    assert again.counts == SMALL
    with pytest.raises(DatasetError, match="different parameters"):
        make_synthetic_yolo(out, **{**SMALL, "train": 5})
    replaced = make_synthetic_yolo(out, force=True, **{**SMALL, "train": 5})
    assert replaced.created
    assert len(list((out / "images/train").glob("*.png"))) == 5
    assert not list(tmp_path.glob(".d.*")), "no staging directory is left behind"


def test_an_incomplete_dataset_is_not_reused(tmp_path: Path) -> None:
    out = tmp_path / "d"
    make_synthetic_yolo(out, **SMALL)
    (out / "images/val/00000.png").unlink()
    with pytest.raises(DatasetError, match="incomplete"):
        make_synthetic_yolo(out, **SMALL)
    assert make_synthetic_yolo(out, force=True, **SMALL).created


def test_a_foreign_directory_is_refused_unless_forced(tmp_path: Path) -> None:
    out = tmp_path / "d"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(DatasetError, match="not a matching dataset"):
        make_synthetic_yolo(out, **SMALL)
    assert (out / "notes.txt").exists()
    make_synthetic_yolo(out, force=True, **SMALL)
    assert not (out / "notes.txt").exists()


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"task": "pose"}, "task must be one of"),
        ({"classes": 0}, "1 to 4 classes"),
        ({"classes": 5}, "1 to 4 classes"),
        ({"val": 0}, "at least 1 val image"),
        ({"size": 16}, "between 32 and 1024"),
        ({"seed": -1}, "non-negative"),
    ],
)
def test_bad_parameters_are_refused(tmp_path: Path, kwargs: dict[str, Any], fragment: str) -> None:
    with pytest.raises(DatasetError, match=fragment):
        make_synthetic_yolo(tmp_path / "d", **{**SMALL, **kwargs})
    assert not (tmp_path / "d").exists()


# --- prepare_yolo ----------------------------------------------------------------------------------------


def user_dataset(root: Path, source: Path) -> Path:
    """A dataset laid out the way users write them: an absolute `path`, a names list, no test split."""
    for split in ("train", "val"):
        for kind in ("images", "labels"):
            target = root / kind / split
            target.mkdir(parents=True)
            for file in sorted((source / kind / split).iterdir()):
                (target / file.name).write_bytes(file.read_bytes())
    (root / "data.yaml").write_text(
        f"path: {root}\ntrain: images/train\nval: images/val\nnames: [circle, square, triangle, diamond]\n"
    )
    return root


def test_prepare_validates_in_place_without_out(tmp_path: Path, detection: Path) -> None:
    info = prepare_yolo(detection)
    assert not info.created
    assert info.root == detection
    assert info.counts == SMALL
    assert info.report is not None and info.report.background == 0


def test_prepare_copies_into_a_relocatable_tree(tmp_path: Path, detection: Path) -> None:
    source = user_dataset(tmp_path / "mine", detection)
    info = prepare_yolo(source / "data.yaml", tmp_path / "out")
    out = tmp_path / "out"
    assert info.created and info.root == out
    assert info.counts == {"train": 12, "val": 4}
    config = yaml.safe_load((out / "data.yaml").read_text())
    assert "path" not in config
    assert config["train"] == "images/train" and config["names"][3] == "diamond"
    assert tree(out / "images") == tree(source / "images")
    assert tree(out / "labels") == tree(source / "labels")
    meta = json.loads((out / "dataset.json").read_text())
    assert meta["name"] == "yolo" and meta["fingerprint"] == fingerprint(out)
    # Moved elsewhere, it still validates: nothing in it points back at where it was made.
    moved = out.rename(tmp_path / "moved")
    assert validate(moved).counts == {"train": 12, "val": 4}


def test_prepare_reports_the_validators_errors(tmp_path: Path, detection: Path) -> None:
    source = user_dataset(tmp_path / "mine", detection)
    (source / "labels/train/00003.txt").write_text("9 0.5 0.5 0.1 0.1\n")
    with pytest.raises(DatasetError, match=r"00003\.txt:1: class id 9 is out of range"):
        prepare_yolo(source, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_prepare_refuses_an_out_inside_the_dataset(tmp_path: Path, detection: Path) -> None:
    source = user_dataset(tmp_path / "mine", detection)
    with pytest.raises(DatasetError, match="inside the dataset"):
        prepare_yolo(source, source / "copy")


def test_prepare_refuses_to_overwrite_unless_forced(tmp_path: Path, detection: Path) -> None:
    source = user_dataset(tmp_path / "mine", detection)
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    with pytest.raises(DatasetError, match="already exists"):
        prepare_yolo(source, tmp_path / "out")
    assert prepare_yolo(source, tmp_path / "out", force=True).created


# --- the CLI ---------------------------------------------------------------------------------------------


def test_cli_synthetic_detection(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "det"
    argv = ["data", "synthetic", "--task", "detection", "--out", str(out), "--classes", "2"]
    counts = ["--train-per-class", "5", "--val-per-class", "2", "--test-per-class", "2"]
    assert main([*argv, *counts]) == 0
    printed = flat(capsys.readouterr().out)
    assert "wrote synthetic-yolo dataset" in printed
    assert "train=5, val=2, test=2" in printed
    assert validate(out).names == ["circle", "square"]
    assert main([*argv, *counts]) == 0
    assert "already present" in capsys.readouterr().out


def test_cli_synthetic_segmentation_defaults_to_its_own_directory(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "synthetic", "--task", "segmentation"]) == 0
    printed = flat(capsys.readouterr().out)
    assert "train=120, val=30, test=30" in printed
    assert "3 classes" in printed
    home = Path(os.environ["MLOPS_HOME"])
    assert validate(home / "data" / "synthetic-segmentation").task == "segmentation"


def test_cli_synthetic_classification_is_unchanged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cls"
    flags = ["--classes", "2", "--train-per-class", "2", "--val-per-class", "1", "--test-per-class", "1"]
    assert main(["data", "synthetic", "--out", str(out), *flags]) == 0
    assert "train=4, validation=2, test=2" in flat(capsys.readouterr().out)
    assert (out / "train" / "circle").is_dir()
    with Image.open(next((out / "train" / "circle").glob("*.png"))) as image:
        assert image.size == (32, 32)


def test_cli_yolo_prints_the_report(detection: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "yolo", str(detection)]) == 0
    printed = flat(capsys.readouterr().out)
    assert "valid YOLO dataset" in printed
    assert "train: 12 images" in printed
    assert "0=circle" in printed and "3=diamond" in printed
    assert "background images: 0" in printed


def test_cli_yolo_copies_with_out(
    tmp_path: Path, detection: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = user_dataset(tmp_path / "mine", detection)
    assert main(["data", "yolo", str(source / "data.yaml"), "--out", str(tmp_path / "out")]) == 0
    assert "copied to" in capsys.readouterr().out
    assert validate(tmp_path / "out").counts == {"train": 12, "val": 4}


def test_cli_yolo_exits_2_listing_file_and_line(
    tmp_path: Path, detection: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = user_dataset(tmp_path / "mine", detection)
    (source / "labels/val/00001.txt").write_text("0 0.5 0.5 0.1 0.1\n0 0.99 0.5 0.2 0.2\n")
    (source / "labels/train/orphan.txt").write_text("0 0.5 0.5 0.1 0.1\n")
    assert main(["data", "yolo", str(source)]) == 2
    printed = flat(capsys.readouterr().err)
    assert "2 errors" in printed
    assert "00001.txt:2:" in printed
    assert "orphan.txt:" in printed
