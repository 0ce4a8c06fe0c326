"""Opening an MLflow store safely when several commands use it at once.

MLflow creates and migrates a new SQL store's tables when the first client touches it, with no
lock between processes (its tracking and registry stores call `_initialize_tables` directly), so
two commands started together in a fresh folder race and one dies ("duplicate column name: step").
`open_client` does that first touch under an OS file lock. `alias_lock` serializes the
read-decide-write of registry aliases (promote, rollback).

The locks of a store that is not a local file live in this user's own folder of the temp folder
(lock_folder): a shared one would let another user plant a link at a lock's predictable name.
Messages name a store by its URI without the password (redact).
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from sqlalchemy.exc import SQLAlchemyError

from fashion_exp import locks
from fashion_exp.errors import ConfigError, UserError, first_line
from fashion_exp.redact import redact
from fashion_exp.signals import DeferringClient

_wait_s = float("inf")  # how long to wait for a store lock's holder: tracking.lock_wait_s once a command set it
_ready: set[str] = set()  # stores this process has already opened (their tables exist)


def limit_waits(seconds: float) -> None:
    """Wait at most `seconds` for another process holding one of a store's locks, then stop naming
    it (Busy). The command line sets tracking.lock_wait_s; a caller that sets nothing waits while
    the holder lives (the kernel frees a dead holder's lock)."""
    global _wait_s
    _wait_s = float(seconds)


def sqlite_file(uri: str) -> Path | None:
    """The database file of a sqlite:/// URI (absolute), or None for other stores."""
    if not uri.startswith("sqlite:///"):
        return None
    path = uri[len("sqlite:///") :].split("?", 1)[0]  # sqlite:////abs/file or sqlite:///relative/file
    if not path or path == ":memory:":
        return None
    return Path(path) if path.startswith("/") else (Path.cwd() / path).resolve()


def lock_folder() -> Path:
    """This user's lock folder in the temp folder (fashion_exp-locks-<uid>, mode 0700), made if new.

    Always the temp folder, not XDG_RUNTIME_DIR: a command started outside a login session (cron,
    ssh) has none, and it must find the same locks as the user's other commands. UserError if the
    folder is a symbolic link, is another user's, or others may write in it."""
    folder = Path(tempfile.gettempdir()) / f"fashion_exp-locks-{os.geteuid()}"
    try:
        try:
            folder.mkdir(mode=0o700)
        except FileExistsError:
            pass  # checked below, whatever it is (a link, someone else's)
        info = os.lstat(folder)
    except OSError as err:
        raise UserError(
            f"cannot create the lock folder {folder} ({err.strerror}): set TMPDIR to a folder of yours"
        ) from None
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise UserError(
            f"the lock folder {folder} is a symbolic link or not a folder: remove it (someone may have planted it)"
        )
    if info.st_uid != os.geteuid():
        raise UserError(
            f"the lock folder {folder} belongs to uid {info.st_uid}, not to you: it is someone else's; "
            "have it removed, or set TMPDIR to a folder of yours"
        )
    if info.st_mode & 0o022:
        raise UserError(
            f"the lock folder {folder} may be written by other users (mode {stat.S_IMODE(info.st_mode):o}): "
            f"fix its mode with `chmod 700 {folder}`"
        )
    return folder


def lock_path(uri: str, purpose: str) -> Path:
    """Where the `purpose` lock of a store lives: beside a sqlite file (so every process using the
    file finds it, whatever its work_dir), else in this user's lock folder keyed by the URI (this
    user's processes on this machine)."""
    database = sqlite_file(uri)
    if database is not None:
        return database.with_name(f"{database.name}.{purpose}.lock")
    key = hashlib.sha256(uri.encode()).hexdigest()[:16]
    return lock_folder() / f"store-{key}.{purpose}.lock"


def _waiting(what: str):
    def say(holder: locks.Holder | None) -> None:
        print(locks.waiting_line(holder, f"holds {what}"), flush=True)

    return say


def unusable(uri: str, error: BaseException) -> ConfigError:
    """The one-line error for a store MLflow cannot use (missing, unreadable, unreachable, refused)."""
    return ConfigError(f"tracking.uri: cannot use MLflow store {redact(uri)} ({said(error)})")


def local_store(uri: str) -> Path | None:
    """The file or folder a local store lives in (sqlite file, file: or plain-path folder), else None."""
    database = sqlite_file(uri)
    if database is not None or uri.startswith("sqlite:"):
        return database
    if "://" in uri and not uri.startswith("file:"):
        return None  # a server or another database: it owns its store
    path = uri[len("file:") :].removeprefix("//") if uri.startswith("file:") else uri
    return (Path.cwd() / path).resolve()


MAKE_A_MODEL = "python -m fashion_exp tune`, then `python -m fashion_exp train-final"  # where models come from


def open_client(uri: str, create: bool = True) -> MlflowClient:
    """A client bound to one store for tracking and registry; the first open of a store in this
    process creates its tables under the store's init lock. ConfigError if the store is unusable.

    create=False (commands that only read) refuses a local store that does not exist yet, naming
    where it looked and the commands that make one, and creates no file."""
    where = local_store(uri)
    if not create and where is not None and not where.exists():
        raise ConfigError(
            f"no MLflow store at {where} (tracking.uri={redact(uri)}): run `{MAKE_A_MODEL}` first, "
            "or pass tracking.uri=..."
        )
    if uri in _ready or uri.startswith(("http://", "https://", "databricks")):  # a server owns its schema
        return DeferringClient(MlflowClient(tracking_uri=uri, registry_uri=uri))
    database = sqlite_file(uri)
    if database is not None and not database.parent.is_dir():
        raise ConfigError(f"tracking.uri: the folder of {uri} does not exist ({database.parent})")
    what = f"the MLflow store {redact(uri)} (opening it, creating its tables if it is new)"
    waiting = _waiting(what)
    with locks.exclusive(lock_path(uri, "init"), what, wait=_wait_s, on_wait=waiting, quiet_for=2):
        try:  # the client's constructor opens the tracking store (creating its tables) ...
            client = MlflowClient(tracking_uri=uri, registry_uri=uri)
            client.search_registered_models(max_results=1)  # ... and the registry's on first use
        except (MlflowException, SQLAlchemyError) as err:
            raise unusable(uri, err) from None
    _ready.add(uri)
    return DeferringClient(client)


@contextmanager
def alias_lock(uri: str, name: str) -> Iterator[None]:
    """Hold while reading and moving the aliases of registered model `name` (one mover at a time).

    A local lock: it covers this user's processes on this machine (and every user of a shared
    sqlite file, whose lock sits beside it).
    Call open_client(uri) first: it checks the store's folder, where this lock file goes.
    """
    what = f"the aliases of '{name}'"
    with locks.exclusive(lock_path(uri, "aliases"), what, wait=_wait_s, on_wait=_waiting(what), quiet_for=2):
        yield


# What a tracking server's refusals mean, and what to do (MLflow's basic-auth app; its host check)
REFUSALS = {
    "error code 401": "the tracking server asks for a user: set MLFLOW_TRACKING_USERNAME and "
    "MLFLOW_TRACKING_PASSWORD to an account of its basic-auth app (they are wrong or missing)",
    "Invalid Host header": "the tracking server refuses the host name in tracking.uri: start it with "
    "--allowed-hosts <that host>:<port> (MLflow accepts only loopback and private addresses otherwise)",
    "error code 403": "the tracking server's user has no permission for this: give the account of "
    "MLFLOW_TRACKING_USERNAME the permission, or use the admin account",
}


def said(error: BaseException) -> str:
    """What a store's error means, in one line: a tracking server's refusal with what to do, else
    the error's first line (passwords left out)."""
    meaning = next((meaning for sign, meaning in REFUSALS.items() if sign in str(error)), None)
    return meaning or redact(first_line(error))


def store_error(error: BaseException) -> str | None:
    """One line for an error that came from the tracking store (MLflow or its database), else None."""
    if isinstance(error, MlflowException | SQLAlchemyError):
        return f"MLflow: {said(error)}"
    return None
