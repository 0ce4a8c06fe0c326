"""One MLflow tracking server for the workers of a search when the store is a sqlite file.

sqlite lets one writer in at a time; several worker processes writing to it directly can fail
with "database is locked". For a sqlite store `shared_store` starts an MLflow tracking server
(store_server.py: MLflow's app served by one uvicorn process, what `mlflow server --workers 1` serves)
on a free loopback port for the length of the search and hands its http:// URI to the workers (one
writer). Other stores (http://, postgresql://, mysql://) take concurrent
writers and are used as they are.

The server runs two levels below the `tune` that started it, so that no kill -9 leaves it behind:

    tune -> guard (`python -m fashion_exp.tracking.server`) -> group leader (`... --lead`) -> the server
                                                                (and any child it starts), one process group

The kernel signals the guard when tune dies and the leader when the guard dies (PR_SET_PDEATHSIG,
kill -9 included); the leader then ends its whole group. When the leader itself dies (kill -9),
the guard sees it end and ends the group it led.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from fashion_exp.children import die_if_parent_gone, die_with_parent, free_port, last_log_line, parented, stop
from fashion_exp.errors import UserError
from fashion_exp.screen import say
from fashion_exp.tracking.store_server import STORE_ENV

START_TIMEOUT = 180.0


def needs_server(uri: str) -> bool:
    return uri.startswith("sqlite:")


def healthy(url: str) -> bool:
    """Whether an MLflow server answers at url."""
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextmanager
def shared_store(uri: str, log: Path, meanwhile: Callable[[str], None] = lambda url: None) -> Iterator[str]:
    """The tracking URI that worker processes log to while the block runs (see module doc).
    meanwhile(that URI) runs before the block, while a server comes up (workers import TensorFlow
    in the meantime and reach the store only after the chief's oracle answers them)."""
    if not needs_server(uri):
        meanwhile(uri)
        yield uri
        return
    what = "the MLflow server for the workers"
    with mlflow_server(uri, ("127.0.0.1", free_port()), log, what, meanwhile=meanwhile) as url:
        say(f"Workers log through an MLflow server at {url} on {uri} (log: {log})")
        yield url


@contextmanager
def mlflow_server(
    uri: str,
    at: tuple[str, int],
    log: Path,
    what: str,
    app: str | None = None,
    hint: str = "",
    meanwhile: Callable[[str], None] = lambda url: None,
) -> Iterator[str]:
    """An MLflow tracking server (store_server.py) on the store `uri` at `at` (host, port) (app: the
    module:factory of an ASGI app around MLflow's, or MLflow's own), under the guard (module doc),
    for the length of the block; yields its http:// URL, or raises UserError (`what` did not start,
    the log's last line, `hint`); meanwhile(URL) runs once the server is started, before it answers.
    The store's URI, which may hold a database password, reaches the server through its environment
    (MLFLOW_BACKEND_STORE_URI), never its command line, which every user of the machine can read (ps)."""
    host, port = at
    command = [
        "fashion_exp.tracking.store_server",
        *("--host", host, "--port", str(port), "--artifact-root", Path("mlruns").resolve().as_uri()),
        *(("--app", app) if app else ()),
    ]
    url = f"http://{host}:{port}"
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        guard = subprocess.Popen(
            [sys.executable, "-m", "fashion_exp.tracking.server", *command],
            stdout=out,
            stderr=subprocess.STDOUT,
            # no preexec_fn: this process may run gRPC threads (the chief's oracle), and a
            # preexec_fn makes Popen fork() them, running gRPC's fork handlers in the child (seen
            # here: the guard died at once after an epoll error); the guard asks the kernel itself
            env=parented({**os.environ, STORE_ENV: uri}),
        )
    try:
        meanwhile(url)
        deadline = time.monotonic() + START_TIMEOUT
        while not healthy(url):
            if guard.poll() is not None or time.monotonic() > deadline:
                said = last_log_line(log) or "no output"
                raise UserError(f"{what} did not start at {url} ({said}{'; ' + hint if hint else ''}); see {log}")
            time.sleep(0.25)
        yield url
    finally:
        stop(guard)


def guard(command: list[str]) -> int:
    """Run `command` under a group leader in a process group of its own; end the group when this
    process is told to stop, when its parent dies, or when the leader dies."""
    die_if_parent_gone(signal.SIGTERM)
    # before the leader starts: no stop lands between the two. Not SIGINT: a terminal's Ctrl-C reaches
    # this process too (tune's process group), and the server must outlive tune's own cleanup (the
    # runs it marks KILLED go through it); tune ends it after (mlflow_server's finally)
    told = stops_noted((signal.SIGTERM,))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # (no gRPC threads here: a preexec_fn is safe, and the leader must die with this process)
    leader = subprocess.Popen(
        [sys.executable, "-m", "fashion_exp.tracking.server", LEAD, *command],
        start_new_session=True,
        preexec_fn=lambda: die_with_parent(signal.SIGTERM),
    )
    if wait_or_told(leader, told):
        end_group(leader.pid, leader)
        return 0
    end_group(leader.pid)  # the leader died (kill -9 included): what it led goes too
    return leader.returncode


def lead(command: list[str]) -> int:
    """The leader of the server's process group: run `command` in it, end the whole group when
    told to stop (the kernel tells it when the guard dies)."""
    told = stops_noted()
    server = subprocess.Popen([sys.executable, "-m", *command])  # (exec puts its handlers back to default)
    if not wait_or_told(server, told):
        return server.returncode
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # (killpg reaches this process too)
    end_group(os.getpgid(0), server)
    return 0


def stops_noted(numbers: tuple[int, ...] = (signal.SIGTERM, signal.SIGINT)) -> list[int]:
    """From now on, these signals to this process are noted in the list returned, nothing more.
    Ending the group from inside the handlers, while this process was inside child.wait(), made
    their own wait on the child wait out its whole grace (the wait they interrupted held Popen's
    wait lock), so every stop took 10 s and ended in SIGKILL."""
    told: list[int] = []
    for number in numbers:
        signal.signal(number, lambda signum, frame: told.append(signum))
    return told


def wait_or_told(child: subprocess.Popen, told: list[int]) -> bool:
    """Wait until `child` ends (False) or a stop is noted in `told` (True)."""
    while not told and child.poll() is None:
        time.sleep(0.1)
    return bool(told)


def end_group(pgid: int, server: subprocess.Popen | None = None, grace: float = 10.0) -> None:
    """SIGTERM to every process of the group, then SIGKILL to what is left after `grace` seconds."""
    try:
        os.killpg(pgid, signal.SIGTERM)
        if server is not None:
            server.wait(timeout=grace)
        else:
            deadline = time.monotonic() + grace
            while _group_alive(pgid) and time.monotonic() < deadline:
                time.sleep(0.1)
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


LEAD = "--lead"

if __name__ == "__main__":
    if sys.argv[1:2] == [LEAD]:
        sys.exit(lead(sys.argv[2:]))
    sys.exit(guard(sys.argv[1:]))
