"""`mlops batch-predict --local`: the real serve program on a free port, a folder of images scored
through it over real HTTP, the JSON Lines file written, the server stopped afterwards whatever happens."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra.cli import main
from infra.local.registry import LocalRegistry
from tests.factories import make_model_artifact, png_bytes

CLASSES = ("circle", "square", "triangle")


def registered(home: Path, *, production: bool = True) -> Path:
    """A tiny real model registered as v1 (and put in production): its registry model dir."""
    source = home / "trained"
    make_model_artifact(source, classes=CLASSES)
    registry = LocalRegistry(home / "registry")
    version = registry.register(source, source_job="job-1", status="Approved", gate=None)
    if production:
        registry.set_production(version.version, "deploy")
    return version.model_dir


def folder(root: Path) -> Path:
    """Four PNGs (one in a subfolder, one a JPEG name), a corrupt image and a text file."""
    (root / "b").mkdir(parents=True)
    for name, seed in (("c.png", 1), ("a.png", 2), ("b/d.png", 3), ("e.JPG", 4)):
        (root / name).write_bytes(png_bytes(seed=seed))
    (root / "b" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not the rest of a PNG")
    (root / "notes.txt").write_text("not an image")
    return root


def servers_of(model_dir: Path) -> list[int]:
    """Pids of running processes whose command line names `model_dir` (the batch's serve program)."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if str(model_dir).encode() in cmdline.read_bytes():
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture
def home() -> Path:
    import os

    return Path(os.environ["MLOPS_HOME"])


def test_a_folder_is_scored_in_path_order_and_a_corrupt_image_is_reported_not_fatal(home, tmp_path, capsys):
    model_dir = registered(home)
    out = tmp_path / "out" / "predictions.jsonl"

    code = main(["batch-predict", "--local", "--input", str(folder(tmp_path / "in")), "--output", str(out)])

    captured = capsys.readouterr()
    assert code == 1, captured.err  # one image failed
    records = lines(out)
    assert [r["image"] for r in records] == ["a.png", "b/broken.png", "b/d.png", "c.png", "e.JPG"]
    broken = records[1]
    assert broken["status"] == 400 and "PNG or JPEG" in broken["error"] and "predictions" not in broken
    for record in (r for r in records if r["image"] != "b/broken.png"):
        [prediction] = record["predictions"]
        assert {p["label"] for p in prediction["top_k"]} <= set(CLASSES)
        assert record["model"]["architecture"] == "smallcnn"
    assert "notes.txt" in captured.out and "skipped 1 file" in captured.out
    assert "scored 4, failed 1 of 5 images" in captured.out
    assert "MaxConcurrentTransforms" in captured.out  # the default concurrency came from the server
    assert "b/broken.png" in captured.err
    assert servers_of(model_dir) == []  # the serve program was stopped
    assert [p.name for p in out.parent.iterdir()] == ["predictions.jsonl"]  # no temporary file left


def test_every_image_scored_exits_0_with_a_named_version_and_concurrency(home, tmp_path, capsys):
    model_dir = registered(home, production=False)
    images = tmp_path / "in"
    images.mkdir()
    for i in range(6):
        (images / f"{i:02d}.png").write_bytes(png_bytes(seed=i))
    out = tmp_path / "p.jsonl"

    argv = ["batch-predict", "--local", "--input", str(images), "--output", str(out)]
    code = main([*argv, "--version", "1", "--concurrency", "3"])

    assert code == 0, capsys.readouterr().err
    assert [r["image"] for r in lines(out)] == [f"{i:02d}.png" for i in range(6)]
    assert all("error" not in r for r in lines(out))
    assert "scored 6, failed 0 of 6 images" in capsys.readouterr().out
    assert servers_of(model_dir) == []


def test_an_interrupted_run_stops_the_server_and_keeps_the_old_output(home, tmp_path, monkeypatch, capsys):
    from infra.local import transform

    model_dir = registered(home)
    out = tmp_path / "p.jsonl"
    out.write_text('{"image": "from the last run"}\n')
    sent: list[Path] = []
    real_send = transform._send

    def send_then_interrupt(url, root, image):
        sent.append(image)
        if len(sent) == 2:
            raise KeyboardInterrupt  # as Ctrl-C lands in the middle of the run
        return real_send(url, root, image)

    monkeypatch.setattr(transform, "_send", send_then_interrupt)
    argv = ["batch-predict", "--local", "--input", str(folder(tmp_path / "in")), "--output", str(out)]
    code = main([*argv, "--concurrency", "1"])

    assert code == 130
    assert out.read_text() == '{"image": "from the last run"}\n'  # never a half-written file
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".p.jsonl")] == []
    assert servers_of(model_dir) == []


def test_a_server_that_dies_mid_run_ends_it_with_its_log_and_writes_nothing(
    home, tmp_path, monkeypatch, capsys
):
    import os
    import signal

    from infra.local import transform

    model_dir = registered(home)
    out = tmp_path / "p.jsonl"
    sent: list[Path] = []
    real_send = transform._send

    def kill_the_server_at_the_second_image(url, root, image):
        sent.append(image)
        if len(sent) == 2:
            [pid] = servers_of(model_dir)
            os.kill(pid, signal.SIGKILL)  # as the OOM killer would
        return real_send(url, root, image)

    monkeypatch.setattr(transform, "_send", kill_the_server_at_the_second_image)
    argv = ["batch-predict", "--local", "--input", str(folder(tmp_path / "in")), "--output", str(out)]
    code = main([*argv, "--concurrency", "1"])

    assert code == 1
    assert "the serve program exited during the run" in capsys.readouterr().err
    assert not out.exists()


def test_a_model_that_cannot_load_is_a_clear_error_and_leaves_no_server(home, tmp_path, capsys):
    model_dir = registered(home)
    (model_dir / "model.safetensors").write_bytes(b"tampered")  # no longer matches the manifest's hash
    out = tmp_path / "p.jsonl"

    code = main(["batch-predict", "--local", "--input", str(folder(tmp_path / "in")), "--output", str(out)])

    err = capsys.readouterr().err
    assert code == 1
    assert "the serve program did not start on v1" in err
    assert not out.exists()
    assert servers_of(model_dir) == []


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--instance-type", "ml.m5.large"], "--instance-type is for SageMaker batch transform"),
        (["--dry-run"], "--dry-run is for SageMaker"),
        (["--jsonl", "x.jsonl"], "--jsonl is for SageMaker"),
        (["--concurrency", "0"], "--concurrency must be at least 1"),
        (["--version", "7"], "v7 is not in the registry"),
    ],
)
def test_bad_flags_are_refused_before_any_server_starts(home, tmp_path, capsys, extra, message):
    model_dir = registered(home)
    out = tmp_path / "p.jsonl"
    argv = ["batch-predict", "--local", "--input", str(folder(tmp_path / "in")), "--output", str(out)]

    assert main(argv + extra) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and not (home / "batch").exists()  # nothing was started
    assert servers_of(model_dir) == []


def test_missing_inputs_and_versions_are_usage_errors(home, tmp_path, capsys):
    out = str(tmp_path / "p.jsonl")
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "readme.md").write_text("no images here")

    assert main(["batch-predict", "--local", "--input", str(tmp_path / "nope"), "--output", out]) == 2
    assert "is not a directory" in capsys.readouterr().err
    assert main(["batch-predict", "--local", "--input", str(empty), "--output", out]) == 2
    assert "no images (.png, .jpg, .jpeg) under" in capsys.readouterr().err
    assert main(["batch-predict", "--local", "--input", str(folder(tmp_path / "in")), "--output", out]) == 2
    assert "nothing is in production in the local registry" in capsys.readouterr().err
    assert main(["batch-predict", "--local", "--input", "s3://b/in/", "--output", out]) == 2
    assert "s3:// is for AWS" in capsys.readouterr().err
    assert main(["batch-predict", "--local", "--input", str(tmp_path / "in"), "--output", str(tmp_path)]) == 2
    assert "is a directory" in capsys.readouterr().err
