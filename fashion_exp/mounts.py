"""Whether the work folder's file system gives its locks to every machine that shares it.

fashion_exp keeps one search, one cache entry, one backbone file to one writer with fcntl locks.
On NFS those locks reach the other machines only through the server's lock manager: a mount with
`nolock`, or `local_lock=` other than `none`, keeps them on this machine, and two machines sharing
the work folder would both take the same search and cache entries (docs/distributed.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

MOUNTINFO = Path("/proc/self/mountinfo")
NETWORK = ("nfs", "nfs4")


@dataclass(frozen=True)
class Mount:
    point: str
    fstype: str
    options: frozenset[str]  # the mount's and the super block's, together


def parse_mountinfo(text: str) -> list[Mount]:
    """The mounts /proc/self/mountinfo lists (proc(5): ... point options ... - fstype source super-options)."""
    mounts = []
    for line in text.splitlines():
        fields = line.split()
        if "-" not in fields:
            continue
        dash = fields.index("-")
        if dash < 6 or len(fields) < dash + 4:
            continue
        point = fields[4].replace("\\040", " ")
        options = frozenset(fields[5].split(",")) | frozenset(fields[dash + 3].split(","))
        mounts.append(Mount(point, fields[dash + 1], options))
    return mounts


def mount_of(path: Path, mounts: list[Mount]) -> Mount | None:
    """The mount `path` lies on: the longest mount point above it."""
    resolved = str(path.resolve())
    above = [m for m in mounts if resolved == m.point or resolved.startswith(m.point.rstrip("/") + "/")]
    return max(above, key=lambda m: len(m.point), default=None)


def local_locks_warning(work_dir: Path | str, mountinfo: str | None = None) -> str | None:
    """One line when work_dir is on NFS whose locks stay on this machine, else None."""
    try:
        text = mountinfo if mountinfo is not None else MOUNTINFO.read_text()
    except OSError:
        return None
    mount = mount_of(Path(work_dir), parse_mountinfo(text))
    if mount is None or mount.fstype not in NETWORK:
        return None
    local = sorted(
        o for o in mount.options if o == "nolock" or (o.startswith("local_lock=") and o != "local_lock=none")
    )
    if not local:
        return None
    return (
        f"warning: work_dir {work_dir} is on an NFS mount ({mount.point}) with {', '.join(local)}: its file locks "
        "stay on this machine, so a second machine sharing it would take the same search and cache entries; "
        "use one machine, or mount with locking (docs/distributed.md)"
    )
