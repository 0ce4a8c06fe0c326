"""`python -m fashion_exp ui`'s mistakes, each one line: a store that is a server already, a store
that does not exist, a port another program holds; and the store's URI kept off command lines."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fashion_exp.children import free_port
from fashion_exp.cli import main
from fashion_exp.config import load_config
from fashion_exp.tracking.server import healthy


def one_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_tracking_server_needs_no_ui(capsys):
    assert main(["ui", "tracking.uri=http://me:s3cret@mlhost:5000"]) == 2
    line = one_error(capsys)
    assert "is a tracking server already" in line and "s3cret" not in line


@pytest.mark.parametrize("host", ["0.0.0.0", "192.168.1.7", "::", "myhost.example"])
def test_a_host_other_machines_reach_is_refused_unless_exposed_explicitly(host, overrides, capsys, said):
    """The UI has no login: another machine reaching it could read and change the whole store."""
    from fashion_exp.tracking.ui import check_exposure, loopback

    assert main(["ui", "--host", host, *overrides]) == 2
    line = one_error(capsys)
    assert f"ui --host {host}: other machines would reach the whole store with no login" in line
    assert "add --expose" in line
    check_exposure(host, 5000, True)  # said explicitly: allowed, and what is exposed is printed
    assert said[0].startswith(f"EXPOSED (--expose): anyone who reaches {host}:5000 reads and changes the whole store")
    assert all(loopback(h) for h in ("127.0.0.1", "127.3.2.1", "::1", "[::1]", "localhost"))


def test_a_store_that_does_not_exist_is_named(tmp_path, capsys):
    assert main(["ui", f"tracking.uri=sqlite:///{tmp_path / 'none.db'}", f"work_dir={tmp_path}"]) == 2
    assert f"no MLflow store at {tmp_path / 'none.db'}" in one_error(capsys)
    assert not (tmp_path / "none.db").exists()


@pytest.mark.slow
def test_a_taken_port_is_said_in_one_line(overrides, tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["ui", "--port", str(port), *overrides]) == 2
    assert "is the port taken? --port N" in one_error(capsys)


def command_lines_below(pid: int) -> list[str]:
    """The command lines of every process descended from pid."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    below, grew = {pid}, True
    while grew:
        more = {child for child, parent in parents.items() if parent in below} - below
        below |= more
        grew = bool(more)
    lines = []
    for child in below - {pid}:
        try:
            lines.append(Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return lines


@pytest.mark.slow
def test_the_store_uri_is_on_no_command_line_of_the_server(overrides, tmp_path):
    """A store URI may hold a database password, and ps shows every command line to every user of
    the machine: the server gets it through its environment."""
    port = free_port()
    ui = subprocess.Popen([sys.executable, "-m", "fashion_exp", "ui", "--port", str(port), *overrides], cwd=tmp_path)
    try:
        deadline = time.monotonic() + 120
        while not healthy(f"http://127.0.0.1:{port}"):
            assert ui.poll() is None and time.monotonic() < deadline, "mlflow ui did not start"
            time.sleep(0.5)
        lines = command_lines_below(ui.pid)
        assert any("-m fashion_exp.tracking.store_server " in line for line in lines), lines
        store = load_config(overrides).tracking.uri.removeprefix("sqlite:///")
        assert not [line for line in lines if store in line]
    finally:
        ui.send_signal(signal.SIGINT)
        assert ui.wait(30) == 0


def test_the_link_tune_prints_names_the_ui_it_starts_and_the_trials_view():
    """tracking.ui_host / ui_port (conf/tracking, the `ui` command's defaults) are where the link
    points; the store is named only when `ui` would not open it by itself; the view key opens the
    search's trials best first (test_mlflow_ui.py checks that in a browser)."""
    from fashion_exp.config import load_config
    from fashion_exp.tracking.experiments import trials_view, ui_link

    plain = load_config([])
    assert ui_link(plain.tracking, "7", "abc", plain.tracking.uri) == (
        "python -m fashion_exp ui   then open http://127.0.0.1:5000/#/experiments/7/runs"
        "?workflowType=machine_learning&viewStateShareKey=abc"
    )
    moved = load_config(["tracking.ui_port=5055", "tracking.uri=sqlite:///other.db"]).tracking
    assert ui_link(moved, "7", None, plain.tracking.uri).startswith(
        "python -m fashion_exp ui tracking.uri=sqlite:///other.db   then open http://127.0.0.1:5055/#/experiments/7/runs"
    )
    view = trials_view("run1", "val_loss", False, ["learning_rate", "droprate"])
    assert view["searchFilter"] == "tags.`mlflow.parentRunId` = 'run1'"
    assert view["orderByKey"] == "metrics.`val_loss`" and view["orderByAsc"] is True  # a loss: lowest first
    assert view["selectedColumns"] == [
        "metrics.`val_loss`",
        "metrics.`val_accuracy`",
        "params.`learning_rate`",
        "params.`droprate`",
    ]
