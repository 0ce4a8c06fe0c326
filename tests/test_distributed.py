"""One search on several processes: a chief (keras-tuner's oracle over gRPC) and tune-worker
processes, all real: real worker processes, a real `mlflow server`, a real PostgreSQL cluster,
and real kill -9 of a worker and of the chief."""

from __future__ import annotations

import glob
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from fashion_exp.children import PARENT_PID, free_port, parented
from fashion_exp.locks import read_holder
from fashion_exp.tracking.server import healthy
from tests import zygote

pytestmark = pytest.mark.slow  # real worker processes, a real MLflow server and PostgreSQL

WORKERS = {"worker-0", "worker-1"}


def tune_command(overrides: list[str], *extra: str) -> list[str]:
    return [sys.executable, "-m", "fashion_exp", "tune", *overrides, "tuner.workers=2", *extra]


def run_tune(command: list[str], cwd: Path, timeout: float = 400) -> subprocess.CompletedProcess:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    return zygote.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def start_tune(command: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    log = open(cwd / "chief.log", "w")  # noqa: SIM115 - closed with the process
    return zygote.popen(command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True)


def start_chief(overrides: list[str], cwd: Path, port: int, *extra: str) -> subprocess.Popen:
    """A chief that runs no trials itself (tuner.role=chief), its oracle on 127.0.0.1:port."""
    command = [sys.executable, "-m", "fashion_exp", "tune", *overrides, "tuner.role=chief", *extra]
    return start_tune([*command, f"tuner.oracle_address=127.0.0.1:{port}"], cwd)


def search_runs(uri: str, experiment: str = "test") -> tuple[list, list]:
    """(parent runs, trial runs) of the experiment, deleted runs left out as mlflow ui does."""
    client = MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id], max_results=1000) if found else []
    parents = [r for r in runs if r.data.tags.get("fashion_exp.kind") == "search"]
    trials = [r for r in runs if r.data.tags.get("fashion_exp.kind") == "trial"]
    return parents, trials


def assert_one_distributed_search(uri: str, trials: int) -> list:
    """One FINISHED parent; `trials` FINISHED children, distinct, each tagged with its worker and host."""
    parents, kids = search_runs(uri)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED", [(p.info.status) for p in parents]
    assert all(k.data.tags["mlflow.parentRunId"] == parents[0].info.run_id for k in kids)
    assert sorted(k.info.status for k in kids) == ["FINISHED"] * trials, [k.info.status for k in kids]
    assert len({k.data.tags["fashion_exp.trial_id"] for k in kids}) == trials  # each trial once
    assert len({tuple(sorted(k.data.params.items())) for k in kids}) == trials  # no point tried twice
    assert {k.data.tags["fashion_exp.worker"] for k in kids} <= WORKERS
    assert all(k.data.tags["fashion_exp.host"] for k in kids)
    return kids


def sqlite_uri(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (dead, not yet reaped) counts as gone
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def gone_within(pids: list[int], seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.2)
    return not any(alive(pid) for pid in pids)


def worker_pids(tmp_path: Path) -> dict[str, int]:
    """Worker id -> pid of the running local workers, from their lock files' holder records."""
    found = {}
    for path in (tmp_path / "work" / "tuner").glob("*/workers/*.lock"):
        holder = read_holder(path)
        if holder is not None and alive(holder.pid):
            found[path.stem] = holder.pid
    return found


def wait_until(condition, timeout: float, what: str, process: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the search ended ({process.returncode}) before {what}")
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def running_trial(uri: str):
    _, kids = search_runs(uri)
    running = [k for k in kids if k.info.status == "RUNNING"]
    return running[0] if running else None


# ---- a chief and two workers ---------------------------------------------------------------------


def test_chief_and_two_workers_run_each_trial_once(overrides, tmp_path):
    done = run_tune(tune_command(overrides, "tuner.max_trials=4"), tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Started 2 workers" in done.stdout and "Workers log through an MLflow server at http://" in done.stdout
    assert "Best trial" in done.stdout and "Traceback" not in done.stderr
    kids = assert_one_distributed_search(sqlite_uri(tmp_path), trials=4)
    assert worker_pids(tmp_path) == {}  # every worker ended with the search
    # the search's state is the chief's oracle: a single-process tune resumes it as done, re-running nothing
    again = run_tune([sys.executable, "-m", "fashion_exp", "tune", *overrides, "tuner.max_trials=5"], tmp_path)
    assert again.returncode == 0 and "Resuming search" in again.stdout, again.stderr[-2000:]
    after = search_runs(sqlite_uri(tmp_path))[1]
    show = lambda runs: sorted((k.data.tags["fashion_exp.trial_id"], k.data.tags["fashion_exp.worker"]) for k in runs)  # noqa: E731
    assert {k.info.run_id for k in kids} < {k.info.run_id for k in after}, (show(kids), show(after), again.stdout)
    assert len(after) == 5  # one more trial
    assert [k.data.tags["fashion_exp.worker"] for k in after if k.info.run_id not in {r.info.run_id for r in kids}] == [
        "tuner0"
    ]


def test_the_budget_holds_for_the_workers_trials_too(overrides, tmp_path):
    """Trials that would run for hours on a worker: the chief shares its deadline, the worker's
    running trial stops at it (keeping its best epoch), and the search ends about then. (One worker:
    each worker reads the shared deadline alike; two cost a second TensorFlow start and prove no more.)"""
    started = time.monotonic()
    endless = ["tuner.max_trials=4", "tuner.max_minutes=0.5", "tuner.epochs=100000", "tuner.workers=1"]  # 30 s
    done = run_tune(tune_command(overrides, *endless), tmp_path)
    took = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert json.loads(next((tmp_path / "work" / "tuner").glob("*/deadline.json")).read_text())["deadline_unix"] > 0
    assert took < 30 + 120, took  # the budget, then the closing work (before, a worker's trial ran 100,000 epochs)
    runs = search_runs(sqlite_uri(tmp_path))[1]
    assert runs and all(run.info.status == "FINISHED" for run in runs)  # each stopped trial kept its best epoch


def test_a_child_whose_parent_died_before_it_asked_the_kernel_exits_at_once():
    """Workers and the server guard ask for PR_SET_PDEATHSIG themselves (no preexec_fn under gRPC):
    a child whose parent is already gone by then (its parent pid is not the one it was given)
    exits instead of living on; a child of a live parent goes on."""
    probe = "from fashion_exp.children import die_if_parent_gone; die_if_parent_gone(); print('alive')"
    orphan = subprocess.run([sys.executable, "-c", probe], env={**os.environ, PARENT_PID: "1"}, capture_output=True)
    assert orphan.returncode == 1 and b"alive" not in orphan.stdout
    child = subprocess.run([sys.executable, "-c", probe], env=parented(dict(os.environ)), capture_output=True)
    assert child.returncode == 0 and child.stdout.strip() == b"alive"


def test_worker_without_a_chief_gives_up_in_one_line(overrides, tmp_path):
    port = free_port()
    command = [sys.executable, "-m", "fashion_exp", "tune-worker", "--chief", f"127.0.0.1:{port}"]
    done = run_tune([*command, *overrides, "tuner.chief_timeout=2"], tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: lost the chief at 127.0.0.1:{port} (DEADLINE_EXCEEDED): Deadline Exceeded"
    )
    assert not (tmp_path / "mlflow.db").exists() or not search_runs(sqlite_uri(tmp_path))[0]  # wrote nothing


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--chief", "nohost"], "error: --chief: 'nohost' is not host:port"),
        (["--chief", "127.0.0.1:1", "--worker-id", "chief-2"], "error: --worker-id 'chief-2': must be non-empty"),
        (["--chief", "127.0.0.1:1", "--search", "stage2"], "error: --search 'stage2': a search id is 12 hex digits"),
        (
            ["--chief", "127.0.0.1:1", "--search", "0123456789ab"],
            "error: search 0123456789ab: no settings from its chief",
        ),
    ],
)
def test_tune_worker_refuses_bad_arguments_in_one_line(overrides, tmp_path, args, message):
    done = run_tune([sys.executable, "-m", "fashion_exp", "tune-worker", *args, *overrides], tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith(message), done.stderr[-2000:]


def test_local_workers_share_the_cpus_threads_and_take_their_own_gpus(monkeypatch):
    """n local workers on one CPU get a share of its threads each (TF_NUM_INTRAOP_THREADS, which
    ONNX Runtime and OpenVINO read too), unless the variable is set; worker k gets GPUs k*g..k*g+g-1."""
    from fashion_exp.search.cluster import worker_env

    monkeypatch.delenv("TF_NUM_INTRAOP_THREADS", raising=False)  # (the suite sets it: tests/conftest.py)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(4)))
    assert worker_env(0, 2, 0)["TF_NUM_INTRAOP_THREADS"] == "2"
    assert worker_env(0, 8, 0)["TF_NUM_INTRAOP_THREADS"] == "1"
    assert "TF_NUM_INTRAOP_THREADS" not in worker_env(0, 1, 0)  # one worker: the library's own default
    assert worker_env(1, 2, 2)["CUDA_VISIBLE_DEVICES"] == "2,3"
    monkeypatch.setenv("TF_NUM_INTRAOP_THREADS", "3")
    assert worker_env(0, 2, 0)["TF_NUM_INTRAOP_THREADS"] == "3"  # the user's setting stands


def test_oracle_address_in_use_is_one_line(overrides, tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = run_tune(tune_command(overrides, f"tuner.oracle_address=127.0.0.1:{port}"), tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: tuner.oracle_address: cannot listen on 127.0.0.1:{port}: pass another host:port")


# ---- a shared tracking server on PostgreSQL ----------------------------------------------------------


def _postgres_bin(name: str) -> str | None:
    return shutil.which(name) or next(iter(sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))), None)


def _host_name() -> tuple[str, str]:
    """This machine's name and the address it resolves to (the name workers would dial)."""
    name = socket.gethostname()
    try:
        return name, socket.gethostbyname(name)
    except OSError:
        pytest.skip(f"this machine's name {name!r} does not resolve")


@pytest.fixture
def postgres():
    """A throwaway PostgreSQL cluster on a free port that asks for a password, reached through the
    machine's host name; yields (the URI of its database mlflow, that of mlflow_auth)."""
    initdb, pg_ctl, createdb = (_postgres_bin(n) for n in ("initdb", "pg_ctl", "createdb"))
    if not (initdb and pg_ctl and createdb):
        pytest.skip("PostgreSQL is not installed (.ci/run installs Debian's postgresql)")
    pytest.importorskip("psycopg", reason="psycopg (in the dev extra) is needed for a postgresql:// store")
    as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []  # initdb refuses root
    base = Path(tempfile.mkdtemp(prefix="fashion-pg-"))
    if as_postgres:
        shutil.chown(base, "postgres")
    data, port, (host, address) = base / "data", free_port(), _host_name()
    password = secrets.token_urlsafe(12)
    (base / "password").write_text(password)
    env = {**os.environ, "PGPASSWORD": password}
    run = lambda *cmd: subprocess.run([*as_postgres, *cmd], check=True, capture_output=True, text=True, env=env)  # noqa: E731
    try:
        run(initdb, "-D", str(data), "-A", "scram-sha-256", "--pwfile", str(base / "password"), "-U", "fashion")
        options = f"-p {port} -k {base} -c listen_addresses={address} -c fsync=off"
        run(pg_ctl, "-D", str(data), "-o", options, "-l", str(base / "log"), "-w", "start")
        for database in ("mlflow", "mlflow_auth"):
            run(createdb, "-h", host, "-p", str(port), "-U", "fashion", database)
        yield tuple(f"postgresql://fashion:{password}@{host}:{port}/{db}" for db in ("mlflow", "mlflow_auth"))
    finally:
        subprocess.run([*as_postgres, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def mlflow_server(postgres, tmp_path, monkeypatch):
    """The recipe's tracking server: `mlflow server` on the PostgreSQL store with MLflow's basic-auth
    app (its users in PostgreSQL too) and --allowed-hosts, dialled through the host name. This
    process and those it starts log in as its admin (MLFLOW_TRACKING_USERNAME / _PASSWORD)."""
    store, users = postgres
    (host, address), port, password = _host_name(), free_port(), secrets.token_urlsafe(12)
    auth = tmp_path / "basic_auth.ini"
    auth.write_text(
        f"[mlflow]\ndefault_permission = NO_PERMISSIONS\ndatabase_uri = {users}\nadmin_username = admin\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    os.chmod(auth, 0o600)
    secret = secrets.token_urlsafe(16)  # the basic-auth app's CSRF key
    env = {
        **os.environ,
        **{"MLFLOW_AUTH_CONFIG_PATH": str(auth), "MLFLOW_AUTH_ADMIN_PASSWORD": password},
        "MLFLOW_FLASK_SERVER_SECRET_KEY": secret,
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false",  # (as docs/distributed.md's recipe)
    }
    server = subprocess.Popen(
        [
            *(sys.executable, "-m", "mlflow", "server", "--app-name", "basic-auth", "--backend-store-uri", store),
            *("--artifacts-destination", str(tmp_path / "artifacts"), "--host", address, "--port", str(port)),
            *("--allowed-hosts", f"{host}:{port}", "--workers", "2"),
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=open(tmp_path / "server.log", "w"),  # noqa: SIM115
        start_new_session=True,
    )
    url = f"http://{host}:{port}"
    try:
        wait_until(lambda: healthy(url), 120, f"the MLflow server (log: {tmp_path / 'server.log'})", server)
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password)
        yield url
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)


def test_search_on_workers_through_an_mlflow_server_on_postgresql(overrides, mlflow_server, tmp_path, monkeypatch):
    """The several-machines recipe on one machine: a tracking server on PostgreSQL with basic-auth,
    dialled by host name, a chief (tuner.role=chief, no local workers) and two tune-worker processes
    started on their own."""
    at = [o for o in overrides if not o.startswith("tracking.uri=")] + [f"tracking.uri={mlflow_server}"]
    port = free_port()
    chief = start_chief(at, tmp_path, port, "tuner.max_trials=4")
    worker = [sys.executable, "-m", "fashion_exp", "tune-worker", "--chief", f"127.0.0.1:{port}", *at]
    try:
        wait_until(
            lambda: "Chief oracle of search" in (tmp_path / "chief.log").read_text() or None, 120, "the chief", chief
        )
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
        workers = [
            zygote.popen(
                [*worker, "--worker-id", f"worker-{i}"],
                cwd=tmp_path,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(2)
        ]
        results = [w.communicate(timeout=400) for w in workers]
        assert [w.returncode for w in workers] == [0, 0], [err[-2000:] for _, err in results]
        assert chief.wait(timeout=60) == 0, (tmp_path / "chief.log").read_text()[-3000:]
    finally:
        chief.kill()
    assert "Workers log through" not in (tmp_path / "chief.log").read_text()  # a server URI is used as it is
    kids = assert_one_distributed_search(mlflow_server, trials=4)
    assert_reading_artifacts_leaves_no_copies(mlflow_server, kids[0].info.run_id, tmp_path, monkeypatch)
    assert_refusals_are_one_line_each(at, mlflow_server, tmp_path, monkeypatch)


def assert_reading_artifacts_leaves_no_copies(server: str, trial_run: str, tmp_path: Path, monkeypatch) -> None:
    """What train-final and serve read from a server's runs (trials.csv, config.yaml, a trial's
    checkpoint, the ONNX file) leaves nothing in the temporary folder: MLflow's download without a
    destination left a new folder there for each file, for every command (the ONNX file: each
    `serve` of a model in a server's registry)."""
    from fashion_exp.final.onnx_export import ONNX_ARTIFACT, onnx_predictor
    from fashion_exp.tracking.queries import ranked_trials, run_config, trial_checkpoint
    from fashion_exp.tracking.registry import LoadedModel
    from tests.test_reuse import identity_onnx

    onnx_file = identity_onnx(tmp_path / "model.onnx")
    MlflowClient(server).log_artifact(trial_run, str(onnx_file), ONNX_ARTIFACT.rsplit("/", 1)[0])
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    search, rows = ranked_trials(server, "test")
    assert len(rows) == 4 and run_config(server, search)["tracking"]["experiment"] == "test"
    assert trial_checkpoint(server, rows[0]["run_id"]) is not None
    model = LoadedModel(None, f"runs:/{trial_run}", ["a", "b"], 1, "bilinear", trial_run)
    assert onnx_predictor(model, server).predict(np.ones((1, 2))).tolist() == [[1, 1]]
    assert sorted(path.name for path in scratch.iterdir()) == []


def assert_refusals_are_one_line_each(at: list[str], server: str, cwd: Path, monkeypatch) -> None:
    """The recipe's server refuses a wrong password (401) and a host name it was not started to
    accept (403): each is one line from the product saying what to do."""
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "wrong")
    tune = [sys.executable, "-m", "fashion_exp", "tune", *at[:-1]]  # (at ends with tracking.uri=)
    wrong = run_tune([*tune, f"tracking.uri={server}"], cwd, 120)
    assert wrong.returncode == 2 and "MLFLOW_TRACKING_PASSWORD" in wrong.stderr, wrong.stderr[-2000:]
    port = server.rsplit(":", 1)[1]
    elsewhere = run_tune([*tune, f"tracking.uri=http://127.0.0.1:{port}"], cwd, 120)
    assert elsewhere.returncode == 2 and "--allowed-hosts" in elsewhere.stderr, elsewhere.stderr[-2000:]
    for refused in (wrong, elsewhere):
        errors = [line for line in refused.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "Traceback" not in refused.stderr, refused.stderr[-2000:]
        assert "Response body" not in errors[0]  # what to do, not MLflow's HTTP exchange
