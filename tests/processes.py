"""Real `python -m fashion_exp` processes started at the same moment, for the concurrency tests.

Each process imports what it will need (TensorFlow, MLflow, ...), says it is ready, then waits for
a "go" file; the test creates it once all are ready, so the commands begin within a millisecond of
each other instead of a few seconds apart as their imports finish. Commands run together are forked
from one process that made those imports once (TensorFlow's import is 6-7 s of CPU on 2 cores):
each is still a process of its own, with its own files, locks and exit status.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

LAUNCHER = """
import importlib, os, sys, time
for module in os.environ.get("PRELOAD", "").split():
    importlib.import_module(module)
from fashion_exp.cli import main
ready, go = sys.argv[1], sys.argv[2]
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.0005)
sys.exit(main(sys.argv[3:]))
"""


FORKING_LAUNCHER = """
import importlib, json, os, sys, time
for module in os.environ.get("PRELOAD", "").split():
    importlib.import_module(module)
from fashion_exp.cli import main
folder, commands = sys.argv[1], json.loads(sys.argv[2])
children = {}
for index, args in enumerate(commands):
    pid = os.fork()
    if pid == 0:  # the command's own process: its output to its files, then it runs as the CLI would
        for fd, suffix in ((1, "out"), (2, "err")):
            os.dup2(os.open(f"{folder}/.p{index}.{suffix}", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), fd)
        open(f"{folder}/.p{index}.ready", "w").close()
        while not os.path.exists(f"{folder}/.go"):
            time.sleep(0.0005)
        sys.exit(main(args))
    children[pid] = index
for _ in commands:
    pid, status = os.wait()
    with open(f"{folder}/.p{children[pid]}.rc", "w") as rc:
        rc.write(str(os.waitstatus_to_exitcode(status)))
"""


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str

    def has_traceback(self) -> bool:
        return "Traceback" in self.stdout + self.stderr


def launch(args: list[str], cwd: Path, tag: str, preload: str = "") -> tuple[subprocess.Popen, Path, Path]:
    """Start one CLI process that waits for cwd/<tag>.go before running `args`."""
    ready, go = cwd / f".{tag}.ready", cwd / f".{tag}.go"
    env = {**os.environ, "PRELOAD": preload, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, str(ready), str(go), *args],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return process, ready, go


def wait_for(path: Path, process: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"process exited ({process.returncode}) before it was ready:\n{out}\n{err}")
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"process not ready after {timeout} s")
        time.sleep(0.01)


def run_together(commands: list[list[str]], cwd: Path, preload: str = "", timeout: float = 600) -> list[Finished]:
    """Run the CLI commands in separate processes started at the same moment (forked from one that
    imported `preload`); their results in order."""
    env = {**os.environ, "PRELOAD": preload, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    launcher = [sys.executable, "-c", FORKING_LAUNCHER, str(cwd), json.dumps(commands)]
    parent = subprocess.Popen(
        launcher, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, start_new_session=True
    )
    try:
        for index in range(len(commands)):
            wait_for(cwd / f".p{index}.ready", parent, timeout=120)
        (cwd / ".go").touch()
        _, err = parent.communicate(timeout=timeout)
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
            parent.wait()
    files = [{suffix: cwd / f".p{index}.{suffix}" for suffix in ("out", "err", "rc")} for index in range(len(commands))]
    assert all(f["rc"].exists() for f in files), f"a command did not finish ({parent.returncode}): {err[-2000:]}"
    return [Finished(int(f["rc"].read_text()), f["out"].read_text(), f["err"].read_text()) for f in files]


def finish(process: subprocess.Popen, timeout: float) -> Finished:
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        out, err = process.communicate()
    return Finished(process.returncode, out, err)


def kill_hard(process: subprocess.Popen) -> None:
    """kill -9: no handler, no cleanup; the kernel closes the process's files (and drops its locks)."""
    os.kill(process.pid, signal.SIGKILL)
    process.communicate()


def training_trial(uri: str, process: subprocess.Popen, timeout: float = 240) -> str:
    """The run id of a RUNNING trial that has logged an epoch, once there is one."""
    from mlflow.tracking import MlflowClient

    client, deadline = MlflowClient(uri), time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"the tune ended ({process.returncode}) before a trial ran"
        experiments = [e.experiment_id for e in client.search_experiments()]
        for run in client.search_runs(experiments, "attributes.status = 'RUNNING'"):
            if run.data.tags.get("fashion_exp.kind") == "trial" and run.data.metrics:
                return run.info.run_id
        time.sleep(0.1)
    raise AssertionError(f"no trial logged an epoch in {timeout} s")


def processes_naming(text: str) -> list[int]:
    """Pids of the processes (this one left out) whose command line holds `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                continue
    return found
