"""`python -m fashion_exp ui`'s mistakes, each one line: a store that is a server already, a store
that does not exist, a port another program holds."""

from __future__ import annotations

import socket

import pytest

from fashion_exp.cli import main


def one_error(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def test_a_tracking_server_needs_no_ui(capsys):
    assert main(["ui", "tracking.uri=http://me:s3cret@mlhost:5000"]) == 2
    line = one_error(capsys)
    assert "is a tracking server already" in line and "s3cret" not in line


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
