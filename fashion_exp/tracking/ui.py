"""`python -m fashion_exp ui`: mlflow ui on the configured store, opening experiments on their runs
table (ui_app.py), until Ctrl-C. The server runs under the same guard as the workers' tracking
server (server.py): it dies with this process, however this process ends."""

from __future__ import annotations

import ipaddress
import time
from pathlib import Path

from fashion_exp.errors import ConfigError, UserError
from fashion_exp.redact import redact
from fashion_exp.screen import say
from fashion_exp.tracking.server import healthy, mlflow_server
from fashion_exp.tracking.store import local_store

APP = "fashion_exp.tracking.ui_app:create_app"  # (also the mlflow.app entry point fashion-exp)


def loopback(host: str) -> bool:
    """Whether `host` is this machine alone (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_exposure(host: str, port: int, expose: bool) -> None:
    """Refuse a host other machines reach unless `expose`; with it, say what is exposed."""
    if loopback(host):
        return
    if not expose:
        raise ConfigError(
            f"ui --host {host}: other machines would reach the whole store with no login (read and change every "
            "run, create experiments whose artifacts go anywhere, move @champion, which serve loads); keep "
            "--host 127.0.0.1 and reach it through `ssh -L`, run the recipe's tracking server with basic-auth "
            "(docs/distributed.md), or add --expose to open it anyway"
        )
    say(
        f"EXPOSED (--expose): anyone who reaches {host}:{port} reads and changes the whole store, with no login: "
        "every run and artifact, the registry and its @champion alias"
    )


def run_ui(uri: str, host: str, port: int, log: Path, expose: bool = False) -> int:
    """Serve the store's UI at host:port until Ctrl-C (KeyboardInterrupt reaches the caller);
    ConfigError for a host other machines reach without `expose`; UserError if the server does not
    start, or stops answering."""
    check_exposure(host, port, expose)
    if uri.startswith(("http://", "https://")):
        raise ConfigError(f"tracking.uri is a tracking server already ({redact(uri)}): open it in a browser")
    where = local_store(uri)
    if where is not None and not where.exists():
        raise ConfigError(f"no MLflow store at {where}: run `python -m fashion_exp tune` first, or give tracking.uri=")
    hint = "is the port taken? --port N"
    with mlflow_server(uri, (host, port), log, "mlflow ui", app=APP, hint=hint) as url:
        say(f"MLflow UI on {redact(uri)}: {url}  (experiments open on their runs table; Ctrl-C stops it)")
        while healthy(url):
            time.sleep(2.0)
    raise UserError(f"mlflow ui stopped answering at {url}; see {log}")
