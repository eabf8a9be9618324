"""The model artifact is verified file by file before anything is loaded."""

import json

import pytest

from artifact.manifest import ArtifactError, load_manifest, verify
from tests.factories import make_model_artifact


def test_written_artifact_verifies_and_lists_every_file(tmp_path):
    manifest = make_model_artifact(tmp_path / "m")
    assert set(manifest.files) == {"model.safetensors"}
    assert verify(tmp_path / "m").classes == ["circle", "square", "triangle"]


def test_altered_weights_fail_verification(tmp_path):
    make_model_artifact(tmp_path / "m")
    weights = tmp_path / "m" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"model\.safetensors does not match its sha256"):
        verify(tmp_path / "m")


def test_missing_and_unlisted_files_fail_verification(tmp_path):
    make_model_artifact(tmp_path / "m")
    (tmp_path / "m" / "extra.pkl").write_bytes(b"x")
    with pytest.raises(ArtifactError, match=r"extra\.pkl is not listed"):
        verify(tmp_path / "m")
    (tmp_path / "m" / "extra.pkl").unlink()
    (tmp_path / "m" / "model.safetensors").unlink()
    with pytest.raises(ArtifactError, match=r"model\.safetensors is missing"):
        verify(tmp_path / "m")


def test_malformed_or_absent_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(ArtifactError, match=r"no manifest\.json"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"task": "classification"}))
    with pytest.raises(ArtifactError, match="lacks required field"):
        load_manifest(tmp_path)


def test_newer_format_is_refused_with_an_upgrade_hint(tmp_path):
    manifest = make_model_artifact(tmp_path / "m")
    data = json.loads((tmp_path / "m" / "manifest.json").read_text())
    data["format_version"] = manifest.format_version + 1
    (tmp_path / "m" / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="upgrade the serving image"):
        load_manifest(tmp_path / "m")


def test_weights_of_another_architecture_revision_are_refused_with_an_explanation(tmp_path):
    from serve.predictor import Predictor

    manifest = make_model_artifact(tmp_path / "m")
    data = json.loads((tmp_path / "m" / "manifest.json").read_text())
    data["architecture_revision"] = manifest.architecture_revision - 1
    (tmp_path / "m" / "manifest.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match=r"smallcnn revision 1, but this code builds revision 2"):
        Predictor.load(tmp_path / "m")
