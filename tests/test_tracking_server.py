"""The workers' MLflow server (tracking/server.py) ends with whatever ends its guard: kill -9 included."""

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from fashion_exp.children import free_port
from tests.processes import processes_naming

pytestmark = pytest.mark.slow  # a real MLflow server, real processes and real signals

STARTER = """
import sys, time
from fashion_exp.tracking.server import healthy, shared_store
meanwhile = lambda url: print("meanwhile", url, "answering" if healthy(url) else "starting", flush=True)
with shared_store(sys.argv[1], __import__("pathlib").Path(sys.argv[2]), meanwhile=meanwhile) as url:
    print(url, flush=True)
    time.sleep(600)
"""


def group_lines(group: int) -> list[str]:
    """The command lines of the processes in process group `group`."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[2]) == group:
                found.append((entry / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except (OSError, ValueError, IndexError):
            continue
    return found


def guard_of(port: str) -> int:
    return next(
        pid
        for pid in processes_naming("fashion_exp.tracking.server fashion_exp.tracking.store_server")
        if port in (Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode())
    )


@pytest.mark.parametrize("victim", ["guard", "leader"])
def test_kill_9_of_the_guard_or_the_group_leader_leaves_no_server(tmp_path, victim):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    starter = subprocess.Popen(
        [sys.executable, "-c", STARTER, uri, str(tmp_path / "server.log")],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        meanwhile, url = starter.stdout.readline().split(), starter.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), (tmp_path / "server.log").read_text()[-2000:]
        # the chief starts its workers (meanwhile) while the server comes up: they import TensorFlow meanwhile
        assert meanwhile == ["meanwhile", url, "starting"]
        port = url.rsplit(":", 1)[1]
        serving = processes_naming(f"--port {port}")
        assert len(serving) >= 2  # the guard and the server (and the server's own children)
        group = os.getpgid(max(serving))
        time.sleep(2)  # (`mlflow server` started its job runner as it started serving)
        lines = group_lines(group)
        assert not [line for line in lines if "huey" in line]  # no job runner: 7 processes, 21 s of CPU
        # the group leader, and one process that imports MLflow and serves (`mlflow server` took two:
        # its command line, then uvicorn)
        assert sorted(" --lead " in line for line in lines) == [False, True], lines
        assert [line for line in lines if " --lead " not in line][0].split()[1:3] == [
            "-m",
            "fashion_exp.tracking.store_server",
        ]
        pid = guard_of(port) if victim == "guard" else group
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while processes_naming(f"--port {port}") and time.monotonic() < deadline:
            time.sleep(0.5)
        assert processes_naming(f"--port {port}") == []
    finally:
        starter.kill()
        starter.wait()


def test_a_store_the_server_cannot_open_is_said_in_one_line(tmp_path):
    """A store the server cannot open (here a sqlite file below a file) ends the server at once, and
    the caller says why in one line: the server's own last line, with the log's path."""
    from fashion_exp.errors import UserError
    from fashion_exp.tracking.server import shared_store

    (tmp_path / "a-file").write_text("")
    with pytest.raises(UserError) as raised, shared_store(f"sqlite:///{tmp_path}/a-file/mlflow.db", tmp_path / "s.log"):
        pass
    message = str(raised.value)
    assert "\n" not in message and message.startswith("the MLflow server for the workers did not start at http://")
    assert f"cannot open the store sqlite:///{tmp_path}/a-file/mlflow.db: FileExistsError" in message, message
    assert message.endswith(f"see {tmp_path / 's.log'}")


def test_sigterm_to_the_guard_ends_its_group_without_waiting_out_the_grace(tmp_path):
    """The guard and the leader ended the group from inside their signal handlers, while their own
    code waited on the child: the handler's wait could not take Popen's wait lock and waited out
    end_group's whole 10 s grace, then killed the group. Every `ui` Ctrl-C and every search on
    workers took 10 s longer to end. (A small server stands in for MLflow's: the guard runs any.)"""
    port = free_port()
    serving = f"http.server --bind 127.0.0.1 {port}"
    guard = subprocess.Popen(
        [sys.executable, "-m", "fashion_exp.tracking.server", *serving.split()],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not answers(f"http://127.0.0.1:{port}/"):
            assert guard.poll() is None and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.2)
        assert len(processes_naming(serving)) == 3  # the guard, the leader, the server
        guard.send_signal(signal.SIGINT)  # a terminal's Ctrl-C reaches the guard too: tune still needs the server
        time.sleep(1)
        assert guard.poll() is None and answers(f"http://127.0.0.1:{port}/")
        guard.send_signal(signal.SIGTERM)
        assert guard.wait(timeout=5) == 0  # half the grace: the group ended as soon as its server did
        assert processes_naming(serving) == []
    finally:
        guard.kill()
        guard.wait()


def answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2):
            return True
    except OSError:
        return False


def test_the_store_server_runs_with_the_environment_mlflow_server_gives_its_server(monkeypatch):
    """`mlflow server` exports its stores and artifact root to the process that serves; MLflow's
    code takes the artifact root's presence to mean "this is a tracking server" and then refuses
    artifact locations on other hosts (its artifact host policy). store_server sets the same."""
    from mlflow.store.artifact.host_policy import is_tracking_server_process

    from fashion_exp.tracking.store_server import server_environment

    environment = server_environment("sqlite:///m.db", "file:///srv/mlruns")
    assert not is_tracking_server_process()
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert is_tracking_server_process()
    assert (
        environment["_MLFLOW_IN_JOB_EXECUTOR"] == "false"
        and environment["_MLFLOW_SERVER_FILE_STORE"] == "sqlite:///m.db"
    )


def test_a_store_server_without_a_store_says_so_in_one_line(monkeypatch, capsys):
    """The store's URI travels in the environment only: started without it, the server says which
    variable to set, in one line, and exits 2 before importing MLflow."""
    from fashion_exp.tracking import store_server

    monkeypatch.delenv(store_server.STORE_ENV, raising=False)
    args = ["--host", "127.0.0.1", "--port", "5000", "--artifact-root", "file:///srv/mlruns"]
    assert store_server.main(args) == 2
    assert capsys.readouterr().err == f"no store: set {store_server.STORE_ENV}\n"
