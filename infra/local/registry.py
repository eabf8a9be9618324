"""The local model registry: numbered versions with metrics, hashes, W&B run, gate decision and status.

Layout under `<home>/registry/`:

    registry.json        index: versions (with a `failure` once a deploy or verification failed), which
                         one is in production, and the production history (`infra.history` events)
    models/v1/ ...       each version's model artifact, copied and verified at registration

Registration copies into a temporary directory, verifies every hash, then renames it into place and
only then records it in the index (atomic write, under a lock): a crash at any point loses nothing and
never leaves an index entry without its files.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

from artifact.manifest import ArtifactError, verify
from infra.errors import UsageError
from infra.history import ProductionEvent, now_iso, rollback_target
from infra.local.files import locked, read_json, write_json_atomic
from infra.platform import ModelVersion

APPROVED, REJECTED, PENDING = "Approved", "Rejected", "PendingManualApproval"


class LocalRegistry:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.index_path = root / "registry.json"
        self.models = root / "models"
        self._lock = root / ".lock"

    def _read(self) -> dict[str, Any]:
        data: dict[str, Any] = read_json(self.index_path, {"versions": [], "production": None, "history": []})
        return data

    def _to_version(self, entry: dict[str, Any]) -> ModelVersion:
        return ModelVersion(
            version=entry["version"],
            status=entry["status"],
            metrics=entry["metrics"],
            model_dir=self.models / f"v{entry['version']}",
            created_at=entry["created_at"],
            source_job=entry["source_job"],
            code_version=entry["code_version"],
            wandb=entry.get("wandb"),
            gate=entry.get("gate"),
            files=entry.get("files", {}),
            failure=entry.get("failure"),
        )

    def versions(self) -> list[ModelVersion]:
        return [self._to_version(e) for e in self._read()["versions"]]

    def get(self, version: int) -> ModelVersion:
        for entry in self._read()["versions"]:
            if entry["version"] == version:
                return self._to_version(entry)
        known = ", ".join(f"v{e['version']}" for e in self._read()["versions"]) or "none"
        raise UsageError(f"model version v{version} is not in the registry (known: {known})")

    def production(self) -> ModelVersion | None:
        current = self._read()["production"]
        return None if current is None else self.get(current)

    def history(self) -> list[dict[str, Any]]:
        return list(self._read()["history"])

    def register(
        self, model_dir: Path, *, source_job: str, status: str, gate: dict[str, Any] | None
    ) -> ModelVersion:
        if status not in (APPROVED, REJECTED, PENDING):
            raise UsageError(f"status {status!r} is not one of {APPROVED}, {REJECTED}, {PENDING}")
        try:
            manifest = verify(model_dir)
        except ArtifactError as exc:
            raise UsageError(f"cannot register: {exc}") from None
        self.models.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.models))
        try:
            shutil.copytree(model_dir, staging, dirs_exist_ok=True)
            verify(staging)  # the copy, not just the source, must match the manifest
            with locked(self._lock):
                index = self._read()
                # A crash between the rename and the index write leaves an orphan vN directory: never reuse N.
                on_disk = [int(p.name[1:]) for p in self.models.glob("v*") if p.name[1:].isdigit()]
                number = max([e["version"] for e in index["versions"]] + on_disk, default=0) + 1
                staging.rename(self.models / f"v{number}")
                entry = {
                    "version": number,
                    "status": status,
                    "metrics": manifest.metrics,
                    "created_at": now_iso(),
                    "source_job": source_job,
                    "code_version": manifest.code_version,
                    "wandb": manifest.wandb,
                    "gate": gate,
                    "files": manifest.files,
                    "architecture": manifest.architecture,
                    "classes": manifest.classes,
                    "dataset": manifest.dataset,
                }
                index["versions"].append(entry)
                write_json_atomic(self.index_path, index)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        return self._to_version(entry)

    def set_production(self, version: int | None, action: str, reason: str = "") -> None:
        """Record that `version` now serves (after the endpoint switched), or that nothing does (None)."""
        with locked(self._lock):
            index = self._read()
            if version is not None and not any(e["version"] == version for e in index["versions"]):
                raise UsageError(f"model version v{version} is not in the registry")
            event = ProductionEvent(version, action, now_iso(), index["production"], reason)
            index["history"].append(event.to_dict())
            index["production"] = version
            write_json_atomic(self.index_path, index)

    def mark_failed(self, version: int, stage: str, reason: str) -> ModelVersion:
        """A version whose deploy or verification failed: Rejected, with what failed, when and why."""
        with locked(self._lock):
            index = self._read()
            entry = next((e for e in index["versions"] if e["version"] == version), None)
            if entry is None:
                raise UsageError(f"model version v{version} is not in the registry")
            entry["status"] = REJECTED
            entry["failure"] = {"stage": stage, "reason": reason, "at": now_iso()}
            write_json_atomic(self.index_path, index)
        return self._to_version(entry)

    def events(self) -> list[ProductionEvent]:
        return [ProductionEvent.from_dict(e) for e in self._read()["history"]]

    def previous_production(self) -> int | None:
        """The version a rollback returns to (`infra.history.rollback_target`): Approved ones only."""
        index = self._read()
        approved = {e["version"] for e in index["versions"] if e["status"] == APPROVED}
        return rollback_target(self.events(), index["production"], approved.__contains__)
