"""Operating-system file locks: one holder at a time, released by the kernel when the holder exits.

`flock(2)` locks belong to an open file, so a process that dies (kill -9, power loss) holds nothing
afterwards and no stale lock file ever needs deleting. The holder writes who it is (pid, host,
command, start time) into the lock file so a refused process can say who is in the way.
Lock files are never deleted: removing one while a process waits on it would let two hold "it".

Lock files may sit in shared folders (a temp folder, a work_dir on a shared file system), so one is
opened without following a symbolic link, refused when it has other names (a hard link), kept
private (0600), and its command line carries no password (redact).
"""

from __future__ import annotations

import fcntl
import json
import os
import stat
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fashion_exp import writers
from fashion_exp.errors import UserError
from fashion_exp.redact import redact, redact_words

POLL_SECONDS = 0.2
# a waiter names the holder: a holder writes its record just after it locks, so a waiter that finds
# the lock taken and the record empty looks again for this long before it says "another process"
HOLDER_GRACE_SECONDS = 5.0


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, as the holder wrote it into the lock file."""

    pid: int
    host: str
    command: str
    since: float

    @classmethod
    def me(cls) -> Holder:
        return cls(os.getpid(), writers.HOST, " ".join(redact_words(sys.argv[1:])), time.time())

    def describe(self) -> str:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        command = f" ({redact(self.command)})" if self.command else ""  # a file an older version wrote may hold one
        return f"pid {self.pid} on host {self.host} since {started}{command}"


def who(holder: Holder | None) -> str:
    """The holder as a message names it; 'another process' when the lock file names nobody yet."""
    return holder.describe() if holder else "another process"


def waiting_line(holder: Holder | None, doing: str) -> str:
    """What a waiting command prints: 'Waiting for <holder>, which <doing> ...'."""
    return f"Waiting for {who(holder)}, which {doing} ..."


class Busy(UserError):
    """The lock is held by another process (and we were told not to wait, or waited too long)."""

    def __init__(self, message: str, holder: Holder | None):
        super().__init__(message)
        self.holder = holder


def read_holder(path: Path | str) -> Holder | None:
    """The holder recorded in a lock file, or None (free, never used, or being rewritten)."""
    try:
        values = json.loads(Path(path).read_text() or "null")
        return Holder(int(values["pid"]), str(values["host"]), str(values["command"]), float(values["since"]))
    except (OSError, ValueError, TypeError, KeyError):
        return None


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


@dataclass(frozen=True)
class _Waiting:
    """How exclusive() waits for a busy lock: its arguments of the same names."""

    what: str
    wait: float
    hint: str
    on_wait: Callable[[Holder | None], None] | None
    quiet_for: float

    def until_locked(self, fd: int, path: Path) -> None:
        """Retry the lock until it is ours; Busy when `wait` seconds run out. on_wait is told once,
        after quiet_for seconds, with the holder as soon as its record is there (None after the grace)."""
        started = time.monotonic()
        told = self.wait <= 0 or self.on_wait is None
        while not _try_lock(fd):
            waited = time.monotonic() - started
            if not told and waited >= self.quiet_for:
                holder = read_holder(path)  # None while the holder, just locked, has not written it yet
                if holder is not None or waited >= self.quiet_for + HOLDER_GRACE_SECONDS:
                    self.on_wait(holder)
                    told = True
            if time.monotonic() - started >= self.wait:
                raise self.busy(path)
            time.sleep(POLL_SECONDS)

    def busy(self, path: Path) -> Busy:
        """The refusal: what is locked, by whom, how long we waited, and the hint. A holder that has
        just locked writes its record a moment later: an empty record is looked at again for up to
        HOLDER_GRACE_SECONDS before the refusal says "another process"."""
        holder, deadline = read_holder(path), time.monotonic() + HOLDER_GRACE_SECONDS
        while holder is None and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
            holder = read_holder(path)
        waited = f" (waited {self.wait:g} s)" if self.wait > 0 else ""
        return Busy(f"{self.what} is in use by {who(holder)}{waited}" + (f": {self.hint}" if self.hint else ""), holder)


# O_NOFOLLOW: a symbolic link planted at the path fails (ELOOP) instead of leading our truncate and
# write into its target; 0600: the holder line is for this user's processes only
_OPEN_FLAGS = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
LOCK_FILE_MODE = 0o600


def _open_lock_file(path: Path, what: str) -> int:
    """The lock file's descriptor (the file and its folder made if new); UserError if it cannot be
    made, or if the path is a symbolic link or a file with other names (never written through)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, _OPEN_FLAGS, LOCK_FILE_MODE)
    except OSError as err:
        if os.path.islink(path):
            raise UserError(
                f"the lock file {path} for {what} is a symbolic link, which fashion_exp never follows: "
                "remove it (someone may have planted it) and run again"
            ) from None
        raise UserError(f"cannot create the lock file {path} for {what} ({err.strerror})") from None
    try:
        _check_lock_file(fd, path, what)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _check_lock_file(fd: int, path: Path, what: str) -> None:
    """Refuse a lock file that is not a plain file of one name; make an old public one private."""
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        raise UserError(f"the lock file {path} for {what} is not a plain file: remove it and run again")
    if info.st_nlink > 1:
        raise UserError(
            f"the lock file {path} for {what} has other names (a hard link to another file): "
            "remove it (someone may have planted it) and run again"
        )
    if stat.S_IMODE(info.st_mode) != LOCK_FILE_MODE and info.st_uid == os.geteuid():
        os.fchmod(fd, LOCK_FILE_MODE)  # made by an older fashion_exp (0644) or another tool


def _write_holder(fd: int, path: Path) -> Holder:
    """Write this process's Holder record into the lock file (at `path`) it now holds; a full disk
    is a one-line UserError."""
    me = Holder.me()
    os.ftruncate(fd, 0)
    try:
        os.pwrite(fd, json.dumps(vars(me)).encode(), 0)
    except OSError as err:
        if err.errno not in writers.FULL:
            raise
        os.ftruncate(fd, 0)  # no half record: an empty one reads as "holder unknown"
        raise writers.disk_full(path, "a lock's holder record") from None
    return me


@contextmanager
def exclusive(
    path: Path | str,
    what: str,
    wait: float = 0,
    hint: str = "",
    on_wait: Callable[[Holder | None], None] | None = None,
    quiet_for: float = 0,
) -> Iterator[Holder]:
    """Hold the lock at `path` for the block; yields this process's Holder record.

    what: the thing locked, as a message names it ("search 1a2b3c").
    wait: seconds to wait for a busy lock (0: refuse at once). Busy is raised when it runs out,
      naming the holder and ending with `hint`.
    on_wait: called once with the holder if we have to wait (to print "waiting for ..."), after
      `quiet_for` seconds of waiting (so a wait too short to notice says nothing).
    """
    path = Path(path)
    fd = _open_lock_file(path, what)
    try:
        if not _try_lock(fd):
            _Waiting(what, wait, hint, on_wait, quiet_for).until_locked(fd, path)
        me = _write_holder(fd, path)
        try:
            yield me
        finally:
            os.ftruncate(fd, 0)  # a released lock names nobody
    finally:
        os.close(fd)  # closing the file releases the lock
