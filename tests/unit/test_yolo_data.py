"""The YOLO dataset validator the training program runs on its channel: every problem named by file:line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from infra.datasets import fingerprint as infra_fingerprint
from infra.datasets import make_synthetic_yolo
from train.yolo_data import MAX_SHOWN, YoloDataError, fingerprint, label_path, validate

YAML = "train: images/train\nval: images/val\nnames:\n  0: cat\n  1: dog\n"
BOX = "0 0.5 0.5 0.2 0.2\n"


def build(
    root: Path,
    *,
    train: dict[str, str | None] | None = None,
    val: dict[str, str | None] | None = None,
    yaml_text: str = YAML,
) -> Path:
    """A tiny YOLO dataset: {image stem: label text, or None for no label file} per split."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "data.yaml").write_text(yaml_text)
    splits = {
        "train": train if train is not None else {"a": BOX},
        "val": val if val is not None else {"b": BOX},
    }
    for split, items in splits.items():
        (root / "images" / split).mkdir(parents=True, exist_ok=True)
        (root / "labels" / split).mkdir(parents=True, exist_ok=True)
        for stem, text in items.items():
            Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(root / "images" / split / f"{stem}.png")
            if text is not None:
                (root / "labels" / split / f"{stem}.txt").write_text(text)
    return root


def errors_of(root: Path, task: str | None = None) -> list[str]:
    return validate(root, task=task, raise_on_error=False).errors


def test_a_synthetic_dataset_passes_with_its_counts(tmp_path: Path) -> None:
    root = tmp_path / "shapes"
    make_synthetic_yolo(root, train=6, val=2, test=3)
    report = validate(root)
    assert report.errors == []
    assert report.counts == {"train": 6, "val": 2, "test": 3}
    assert report.names == ["circle", "square", "triangle"]
    lines = sum(len(p.read_text().splitlines()) for p in (root / "labels").rglob("*.txt"))
    assert sum(report.instances.values()) == lines == sum(s.instances for s in report.splits.values())
    assert report.background == 0
    assert report.task == "detection"


def test_the_yaml_file_itself_can_be_given(tmp_path: Path) -> None:
    root = build(tmp_path / "d")
    assert validate(root / "data.yaml").counts == validate(root).counts == {"train": 1, "val": 1}


def test_images_without_labels_are_background_not_errors(tmp_path: Path) -> None:
    root = build(tmp_path / "d", train={"a": BOX, "none": None, "empty": ""})
    report = validate(root)
    assert report.splits["train"].images == 3
    assert report.splits["train"].background == 2
    assert report.background == 2
    assert report.instances == {"cat": 2, "dog": 0}


def test_names_as_a_list_or_a_mapping_are_the_same(tmp_path: Path) -> None:
    listed = build(tmp_path / "list", yaml_text="train: images/train\nval: images/val\nnames: [cat, dog]\n")
    mapped = build(tmp_path / "map")
    assert validate(listed).names == validate(mapped).names == ["cat", "dog"]


def test_a_relative_path_key_is_read_against_the_yaml(tmp_path: Path) -> None:
    build(tmp_path / "data")
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "data.yaml").write_text("path: ../data\n" + YAML)
    assert validate(tmp_path / "conf" / "data.yaml").root == (tmp_path / "data").resolve()


def test_segmentation_polygons_are_counted(tmp_path: Path) -> None:
    root = build(tmp_path / "d", train={"a": "1 0.1 0.1 0.9 0.1 0.5 0.9\n"}, val={"b": "0 0 0 1 0 1 1 0 1\n"})
    report = validate(root, task="segmentation")
    assert report.task == "segmentation"
    assert report.splits["train"].polygons == 1
    assert report.instances == {"cat": 1, "dog": 1}


def test_a_class_id_out_of_range_names_file_and_line(tmp_path: Path) -> None:
    root = build(tmp_path / "d", train={"a": BOX + "2 0.5 0.5 0.1 0.1\n"})
    (error,) = errors_of(root)
    assert error.startswith(f"{root / 'labels/train/a.txt'}:2: ")
    assert "class id 2 is out of range" in error


def test_a_box_outside_the_image_is_reported(tmp_path: Path) -> None:
    root = build(tmp_path / "d", val={"b": "0 0.95 0.5 0.2 0.2\n"})
    (error,) = errors_of(root)
    assert error.startswith(f"{root / 'labels/val/b.txt'}:1: ")
    assert "outside the image" in error


def test_a_box_a_hair_outside_is_tolerated(tmp_path: Path) -> None:
    root = build(tmp_path / "d", train={"a": "0 0.9 0.5 0.2000004 0.2\n"})
    assert errors_of(root) == []


@pytest.mark.parametrize(
    ("line", "fragment"),
    [
        ("0 0.1 0.1 0.2 0.2 0.3\n", "odd number of polygon coordinates (5)"),
        ("0 0.1 0.1 0.2 0.2 0.3 0.3 0.4\n", "odd number of polygon coordinates (7)"),
        ("0 0.1 0.1\n", "at least 3 points"),
        ("0 0.1 0.1 1.5 0.2 0.3 0.3\n", "polygon point coordinate 1.5 is outside"),
        ("cat 0.5 0.5 0.1 0.1\n", "not numbers"),
        ("0.5 0.5 0.5 0.1 0.1\n", "class id 0.5 is not an integer"),
        ("0 0.5 0.5 0 0.1\n", "no area"),
        ("0 nan 0.5 0.1 0.1\n", "non-finite"),
    ],
)
def test_malformed_label_lines_are_reported_with_their_line(tmp_path: Path, line: str, fragment: str) -> None:
    root = build(tmp_path / "d", train={"a": "\n" + BOX + line})
    (error,) = errors_of(root)
    assert error.startswith(f"{root / 'labels/train/a.txt'}:3: ")
    assert fragment in error


def test_segmentation_refuses_box_lines(tmp_path: Path) -> None:
    root = build(tmp_path / "d")
    errors = errors_of(root, task="segmentation")
    assert len(errors) == 2
    assert all("segmentation needs a polygon" in e for e in errors)
    assert validate(root, task="detection").errors == []


def test_an_unreadable_image_is_reported(tmp_path: Path) -> None:
    root = build(tmp_path / "d", train={"a": BOX, "broken": BOX})
    (root / "images/train/broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (error,) = errors_of(root)
    assert error.startswith(f"{root / 'images/train/broken.png'}: not a readable image")


def test_a_label_file_without_an_image_is_reported(tmp_path: Path) -> None:
    root = build(tmp_path / "d")
    (root / "labels/val/ghost.txt").write_text(BOX)
    (error,) = errors_of(root)
    assert error.startswith(f"{root / 'labels/val/ghost.txt'}: a label file without an image")


def test_bad_yaml_names_the_line(tmp_path: Path) -> None:
    root = build(tmp_path / "d", yaml_text="train: images/train\nval: [images/val\nnames: [a]\n")
    (error,) = errors_of(root)
    assert error.startswith(f"{root / 'data.yaml'}:")
    assert "not valid YAML" in error
    with pytest.raises(YoloDataError, match="not valid YAML"):
        validate(root)


@pytest.mark.parametrize(
    ("yaml_text", "fragment"),
    [
        ("train: images/train\nval: images/val\n", "'names' is missing"),
        ("train: images/train\nval: images/val\nnames: []\n", "'names' is empty"),
        ("train: images/train\nval: images/val\nnames: {0: a, 2: b}\n", "without gaps"),
        ("train: images/train\nval: images/val\nnames: [a, b]\nnc: 3\n", "'nc' is 3 but 'names' lists 2"),
        ("train: images/train\nnames: [a, b]\n", "'val' is missing"),
        ("train: images/nowhere\nval: images/val\nnames: [a, b]\n", "'train' directory 'images/nowhere'"),
        ("- just\n- a list\n", "expected a mapping"),
    ],
)
def test_configuration_problems_name_the_yaml(tmp_path: Path, yaml_text: str, fragment: str) -> None:
    root = build(tmp_path / "d", yaml_text=yaml_text)
    errors = errors_of(root)
    assert errors, yaml_text
    assert any(e.startswith(f"{root / 'data.yaml'}: ") and fragment in e for e in errors), errors


def test_a_missing_data_yaml_is_reported(tmp_path: Path) -> None:
    with pytest.raises(YoloDataError, match="no such file"):
        validate(tmp_path)


def test_the_error_list_is_capped_but_kept_whole(tmp_path: Path) -> None:
    bad = "".join("7 0.5 0.5 0.1 0.1\n" for _ in range(MAX_SHOWN + 10))
    root = build(tmp_path / "d", train={"a": bad})
    with pytest.raises(YoloDataError) as caught:
        validate(root)
    assert len(caught.value.errors) == MAX_SHOWN + 10
    message = str(caught.value)
    assert f"({MAX_SHOWN + 10} errors)" in message
    assert f"a.txt:{MAX_SHOWN}:" in message
    assert f"a.txt:{MAX_SHOWN + 1}:" not in message
    assert message.endswith("... and 10 more")


def test_the_fingerprint_is_the_one_infra_records(tmp_path: Path) -> None:
    root = tmp_path / "shapes"
    make_synthetic_yolo(root, train=3, val=1, test=1)
    before = fingerprint(root)
    assert before == infra_fingerprint(root)
    (root / "dataset.json").write_text("{}")  # the record is not part of what it records
    assert fingerprint(root) == before
    (root / "labels/train/00000.txt").write_text(BOX)
    assert fingerprint(root) != before


def test_labels_live_where_ultralytics_looks_for_them() -> None:
    assert label_path(Path("/d/images/train/x.png")) == Path("/d/labels/train/x.txt")
    assert label_path(Path("/images/d/images/val/sub/y.jpg")) == Path("/images/d/labels/val/sub/y.txt")
