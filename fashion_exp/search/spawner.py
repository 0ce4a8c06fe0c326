"""Local workers forked from one process that imported their libraries once (cluster.WorkerPool).

A `tune-worker` started as a new Python process first imports TensorFlow, Keras, keras-tuner and
MLflow: about 6 s of CPU on a 2-core host, at every start. A tune's local workers (tuner.workers),
those of each later search of a staged tune, and every worker started again after it died, fork
instead from one template process the chief starts once (`python -m fashion_exp.search.spawner`),
which imported them before any worker ran: a start takes milliseconds and no CPU.

The template forks a guardian per worker, which forks the worker, reports its pid and then its exit
status to the chief: the chief's handle (Forked) answers poll, wait and send_signal as
subprocess.Popen does. The worker is a process of its own (its pid, environment, working folder,
log as stdout and stderr, default signal handlers), running `python -m fashion_exp tune-worker ...`
as a new process would; `ps` shows it with the template's command line. Each link ends with the one
above it (PR_SET_PDEATHSIG): a chief killed with -9 takes the template, the guardians and the
workers with it. On a machine with an NVIDIA driver (or tuner.gpus_per_worker > 0) workers are new
processes as before: no CUDA state is ever forked.
"""

from __future__ import annotations

import importlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from fashion_exp.children import PARENT_PID, die_if_parent_gone, die_with_parent, last_log_line, parented
from fashion_exp.errors import UserError

PRELOAD = (
    "tensorflow",
    "keras",
    "keras_tuner",
    "mlflow",
    # what a worker imports to open a database store (sqlite, PostgreSQL): about 0.7 s of CPU a worker
    # otherwise; `mlflow` alone imports neither (tests/test_spawner.py checks it)
    "mlflow.store.tracking.sqlalchemy_store",
    "mlflow.store.model_registry.sqlalchemy_store",
    "hydra.core.override_parser.overrides_parser",  # (what composing the worker's config imports)
    "fashion_exp.cli",
    "fashion_exp.search.worker",
)
START_TIMEOUT = 180.0
READY = "ready"


class Forked:
    """The part of subprocess.Popen the pool uses, for a worker the template forked."""

    def __init__(self, args: list[str], conn: socket.socket):
        self.args, self._conn = args, conn
        self._lines = conn.makefile("r")
        line = self._lines.readline()
        if not line:
            raise UserError("the worker template ended before it started a worker (its log: spawner.log)")
        self.pid: int = json.loads(line)["pid"]
        self.returncode: int | None = None

    def _finish(self) -> None:
        line = self._lines.readline()
        self.returncode = json.loads(line)["returncode"] if line else -signal.SIGKILL  # (its guardian was killed)
        self._lines.close()
        self._conn.close()

    def poll(self) -> int | None:
        if self.returncode is None and select.select([self._conn], [], [], 0)[0]:
            self._finish()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            if not select.select([self._conn], [], [], timeout)[0]:
                raise subprocess.TimeoutExpired(self.args, timeout)
            self._finish()
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class Spawner:
    """The chief's template process: started once, it forks `python -m fashion_exp <args>` on request."""

    def __init__(self, log: Path):
        folder = Path(tempfile.mkdtemp(prefix="fashion-exp-spawner-"))  # (0700: only this user may connect)
        self.path, self.log = str(folder / "spawner.sock"), log
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "fashion_exp.search.spawner", "tune-worker", self.path],
                stdout=subprocess.PIPE,
                stderr=out,
                stdin=subprocess.DEVNULL,
                env=parented(dict(os.environ)),  # (no preexec_fn: this process may run gRPC threads)
                text=True,
                # a session of its own: a terminal's Ctrl-C reaches the chief alone, which stops each
                # worker with SIGINT (WorkerPool.stop) while the template and guardians stay
                start_new_session=True,
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        if not select.select([self.process.stdout], [], [], START_TIMEOUT)[0] or (
            self.process.stdout.readline().strip() != READY
        ):
            self.stop()
            said = last_log_line(self.log) or "no output"
            raise UserError(f"the local workers' template process did not start ({said}); see {self.log}")

    def alive(self) -> bool:
        return self.process.poll() is None

    def popen(self, args: list[str], env: dict[str, str], log: Path, cwd: str | None = None) -> Forked:
        """`python -m fashion_exp <args>` forked with `env`, appending its output to `log`."""
        conn = socket.socket(socket.AF_UNIX)
        request = {"args": args, "env": env, "log": str(log), "cwd": cwd or os.getcwd()}
        try:
            refused = conn.connect_ex(self.path)  # (an error number, 0 when connected)
            if refused:
                raise OSError(refused, os.strerror(refused))
            conn.sendall(json.dumps(request).encode() + b"\n")
        except OSError as err:
            conn.close()
            raise UserError(f"the local workers' template process is gone ({err.strerror}); see {self.log}") from None
        return Forked([sys.executable, "-m", "fashion_exp", *args], conn)

    def stop(self) -> None:
        """End the template (its guardians, and any worker still running, go with it)."""
        if self.alive():
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process.wait()
        self.process.stdout.close()
        Path(self.path).unlink(missing_ok=True)
        Path(self.path).parent.rmdir()  # (a chief killed with -9 leaves this empty folder behind)


def serve(path: str) -> dict:
    """The template: import, then fork a guardian per request; in a forked worker, returns its request."""
    die_if_parent_gone()  # ends with the chief
    from fashion_exp import quiet

    quiet.configure()  # as `python -m fashion_exp` does before its imports
    for module in PRELOAD:
        importlib.import_module(module)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the guardians end on their own: no zombies here
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))  # (Spawner.stop: a clean exit)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(16)
    print(READY, flush=True)
    template = os.getpid()
    while True:
        conn, _ = listener.accept()
        if os.fork() == 0:
            listener.close()
            return guard(conn, template)
        conn.close()


def guard(conn: socket.socket, template: int) -> dict:
    """A guardian: fork the worker, report its pid, wait for it, report its exit status, end."""
    for number in (signal.SIGCHLD, signal.SIGTERM):  # (it waits for its worker; a stop ends it)
        signal.signal(number, signal.SIG_DFL)
    die_with_parent()  # ends with the template
    if os.getppid() != template:  # the template died before the request above: no worker
        os._exit(1)
    request = json.loads(conn.makefile("r").readline())
    request["guardian"] = os.getpid()  # (the worker checks it still has this parent: __main__)
    pid = os.fork()
    if pid == 0:
        conn.close()
        return request
    conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
    _, status = os.waitpid(pid, 0)
    conn.sendall(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}).encode() + b"\n")
    os._exit(0)


def become(request: dict) -> None:
    """This forked process as a new `python -m fashion_exp` would start: its folder, environment
    (ending with its guardian), log, signal handlers and arguments."""
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update({**request["env"], PARENT_PID: str(request["guardian"])})  # (python -m fashion_exp checks it)
    log = os.open(request["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    devnull = os.open(os.devnull, os.O_RDONLY)
    for fd, target in ((devnull, 0), (log, 1), (log, 2)):
        os.dup2(fd, target)
    os.close(log)
    os.close(devnull)
    for number in (signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(number, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # (a new interpreter's)
    unbuffered = request["env"].get("PYTHONUNBUFFERED", "") not in ("", "0")  # (as a new interpreter reads it)
    sys.stdout = sys.__stdout__ = open(1, "w", buffering=1 if unbuffered else -1, closefd=False)
    sys.stderr = sys.__stderr__ = open(2, "w", buffering=1, closefd=False)
    sys.stdin = sys.__stdin__ = open(0, closefd=False)
    sys.argv = ["fashion_exp", *request["args"]]


if __name__ == "__main__":
    become(serve(sys.argv[2]))
    import runpy

    runpy.run_module("fashion_exp", run_name="__main__", alter_sys=True)
