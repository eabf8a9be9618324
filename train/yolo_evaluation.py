"""What a YOLO run reports, beyond Ultralytics' own numbers: the metrics under our names, per-class AP
of the evaluated split, and test images with the model's boxes next to the labelled ones (W&B's sample
table). Imported by train/yolo.py after Ultralytics' offline environment is set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from train.config import TrainConfig


def box_and_mask(results: dict[str, Any], prefix: str) -> dict[str, float]:
    """Ultralytics' results_dict as our metric names: `<prefix>_map50`, `<prefix>_mask_map50_95`, ..."""
    keys = {
        "precision": "metrics/precision(B)",
        "recall": "metrics/recall(B)",
        "map50": "metrics/mAP50(B)",
        "map50_95": "metrics/mAP50-95(B)",
        "mask_map50": "metrics/mAP50(M)",
        "mask_map50_95": "metrics/mAP50-95(M)",
    }
    return {f"{prefix}_{ours}": float(results[theirs]) for ours, theirs in keys.items() if theirs in results}


def evaluate_weights(
    weights: Path, data: Path, *, split: str, imgsz: int, batch: int, device: str, runs: Path
) -> Any:
    """Ultralytics' validation of `weights` on one split of `data` (its metrics object)."""
    from ultralytics import YOLO

    return YOLO(str(weights)).val(
        data=str(data),
        split=split,
        imgsz=imgsz,
        batch=batch,
        device=device,
        project=str(runs),
        name=split,
        exist_ok=True,
        plots=False,
    )


def per_class_ap(result: Any, names: list[str], task: str) -> list[dict[str, Any]]:
    """One row per class of the evaluated split: precision, recall, AP50 and AP50-95 of its boxes (and
    of its masks for segmentation); None for a class with no labelled object in the split (Ultralytics'
    `maps` would fill that in with the mean)."""
    index = {int(c): i for i, c in enumerate(result.box.ap_class_index)}
    keys = ["precision", "recall", "ap50", "ap50_95"]
    rows = []
    for class_id, name in enumerate(names):
        row: dict[str, Any] = {"class": name}
        i = index.get(class_id)
        values = [None] * 4 if i is None else [round(float(v), 6) for v in result.box.class_result(i)]
        row.update(zip(keys, values, strict=True))
        if task == "segmentation":
            masks = [None] * 4 if i is None else [round(float(v), 6) for v in result.seg.class_result(i)]
            row.update(zip([f"mask_{k}" for k in keys], masks, strict=True))
        rows.append(row)
    return rows


def _truth(image: Path) -> list[tuple[int, float, float, float, float]]:
    """The labelled objects of a (validated) image as (class_id, x1, y1, x2, y2) in 0..1: a polygon as
    the box around its points."""
    from train.yolo_data import label_path

    labels = label_path(image)
    objects = []
    for line in labels.read_text().splitlines() if labels.is_file() else []:
        values = [float(v) for v in line.split()]
        if not values:
            continue
        class_id, coords = int(values[0]), values[1:]
        if len(coords) == 4:
            cx, cy, w, h = coords
            objects.append((class_id, cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
        else:
            xs, ys = coords[0::2], coords[1::2]
            objects.append((class_id, min(xs), min(ys), max(xs), max(ys)))
    return objects


def detection_samples(
    weights: Path, images: list[Path], *, config: TrainConfig, device: str, count: int = 16
) -> list[dict[str, Any]]:
    """The first `count` images with the model's boxes (as the endpoint answers at its default
    confidence) and the labelled ones: the sample table a reviewer scans in W&B."""
    from ultralytics import YOLO

    chosen = images[:count]
    if not chosen:
        return []
    model: Any = YOLO(str(weights))
    results = model.predict(
        [str(path) for path in chosen], imgsz=config.imgsz, device=device, verbose=False, save=False
    )
    samples = []
    for path, result in zip(chosen, results, strict=True):
        boxes = result.boxes
        predicted = [
            (*(round(float(v), 1) for v in xyxy), int(c), round(float(score), 4))
            for xyxy, c, score in zip(
                boxes.xyxy.tolist(), boxes.cls.tolist(), boxes.conf.tolist(), strict=True
            )
        ]
        rgb = result.orig_img[..., ::-1].copy()  # Ultralytics reads images as OpenCV does: BGR
        samples.append({"image": rgb, "predicted": predicted, "truth": _truth(path)})
    return samples


def evaluate_artifact(model_dir: Path, dataset: Path, *, batch: int = 16) -> dict[str, Any]:
    """`python -m train evaluate` for a detection or segmentation artifact: its model.pt (hashes checked)
    on the test split (else val) of a YOLO dataset (a directory holding data.yaml, or the file), with
    the training job's own validation, in a scratch work tree. The champion is scored this way on the
    challenger's test set. Raises ArtifactError or DataError."""
    import tempfile

    import torch

    from artifact.manifest import verify
    from train import yolo
    from train.data import DataError

    manifest = verify(model_dir)
    yaml_path = dataset if dataset.is_file() else yolo.dataset_yaml(dataset)
    if yaml_path is None:
        raise DataError(f"{dataset} holds no data.yaml: not a YOLO dataset")
    report = yolo.validate_dataset(yaml_path, manifest.task)
    if report.names != list(manifest.classes):
        raise DataError(
            f"{yaml_path} names {report.names}, the model predicts {list(manifest.classes)}: "
            "scores on other classes would compare nothing"
        )
    split = yolo.scored_split(report)
    with tempfile.TemporaryDirectory(prefix="yolo-evaluate-") as tmp:
        work = Path(tmp)
        data = yolo.workspace(report, work)
        result = evaluate_weights(
            model_dir / manifest.weights,
            data,
            split=split,
            imgsz=manifest.input_size,
            batch=batch,
            device="0" if torch.cuda.is_available() else "cpu",
            runs=work / "runs",
        )
    return {
        "metrics": box_and_mask(dict(result.results_dict), "test"),
        "images": report.counts.get(split, 0),
        "split": split,
        "fingerprint": yolo.split_fingerprint(report.split_dirs[split]),
        "classes": report.names,
        "per_class_ap": per_class_ap(result, report.names, manifest.task),
    }
