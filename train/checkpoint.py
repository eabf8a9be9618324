"""Checkpoints: everything needed to resume a job exactly, written atomically after every epoch and
when the job is stopped mid-epoch.

A spot reclaim sends SIGTERM and then kills the container (SageMaker allows about two minutes);
SageMaker restores `checkpoints/` when the job starts again. The trainer stops after the step in
flight, saves the step it reached with the epoch's running totals (`EpochProgress`), and the resumed
job continues from the next batch, bit for bit as if it had never stopped: model, optimiser, scheduler,
gradient scaler, the random generators (`rng_states`), the W&B run id. Writing to a temporary file and
renaming it means a kill mid-write leaves the previous checkpoint intact, never a truncated one.
Loaded with `weights_only=True`: plain tensors and containers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

LAST = "last.pt"


class CheckpointMismatch(ValueError):
    """The checkpoint directory holds a checkpoint of a different model."""


def save(directory: Path, state: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / LAST
    tmp = directory / f".{LAST}.tmp"
    with tmp.open("wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    tmp.replace(final)
    return final


def rng_states() -> dict[str, Any]:
    """The global random generators the training step may draw from (dropout, initialisation). The data
    order and augmentation draw from their own per-epoch generator, seeded by (seed, epoch)."""
    states: dict[str, Any] = {"rng": torch.get_rng_state()}
    if torch.cuda.is_available():
        states["cuda_rng"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["rng"])
    if state.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda_rng"])


def load(directory: Path) -> dict[str, Any] | None:
    path = directory / LAST
    if not path.is_file():
        return None
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    return state


def check_compatible(
    state: dict[str, Any], *, arch: str, classes: list[str], image_size: int, directory: Path
) -> None:
    mine = {"arch": arch, "classes": classes, "image_size": image_size}
    theirs = {
        "arch": state["config"]["arch"],
        "classes": state["classes"],
        "image_size": state["config"]["image_size"],
    }
    refuse_mismatch(mine, theirs, directory)


def refuse_mismatch(mine: dict[str, Any], theirs: dict[str, Any], directory: Path) -> None:
    """CheckpointMismatch naming each property where the checkpoint and the job differ."""
    diffs = [k for k in mine if mine[k] != theirs[k]]
    if diffs:
        detail = ", ".join(f"{k}: checkpoint {theirs[k]!r} vs job {mine[k]!r}" for k in diffs)
        raise CheckpointMismatch(
            f"the checkpoint in {directory} belongs to a different model ({detail}); "
            "start the job with an empty checkpoint directory"
        )
