"""Temporary files of writers that may die (kill -9, SIGBUS, a lost machine): names that say who
writes them (pid and host), and the sweep that removes a dead writer's leftovers.

Only this host's dead writers' files are removed: another host's pid means nothing here, and a
process there (sharing work_dir over NFS) may be writing its file now.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
import socket
from collections.abc import Iterable
from pathlib import Path

from fashion_exp.errors import UserError


def _namespace() -> str:
    """What tells this machine's processes from another's beyond the host name, which containers
    sharing a network namespace have in common: the boot and the pid namespace (a pid means
    something only in its own). Empty where /proc does not say."""
    parts = []
    for read in (_boot_id, _pid_namespace):
        try:
            parts.append(read())
        except OSError:
            pass
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:8] if parts else ""


def _boot_id() -> str:
    return Path("/proc/sys/kernel/random/boot_id").read_text().strip()


def _pid_namespace() -> str:
    return os.readlink("/proc/self/ns/pid")


_HOSTNAME = re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "unknown-host"
# this machine, as names carry it: its host name and its pid namespace's id (writers.py's sweep and
# the locks' holder records judge a pid only where it was written)
HOST = f"{_HOSTNAME}.{_namespace()}" if _namespace() else _HOSTNAME
_TEMPORARY = re.compile(r"^\..+\.(?P<pid>\d+)(?:@(?P<host>[A-Za-z0-9._-]+))?\.tmp$")


def alive(pid: int) -> bool:
    """Whether process `pid` runs on this host (another user's counts as running)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def temporary(target: Path) -> Path:
    """Where this process writes `target` before renaming it into place: .<name>.<pid>@<host>.tmp"""
    return target.with_name(f".{target.name}.{os.getpid()}@{HOST}.tmp")


def sweep(directory: Path) -> list[Path]:
    """Delete the temporary files in `directory` whose writer on this host is dead (names without a
    host, from older versions, count as this host's). Returns what was deleted."""
    return sweep_paths(Path(directory).glob(".*.tmp"), _TEMPORARY)


def sweep_paths(paths: Iterable[Path], pattern: re.Pattern) -> list[Path]:
    """Delete those of `paths` whose name (matched by `pattern`, with groups pid and host) says a
    dead writer on this host made them. Returns what was deleted."""
    removed = []
    for path in sorted(paths):
        match = pattern.match(path.name)
        if match and (match["host"] or HOST) == HOST and not alive(int(match["pid"])):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


FULL = (errno.ENOSPC, errno.EDQUOT)  # the errors of a full disk (or a spent quota)


def size_text(size: float) -> str:
    """A size in the unit that shows it: 1.95 GB, 4.0 MB, 312 KB, 87 bytes."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6)):
        if size >= scale:
            return f"{size / scale:.{2 if unit == 'GB' else 1}f} {unit}"
    return f"{size / 1e3:.0f} KB" if size >= 1000 else f"{size:.0f} bytes"


def disk_full(path: Path | str, what: str) -> UserError:
    """The one-line error for a write to `path` that found its disk full."""
    folder = Path(path).parent
    try:
        free = size_text(shutil.disk_usage(folder).free)
    except OSError:
        free = "no space"
    return UserError(
        f"{folder}: the disk is full ({free} free) writing {what}; nothing was half-written: "
        "free some space and run the command again to go on"
    )
