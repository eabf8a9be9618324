"""The serving program's performance settings: batching, threads, memory layout."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from serve import predictor, server
from tests.factories import make_model_artifact


def test_layout_names_are_the_predictors_own() -> None:
    assert server.LAYOUTS == predictor.LAYOUTS


def test_batching_and_layout_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLOPS_BATCH_MAX_SIZE", "16")
    monkeypatch.setenv("MLOPS_BATCH_MAX_WAIT_MS", "0")
    monkeypatch.setenv("MLOPS_DECODE_THREADS", "3")
    monkeypatch.setenv("MLOPS_LAYOUT", "Channels_Last")
    settings = server.parse_settings(["--port", "1"])
    assert (settings.batch_max_size, settings.batch_max_wait_ms) == (16, 0)
    assert settings.decode_threads == 3
    assert settings.layout == "channels_last"


def test_defaults_batch_and_time_the_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MLOPS_BATCH_MAX_SIZE", "MLOPS_BATCH_MAX_WAIT_MS", "MLOPS_DECODE_THREADS", "MLOPS_LAYOUT"):
        monkeypatch.delenv(name, raising=False)
    settings = server.parse_settings(["--port", "1"])
    assert settings.batch_max_size == server.DEFAULT_BATCH_SIZE > 1
    assert settings.batch_max_wait_ms == server.DEFAULT_BATCH_WAIT_MS
    assert settings.layout == "auto"


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("MLOPS_BATCH_MAX_SIZE", "0", "MLOPS_BATCH_MAX_SIZE='0' must be an integer >= 1"),
        ("MLOPS_BATCH_MAX_WAIT_MS", "-1", "MLOPS_BATCH_MAX_WAIT_MS='-1' must be an integer >= 0"),
        ("MLOPS_LAYOUT", "nhwc", "MLOPS_LAYOUT='nhwc' must be one of auto, channels_last, contiguous"),
    ],
)
def test_a_bad_value_is_a_usage_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], name: str, value: str, needle: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SystemExit) as exit_info:
        server.parse_settings(["--port", "1"])
    assert exit_info.value.code == 2
    assert needle in capsys.readouterr().err


def test_available_cores_never_exceeds_the_affinity_mask() -> None:
    assert 1 <= server.available_cores() <= len(os.sched_getaffinity(0))


def test_cgroup_quota_caps_the_cores(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    real_path = server.Path

    def fake_path(name: str) -> Path:
        return tmp_path / "cpu.max" if name == "/sys/fs/cgroup/cpu.max" else real_path(name)

    (tmp_path / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs: two threads, not the host's many
    monkeypatch.setattr(server, "Path", fake_path)
    monkeypatch.setattr(server.os, "sched_getaffinity", lambda _pid: set(range(64)))
    assert server.available_cores() == 2
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert server.available_cores() == 64


@pytest.mark.parametrize("layout", ["channels_last", "contiguous", "auto"])
def test_every_layout_predicts_the_same(tmp_path: Path, layout: str) -> None:
    make_model_artifact(tmp_path / "m", classes=("a", "b", "c", "d"))
    model = predictor.Predictor.load(tmp_path / "m")
    images = list(np.random.default_rng(3).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8))
    before = model.predict(images, top_k=4)
    chosen = model.use_layout(layout)
    assert chosen in ("channels_last", "contiguous")
    after = model.predict(images, top_k=4)
    for one, other in zip(before, after, strict=True):
        # Value by value: random weights leave near-ties that another layout's rounding may reorder.
        assert dict(other) == pytest.approx(dict(one), abs=1e-5)
