"""`python -m fashion_exp` processes forked from one that imported TensorFlow, Keras, keras-tuner and
MLflow once, for the tests that start many commands (the process, signal and worker tests).

Importing those libraries is about 4-5 s of CPU a process on a 2-core host; the suite starts about
40 commands of its own. `popen` and `run` take the same words as subprocess.Popen and
subprocess.run: a `[sys.executable, "-m", "fashion_exp", ...]` command is forked from this pytest
worker's zygote, anything else goes to subprocess unchanged. The forked command is a real process
of its own (its own pid, session when asked, files, signals, exit status): kill -9 kills it, SIGTERM
reaches the product's own handler, its children (local workers, the tracking server) are started
by the product as always. What a fork cannot prove (how `python -m fashion_exp` starts: the start-up
lines, what is imported before what) is tested with subprocess itself (test_start.py, test_cli.py's
README workflow, test_readme_workflow.py's `make tune`).

The zygote forks a guardian per command, which forks the command and reports its pid, then its
exit status, over the connection: the command's parent is the guardian, not the test, so the
returned `Forked` mimics the part of Popen the tests use.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from fashion_exp.search import spawner

COMMAND = [sys.executable, "-m", "fashion_exp"]
PRELOAD = (
    *spawner.PRELOAD,  # (a worker's imports, a database store's included)
    "mlflow.tracking",
    "fashion_exp.search.run",
    "fashion_exp.search.stages",
    "fashion_exp.final.train",
)

ZYGOTE = """
import importlib, json, os, runpy, signal, socket, sys, time

from fashion_exp import quiet
from fashion_exp.children import die_if_parent_gone

die_if_parent_gone()  # ends with the pytest worker that started it
quiet.configure()  # as `python -m fashion_exp` does before its imports
for module in sys.argv[2].split(","):
    importlib.import_module(module)


def serve(path):
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the guardians end on their own: no zombies here
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(16)
    print("ready", flush=True)
    while True:
        conn, _ = listener.accept()
        if os.fork() == 0:  # the guardian of one command
            listener.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # (it waits for its command)
            request, fds = receive(conn)
            pid = os.fork()
            if pid == 0:
                conn.close()
                return become(request, fds)
            for fd in fds:
                os.close(fd)
            conn.sendall(json.dumps({"pid": pid}).encode() + b"\\n")
            _, status = os.waitpid(pid, 0)
            conn.sendall(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}).encode() + b"\\n")
            os._exit(0)
        conn.close()


def receive(conn):
    message, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
    return json.loads(message), fds


def become(request, fds):
    if request["new_session"]:
        os.setsid()
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for number in (signal.SIGTERM, signal.SIGCHLD, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2):
        signal.signal(number, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # (a new interpreter's)
    unbuffered = request["env"].get("PYTHONUNBUFFERED", "") not in ("", "0")
    for name, fd in (("stdout", 1), ("stderr", 2)):
        stream = open(fd, "w", buffering=1 if unbuffered or name == "stderr" else -1, closefd=False)
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)
    sys.stdin = sys.__stdin__ = open(0, closefd=False)
    while request["go"] and not os.path.exists(request["go"]):  # commands meant to begin at one moment
        time.sleep(0.0005)
    return request["args"]


args = serve(sys.argv[1])
sys.argv = ["fashion_exp", *args]
runpy.run_module("fashion_exp", run_name="__main__", alter_sys=True)
"""


class Zygote:
    """One per pytest worker: started at its first command, ended with the session."""

    _started: Zygote | None = None

    def __init__(self, folder: Path):
        self.path = str(folder / "zygote.sock")
        from fashion_exp.children import parented

        env = parented({**os.environ, "PYTHONUNBUFFERED": "1"})
        self.process = subprocess.Popen(
            [sys.executable, "-c", ZYGOTE, self.path, ",".join(PRELOAD)],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
            env=env,
            text=True,
            start_new_session=True,
        )
        line = self.process.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"the zygote did not start ({self.process.wait()})")

    @classmethod
    def get(cls) -> Zygote:
        if cls._started is None or cls._started.process.poll() is not None:
            import tempfile

            cls._started = Zygote(Path(tempfile.mkdtemp(prefix="zygote-")))
        return cls._started

    @classmethod
    def stop(cls) -> None:
        if cls._started is not None and cls._started.process.poll() is None:
            os.killpg(cls._started.process.pid, signal.SIGKILL)  # the guardians and commands in its session too
            cls._started.process.wait()
        if cls._started is not None:
            shutil.rmtree(Path(cls._started.path).parent, ignore_errors=True)  # (its socket's folder)
        cls._started = None

    def fork(self, args: list[str], cwd: str, env: dict[str, str], fds: list[int], new_session: bool, go: str):
        conn = socket.socket(socket.AF_UNIX)
        conn.connect(self.path)
        request = {"args": args, "cwd": cwd, "env": env, "new_session": new_session, "go": go}
        socket.send_fds(conn, [json.dumps(request).encode()], fds)
        return conn


class Forked(spawner.Forked):
    """The part of subprocess.Popen the tests use, for a command forked by the zygote: the product's
    handle on a forked worker (fashion_exp/search/spawner.py), with the command's pipes."""

    def __init__(self, args, conn: socket.socket, stdout, stderr):
        super().__init__(args, conn)
        self.stdout, self.stderr = stdout, stderr
        self._read: dict[str, list[str]] = {}
        self._readers: list[threading.Thread] = []

    def communicate(self, input=None, timeout: float | None = None):
        if not self._readers:
            for name in ("stdout", "stderr"):
                stream = getattr(self, name)
                if stream is not None:
                    self._read[name] = []
                    reader = threading.Thread(target=lambda s=stream, into=self._read[name]: into.append(s.read()))
                    reader.start()
                    self._readers.append(reader)
        started = time.monotonic()
        self.wait(timeout)
        for reader in self._readers:
            reader.join(None if timeout is None else max(0.0, timeout - (time.monotonic() - started)) + 5)
        found = tuple("".join(self._read[name]) if name in self._read else None for name in ("stdout", "stderr"))
        for name in ("stdout", "stderr"):
            stream = getattr(self, name)
            if stream is not None:
                stream.close()
        return found

    def __enter__(self) -> Forked:
        return self

    def __exit__(self, *exc) -> None:
        self.wait()


def _target(spec, text: bool, inherited: int) -> tuple[int, object]:
    """(the fd the command writes to, the test's end of it or None) for a Popen stdout/stderr spec."""
    if spec is subprocess.PIPE:
        read, write = os.pipe()
        return write, open(read, "r" if text else "rb", closefd=True)
    if spec is subprocess.DEVNULL:
        return os.open(os.devnull, os.O_RDWR), None
    if spec is None:
        return os.dup(inherited), None
    return os.dup(spec if isinstance(spec, int) else spec.fileno()), None


def popen(
    command, cwd=None, env=None, stdout=None, stderr=None, stdin=None, text=False, start_new_session=False, go=None
):
    """subprocess.Popen, forked from the zygote where `command` is `python -m fashion_exp ...`; with
    `go` (a path), the forked command begins once that file exists (imports are done at the fork)."""
    if list(command[:3]) != COMMAND:
        given = {"stdout": stdout, "stderr": stderr, "stdin": stdin, "start_new_session": start_new_session}
        return subprocess.Popen(command, cwd=cwd, env=env, text=text, **given)
    stdin_fd = os.open(os.devnull, os.O_RDONLY) if stdin in (None, subprocess.DEVNULL) else os.dup(stdin.fileno())
    out_fd, out = _target(stdout, text, 1)
    if stderr is subprocess.STDOUT:
        err_fd, err = os.dup(out_fd), None
    else:
        err_fd, err = _target(stderr, text, 2)
    fds = [stdin_fd, out_fd, err_fd]
    try:
        conn = Zygote.get().fork(
            [str(word) for word in command[3:]],
            str(Path(cwd or os.getcwd()).resolve()),
            dict(os.environ if env is None else env),
            fds,
            start_new_session,
            str(go) if go else "",
        )
    finally:
        for fd in fds:
            os.close(fd)
    return Forked(command, conn, out, err)


def run(command, cwd=None, env=None, capture_output=False, text=False, timeout=None, check=False):
    """subprocess.run, forked from the zygote where `command` is `python -m fashion_exp ...`."""
    pipe = subprocess.PIPE if capture_output else None
    process = popen(command, cwd=cwd, env=env, stdout=pipe, stderr=pipe, text=text)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise
    if check and process.returncode:
        raise subprocess.CalledProcessError(process.returncode, command, out, err)
    return subprocess.CompletedProcess(command, process.returncode, out, err)
