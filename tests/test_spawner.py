"""Local workers forked from one template process (fashion_exp/search/spawner.py): each is a
`python -m fashion_exp tune-worker` of its own (exit status, log, signals), and each ends with the
template, which ends with the chief."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fashion_exp.children import free_port
from fashion_exp.errors import UserError
from fashion_exp.search.spawner import Spawner
from tests.test_distributed import alive, gone_within

pytestmark = pytest.mark.slow  # real processes and signals


def parent_of(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_forked_workers_answer_as_new_processes_and_end_with_the_template(overrides, tmp_path):
    spawner = Spawner(tmp_path / "spawner.log")
    try:
        # a bad argument: the worker's own one-line error in its log, and its exit status
        refused = spawner.popen(["tune-worker", "--chief", "nohost"], dict(os.environ), tmp_path / "refused.log")
        assert refused.wait(timeout=60) == 2
        last = (tmp_path / "refused.log").read_text().strip().splitlines()[-1]
        assert last.startswith("error: --chief: 'nohost' is not host:port (for example"), last
        # a worker waiting for a chief that never comes (its token file, then its oracle): forked from a
        # guardian forked from the template (trials on forked workers: test_distributed.py)
        port = free_port()
        waiting = ["tune-worker", "--chief", f"127.0.0.1:{port}", *overrides, "tuner.chief_timeout=120"]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        worker = spawner.popen(waiting, env, tmp_path / "worker.log", cwd=str(tmp_path))
        started = time.monotonic()
        while "Backbone runtime:" not in _text(tmp_path / "worker.log"):
            assert worker.poll() is None and time.monotonic() - started < 60, _text(tmp_path / "worker.log")
            time.sleep(0.1)
        assert parent_of(parent_of(worker.pid)) == spawner.process.pid
        # not in the chief's process group: a terminal's Ctrl-C reaches the chief alone, which stops
        # each worker itself (before, the template died of it and took the workers with it)
        assert os.getpgid(worker.pid) == spawner.process.pid != os.getpgid(0)
        assert Path(f"/proc/{worker.pid}/cwd").resolve() == tmp_path.resolve()
        worker.send_signal(signal.SIGINT)  # Ctrl-C, as the chief stops its workers: the product's own handler
        assert worker.wait(timeout=60) != 0 and "Traceback" not in _text(tmp_path / "worker.log")
        # kill -9 of the template (as when the chief dies) takes a running worker with it
        second = spawner.popen(waiting, env, tmp_path / "second.log", cwd=str(tmp_path))
        guardian = parent_of(second.pid)
        os.kill(spawner.process.pid, signal.SIGKILL)
        assert gone_within([second.pid, guardian], 30), "a worker outlived its template"
        assert second.wait(timeout=10) == -signal.SIGKILL
    finally:
        spawner.stop()
    assert not alive(spawner.process.pid)
    with pytest.raises(UserError) as raised:  # (the pool starts another template when it finds this one dead)
        spawner.popen(["tune-worker"], dict(os.environ), tmp_path / "late.log")
    assert str(raised.value) == (
        f"the local workers' template process is gone (No such file or directory); see {tmp_path / 'spawner.log'}"
    )


def test_a_template_that_cannot_start_is_said_in_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))
    (tmp_path / "no-python").write_text("#!/bin/sh\necho 'cannot import tensorflow' >&2\nexit 1\n")
    (tmp_path / "no-python").chmod(0o755)
    with pytest.raises(UserError) as raised:
        Spawner(tmp_path / "spawner.log")
    message = str(raised.value)
    assert "\n" not in message
    assert message == (
        f"the local workers' template process did not start (cannot import tensorflow); see {tmp_path / 'spawner.log'}"
    )


def _text(path: Path) -> str:
    return path.read_text() if path.exists() else ""


def test_workers_fork_only_where_no_cuda_state_could_be_forked(tmp_path, monkeypatch):
    """A machine with an NVIDIA driver, or workers given GPUs of their own, starts workers as new
    processes; a CPU machine forks them (this host has no GPU: the driver is what is faked)."""
    from fashion_exp.search import cluster

    def pool(gpus: int) -> cluster.WorkerPool:
        return cluster.WorkerPool(2, "127.0.0.1:1", [], 0, gpus, tmp_path / "logs")

    monkeypatch.setattr(cluster, "nvidia_driver", lambda: False)
    assert pool(0).fork and not pool(1).fork
    monkeypatch.setattr(cluster, "nvidia_driver", lambda: True)
    assert not pool(0).fork


def test_the_template_imported_what_a_worker_needs_to_open_its_store(store_uri):
    """A forked worker opens the search's MLflow store (sqlite here, PostgreSQL on a cluster) and
    composes its config without importing MLflow's SQL stores itself: the template did, once (about
    0.7 s of CPU each worker would pay)."""
    code = f"""
import importlib, sys
from fashion_exp.search import spawner
for module in spawner.PRELOAD:
    if module.startswith(("mlflow", "hydra")):  # (not TensorFlow's 6 s: what a store needs comes from these)
        importlib.import_module(module)
before = set(sys.modules)
from fashion_exp.config import load_config
from fashion_exp.tracking.store import open_client
open_client({store_uri!r})
load_config(["model=tiny"])
print(sorted(name for name in set(sys.modules) - before if "sqlalchemy_store" in name))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout
