"""Every private MLflow member fashion_exp uses (MLflow 3.17.2, pinned in requirements.lock), in one
place (the ledger: fashion_exp/private.py).

- `mlflow.tracking._tracking_service.utils._tracking_uri`: MLflow's SQL registry resolves a
  `models:/<model_id>` source through `MlflowClient()`, the process-wide tracking URI, not the
  calling client's (a TODO in its SqlAlchemyStore.create_model_version). The public
  `mlflow.set_tracking_uri` cannot put back an unset URI (it leaves MLFLOW_TRACKING_URI set for
  every later child process), so process_tracking_uri sets the module's value and puts both back.
- `mlflow.environment_variables._MLFLOW_IN_JOB_EXECUTOR`: `mlflow server` sets it false for the process
  that serves; store_server.py, which serves without that command, sets the same.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from fashion_exp.private import Private

MLFLOW = "3.17.2"
PRIVATE = (
    Private(
        "mlflow.environment_variables:_MLFLOW_IN_JOB_EXECUTOR",
        ("tracking/mlflow_private.py",),
        "`mlflow server` sets it false for the process that serves (a job executor's marker must never be "
        "on there); store_server.py serves without that command, so it sets the same",
    ),
    Private(
        "mlflow.tracking._tracking_service.utils:_tracking_uri",
        ("tracking/mlflow_private.py", "tracking/registry.py"),
        "a models:/ source is resolved through the process-wide URI when a version is registered; the public "
        "setter cannot put back an unset one",
    ),
)


@contextmanager
def process_tracking_uri(uri: str) -> Iterator[None]:
    """MLflow's process-wide tracking URI is `uri` inside the block; both halves of it (the module's
    value and MLFLOW_TRACKING_URI) are put back after."""
    from mlflow.tracking._tracking_service import utils

    saved = (utils._tracking_uri, os.environ.get("MLFLOW_TRACKING_URI"))
    utils._tracking_uri = uri
    try:
        yield
    finally:  # (MLflow's own helper drops the variable)
        utils._tracking_uri = saved[0]
        if saved[1] is not None:
            os.environ["MLFLOW_TRACKING_URI"] = saved[1]


def job_executor_marker() -> str:
    """The environment variable MLflow marks its job executors' processes with."""
    from mlflow.environment_variables import _MLFLOW_IN_JOB_EXECUTOR

    return _MLFLOW_IN_JOB_EXECUTOR.name
