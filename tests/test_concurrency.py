"""Two commands on one folder at once, as real processes started at the same moment (no mocks).

A search runs in one process at a time; a fresh MLflow store is created once, whoever comes
first; train-final, promote and fetch-data may run twice at once and leave a consistent result.
"""

import http.server
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from fashion_exp.config import load_config
from fashion_exp.search.run import run_search
from tests import zygote
from tests.processes import Finished, finish, kill_hard, run_together
from tests.synthetic import make_dataset
from tests.test_download import zip_of

pytestmark = pytest.mark.slow  # commands run at once as real processes


def mlflow_runs(tmp_path: Path, experiment: str = "test") -> list:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id], max_results=1000) if found else []


def searches_and_trials(tmp_path: Path) -> tuple[list, dict[str, list]]:
    """The tune parent runs, and each one's child runs."""
    runs = mlflow_runs(tmp_path)
    parents = [r for r in runs if r.data.tags.get("fashion_exp.kind") == "search"]
    children = {
        p.info.run_id: [r for r in runs if r.data.tags.get("mlflow.parentRunId") == p.info.run_id] for p in parents
    }
    return parents, children


def assert_one_complete_search(tmp_path: Path, trials: int) -> None:
    parents, children = searches_and_trials(tmp_path)
    assert len(parents) == 1, [p.info.run_name for p in parents]
    assert parents[0].info.status == "FINISHED"
    kids = children[parents[0].info.run_id]
    assert [r.info.status for r in kids] == ["FINISHED"] * trials
    assert len({r.data.tags["fashion_exp.trial_id"] for r in kids}) == trials  # distinct trials
    points = {tuple(sorted(r.data.params.items())) for r in kids}
    assert len(points) == trials  # no point tried twice


def assert_clean(*results: Finished) -> None:
    for result in results:
        assert not result.has_traceback(), result.stderr[-3000:]
        if result.returncode != 0:
            errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
            assert len(errors) == 1, result.stderr[-3000:]


# ---- tune ---------------------------------------------------------------------------------------


@pytest.mark.fresh_store
def test_two_identical_tunes_in_a_fresh_folder(overrides, tmp_path):
    """Case 1 of the issue: no mlflow.db yet; one search runs, the other is refused in one line."""
    assert not (tmp_path / "mlflow.db").exists()
    tune = ["tune", *overrides, "tuner.max_trials=2"]
    first, second = run_together([tune, tune], tmp_path)
    assert_clean(first, second)
    assert sorted([first.returncode, second.returncode]) == [0, 2], (first.stderr[-2000:], second.stderr[-2000:])
    refused = first if first.returncode == 2 else second
    message = refused.stderr.strip().splitlines()[-1]
    assert (
        message.startswith("error: search ") and " is in use by pid " in message and "one process at a time" in message
    )
    assert "Started search" not in refused.stdout  # refused before writing anything
    assert_one_complete_search(tmp_path, trials=2)


def test_two_resumes_of_a_half_done_search(overrides, tmp_path):
    """Case 2 of the issue: the store exists and 2 of 4 trials are done; two identical tunes at once."""
    assert run_search(load_config([*overrides, "tuner.max_trials=2"])).trials == 2
    tune = ["tune", *overrides, "tuner.max_trials=4"]
    first, second = run_together([tune, tune], tmp_path)
    assert_clean(first, second)
    assert sorted([first.returncode, second.returncode]) == [0, 2]
    winner = first if first.returncode == 0 else second
    assert "Resuming search" in winner.stdout
    assert_one_complete_search(tmp_path, trials=4)


@pytest.mark.fresh_store
def test_two_different_searches_share_a_fresh_store(overrides, tmp_path):
    """Different searches may run at once: both create the store, both finish, each with its own parent."""
    first, second = run_together([["tune", *overrides, "seed=1"], ["tune", *overrides, "seed=2"]], tmp_path)
    assert_clean(first, second)
    said = [(done.stdout[-1500:], done.stderr[-1500:]) for done in (first, second)]  # (an exit 1 once said no more
    # on stderr than its progress bars: stdout too)
    assert (first.returncode, second.returncode) == (0, 0), said
    parents, children = searches_and_trials(tmp_path)
    assert len(parents) == 2 and all(p.info.status == "FINISHED" for p in parents)
    assert all([r.info.status for r in kids] == ["FINISHED"] * 2 for kids in children.values())


def test_kill_9_of_a_running_search_then_rerun(overrides, tmp_path):
    tune = [sys.executable, "-m", "fashion_exp", "tune", *overrides, "tuner.max_trials=2", "tuner.epochs=40"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    running = zygote.popen(tune, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    for line in running.stdout:
        if line.startswith("Started search"):
            break
    time.sleep(3)  # into the first trials
    kill_hard(running)
    locks = list((tmp_path / "work" / "tuner").glob("*.lock"))
    assert len(locks) == 1 and locks[0].read_text()  # the dead process's record is still in the file
    rerun = zygote.run(tune, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "Resuming search" in rerun.stdout
    assert_one_complete_search(tmp_path, trials=2)


# ---- the MLflow store ---------------------------------------------------------------------------


def test_four_commands_create_a_fresh_store_at_once(tmp_path):
    """MLflow's schema migration races when two processes create one sqlite store; ours are serialized."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    # train-final opens (creates) the store before it looks for a search; promote only reads, so creates none
    command = ["train-final", f"tracking.uri={uri}", "model=tiny", f"data.root={tmp_path / 'no-data'}"]
    results = run_together([command] * 4, tmp_path)
    assert_clean(*results)
    for result in results:
        assert result.returncode == 2
        assert result.stderr.strip() == (
            f"error: no finished tune search in experiment 'fashion-classifier-search' of {uri}: "
            "run `python -m fashion_exp tune` first, or pass from_run=<run id>"
        )


def test_an_mlflow_error_is_one_line(tmp_path):
    """A store MLflow cannot read (here a sqlite file that is not a database) gives one line, no traceback."""
    (tmp_path / "mlflow.db").write_text("this is not a database")
    uri = f"tracking.uri=sqlite:///{tmp_path / 'mlflow.db'}"
    done = zygote.run(
        [sys.executable, "-m", "fashion_exp", "promote", uri], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error: ")
    assert "mlflow.db" in done.stderr and "not a database" in done.stderr


# ---- train-final and promote --------------------------------------------------------------------


def test_two_train_finals_at_once_register_two_versions(overrides, tmp_path):
    final = [*overrides, "final.image_size=32", "final.epochs=3", "final.views=2", "final.restarts=1"]
    assert run_search(load_config([*final, "tuner.max_trials=1"])).trials == 1
    first, second = run_together([["train-final", *final]] * 2, tmp_path)
    assert_clean(first, second)
    assert (first.returncode, second.returncode) == (0, 0), (first.stderr[-2000:], second.stderr[-2000:])
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    versions = MlflowClient(uri, uri).search_model_versions("name='fashion-classifier'")
    assert sorted(int(v.version) for v in versions) == [1, 2]
    assert len({v.run_id for v in versions}) == 2  # one version per train-final run
    for result in (first, second):
        assert "registered 'fashion-classifier' version" in result.stdout


def registry_with_versions(uri: str, accuracies: list[float]) -> tuple[str, MlflowClient]:
    client = MlflowClient(uri, uri)
    client.create_registered_model("m")
    experiment = client.create_experiment("e")
    for accuracy in accuracies:
        run_id = client.create_run(experiment).info.run_id
        version = client.create_model_version("m", f"runs:/{run_id}/model", run_id).version
        client.set_model_version_tag("m", version, "test_accuracy", str(accuracy))
    return uri, client


def aliases(client: MlflowClient) -> tuple[str, str]:
    return tuple(str(client.get_model_version_by_alias("m", alias).version) for alias in ("champion", "previous"))


@pytest.mark.parametrize("round_", range(3))
def test_two_rollbacks_at_once_are_two_swaps(tmp_path, store_uri, round_):
    uri, client = registry_with_versions(store_uri, [0.8, 0.9])
    client.set_registered_model_alias("m", "champion", "2")
    client.set_registered_model_alias("m", "previous", "1")
    command = ["promote", "--rollback", f"tracking.uri={uri}", "final.registered_model=m"]
    results = run_together([command, command], tmp_path)
    assert_clean(*results)
    assert [r.returncode for r in results] == [0, 0]
    assert aliases(client) == ("2", "1")  # swapped twice; interleaved, both would name version 1


def test_two_promotes_at_once_keep_a_consistent_history(tmp_path, store_uri):
    uri, client = registry_with_versions(store_uri, [0.8, 0.85, 0.9])
    client.set_registered_model_alias("m", "champion", "1")
    base = ["promote", "--force", f"tracking.uri={uri}", "final.registered_model=m"]
    results = run_together([[*base, "--version", "2"], [*base, "--version", "3"]], tmp_path)
    assert_clean(*results)
    assert [r.returncode for r in results] == [0, 0]
    # one promote after the other: the second's 'previous' is the first's champion, never version 1
    assert aliases(client) in [("3", "2"), ("2", "3")]


# ---- fetch-data -------------------------------------------------------------------------------


class SlowZip(http.server.BaseHTTPRequestHandler):
    """Serves one zip archive in small pieces with pauses, and counts the requests."""

    def __init__(self, *args, body: bytes, seconds: float, requests: list, hold: threading.Event | None, **kwargs):
        self.body, self.seconds, self.requests, self.hold = body, seconds, requests, hold
        super().__init__(*args, **kwargs)

    def do_GET(self):  # noqa: N802 (the name http.server calls)
        self.requests.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        pieces = 20
        step = len(self.body) // pieces + 1
        try:
            for start in range(0, len(self.body), step):
                self.wfile.write(self.body[start : start + step])
                self.wfile.flush()
                if self.hold is not None:  # the test releases the rest of the body when it has seen what it waits for
                    self.hold.wait(timeout=120)
                time.sleep(self.seconds / pieces)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client was killed

    def log_message(self, *args):
        pass


@pytest.fixture
def slow_server(tmp_path):
    """(url, requests list, settings): a zip of a small synthetic dataset, served in `seconds`, and
    held after its first piece until the event settings["hold"] is set, if the test sets one."""
    body = zip_of(make_dataset(tmp_path / "src", {"train": 2, "validation": 1, "test": 1}))
    requests: list = []
    settings = {"seconds": 2.0, "hold": None}

    def handler(*args, **kwargs):
        return SlowZip(
            *args, body=body, seconds=settings["seconds"], requests=requests, hold=settings["hold"], **kwargs
        )

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}/data.zip", requests, settings
    httpd.shutdown()
    httpd.server_close()


def assert_complete_dataset(root: Path) -> None:
    assert sorted(p.name for p in root.iterdir()) == ["test", "train", "validation"]
    assert len(list((root / "train").rglob("*.jpg"))) == 6
    assert not list(root.parent.glob(".fetch-*"))  # no temporary folders left


def test_two_fetches_at_once_download_once(slow_server, tmp_path):
    url, requests, settings = slow_server
    # the first download is held until the second fetch says it waits: on a loaded machine the
    # second may start late, and a fixed download time would let the first finish before it
    settings["hold"] = seen_waiting = threading.Event()
    root = tmp_path / "data" / "clothing"
    command = ["fetch-data", f"data.root={root}", f"data.url={url}"]
    env, go = {**os.environ, "PYTHONUNBUFFERED": "1"}, tmp_path / ".go"
    pipes = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True}
    started = [zygote.popen([*zygote.COMMAND, *command], cwd=tmp_path, env=env, go=go, **pipes) for _ in range(2)]
    outputs, errors = [[], []], [[], []]
    readers = [
        threading.Thread(target=read_lines, args=(stream, lines, seen_waiting), daemon=True)
        for process, out, err in zip(started, outputs, errors, strict=True)
        for stream, lines in ((process.stdout, out), (process.stderr, err))
    ]
    for reader in readers:
        reader.start()
    go.touch()
    codes = [process.wait(timeout=300) for process in started]
    for reader in readers:
        reader.join(timeout=10)
    assert seen_waiting.is_set(), outputs
    results = [
        Finished(code, "".join(out), "".join(err)) for code, out, err in zip(codes, outputs, errors, strict=True)
    ]
    assert_clean(*results)
    assert [r.returncode for r in results] == [0, 0]
    assert len(requests) == 1  # the second waited, then found the data
    assert any(
        "Waiting for pid" in r.stdout and "downloaded by the fetch-data this one waited for" in r.stdout
        for r in results
    )
    assert_complete_dataset(root)


def read_lines(stream, lines: list, seen_waiting: threading.Event) -> None:
    """Collect a process's output as it comes; set seen_waiting at its first 'Waiting for' line."""
    for line in stream:
        lines.append(line)
        if "Waiting for" in line:
            seen_waiting.set()


def test_two_forced_fetches_at_once_leave_one_complete_dataset(slow_server, tmp_path):
    url, requests, _ = slow_server
    root = make_dataset(tmp_path / "data" / "clothing", {"train": 1, "validation": 1, "test": 1})
    command = ["fetch-data", "--force", f"data.root={root}", f"data.url={url}"]
    results = run_together([command, command], tmp_path)
    assert_clean(*results)
    assert [r.returncode for r in results] == [0, 0]
    assert len(requests) == 1
    assert_complete_dataset(root)  # 2 train photos per class now: the downloaded copy


def test_a_fetch_killed_mid_download_blocks_nothing(slow_server, tmp_path):
    url, requests, settings = slow_server
    settings["seconds"] = 60.0
    root = tmp_path / "data" / "clothing"
    command = [sys.executable, "-m", "fashion_exp", "fetch-data", f"data.root={root}", f"data.url={url}"]
    running = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not requests and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)
    kill_hard(running)
    assert list(root.parent.glob(".fetch-*"))  # kill -9 left its temporary folder behind
    settings["seconds"] = 0.1
    rerun = finish(
        subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True), 120
    )
    assert rerun.returncode == 0 and "Waiting" not in rerun.stdout, rerun.stderr
    assert_complete_dataset(root)
