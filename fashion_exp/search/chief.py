"""The trials of a distributed search, seen from the chief: serve the oracle, start the local
workers (and, for a sqlite store, the tracking server they log through), show one progress bar
over the oracle's ended trials, and return when keras-tuner says the search is over."""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path

from fashion_exp.config import Config
from fashion_exp.redact import redact
from fashion_exp.screen import say
from fashion_exp.search import follow, oracle_auth
from fashion_exp.search.cluster import OracleServer, WorkerPool
from fashion_exp.search.hypermodel import SpaceModel
from fashion_exp.search.observers import TrialProgress
from fashion_exp.search.oracles import share_deadline
from fashion_exp.search.tuner import best_trial, make_tuner
from fashion_exp.tracking.server import needs_server, shared_store

POLL_SECONDS = 0.5


def worker_hint(config: Config, address: str) -> str:
    hint = (
        f"Start workers on other machines with: python -m fashion_exp tune-worker --chief {address} "
        f"<this command's overrides> (work_dir {config.work_dir} shared)"
    )
    if needs_server(config.tracking.uri):
        hint += (
            f"; {redact(config.tracking.uri)} is a file: give every machine a tracking server's tracking.uri=http://..."
        )
    return hint


def run_chief_trials(config: Config, sid: str, resume: bool, placed: tuple):
    """Run the search's trials on workers; returns the chief's tuner (its oracle holds every trial).
    placed: (the command line's overrides for local workers, the staged tune's search before this
    one or None: its workers are told this one follows it)."""
    tuning, (overrides, after) = config.tuner, placed
    directory = Path(config.work_dir) / "tuner"
    tuner = _chief_tuner(config, directory, sid, resume)
    share_deadline(tuner.oracle, directory / sid)  # the workers' trials stop at it too
    follow.publish(config, sid)  # (after the tuner: a new one empties its folder)
    if after:
        follow.link(config.work_dir, after, sid)
    total = tuning.max_trials if tuning.type != "hyperband" else 1
    progress = TrialProgress(total, tuning.objective, tuning.direction)
    logs = directory / sid / "logs"
    token = oracle_auth.chief_token(config.work_dir, sid)
    server = _oracle_server(config, tuner.oracle, sid, token)
    pool = _local_workers(config, server, overrides, sid, logs)
    store = (  # the workers start while the store's server comes up (they reach it after the oracle answers)
        shared_store(config.tracking.uri, logs / "mlflow-server.log", meanwhile=_starter(config, pool, token))
        if pool.workers
        else nullcontext()
    )
    try:
        with store:
            _watch(tuner, server, pool, progress)
    finally:
        pool.stop()  # (a server that did not start: the workers started meanwhile)
    return tuner


def _local_workers(config: Config, server: OracleServer, overrides: list[str], sid: str, logs: Path) -> WorkerPool:
    """The tune-worker processes tuner.workers asks for on this machine (not started yet), logging into `logs`."""
    tuning = config.tuner
    return WorkerPool(
        tuning.workers,
        server.local_address,
        ["--search", sid, *(word for word in overrides if not word.startswith("tracking.uri="))],  # (uri: env)
        tuning.worker_restarts,
        tuning.gpus_per_worker,
        logs,
    )


def _starter(config: Config, pool: WorkerPool, token: str):
    """What starts the pool once the store's URI is known: secrets go in the workers' environment,
    not on command lines anyone can read (ps)."""
    ca = oracle_auth.trusted(config.tuner.tls_cert, config.tuner.tls_ca)

    def start(uri: str) -> None:
        for worker in pool.workers:
            worker.env.update({oracle_auth.TOKEN_ENV: token, "MLFLOW_TRACKING_URI": uri})
            if ca:
                worker.env[oracle_auth.CA_ENV] = str(Path(ca).expanduser())
        pool.start()  # (before the oracle's threads exist: forking beside them upsets gRPC)

    return start


def _chief_tuner(config: Config, directory: Path, sid: str, resume: bool):
    """The chief's tuner, saved at once: its oracle is the one the workers ask."""
    tuner = make_tuner(config.tuner, SpaceModel(config.search), directory, sid, config.seed, not resume, observers=[])
    tuner.save()  # as keras-tuner's chief does: without its <tuner id>.json a rerun would not reload the oracle
    tuner.oracle.verbose = 0  # the progress bar says what keras-tuner's trial tables would
    return tuner


def _oracle_server(config: Config, oracle, sid: str, token: str) -> OracleServer:
    """The oracle's gRPC server, bound now (serving from start() on), and where workers find it."""
    credentials = oracle_auth.server_credentials(config.tuner.tls_cert, config.tuner.tls_key)
    server = OracleServer(oracle, config.tuner.oracle_address, token, config.tuner.oracle_threads, credentials)
    say(f"Chief oracle of search {sid} on {server.address}")
    if config.tuner.role == "chief":
        say(worker_hint(config, server.address))
    return server


def _watch(tuner, server: OracleServer, pool: WorkerPool, progress: TrialProgress) -> None:
    """Serve the oracle, show each trial the oracle ends, until keras-tuner says the search is over
    and every local worker is done; then stop the workers (through the store they log to: each
    marks its trial's run KILLED)."""
    oracle = tuner.oracle
    shown = list(oracle.end_order)
    best = best_trial(tuner)
    try:
        with server:
            progress.search_started(len(shown), best.score if best else None)
            while not (server.finished() and pool.all_done()):
                time.sleep(POLL_SECONDS)
                pool.check()
                for trial_id in list(oracle.end_order)[len(shown) :]:
                    shown.append(trial_id)
                    progress.trial_ended(oracle.trials[trial_id], None)
    finally:
        pool.stop()
        progress.close()
