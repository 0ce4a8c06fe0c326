"""`python -m fashion_exp ui`: mlflow ui on the configured store, opening experiments on their runs
table (ui_app.py), until Ctrl-C. The server runs under the same guard as the workers' tracking
server (server.py): it dies with this process, however this process ends."""

from __future__ import annotations

import time
from pathlib import Path

from fashion_exp.errors import ConfigError, UserError
from fashion_exp.redact import redact
from fashion_exp.tracking.server import healthy, mlflow_server
from fashion_exp.tracking.store import local_store

APP = "fashion-exp"  # the mlflow.app entry point of ui_app.create_app


def run_ui(uri: str, host: str, port: int, log: Path, echo=print) -> int:
    """Serve the store's UI at host:port until Ctrl-C (KeyboardInterrupt reaches the caller);
    UserError if the server does not start, or stops answering."""
    if uri.startswith(("http://", "https://")):
        raise ConfigError(f"tracking.uri is a tracking server already ({redact(uri)}): open it in a browser")
    where = local_store(uri)
    if where is not None and not where.exists():
        raise ConfigError(f"no MLflow store at {where}: run `python -m fashion_exp tune` first, or give tracking.uri=")
    hint = "is the port taken? --port N"
    with mlflow_server(uri, host, port, log, "mlflow ui", app=APP, hint=hint) as url:
        echo(f"MLflow UI on {redact(uri)}: {url}  (experiments open on their runs table; Ctrl-C stops it)")
        while healthy(url):
            time.sleep(2.0)
    raise UserError(f"mlflow ui stopped answering at {url}; see {log}")
