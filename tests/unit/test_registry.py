"""The local registry: numbered versions, verified copies, atomic index writes, rollback history."""

import json
import threading

import pytest

from infra.errors import UsageError
from infra.local import files
from infra.local.registry import APPROVED, REJECTED, LocalRegistry
from tests.factories import make_model_artifact


@pytest.fixture
def artifact(tmp_path):
    make_model_artifact(tmp_path / "job-model", metrics={"test_accuracy": 0.91, "test_loss": 0.3})
    return tmp_path / "job-model"


def test_versions_are_numbered_and_carry_metrics_hashes_and_gate(tmp_path, artifact):
    registry = LocalRegistry(tmp_path / "reg")
    v1 = registry.register(artifact, source_job="job-a", status=APPROVED, gate={"passed": True})
    v2 = registry.register(artifact, source_job="job-b", status=REJECTED, gate={"passed": False})
    assert (v1.version, v2.version) == (1, 2)
    assert v1.metrics["test_accuracy"] == 0.91 and "model.safetensors" in v1.files
    assert (v1.model_dir / "model.safetensors").is_file() and v1.model_dir != artifact
    assert [v.status for v in registry.versions()] == [APPROVED, REJECTED]
    assert registry.production() is None


def test_a_tampered_artifact_is_refused_and_nothing_is_recorded(tmp_path, artifact):
    (artifact / "model.safetensors").write_bytes(b"not the weights")
    registry = LocalRegistry(tmp_path / "reg")
    with pytest.raises(UsageError, match="cannot register"):
        registry.register(artifact, source_job="job", status=APPROVED, gate=None)
    assert registry.versions() == []


def test_a_crash_while_writing_the_index_loses_nothing(tmp_path, artifact, monkeypatch):
    registry = LocalRegistry(tmp_path / "reg")
    registry.register(artifact, source_job="job-a", status=APPROVED, gate=None)
    before = registry.index_path.read_text()

    def crash(*_args):
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", crash)
    with pytest.raises(OSError, match="disk full"):
        registry.register(artifact, source_job="job-b", status=APPROVED, gate=None)
    monkeypatch.undo()
    assert registry.index_path.read_text() == before  # the index is the old one, whole
    assert not list(registry.index_path.parent.glob(".registry.json.*"))  # no temporary left behind
    again = registry.register(artifact, source_job="job-c", status=APPROVED, gate=None)
    assert again.version == 3  # the orphaned v2 directory is never reused
    assert [v.version for v in registry.versions()] == [1, 3]


def test_concurrent_registrations_get_distinct_versions(tmp_path, artifact):
    registry = LocalRegistry(tmp_path / "reg")
    errors = []

    def register(i):
        try:
            registry.register(artifact, source_job=f"job-{i}", status=APPROVED, gate=None)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=register, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(v.version for v in registry.versions()) == [1, 2, 3, 4, 5, 6]
    assert json.loads(registry.index_path.read_text())["versions"][0]["version"] == 1


def test_rollback_target_walks_back_through_production_history(tmp_path, artifact):
    registry = LocalRegistry(tmp_path / "reg")
    for i in range(3):
        registry.register(artifact, source_job=f"job-{i}", status=APPROVED, gate=None)
    assert registry.previous_production() is None
    for version in (1, 2, 3):
        registry.set_production(version, "deploy")
    assert registry.previous_production() == 2
    registry.set_production(2, "rollback")
    assert registry.production().version == 2
    assert registry.previous_production() == 1  # a second rollback goes further back, not forth to v3
    registry.set_production(1, "rollback")
    assert registry.previous_production() is None


def test_unknown_version_names_the_known_ones(tmp_path, artifact):
    registry = LocalRegistry(tmp_path / "reg")
    registry.register(artifact, source_job="job", status=APPROVED, gate=None)
    with pytest.raises(UsageError, match=r"v7 is not in the registry \(known: v1\)"):
        registry.get(7)


def test_a_failed_version_is_rejected_with_its_reason_and_skipped_by_rollback(tmp_path, artifact):
    registry = LocalRegistry(tmp_path / "reg")
    for i in range(3):
        registry.register(artifact, source_job=f"job-{i}", status=APPROVED, gate=None)
        registry.set_production(i + 1, "deploy")
    failed = registry.mark_failed(2, "verify", "HTTP 500: internal error")
    assert (failed.status, failed.state, failed.failure["reason"]) == (
        "Rejected",
        "Rejected (verify failed)",
        "HTTP 500: internal error",
    )
    assert registry.get(2).failure["stage"] == "verify"  # persisted
    assert registry.previous_production() == 1  # v2 served before v3, but failed since


def test_taking_the_endpoint_down_is_recorded(tmp_path, artifact):
    registry = LocalRegistry(tmp_path / "reg")
    registry.register(artifact, source_job="job", status=APPROVED, gate=None)
    registry.set_production(1, "deploy")
    registry.set_production(None, "down", "v1 failed its verify")
    assert registry.production() is None
    assert [(e.version, e.action, e.previous) for e in registry.events()] == [
        (1, "deploy", None),
        (None, "down", 1),
    ]
