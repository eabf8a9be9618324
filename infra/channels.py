"""The training job's input channels for a dataset, on both platforms.

ImageFolder (classification)  train/ validation/ test/ -> one channel per split
YOLO layout (detection, seg.) data.yaml, images/, labels/ -> one `train` channel holding the whole
                              dataset: its data.yaml names the splits, as Ultralytics reads it
"""

from __future__ import annotations

from pathlib import Path

SPLITS = ("train", "validation", "test")
YOLO_FILE = "data.yaml"


def is_yolo(data: Path) -> bool:
    return (Path(data) / YOLO_FILE).is_file()


def channel_dirs(data: Path) -> dict[str, Path]:
    """channel name -> the local directory it carries."""
    data = Path(data)
    return {"train": data} if is_yolo(data) else {split: data / split for split in SPLITS}


def channel_prefixes(data: Path, uri: str) -> dict[str, str]:
    """channel name -> its S3 prefix, for a dataset uploaded from `data` to `uri`."""
    base = uri if uri.endswith("/") else uri + "/"
    return {"train": base} if is_yolo(data) else {split: f"{base}{split}/" for split in SPLITS}
