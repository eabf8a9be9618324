"""Distributed data parallel training: one job over many hosts and GPUs, launched by torchrun.

Stages:
1. `plan(paths, config)` reads the cluster from `input/config/resourceconfig.json` (SageMaker's host
   list, the same on every host, and this host's name): nnodes = hosts, node_rank = this host's index,
   master = the first host (loopback on one host), port 29500; processes per node = the GPUs (1 on a
   CPU). Env overrides, for tests and odd clusters: MLOPS_MASTER_ADDR, MLOPS_MASTER_PORT,
   MLOPS_NPROC_PER_NODE.
2. `launch(plan, paths)`: when the plan has more than one process in all, the program re-executes
   itself under `python -m torch.distributed.run` with the same environment, forwards SIGTERM/SIGINT
   to it (spot reclaim, StopTrainingJob) and returns 0, 143 when it was stopped, else 1.
3. In each worker (torchrun set LOCAL_RANK), `World.from_env` joins the process group (NCCL on a GPU,
   Gloo on a CPU) and gives `train.main.run` the collectives it needs: a stop flag reduced every step,
   so all ranks stop at the same step; sums of metrics; rank 0's state broadcast at resume; buffers
   broadcast before an evaluation. Rank 0 alone logs, talks to W&B and writes files.

A worker that fails writes its reason to output/failure unless another already did: the first failure
is the cause, and the ranks that lose their peer afterwards only report "connection closed".
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Any

from train.config import ConfigError, TrainConfig
from train.contract import JobPaths, host_info

if TYPE_CHECKING:
    import torch
    from torch import nn

DEFAULT_PORT = 29500
EXIT_STOPPED = 143


@dataclass(frozen=True)
class LaunchPlan:
    hosts: list[str]
    node_rank: int
    nproc_per_node: int
    master_addr: str
    master_port: int

    @property
    def world_size(self) -> int:
        return len(self.hosts) * self.nproc_per_node

    def command(self) -> list[str]:
        """torchrun with a static rendezvous at the master, running this same program on every rank."""
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nnodes={len(self.hosts)}",
            f"--node_rank={self.node_rank}",
            f"--nproc_per_node={self.nproc_per_node}",
            f"--master_addr={self.master_addr}",
            f"--master_port={self.master_port}",
            # No elastic restarts: a failed rank fails the job, and a spot restart resumes from the
            # checkpoint with a fresh cluster instead.
            "--max_restarts=0",
            "-m",
            "train",
            "train",
        ]


def _positive(env: Mapping[str, str], name: str, high: int) -> int | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    if not raw.isdigit() or not 1 <= int(raw) <= high:
        raise ConfigError(f"{name}={raw!r} must be an integer from 1 to {high}")
    return int(raw)


def _gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def plan(paths: JobPaths, config: TrainConfig) -> LaunchPlan:
    """The cluster this job runs on; raises ConfigError (or ValueError) before anything starts."""
    current, hosts = host_info(paths)
    if current not in hosts:
        raise ConfigError(f"{paths.resource_config}: current_host {current!r} is not one of hosts {hosts}")
    nproc = _positive(paths.env, "MLOPS_NPROC_PER_NODE", 1024)
    if nproc is None:
        nproc = 1 if config.device == "cpu" else max(1, _gpus())
    return LaunchPlan(
        hosts=hosts,
        node_rank=hosts.index(current),
        nproc_per_node=nproc,
        # One host talks to itself over loopback: its SageMaker name (algo-1) need not resolve locally.
        master_addr=paths.env.get("MLOPS_MASTER_ADDR", "").strip()
        or (hosts[0] if len(hosts) > 1 else "127.0.0.1"),
        master_port=_positive(paths.env, "MLOPS_MASTER_PORT", 65535) or DEFAULT_PORT,
    )


def is_worker(env: Mapping[str, str]) -> bool:
    return "LOCAL_RANK" in env


def launch(launch_plan: LaunchPlan, paths: JobPaths) -> int:
    """Run the job under torchrun and wait for it; the launcher's exit code is the job's."""
    # A failure left by an earlier attempt of this job directory would otherwise mask this one's cause.
    paths.failure.unlink(missing_ok=True)
    forwarded: list[int] = []
    proc = subprocess.Popen(launch_plan.command(), env=dict(paths.env))

    def forward(signum: int, _frame: FrameType | None) -> None:
        forwarded.append(signum)
        proc.send_signal(signum)  # torchrun passes it on to every worker, then waits for them

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = proc.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if code == 0:
        return 0
    if forwarded:
        return EXIT_STOPPED
    if not paths.failure.exists():
        write_first_failure(
            paths, f"a training process failed (torchrun exited with code {code}); see the log above"
        )
    return 1


def write_first_failure(paths: JobPaths, message: str, rank: int | None = None) -> None:
    """output/failure for the first failure only: later ranks fail because the first one went away."""
    where = f"rank {rank}: " if rank is not None else ""
    print(f"ERROR: {where}{message}", file=sys.stderr, flush=True)
    try:
        paths.output_dir.mkdir(parents=True, exist_ok=True)
        with paths.failure.open("x") as fh:
            fh.write(message[:1024] + "\n")
    except FileExistsError:
        pass
    except OSError as exc:  # a read-only or missing base dir must not hide the original error
        print(f"ERROR: could not write {paths.failure}: {exc}", file=sys.stderr, flush=True)


@dataclass
class World:
    """This process's place in the job; the single-process default makes every collective a no-op."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1
    device: Any = field(default=None)  # where collectives run: cuda for NCCL, cpu for Gloo

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @classmethod
    def from_env(cls, config: TrainConfig, env: Mapping[str, str] | None = None) -> World:
        """Join the process group torchrun set up (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT)."""
        import torch
        import torch.distributed as dist

        env = os.environ if env is None else env
        local_rank = int(env["LOCAL_RANK"])
        cuda = config.device != "cpu" and torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
        dist.init_process_group(backend="nccl" if cuda else "gloo")
        return cls(rank=dist.get_rank(), local_rank=local_rank, size=dist.get_world_size(), device=device)

    def close(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            if dist.is_initialized():
                dist.destroy_process_group()

    def sum(self, values: torch.Tensor) -> torch.Tensor:
        """The element-wise sum over all ranks (a copy on the tensor's own device)."""
        if not self.distributed:
            return values
        import torch.distributed as dist

        total = values.to(self.device, copy=True)
        dist.all_reduce(total, op=dist.ReduceOp.SUM)
        return total.to(values.device)

    def any(self, flag: bool) -> bool:
        """True on every rank when it is true on one: called by all ranks at the same point."""
        if not self.distributed:
            return flag
        import torch
        import torch.distributed as dist

        value = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank (pickled between our own processes only)."""
        if not self.distributed:
            return obj
        import torch.distributed as dist

        box = [obj if self.is_main else None]
        dist.broadcast_object_list(box, src=0, device=self.device)
        return box[0]

    def sync_buffers(self, module: nn.Module) -> None:
        """Rank 0's batch-norm statistics everywhere: DDP broadcasts them at each training forward, but
        the last step updates each rank's copy locally, and rank 0's is the one that is saved."""
        if not self.distributed:
            return
        import torch.distributed as dist

        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)

    def barrier(self) -> None:
        if self.distributed:
            import torch.distributed as dist

            dist.barrier()
