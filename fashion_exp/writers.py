"""Temporary files of writers that may die (kill -9, SIGBUS, a lost machine): names that say who
writes them (pid and host), and the sweep that removes a dead writer's leftovers.

Only this host's dead writers' files are removed: another host's pid means nothing here, and a
process there (sharing work_dir over NFS) may be writing its file now.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterable
from pathlib import Path

HOST = re.sub(r"[^A-Za-z0-9._-]", "_", socket.gethostname()) or "unknown-host"  # this machine, as names carry it
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
