"""Child processes that end with their parent: search workers and the local tracking server.

Linux's PR_SET_PDEATHSIG makes the kernel signal a child when the process that started it dies,
kill -9 included, so a killed `tune` leaves no worker or server behind.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from fashion_exp.errors import last_line

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask the kernel to send `sig` to this process when its parent dies (no-op off Linux).

    Used as Popen's preexec_fn (runs in the child between fork and exec; exec keeps the setting)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)


PARENT_PID = "FASHION_EXP_DIE_WITH_PARENT"  # set by a parent in its child's environment: "<pid>"


def parented(env: dict[str, str]) -> dict[str, str]:
    """`env` for a child that must end with this process (die_if_parent_gone in the child): no
    preexec_fn, whose fork would run gRPC's fork handlers when this process has gRPC threads."""
    return {**env, PARENT_PID: str(os.getpid())}


def die_if_parent_gone(sig: int = signal.SIGKILL) -> None:
    """In a child started with `parented`: die_with_parent(sig), and exit at once if that parent
    already died before the request (the child's parent is then no longer the pid it was given)."""
    parent = os.environ.pop(PARENT_PID, None)
    if parent is None:
        return
    die_with_parent(sig)
    if os.getppid() != int(parent):
        os._exit(1)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def stop(process: subprocess.Popen, sig: int = signal.SIGTERM, grace: float = 10.0) -> None:
    """Send `sig`, wait up to `grace` seconds, then kill."""
    if process.poll() is None:
        process.send_signal(sig)
    reap(process, grace)


def reap(process: subprocess.Popen, grace: float) -> None:
    """Wait up to `grace` seconds for a process already told to stop, then kill it."""
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def exit_description(returncode: int) -> str:
    """'exit code 1' or 'signal 9 (SIGKILL)'."""
    if returncode < 0:
        try:
            return f"signal {-returncode} ({signal.Signals(-returncode).name})"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit code {returncode}"


def last_log_line(path: os.PathLike | str) -> str:
    """The last non-empty line of a log file ('' if unreadable)."""
    try:
        return last_line(Path(path).read_text(errors="replace"))
    except OSError:
        return ""
