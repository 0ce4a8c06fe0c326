"""`python -m fashion_exp ui`: mlflow ui on the configured store, opening experiments on their runs
table (ui_app.py), until Ctrl-C. The server runs under the same guard as the workers' tracking
server (server.py): it dies with this process, however this process ends."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from fashion_exp.children import last_log_line, parented, stop
from fashion_exp.errors import ConfigError, UserError
from fashion_exp.redact import redact
from fashion_exp.tracking.server import START_TIMEOUT, healthy
from fashion_exp.tracking.store import local_store

APP = "fashion-exp"  # the mlflow.app entry point of ui_app.create_app


def ui_command(uri: str, host: str, port: int) -> list[str]:
    return [
        *("mlflow", "server", "--app-name", APP, "--backend-store-uri", uri),
        *("--default-artifact-root", Path("mlruns").resolve().as_uri()),
        *("--host", host, "--port", str(port), "--workers", "1"),
    ]


def run_ui(uri: str, host: str, port: int, log: Path, echo=print) -> int:
    """Serve the store's UI at host:port until Ctrl-C (KeyboardInterrupt reaches the caller)."""
    import os

    if uri.startswith(("http://", "https://")):
        raise ConfigError(f"tracking.uri is a tracking server already ({redact(uri)}): open it in a browser")
    where = local_store(uri)
    if where is not None and not where.exists():
        raise ConfigError(f"no MLflow store at {where}: run `python -m fashion_exp tune` first, or give tracking.uri=")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        guard = subprocess.Popen(
            [sys.executable, "-m", "fashion_exp.tracking.server", *ui_command(uri, host, port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=parented(dict(os.environ)),
        )
    url = f"http://{host}:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not healthy(url):
            if guard.poll() is not None or time.monotonic() > deadline:
                said = last_log_line(log) or "no output"
                raise UserError(f"mlflow ui did not start at {url} ({said}; is the port taken? --port N); see {log}")
            time.sleep(0.25)
        echo(f"MLflow UI on {redact(uri)}: {url}  (experiments open on their runs table; Ctrl-C stops it)")
        return guard.wait()
    finally:
        stop(guard)
