"""One MLflow tracking server for the workers of a search when the store is a sqlite file.

sqlite lets one writer in at a time; several worker processes writing to it directly can fail
with "database is locked". For a sqlite store `shared_store` starts `mlflow server` on a free
loopback port for the length of the search and hands its http:// URI to the workers (a single
uvicorn worker: one writer). Other stores (http://, postgresql://, mysql://) take concurrent
writers and are used as they are.

The server runs under a guard process (`python -m fashion_exp.tracking.server`): the guard dies
with the `tune` that started it (kill -9 included) and takes the server's process group with it,
so a killed search never leaves a server behind.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fashion_exp.children import die_if_parent_gone, free_port, last_log_line, parented, stop
from fashion_exp.errors import UserError

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
def shared_store(uri: str, log: Path, echo=print) -> Iterator[str]:
    """The tracking URI that worker processes log to while the block runs (see module doc)."""
    if not needs_server(uri):
        yield uri
        return
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        *("mlflow", "server", "--backend-store-uri", uri),
        *("--default-artifact-root", Path("mlruns").resolve().as_uri()),
        *("--host", "127.0.0.1", "--port", str(port), "--workers", "1"),
    ]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        guard = subprocess.Popen(
            [sys.executable, "-m", "fashion_exp.tracking.server", *command],
            stdout=out,
            stderr=subprocess.STDOUT,
            # no preexec_fn: this process may run gRPC threads (the chief's oracle), and a
            # preexec_fn makes Popen fork() them, running gRPC's fork handlers in the child (seen
            # here: the guard died at once after an epoll error); the guard asks the kernel itself
            env=parented(dict(os.environ)),
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not healthy(url):
            if guard.poll() is not None or time.monotonic() > deadline:
                raise UserError(
                    f"the MLflow server for the workers did not start ({last_log_line(log) or 'no output'}); see {log}"
                )
            time.sleep(0.25)
        echo(f"Workers log through an MLflow server at {url} on {uri} (log: {log})")
        yield url
    finally:
        stop(guard)


def guard(command: list[str]) -> int:
    """Run `command` in its own process group; end the group when this process is told to stop
    or when its parent dies."""
    die_if_parent_gone(signal.SIGTERM)
    server = subprocess.Popen([sys.executable, "-m", *command], start_new_session=True)

    def end(signum, frame):
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=10)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(server.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        sys.exit(0)

    signal.signal(signal.SIGTERM, end)
    signal.signal(signal.SIGINT, end)
    return server.wait()


if __name__ == "__main__":
    sys.exit(guard(sys.argv[1:]))
