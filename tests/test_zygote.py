"""tests/zygote.py: a command forked from the zygote behaves as the same command executed, for what
the process tests look at (exit status, output, working folder, environment, signals)."""

import http.server
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests import zygote

FASHION = [sys.executable, "-m", "fashion_exp"]


def both(command, cwd, env):
    """(executed, forked) results of one command."""
    ran = [
        runner(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
        for runner in (subprocess.run, zygote.run)
    ]
    return ran[0], ran[1]


def test_a_forked_command_answers_as_the_executed_one(tmp_path):
    """Its environment (FASHION_DATA), folder, arguments, output and exit status."""
    env = {**os.environ, "FASHION_DATA": str(tmp_path / "missing")}
    command = [*FASHION, "tune", "model=tiny", f"work_dir={tmp_path / 'work'}"]
    executed, forked = both(command, tmp_path, env)
    assert executed.returncode == 2 and executed.stderr.startswith("error: dataset not found at "), executed.stderr
    assert str(tmp_path / "missing") in executed.stderr
    assert (forked.returncode, forked.stdout, forked.stderr) == (executed.returncode, executed.stdout, executed.stderr)
    # a word the command refuses: argparse's own exit and lines
    executed, forked = both([*FASHION, "tune", "--no-such-flag"], tmp_path, dict(os.environ))
    assert executed.returncode == 2 and "unrecognized arguments: --no-such-flag" in executed.stderr
    assert (forked.returncode, forked.stderr) == (executed.returncode, executed.stderr)


def test_other_commands_are_executed_as_given(tmp_path):
    command = [sys.executable, "-c", "import os; print(os.getcwd())"]
    done = zygote.run(command, cwd=tmp_path, capture_output=True, text=True)
    assert (done.returncode, done.stdout.strip()) == (0, str(tmp_path))


class Silent(http.server.BaseHTTPRequestHandler):
    """Takes the request and answers nothing: the fetch waits on its socket."""

    def do_GET(self):
        self.server.asked.set()
        self.server.release.wait(120)

    def log_message(self, *args):
        pass


@pytest.fixture
def silent_server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Silent)
    httpd.asked, httpd.release = threading.Event(), threading.Event()
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd
    httpd.release.set()
    httpd.shutdown()
    httpd.server_close()


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGKILL, -9)])
def test_a_forked_command_is_a_process_of_its_own_that_gets_its_signals(tmp_path, silent_server, sig, code):
    url = f"http://127.0.0.1:{silent_server.server_address[1]}/data.zip"
    command = [*FASHION, "fetch-data", f"data.root={tmp_path / 'data'}", f"data.url={url}"]
    running = zygote.popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert silent_server.asked.wait(60), "the fetch never asked"
    assert running.poll() is None and running.pid not in (os.getpid(), zygote.Zygote.get().process.pid)
    assert Path(f"/proc/{running.pid}/cwd").resolve() == tmp_path.resolve()
    time.sleep(0.2)
    running.send_signal(sig)
    _, err = running.communicate(timeout=60)
    assert running.returncode == code, err
    if sig == signal.SIGTERM:  # the product's own handler ran
        assert "stopped by SIGTERM: run the same command again to resume where it stopped" in err
