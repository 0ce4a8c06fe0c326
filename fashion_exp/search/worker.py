"""`tune-worker`: one worker of a distributed search.

It computes the same search id as the chief from its own config (so it refuses a chief running
another search), extracts its share of the features into the shared cache, then runs trials that
keras-tuner's OracleClient asks the chief's oracle for, logging each as a child run of the chief's
parent run, tagged with this worker's id and host. A staged tune's worker goes on to each search
the chief links after it (search/follow.py).
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import grpc

from fashion_exp import locks
from fashion_exp.config import Config, split_address
from fashion_exp.data.dataset import TRAIN, VALIDATION
from fashion_exp.errors import UserError
from fashion_exp.mounts import local_locks_warning
from fashion_exp.screen import say
from fashion_exp.search import follow, keras_tuner_fixes, oracle_auth
from fashion_exp.search.observers import TrialRecorder
from fashion_exp.search.run import head_hypermodel, open_first_cut, search_features, search_id
from fashion_exp.search.state_files import check_readable
from fashion_exp.search.tuner import make_tuner
from fashion_exp.tracking.search_runs import SearchTracker
from fashion_exp.tracking.tags import HOST, WORKER


def _join(config: Config, chief: str, worker_id: str, sid: str, given: str | None) -> None:
    """Point keras-tuner's distributed mode at the chief (read when the tuner is made), with the
    oracle token: `given` (FASHION_ORACLE_TOKEN as the worker was started), else search sid's token
    file in the shared work_dir."""
    host, port = split_address(chief)
    os.environ.update(KERASTUNER_TUNER_ID=worker_id, KERASTUNER_ORACLE_IP=host, KERASTUNER_ORACLE_PORT=port)
    token = given or _token_file(config, sid, chief)
    if token:
        os.environ[oracle_auth.TOKEN_ENV] = token
    else:
        os.environ.pop(oracle_auth.TOKEN_ENV, None)  # (not an earlier search's)
    ca = oracle_auth.trusted(config.tuner.tls_cert, config.tuner.tls_ca)
    if ca:
        os.environ[oracle_auth.CA_ENV] = str(Path(ca).expanduser())
    keras_tuner_fixes.set_chief_timeout(config.tuner.chief_timeout)


def _token_file(config: Config, sid: str, chief: str) -> str | None:
    """Search sid's token from its file, waited for while the chief does not listen yet (it writes
    the file before it serves, and may still be probing or planning), up to tuner.chief_timeout."""
    path = oracle_auth.token_file(config.work_dir, sid)
    ends = time.monotonic() + config.tuner.chief_timeout
    while not path.is_file() and time.monotonic() < ends and not _listening(chief):
        time.sleep(follow.POLL_SECONDS)
    return path.read_text().strip() if path.is_file() else None


def _listening(chief: str) -> bool:
    host, port = split_address(chief)
    try:
        socket.create_connection((host, int(port)), timeout=1).close()
    except OSError:
        return False
    return True


def run_worker(config: Config, chief: str, worker_id: str, search: str | None = None) -> int:
    """Run trials for the chief at host:port until its oracle says stop; returns trials run here.

    search: the id of the search to join, its settings published by the chief (local workers);
    None: the search this config names, then, for a staged tune (preset=best), each search the
    chief links after it (search/follow.py)."""
    keras_tuner_fixes.install()
    unsafe = local_locks_warning(config.work_dir)  # (NFS whose locks stay on this machine)
    if unsafe:
        say(unsafe)
    given = os.environ.get(oracle_auth.TOKEN_ENV)
    joined = config if search is None else follow.applied(config, config.work_dir, search)
    sid, ran = _search(joined, chief, (worker_id, given), search)
    while search is None and config.finetune_stage.enabled:
        following = follow.next_search(config.work_dir, sid, config.tuner.chief_timeout)
        if following is None:
            break
        say(f"The tune goes on with search {following}")
        joined = follow.applied(config, config.work_dir, following)
        sid, more = _search(joined, chief, (worker_id, given), following)
        ran += more
    return ran


def _search(config: Config, chief: str, who: tuple, expected: str | None) -> tuple[str, int]:
    """Join one search (expected: its id, when the chief named it) as who = (worker id, the token
    the worker was given or None); returns (its id, trials run here)."""
    worker_id, given = who
    first = open_first_cut(config)
    sid = search_id(config, first.dataset.fingerprint(), first.fingerprint)
    if expected and sid != expected:
        raise UserError(
            f"search {expected}: this worker's photos, weights or backbone runtime make it search {sid}; "
            "give the worker the chief's data, weights and model.runtime"
        )
    directory = Path(config.work_dir) / "tuner"
    with locks.exclusive(
        directory / sid / "workers" / f"{worker_id}.lock",
        f"worker id {worker_id} of search {sid}",
        hint="give each worker its own --worker-id",
    ):
        _join(config, chief, worker_id, sid, given)
        try:
            return sid, _run(config, first, sid, chief, worker_id, directory)
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.UNAUTHENTICATED:
                raise UserError(f"the chief at {chief} refused this worker: {err.details()}") from None
            raise UserError(f"lost the chief at {chief} ({err.code().name}): {err.details()}") from None


def _run(config, first, sid, chief, worker_id, directory) -> int:
    say(f"Connecting to the chief at {chief} (waiting up to tuner.chief_timeout={config.tuner.chief_timeout} s)")
    keras_tuner_fixes.wait_for_chief()
    tracker = SearchTracker(config.tracking.uri, config.tracking.experiment, config.tuner.objective, config.tuner.folds)
    tracker.attach(sid, chief)
    tracker.datasets = [first.dataset.describe(TRAIN), first.dataset.describe(VALIDATION)]
    say(f"Worker {worker_id} of search {sid} (chief {chief}, MLflow parent run {tracker.parent_id})")
    cuts = search_features(config, first)
    recorder = TrialRecorder(tracker, config.tuner.objective, {WORKER: worker_id, HOST: socket.gethostname()})
    hypermodel = head_hypermodel(config, cuts)
    check_readable(directory / sid)  # (the chief checked before opening its run: search.run.open_search_run)
    tuner = make_tuner(config.tuner, hypermodel, directory, sid, config.seed, overwrite=False, observers=[recorder])
    with tracker.recording():
        tuner.search(epochs=config.tuner.epochs, verbose=0)
    ran = len(tracker.children)
    say(f"Worker {worker_id} done: the chief has no more trials ({ran} run here)")
    return ran
