"""SIGTERM (how Slurm, systemd, Docker and Kubernetes stop a job) is handled as Ctrl-C: the runs the
command had open are marked KILLED, nothing is left RUNNING, and the same command resumes."""

import os
import signal
import subprocess
import sys
import time

import pytest
from mlflow.tracking import MlflowClient

from fashion_exp.config import load_config

pytestmark = pytest.mark.slow  # real processes and real signals


def start_tune(overrides, cwd, *more):
    command = [sys.executable, "-m", "fashion_exp", "tune", *overrides, *more]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_line(process, prefix: str, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    for line in process.stdout:
        if line.startswith(prefix):
            return
        assert time.monotonic() < deadline, f"no line starting {prefix!r} in {timeout} s"
    raise AssertionError(f"exited ({process.wait()}) before printing {prefix!r}: {process.stderr.read()[-2000:]}")


def statuses(uri: str) -> list[str]:
    client = MlflowClient(uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    return sorted(run.info.status for run in client.search_runs(experiments))


@pytest.mark.parametrize("workers", [0, 1])
def test_sigterm_marks_the_runs_killed_and_the_rerun_resumes(overrides, tmp_path, workers):
    config = load_config(overrides)
    more = ["tuner.max_trials=2", "tuner.epochs=60", f"tuner.workers={workers}"]
    running = start_tune(overrides, tmp_path, *more)
    wait_for_line(running, "Started search")
    time.sleep(6)  # into the first trial (the worker's, with workers=1)
    running.send_signal(signal.SIGTERM)
    _, err = running.communicate(timeout=120)
    assert running.returncode == 143, err[-2000:]
    assert "stopped by SIGTERM: run the same command again to resume where it stopped" in err
    assert "Traceback" not in err
    found = statuses(config.tracking.uri)
    assert "RUNNING" not in found and "KILLED" in found, found
    rerun = start_tune(overrides, tmp_path, *more)
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err[-2000:]
    assert "Resuming search" in out
    assert "RUNNING" not in statuses(config.tracking.uri)
