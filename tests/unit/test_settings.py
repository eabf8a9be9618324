"""Settings from the environment and the versioned config file, with errors that name the fix."""

import pytest

from infra.errors import UsageError
from infra.settings import REPO_ROOT, Config, Settings, load

VALID = {
    "project": {"name": "demo"},
    "gate": {"version": 1, "min": {"test_accuracy": 0.8}, "compare": ["test_accuracy"], "tolerance": 0.01},
}


def test_the_repository_config_file_is_valid():
    config = Config.load(REPO_ROOT / "mlops.toml")
    assert config.gate.min["test_accuracy"] > 0 and config.local.hyperparameters["arch"] == "smallcnn"


def test_settings_come_from_a_mapping():
    settings = Settings.load({"MLOPS_HOME": "/tmp/x", "MLOPS_ENDPOINT_PORT": "9000", "OTHER": "1"})
    assert str(settings.home) == "/tmp/x" and settings.endpoint_port == 9000


def test_a_bad_setting_names_the_variable():
    with pytest.raises(UsageError, match="MLOPS_ENDPOINT_PORT"):
        Settings.load({"MLOPS_ENDPOINT_PORT": "eighty"})


def test_gate_metrics_must_be_ones_the_trainer_reports():
    bad = {**VALID, "gate": {**VALID["gate"], "min": {"test_acc": 0.8}}}
    with pytest.raises(UsageError, match=r"\[gate.min\].*unknown metric\(s\) test_acc"):
        Config.from_mapping(bad, source="mlops.toml")


def test_unknown_sections_and_bad_default_hyperparameters_are_refused():
    with pytest.raises(UsageError, match="gaet"):
        Config.from_mapping({**VALID, "gaet": {}}, source="mlops.toml")
    with pytest.raises(UsageError, match=r"\[local.hyperparameters\] unknown hyperparameter 'epoch'"):
        Config.from_mapping({**VALID, "local": {"hyperparameters": {"epoch": 3}}}, source="mlops.toml")


def test_config_file_errors_are_one_line(tmp_path):
    with pytest.raises(UsageError, match="not found"):
        Config.load(tmp_path / "absent.toml")
    (tmp_path / "bad.toml").write_text("[gate\n")
    with pytest.raises(UsageError, match="not valid TOML"):
        Config.load(tmp_path / "bad.toml")


def test_project_name_override_is_validated(tmp_path):
    path = tmp_path / "mlops.toml"
    path.write_text('[project]\nname = "demo"\n[gate]\nversion = 1\n')
    _settings, config = load({"MLOPS_CONFIG": str(path), "MLOPS_PROJECT": "team-a"})
    assert config.project.name == "team-a"
    with pytest.raises(UsageError, match="MLOPS_PROJECT"):
        load({"MLOPS_CONFIG": str(path), "MLOPS_PROJECT": "bad name!"})
