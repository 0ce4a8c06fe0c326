"""The chief side of a distributed search: keras-tuner's oracle served over gRPC, and the local
worker processes that ask it for trials.

The servicer is keras-tuner's own (`OracleServicer`: CreateTrial, UpdateTrial, EndTrial, ...)
and workers use keras-tuner's `OracleClient` (KERASTUNER_TUNER_ID / _ORACLE_IP / _ORACLE_PORT):
the oracle decides who runs what. This module only starts and watches processes.
"""

from __future__ import annotations

import atexit
import functools
import os
import signal
import socket
import subprocess
import sys
import threading
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")  # before gRPC starts: no INFO lines about fork() in our output

import grpc  # noqa: E402
from keras_tuner.src import protos  # noqa: E402
from keras_tuner.src.distribute import oracle_chief  # noqa: E402

from fashion_exp.children import exit_description, last_log_line, parented, reap  # noqa: E402
from fashion_exp.config import split_address  # noqa: E402
from fashion_exp.errors import UserError  # noqa: E402
from fashion_exp.hardware import nvidia_driver  # noqa: E402
from fashion_exp.screen import say
from fashion_exp.search import oracle_auth  # noqa: E402
from fashion_exp.search.spawner import Forked, Spawner  # noqa: E402

WILDCARD_HOSTS = ("0.0.0.0", "[::]", "::")  # listen on every interface


def _serial(method):
    """`method` of the servicer, run under its lock (one oracle call at a time)."""

    @functools.wraps(method)
    def serial(self, request, context):
        with self.one_at_a_time:
            return method(self, request, context)

    return serial


class SavingServicer(oracle_chief.OracleServicer):
    """keras-tuner's servicer, saving the oracle once a trial has fully ended.

    Oracle.end_trial saves its state before it drops the trial from the running ones, and in a
    distributed search nothing saves it after that (a single-process Tuner does, in on_trial_end),
    so a chief that stops would come back believing its last ended trial is still running, and run
    it again. Saving here, under the servicer's lock, keeps oracle.json true after every trial.
    """

    def __init__(self, oracle):
        super().__init__(oracle)
        self.one_at_a_time = threading.Lock()  # the server has several threads; the oracle answers one call at a time

    def _end_and_save(self, request, context):
        response = oracle_chief.OracleServicer.EndTrial(self, request, context)
        self.oracle.save()
        return response

    # each gRPC method (keras-tuner's names) under the lock
    GetSpace = _serial(oracle_chief.OracleServicer.GetSpace)
    UpdateSpace = _serial(oracle_chief.OracleServicer.UpdateSpace)
    CreateTrial = _serial(oracle_chief.OracleServicer.CreateTrial)
    UpdateTrial = _serial(oracle_chief.OracleServicer.UpdateTrial)
    EndTrial = _serial(_end_and_save)
    GetTrial = _serial(oracle_chief.OracleServicer.GetTrial)
    GetBestTrials = _serial(oracle_chief.OracleServicer.GetBestTrials)


class OracleServer:
    """keras-tuner's OracleServicer for `oracle` on host:port (port 0: a free one), as a context
    manager; calls without `token` are refused (oracle_auth.TokenCheck); TLS with `credentials`."""

    def __init__(
        self, oracle, address: str, token: str, threads: int, credentials: grpc.ServerCredentials | None = None
    ):
        self.oracle = oracle
        host, port = split_address(address)
        self.servicer = SavingServicer(oracle)
        self.server = grpc.server(  # threads enough that a slow caller never blocks the others (one call at a time
            futures.ThreadPoolExecutor(max_workers=threads),  # reaches the oracle: SavingServicer)
            interceptors=[oracle_auth.TokenCheck(token)],
        )
        protos.get_service_grpc().add_OracleServicer_to_server(self.servicer, self.server)
        try:
            where = f"{host}:{port}"
            bound = (
                self.server.add_secure_port(where, credentials) if credentials else self.server.add_insecure_port(where)
            )
        except RuntimeError:
            bound = 0
        if not bound:
            raise UserError(
                f"tuner.oracle_address: cannot listen on {address}: pass another host:port (port 0: any free port)"
            )
        self.host = host
        self.port = bound

    @property
    def local_address(self) -> str:
        """Where workers on this machine reach the oracle."""
        return f"{'127.0.0.1' if self.host in WILDCARD_HOSTS else self.host}:{self.port}"

    @property
    def address(self) -> str:
        """Where workers reach the oracle (a wildcard host is named by this machine's name)."""
        return f"{socket.gethostname() if self.host in WILDCARD_HOSTS else self.host}:{self.port}"

    def finished(self) -> bool:
        """keras-tuner's end of a distributed search: the oracle has told a worker to stop, no
        trial is running and every worker that asked for trials has been told to stop."""
        return self.servicer.stop_triggered and oracle_chief.exit_chief(self.oracle)

    def __enter__(self) -> OracleServer:
        self.server.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.stop(grace=2).wait()


_TEMPLATE: list[Spawner] = []  # this process's template for forked local workers, once started


def template(log_dir: Path) -> Spawner:
    """This chief's worker template (spawner.py), started at its first use (again if it died), ended
    when this process exits; its log in `log_dir`."""
    if _TEMPLATE and _TEMPLATE[0].alive():
        return _TEMPLATE[0]
    if _TEMPLATE:
        _TEMPLATE.pop().stop()  # (a dead one: its pipe, folder and exit status)
    else:
        atexit.register(lambda: _TEMPLATE and _TEMPLATE.pop().stop())
    _TEMPLATE.append(Spawner(log_dir / "spawner.log"))
    say(f"Local workers fork from one process that imported their libraries once (pid {_TEMPLATE[0].process.pid})")
    return _TEMPLATE[0]


@dataclass
class LocalWorker:
    worker_id: str
    log: Path
    env: dict[str, str]
    process: subprocess.Popen | Forked | None = None
    restarts: int = 0
    done: bool = False


def worker_env(index: int, workers: int, gpus_per_worker: int) -> dict[str, str]:
    """Environment of local worker `index`: its GPUs, and its share of the CPU's threads."""
    env = dict(os.environ)
    if gpus_per_worker > 0:
        first = index * gpus_per_worker
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(first + g) for g in range(gpus_per_worker))
    if workers > 1 and "TF_NUM_INTRAOP_THREADS" not in env:  # n workers on one CPU: no oversubscription
        env["TF_NUM_INTRAOP_THREADS"] = str(max(1, len(os.sched_getaffinity(0)) // workers))
    return env


class WorkerPool:
    """`tune-worker` processes on this machine; a worker that dies is started again with the same
    id (the oracle hands it the trial it was running) up to `restarts` times."""

    def __init__(
        self, count: int, chief: str, overrides: list[str], restarts: int, gpus_per_worker: int, log_dir: Path
    ):
        self.chief = chief
        self.overrides = list(overrides)
        self.restarts = restarts
        # (spawner.py) not on a machine with GPUs: there workers start as new processes, no CUDA state is forked
        self.fork = gpus_per_worker == 0 and not nvidia_driver()
        log_dir.mkdir(parents=True, exist_ok=True)
        self.workers = [
            LocalWorker(f"worker-{i}", log_dir / f"worker-{i}.log", worker_env(i, count, gpus_per_worker))
            for i in range(count)
        ]

    def _start(self, worker: LocalWorker) -> None:
        args = ["tune-worker", "--chief", self.chief, "--worker-id", worker.worker_id, *self.overrides]
        if self.fork:  # (spawner.py: no new TensorFlow import per worker)
            worker.process = template(worker.log.parent).popen(args, worker.env, worker.log)
            return
        with open(worker.log, "a") as log:
            worker.process = subprocess.Popen(
                [sys.executable, "-m", "fashion_exp", *args],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=parented(worker.env),  # a killed chief takes its workers with it (no preexec_fn: gRPC)
            )

    def start(self) -> None:
        for worker in self.workers:
            self._start(worker)
        say(f"Started {len(self.workers)} workers (logs: {self.workers[0].log.parent})")

    def check(self) -> None:
        """Restart workers that died; UserError when one has died more than `restarts` times."""
        for worker in self.workers:
            code = worker.process.poll() if worker.process and not worker.done else None
            if code is None:
                continue
            if code == 0:
                worker.done = True
                continue
            how = exit_description(code)
            if worker.restarts >= self.restarts:
                said = last_log_line(worker.log) or "no output"
                raise UserError(
                    f"{worker.worker_id} failed {worker.restarts + 1} times ({how}): {said} (log: {worker.log}); "
                    "run the same command again to resume"
                )
            worker.restarts += 1
            say(
                f"{worker.worker_id} ended with {how}; starting it again ({worker.restarts} of {self.restarts}): "
                "it re-runs the trial it had"
            )
            self._start(worker)

    def all_done(self) -> bool:
        return all(worker.done for worker in self.workers)

    def stop(self) -> None:
        """Ctrl-C to every running worker at once (each marks its trial's run KILLED), then kill stragglers."""
        for worker in self.workers:
            if worker.process is not None and worker.process.poll() is None:
                worker.process.send_signal(signal.SIGINT)
        for worker in self.workers:
            if worker.process is not None:
                reap(worker.process, grace=15)
