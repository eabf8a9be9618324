"""Detached server processes that outlive the `mlops` command that started them (pid + log files)."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Mapping, Sequence
from pathlib import Path


def spawn_detached(argv: Sequence[str], log_path: Path, env: Mapping[str, str]) -> int:
    """Start `argv` in its own session, stdout and stderr appended to `log_path`; return its pid.

    posix_spawn rather than Popen: no Popen object outlives the call to warn that its child still runs.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    actions = [
        (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
        (os.POSIX_SPAWN_OPEN, 1, str(log_path), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644),
        (os.POSIX_SPAWN_DUP2, 1, 2),
    ]
    return os.posix_spawn(argv[0], list(argv), dict(env), file_actions=actions, setsid=True)


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    with contextlib.suppress(ChildProcessError):
        done, _status = os.waitpid(pid, os.WNOHANG)  # reap our own exited child, or it lingers as a zombie
        if done == pid:
            return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_serve_process(pid: int, marker: str = "serve") -> bool:
    """Guard against pid reuse: only signal a process whose command line names our server (`marker`)."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.exists():
        return alive(pid)
    try:
        return marker.encode() in cmdline.read_bytes()
    except OSError:
        return False


def terminate(pid: int, timeout: float = 15.0, marker: str = "serve") -> None:
    """SIGTERM, wait for a graceful exit, then SIGKILL."""
    if not alive(pid) or not is_serve_process(pid, marker):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)


def port_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 5) -> str:
    if not path.is_file():
        return ""
    return " | ".join(path.read_text(errors="replace").strip().splitlines()[-lines:])
