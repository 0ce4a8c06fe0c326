"""The README's workflow, followed as written after `make tune`, in a fresh copy of the project
with a `../shared` beside it (tiny photos; the tiny backbone through make tune's ARGS).

`make tune` gives the search ../shared's data through FASHION_DATA, which the README's next
commands (`.venv/bin/python -m fashion_exp ...`, outside make) do not have: before, train-final
answered "dataset not found at .../data/clothing-dataset-small". Each line of the README's workflow
block runs here as written (with .venv's python); the ones that serve until stopped (ui, serve) run
beside the lines after them and are stopped once they answer, and the optional combine line, which
names versions 2 and 3 of a registry this run fills with one, is left out.

`make tune` starts its interpreter as a fresh clone does. The lines after it run forked from the
test zygote (tests/zygote.py): the same words, working folder and environment as `.venv/bin/python
-m fashion_exp ...` there (the copy's .venv is this interpreter), without each one importing
TensorFlow again (about 45 s of the test's 70 s of CPU on a 2-core host). How a command starts is
test_start.py's to prove; this test proves what each line finds after `make tune`.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests import zygote
from tests.synthetic import make_dataset

pytestmark = pytest.mark.slow  # a dozen real commands, each importing TensorFlow or MLflow

ROOT = Path(__file__).resolve().parents[1]
SERVING = {"ui": "http://127.0.0.1:5000/", "serve": "http://127.0.0.1:8000/health"}  # what each answers once up


def workflow_lines() -> list[str]:
    """The commands of the README's workflow block, comments removed."""
    text = (ROOT / "README.md").read_text()
    block = text.split("## The workflow", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    return [re.sub(r"\s+#.*$", "", line).strip() for line in block.splitlines() if line.strip()]


def fresh_copy(target: Path) -> Path:
    """The project's files as a fresh clone of this working tree has them (nothing git ignores)."""
    listed = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True, check=True
    )
    for name in filter(None, listed.stdout.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    (target / ".venv").symlink_to(Path(sys.prefix))  # (this environment: make is told not to rebuild it)
    return target


def run(command: list[str], cwd: Path, env: dict, timeout: float = 600) -> str:
    done = zygote.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{shlex.join(command)}: {done.stdout[-2000:]}{done.stderr[-3000:]}"
    return done.stdout


def serving(command: list[str], cwd: Path, env: dict) -> subprocess.Popen:
    """Start a command that serves until stopped (the workflow goes on beside it)."""
    return zygote.popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def answered_then_stopped(process: subprocess.Popen, url: str) -> None:
    """Wait until `url` answers, then stop the process that serves it with SIGINT."""
    deadline = time.monotonic() + 180
    while True:
        assert process.poll() is None, f"{shlex.join(process.args)} ended: {process.stdout.read()[-3000:]}"
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                assert answer.status == 200
            break
        except OSError:
            assert time.monotonic() < deadline, f"{url} never answered"
            time.sleep(0.5)
    process.send_signal(signal.SIGINT)
    process.wait(timeout=60)


@pytest.mark.skipif(shutil.which("make") is None or shutil.which("git") is None, reason="needs make and git")
def test_the_readme_workflow_runs_as_written_after_make_tune(tmp_path):
    make_dataset(tmp_path / "shared" / "data" / "clothing-dataset-small")
    project = fresh_copy(tmp_path / "project")
    env = {k: v for k, v in os.environ.items() if k not in ("FASHION_DATA", "FASHION_WEIGHTS", "MLFLOW_TRACKING_URI")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    small = "model=tiny data.image_size=32 tuner.max_trials=2 tuner.epochs=2"
    run(["make", "-o", ".venv/.installed", "tune", f"ARGS={small}"], project, env)
    lines = workflow_lines()
    assert lines[0].startswith("python -m fashion_exp tune") and any("train-final" in line for line in lines)
    tiny_final = ["final.restarts=1", "final.epochs=2", "final.views=1"]  # (its defaults train 5 x 30 epochs)
    said, served = {}, []  # (the commands that serve run beside the next lines, and are stopped once they answer)
    try:
        for line in lines[1:]:
            words = shlex.split(line)
            assert words[:3] == ["python", "-m", "fashion_exp"], line
            assert (project / ".venv" / "bin" / "python").exists()  # (the interpreter the line names)
            command = [*zygote.COMMAND, *words[3:]]
            if words[3] == "combine":
                continue
            if words[3] in SERVING:
                served.append((serving(command, project, env), SERVING[words[3]]))
                continue
            said[words[3]] = run([*command, *tiny_final] if words[3] == "train-final" else command, project, env)
        for process, url in served:
            answered_then_stopped(process, url)
    finally:
        for process, _ in served:
            process.kill()
    shared = tmp_path / "shared" / "data" / "clothing-dataset-small"
    assert f"From the search: data.root={shared} model.backbone=tiny" in said["train-final"], said["train-final"]
    assert f"data.root={shared}" in said["evaluate"] and "test" in said["evaluate"]
    assert "shoes" in said["predict"]  # its table, for the photos the README names
    assert said.keys() >= {"train-final", "evaluate", "promote", "predict", "export-onnx"}
