"""Model artifact manifest: what the model is, how to feed it, and the sha256 of every file.

Layout of a model directory (tarred as model.tar.gz for SageMaker):

    manifest.json        this manifest (not hashed: it holds the hashes)
    model.safetensors    weights (torchvision models)
    evaluation.json      final test evaluation (metrics, per-class accuracy, confusion matrix)

`verify()` is what serving calls before it loads anything: a missing, altered or unlisted file stops it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1
_CHUNK = 1 << 20


class ArtifactError(Exception):
    """The model directory is missing, malformed, or does not match its manifest."""


@dataclass
class Manifest:
    task: str
    architecture: str
    classes: list[str]
    input_size: int
    mean: list[float]
    std: list[float]
    weights: str = "model.safetensors"
    metrics: dict[str, float] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    code_version: str = "unknown"
    wandb: dict[str, Any] | None = None
    dataset: dict[str, Any] | None = None
    created_at: str = ""
    files: dict[str, str] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    architecture_revision: int | None = None  # None: written before revisions were recorded

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        known = set(cls.__dataclass_fields__)
        missing = [
            k for k in ("task", "architecture", "classes", "input_size", "mean", "std") if k not in data
        ]
        if missing:
            raise ArtifactError(f"{MANIFEST_NAME} lacks required field(s): {', '.join(missing)}")
        if data.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
            raise ArtifactError(
                f"{MANIFEST_NAME} has format_version {data['format_version']}; "
                f"this code reads up to {FORMAT_VERSION}: upgrade the serving image"
            )
        return cls(**{k: v for k, v in data.items() if k in known})


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _payload_files(model_dir: Path) -> list[str]:
    return sorted(
        p.relative_to(model_dir).as_posix()
        for p in model_dir.rglob("*")
        if p.is_file() and p.name != MANIFEST_NAME
    )


def write_manifest(model_dir: Path, manifest: Manifest) -> Manifest:
    """Hash every file in `model_dir`, record the hashes and write the manifest atomically."""
    if not (model_dir / manifest.weights).is_file():
        raise ArtifactError(f"weights file {manifest.weights} is not in {model_dir}")
    manifest.files = {rel: sha256_file(model_dir / rel) for rel in _payload_files(model_dir)}
    tmp = model_dir / f".{MANIFEST_NAME}.tmp"
    tmp.write_text(manifest.to_json())
    tmp.replace(model_dir / MANIFEST_NAME)
    return manifest


def load_manifest(model_dir: Path) -> Manifest:
    path = model_dir / MANIFEST_NAME
    if not path.is_file():
        raise ArtifactError(f"no {MANIFEST_NAME} in {model_dir}: not a model artifact")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise ArtifactError(f"{path} must hold a JSON object")
    return Manifest.from_dict(data)


def verify(model_dir: Path) -> Manifest:
    """Load the manifest and check every file against its sha256; raise ArtifactError on any mismatch."""
    manifest = load_manifest(model_dir)
    problems: list[str] = []
    if manifest.weights not in manifest.files:
        problems.append(f"weights {manifest.weights} are not listed in the manifest")
    for rel, expected in sorted(manifest.files.items()):
        path = model_dir / rel
        if not path.is_file():
            problems.append(f"{rel} is missing")
        elif sha256_file(path) != expected:
            problems.append(f"{rel} does not match its sha256 (altered or corrupt)")
    unlisted = sorted(set(_payload_files(model_dir)) - set(manifest.files))
    problems.extend(f"{rel} is not listed in the manifest" for rel in unlisted)
    if problems:
        raise ArtifactError(f"model artifact {model_dir} failed verification: " + "; ".join(problems))
    return manifest
