"""A training job stopped as a spot reclaim stops it: `python -m train train` as a real process, sent
SIGTERM once it prints a given line."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass
class Stopped:
    code: int  # the program's exit status
    before: str  # its output up to the line that triggered the signal
    after: str  # its output after the signal
    seconds: float  # from the signal to its exit


def sigterm_training(env: Mapping[str, str], *, at: str, timeout: float) -> Stopped:
    """Run the training program under `env`, SIGTERM it when a line starts with `at`, and wait up to
    `timeout` seconds for it to exit; never leaves the process running."""
    with subprocess.Popen(
        [sys.executable, "-m", "train", "train"],
        env=dict(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as proc:
        try:
            seen: list[str] = []
            assert proc.stdout is not None
            signalled = None
            for line in proc.stdout:
                seen.append(line)
                if line.startswith(at):
                    proc.send_signal(signal.SIGTERM)  # what a spot reclaim or StopTrainingJob sends
                    signalled = time.monotonic()
                    break
            assert signalled is not None, f"no line starting with {at!r}:\n{''.join(seen)}"
            rest = proc.stdout.read()
            code = proc.wait(timeout=timeout)
            return Stopped(code, "".join(seen), rest, time.monotonic() - signalled)
        finally:
            if proc.poll() is None:
                proc.kill()
