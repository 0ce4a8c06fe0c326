"""The MLflow tracking server of the servers fashion_exp starts (tracking/server.py: the workers'
store, `ui`), in one process: open the store named by MLFLOW_BACKEND_STORE_URI, then serve MLflow's
app (or an ASGI factory around it) with uvicorn, in this process.

`mlflow server` takes two processes that each import MLflow: its command line, which opens the
store and then starts `python -m uvicorn` as a child, which imports MLflow again to serve. This
module does what that pair does for the options fashion_exp gives it (a store, an artifact root, one
uvicorn worker, MLflow's own app or one wrapping it) through MLflow's public server functions:
`initialize_backend_stores` opens the store once in this process, whose app then serves it. So each
start costs one MLflow import, not two (benchmarks/bench_store_server.py). MLflow's job runner
(huey consumers for its GenAI jobs) is started by `mlflow server` alone, so it does not run here.

    python -m fashion_exp.tracking.store_server --host 127.0.0.1 --port 5000 --artifact-root file:///.../mlruns
        [--app module:factory]
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from fashion_exp.errors import one_line
from fashion_exp.redact import redact

STORE_ENV = "MLFLOW_BACKEND_STORE_URI"  # (the environment, not the command line: it may hold a password)
MLFLOW_APP = "mlflow.server.fastapi_app:app"


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m fashion_exp.tracking.store_server")
    parser.add_argument("--host", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--artifact-root", required=True, help="where runs without one keep their artifacts")
    parser.add_argument("--app", default=None, help="module:factory of an ASGI app (default: MLflow's own)")
    return parser.parse_args(argv)


def server_environment(uri: str, artifact_root: str) -> dict[str, str]:
    """What `mlflow server` exports to the process that serves (its _run_server): the stores and
    the artifact root, by which MLflow's code knows it runs for a tracking server (its artifact host
    policy then refuses artifact locations on hosts it was not configured with), and no job
    executor's marker. The names are MLflow's (mlflow_private.py lists the private one)."""
    from mlflow.server.constants import ARTIFACT_ROOT_ENV_VAR, BACKEND_STORE_URI_ENV_VAR, REGISTRY_STORE_URI_ENV_VAR

    from fashion_exp.tracking.mlflow_private import job_executor_marker

    return {
        BACKEND_STORE_URI_ENV_VAR: uri,
        REGISTRY_STORE_URI_ENV_VAR: uri,
        ARTIFACT_ROOT_ENV_VAR: artifact_root,
        job_executor_marker(): "false",
    }


def load(reference: str):
    """The object `module:name` names."""
    module, name = reference.split(":", 1)
    return getattr(importlib.import_module(module), name)


def main(argv: list[str]) -> int:
    args = parse(argv)
    uri = os.environ.get(STORE_ENV, "")
    if not uri:
        print(f"no store: set {STORE_ENV}", file=sys.stderr, flush=True)
        return 2
    import uvicorn  # (first: MLflow's Flask app installs its security middleware when it runs under uvicorn)

    os.environ.update(server_environment(uri, args.artifact_root))
    from mlflow.server.handlers import initialize_backend_stores

    try:
        initialize_backend_stores(uri, uri, args.artifact_root)
    except Exception as err:  # (any store's own error: one line in the log, which the caller shows)
        reason = one_line(err)[:300]
        print(
            f"cannot open the store {redact(uri)}: {type(err).__name__}: {redact(reason)}", file=sys.stderr, flush=True
        )
        return 1
    app = load(args.app)() if args.app else load(MLFLOW_APP)
    uvicorn.run(app, host=args.host, port=args.port, workers=1)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
