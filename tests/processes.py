"""Real `python -m fashion_exp` processes started at the same moment, for the concurrency tests.

Each command is forked from tests/zygote.py's process, which imported TensorFlow, MLflow, ... once,
and waits for a "go" file; the test creates it once all are forked, so the commands begin within a
millisecond of each other instead of a few seconds apart as their imports would finish. Each is
still a process of its own, with its own files, locks and exit status.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from tests import zygote


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str

    def has_traceback(self) -> bool:
        return "Traceback" in self.stdout + self.stderr


def run_together(commands: list[list[str]], cwd: Path, timeout: float = 600) -> list[Finished]:
    """Run the CLI commands in separate processes (forked from tests/zygote.py's) that begin at the
    same moment, once cwd/.go exists; their results in order."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
    go, started = cwd / ".go", []
    for index, args in enumerate(commands):
        out, err = cwd / f".p{index}.out", cwd / f".p{index}.err"
        with out.open("w") as stdout, err.open("w") as stderr:
            command = [*zygote.COMMAND, *args]
            started.append((zygote.popen(command, cwd=cwd, env=env, stdout=stdout, stderr=stderr, go=go), out, err))
    go.touch()
    return [Finished(waited(process, timeout), out.read_text(), err.read_text()) for process, out, err in started]


def waited(process, timeout: float) -> int:
    """The process's exit status; killed when it runs past `timeout` seconds."""
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait()


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
