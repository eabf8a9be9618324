"""Build image-classification datasets in ImageFolder layout: ``root/<split>/<class>/<file>.png``.

Three sources, one pipeline:

1. decide: if ``out`` already holds a dataset whose ``dataset.json`` matches the request, reuse it;
   if it holds anything else, refuse unless ``force``.
2. source: ``make_synthetic`` renders shapes with numpy from a seed; ``prepare_cifar10`` reads the
   official *binary* CIFAR-10 archive (downloaded and cached, or given), verifying its md5 and
   reading tar members in memory, so nothing from the archive is ever extracted or unpickled;
   ``write_digits`` takes scikit-learn's bundled handwritten digits (a small real dataset, offline).
3. write: PNGs are encoded in a thread pool into a hidden temporary sibling of ``out``.
4. record: ``dataset.json`` gets parameters, classes, counts and a content fingerprint.
5. install: the temporary directory is renamed to ``out``; an interrupted run leaves ``out`` untouched.

Nothing runs at import time.

The stages live in ``common`` (decide, write, record, install), ``synthetic``, ``cifar10`` and ``digits``
(source);
this module re-exports the public API.
"""

from infra.datasets.cifar10 import CIFAR10_ARCHIVE_NAME, CIFAR10_MD5, CIFAR10_URL, prepare_cifar10
from infra.datasets.common import (
    GENERATOR_VERSION,
    METADATA_FILE,
    SPLITS,
    DatasetError,
    DatasetInfo,
    Progress,
    fingerprint,
    read_metadata,
)
from infra.datasets.digits import DIGITS_CLASSES, write_digits
from infra.datasets.synthetic import SYNTHETIC_CLASSES, make_synthetic, render_shape
from infra.datasets.yolo import YOLO_SHAPES, YOLO_TASKS, YoloDatasetInfo, make_synthetic_yolo, prepare_yolo

__all__ = [
    "CIFAR10_ARCHIVE_NAME",
    "CIFAR10_MD5",
    "CIFAR10_URL",
    "DIGITS_CLASSES",
    "GENERATOR_VERSION",
    "METADATA_FILE",
    "SPLITS",
    "SYNTHETIC_CLASSES",
    "YOLO_SHAPES",
    "YOLO_TASKS",
    "DatasetError",
    "DatasetInfo",
    "Progress",
    "YoloDatasetInfo",
    "fingerprint",
    "make_synthetic",
    "make_synthetic_yolo",
    "prepare_cifar10",
    "prepare_yolo",
    "read_metadata",
    "render_shape",
    "write_digits",
]
