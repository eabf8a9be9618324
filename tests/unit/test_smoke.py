"""Smoke tests read the answers of both task families: a classifier's top-k, a detector's boxes."""

from __future__ import annotations

from pathlib import Path

from infra.smoke import Sample, held_out_samples, smoke_test

CLASSES = ["circle", "square", "triangle"]


def box(label: str, score: float) -> dict:
    return {"box": [1.0, 2.0, 30.0, 40.0], "score": score, "label": label, "class_id": CLASSES.index(label)}


def test_a_detector_is_judged_by_its_best_box_and_nothing_found_on_a_background_is_right():
    answers = iter(
        [
            {"predictions": [{"boxes": [box("square", 0.4), box("circle", 0.9)]}]},
            {"predictions": [{"boxes": []}]},
        ]
    )
    samples = [Sample(b"a", "image/png", "circle"), Sample(b"b", "image/png", "")]
    result = smoke_test(lambda body, ct: (200, next(answers)), samples, CLASSES)
    assert result["ok"] and result["accuracy"] == 1.0


def test_a_malformed_box_or_an_unknown_label_fails_the_smoke_test():
    bad = {"predictions": [{"boxes": [{"box": [1, 2, 3], "score": 0.5, "label": "circle"}]}]}
    alien = {"predictions": [{"boxes": [{"box": [1, 2, 3, 4], "score": 0.5, "label": "dragon"}]}]}
    for answer, text in ((bad, "malformed answer"), (alien, "unknown label 'dragon'")):
        result = smoke_test(
            lambda body, ct, a=answer: (200, a), [Sample(b"x", "image/png", "circle")], CLASSES
        )
        assert not result["ok"] and text in result["errors"][0]


def test_held_out_samples_of_a_yolo_dataset_come_from_its_test_images_with_their_first_label(tmp_path: Path):
    (tmp_path / "data.yaml").write_text(
        "train: images/train\nval: images/val\ntest: images/test\nnames: [a]\n"
    )
    images, labels = tmp_path / "images" / "test", tmp_path / "labels" / "test"
    images.mkdir(parents=True)
    labels.mkdir(parents=True)
    for name in ("0001", "0002"):
        (images / f"{name}.png").write_bytes(b"png")
    (labels / "0001.txt").write_text("2 0.5 0.5 0.2 0.2\n0 0.1 0.1 0.1 0.1\n")
    samples = held_out_samples(tmp_path, 5, CLASSES)
    assert [(s.label, s.content_type) for s in samples] == [("triangle", "image/png"), ("", "image/png")]
