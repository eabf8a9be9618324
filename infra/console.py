"""Terminal output: a progress display for training and a stage-by-stage pipeline view."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeRemainingColumn

from infra.pipeline import Stage
from train.metrics import parse_epoch, parse_line

_SHOWN = (
    "WARNING",
    "ERROR",
    "Traceback",
    "resumed",
    "received",
    "stopped",
    "channel ",
    "device=",
    "final ",
    "model written",
)


class TrainingDisplay:
    """Turns the trainer's log lines into a progress bar (terminal) or compact epoch lines (CI logs)."""

    def __init__(self, console: Console, verbose: bool = False) -> None:
        self.console = console
        self.verbose = verbose
        self.started = time.monotonic()
        self.progress: Progress | None = None
        self.task: TaskID | None = None

    def __call__(self, line: str) -> None:
        epoch = parse_epoch(line)
        if epoch is not None:
            self._epoch(epoch[0], epoch[1] or epoch[0], parse_line(line))
        elif self.verbose or line.startswith(_SHOWN) or line.startswith(" "):
            self._print(f"[dim]  {line}[/]" if not line.startswith(("WARNING", "ERROR")) else f"  {line}")

    def _print(self, text: str) -> None:
        (self.progress.console if self.progress else self.console).print(text, highlight=False, markup=True)

    def _epoch(self, epoch: int, epochs: int, values: dict[str, float]) -> None:
        shown = " ".join(
            f"{k}={values[k]:.4f}" for k in ("train_loss", "val_loss", "val_accuracy") if k in values
        )
        if self.console.is_terminal:
            if self.progress is None:
                self.progress = Progress(
                    TextColumn("  training"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TextColumn("epochs"),
                    TimeRemainingColumn(),
                    console=self.console,
                )
                self.progress.start()
                self.task = self.progress.add_task("train", total=epochs, completed=epoch - 1)
            assert self.task is not None
            self.progress.update(self.task, completed=epoch, total=epochs)
            self._print(f"  epoch {epoch}/{epochs}  {shown}")
        else:
            elapsed = time.monotonic() - self.started
            self.console.print(f"  epoch {epoch}/{epochs}  {shown}  ({elapsed:.0f}s)", highlight=False)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


class StageView:
    def __init__(self, console: Console, display: TrainingDisplay) -> None:
        self.console = console
        self.display = display

    def started(self, name: str) -> None:
        self.console.print(f"[bold cyan]>[/] {name}", highlight=False)

    def finished(self, stage: Stage) -> None:
        self.display.close()
        colour = {"ok": "green", "failed": "bold red"}.get(stage.status, "dim")
        self.console.print(
            f"  [{colour}]{stage.status}[/] {stage.name} ({stage.seconds:.1f}s) {stage.detail}",
            highlight=False,
        )
