"""Distributed data parallel training: `python -m train train` with more than one process re-executes itself
under torchrun (two Gloo processes on this CPU), trains one model on the shards of the data, and leaves what
a single-process job leaves: one verified artifact, one W&B run, one set of metric lines, a checkpoint that
a stopped job resumes from."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from artifact.manifest import verify
from infra.datasets import make_synthetic
from tests.jobs import sigterm_training
from train import checkpoint
from train.contract import JobPaths
from train.data import shard
from train.distributed import plan

HYPERPARAMETERS = {"arch": "smallcnn", "epochs": "4", "batch_size": "16", "learning_rate": "0.05"}
TRAIN, TEST = 120, 30
ACCURACY_SPREAD = 0.2  # six of 30 test images: the spread of single-process runs over hyperparameters here


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data") / "synthetic"
    make_synthetic(root, classes=3, train_per_class=40, val_per_class=10, test_per_class=10)
    return root


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def make_job(base: Path, data: Path, hyperparameters: dict[str, str], resources: dict | None = None) -> Path:
    (base / "input" / "config").mkdir(parents=True)
    (base / "input" / "config" / "hyperparameters.json").write_text(json.dumps(hyperparameters))
    if resources is not None:
        (base / "input" / "config" / "resourceconfig.json").write_text(json.dumps(resources))
    (base / "input" / "data").mkdir(parents=True)
    for channel in ("train", "validation", "test"):
        (base / "input" / "data" / channel).symlink_to(data / channel)
    return base


def job_env(base: Path, nproc: int, port: int, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "RANK", "WORLD_SIZE")}
    return {
        **env,
        "SAGEMAKER_BASE_DIR": str(base),
        "PYTHONUNBUFFERED": "1",
        "WANDB_MODE": "offline",
        "MLOPS_NPROC_PER_NODE": str(nproc),
        "MLOPS_MASTER_PORT": str(port),
        **extra,
    }


def run_train(base: Path, nproc: int, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "train", "train"],
        env=job_env(base, nproc, free_port()),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def epoch_lines(stdout: str) -> list[str]:
    return [line.split()[0] for line in stdout.splitlines() if line.startswith("epoch=")]


def test_the_cluster_comes_from_resourceconfig_and_the_first_host_is_the_master(tmp_path):
    from train.config import TrainConfig

    config_dir = tmp_path / "input" / "config"
    config_dir.mkdir(parents=True)
    hosts = {"current_host": "algo-2", "hosts": ["algo-1", "algo-2", "algo-3"]}
    (config_dir / "resourceconfig.json").write_text(json.dumps(hosts))
    cluster = plan(JobPaths(tmp_path, {"MLOPS_NPROC_PER_NODE": "4"}), TrainConfig())
    assert (cluster.node_rank, cluster.nproc_per_node, cluster.world_size) == (1, 4, 12)
    assert (cluster.master_addr, cluster.master_port) == ("algo-1", 29500)
    command = cluster.command()
    assert command[1:3] == ["-m", "torch.distributed.run"] and command[-3:] == ["-m", "train", "train"]
    assert {"--nnodes=3", "--node_rank=1", "--nproc_per_node=4", "--master_addr=algo-1"} <= set(command)


def test_each_rank_gets_a_disjoint_shard_of_the_same_order_and_as_many_steps():
    import torch

    order = torch.randperm(10, generator=torch.Generator().manual_seed(3))
    padded = [shard(order, rank, 3, pad=True) for rank in range(3)]
    assert [len(s) for s in padded] == [4, 4, 4]  # 10 padded to 12: every rank runs the same steps
    assert set(torch.cat(padded).tolist()) == set(range(10))
    unpadded = [shard(order, rank, 3, pad=False) for rank in range(3)]
    assert sorted(torch.cat(unpadded).tolist()) == list(range(10))  # evaluation counts each image once
    assert torch.equal(shard(order, 0, 1, pad=True), order)  # one process: the order unchanged


def test_two_processes_train_one_model_like_one_process_does(tmp_path, dataset):
    single = make_job(tmp_path / "single", dataset, HYPERPARAMETERS)
    one = run_train(single, 1)
    assert one.returncode == 0, one.stdout + one.stderr

    base = make_job(tmp_path / "ddp", dataset, HYPERPARAMETERS)
    two = run_train(base, 2)
    assert two.returncode == 0, two.stdout + two.stderr
    assert "launching 2 processes with torchrun" in two.stdout
    assert epoch_lines(two.stdout) == ["epoch=1", "epoch=2", "epoch=3", "epoch=4"]  # rank 0's only
    assert sum(line.startswith("final ") for line in two.stdout.splitlines()) == 1

    manifest = verify(base / "model")
    assert manifest.architecture == "smallcnn" and manifest.dataset["train"]["images"] == TRAIN
    runs = list((base / "output" / "data" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and manifest.wandb is not None and runs[0].name.endswith(manifest.wandb["id"])
    assert not (base / "output" / "failure").exists()
    evaluation = json.loads((base / "model" / "evaluation.json").read_text())
    assert sum(map(sum, evaluation["confusion_matrix"])) == TEST  # the shards, reduced: each image once

    # The saved weights are the ones evaluated: a single-process re-evaluation reproduces the job's metrics.
    out = tmp_path / "re-evaluation.json"
    command = [sys.executable, "-m", "train", "evaluate", "--model-dir", str(base / "model")]
    subprocess.run(
        [*command, "--data", str(dataset / "test"), "--output", str(out)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    again = json.loads(out.read_text())["metrics"]
    for key in ("test_accuracy", "test_loss"):
        assert abs(again[key] - manifest.metrics[key]) < 1e-4, key

    # Same hyperparameters, twice the images per step, half the steps. On 120 images and 4 epochs neither
    # run gets far above chance (measured: 0.27-0.47 on 30 test images, where one image is 0.033), so
    # this asserts what the data can show: the DDP model learns (its train loss falls as the single one's
    # does) and its test accuracy is within the run-to-run spread of the single-process job's.
    single_history = json.loads((single / "model" / "evaluation.json").read_text())["history"]
    for history in (single_history, evaluation["history"]):
        assert history[-1]["train_loss"] < history[0]["train_loss"]
    single_accuracy = verify(single / "model").metrics["test_accuracy"]
    assert abs(manifest.metrics["test_accuracy"] - single_accuracy) <= ACCURACY_SPREAD, (
        single_accuracy,
        manifest.metrics["test_accuracy"],
    )


def test_sigterm_to_the_launcher_stops_every_worker_at_a_checkpoint_and_a_restart_completes(
    tmp_path, dataset
):
    base = make_job(tmp_path / "job", dataset, {**HYPERPARAMETERS, "epochs": "3", "batch_size": "8"})
    stopped = sigterm_training(job_env(base, 2, free_port()), at="epoch=1 ", timeout=90)
    assert stopped.code == 143, stopped.before + stopped.after
    assert "stopped at step" in stopped.after, stopped.after
    assert stopped.seconds < 45
    saved = checkpoint.load(base / "checkpoints")
    assert saved is not None and saved["epoch"] >= 1 and saved["wandb_id"]
    assert not (base / "model" / "manifest.json").exists()

    resumed = run_train(base, 2)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resumed from checkpoint" in resumed.stdout
    history = json.loads((base / "model" / "evaluation.json").read_text())["history"]
    assert [h["epoch"] for h in history] == list(range(1, 4))
    assert verify(base / "model").wandb["id"] == saved["wandb_id"]  # the same W&B run, continued


def test_two_hosts_train_together_and_only_the_first_writes(tmp_path, dataset):
    port = free_port()
    hosts = ["algo-1", "algo-2"]
    bases = [
        make_job(
            tmp_path / host,
            dataset,
            {**HYPERPARAMETERS, "epochs": "1"},
            {"current_host": host, "hosts": hosts},
        )
        for host in hosts
    ]
    # Each host's output goes to a file, not a pipe: waiting on one host while the other's pipe fills
    # (64 KiB of warnings is enough) would stop that host mid-write and the first in its exit barrier.
    logs = [tmp_path / f"{host}.log" for host in hosts]
    procs = []
    try:
        for base, log in zip(bases, logs, strict=True):
            with log.open("w") as sink:
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", "train", "train"],
                        env=job_env(base, 1, port, MLOPS_MASTER_ADDR="127.0.0.1", PYTHONFAULTHANDLER="1"),
                        stdout=sink,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,  # its torchrun and workers are killed with it below
                    )
                )
        deadline = time.monotonic() + 180
        for proc in procs:
            try:
                proc.wait(timeout=max(1.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                for stuck in procs:  # every process of both hosts prints where it is (faulthandler)
                    if stuck.poll() is None:
                        os.killpg(stuck.pid, signal.SIGABRT)
                time.sleep(3)
                pytest.fail("the two hosts did not finish in 180 s:\n" + _logs(logs))
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    outputs = [log.read_text() for log in logs]
    assert [proc.returncode for proc in procs] == [0, 0], outputs
    assert "2 host(s) x 1, this host 0" in outputs[0] and "this host 1" in outputs[1]
    assert epoch_lines(outputs[0]) == ["epoch=1"] and epoch_lines(outputs[1]) == []
    verify(bases[0] / "model")
    assert not (bases[1] / "model").exists() and not (bases[1] / "checkpoints").exists()
    assert not (bases[1] / "output" / "data" / "wandb").exists()


def _logs(paths: list[Path]) -> str:
    return "\n".join(f"--- {path.name}\n{path.read_text()[-6000:]}" for path in paths)


def test_a_worker_that_fails_fails_the_job_with_its_reason(tmp_path, dataset):
    base = make_job(tmp_path / "job", dataset, HYPERPARAMETERS)
    (base / "input" / "data" / "test").unlink()
    result = run_train(base, 2)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "channel 'test' is missing" in (base / "output" / "failure").read_text()


def test_a_config_error_is_found_before_anything_is_launched(tmp_path, dataset):
    base = make_job(tmp_path / "job", dataset, {**HYPERPARAMETERS, "epochs": "0"})
    result = run_train(base, 2)
    assert result.returncode == 2
    assert "launching" not in result.stdout
    assert "'epochs': 0 is out of range" in (base / "output" / "failure").read_text()
