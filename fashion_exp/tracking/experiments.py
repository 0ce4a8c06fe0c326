"""An MLflow experiment: open (or create) it by name, and the link that shows its runs in mlflow ui."""

from __future__ import annotations

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from fashion_exp.errors import ConfigError
from fashion_exp.redact import redact
from fashion_exp.tracking.store import open_client, unusable
from fashion_exp.tracking.tags import NOTE

# The kind of experiment this is, for MLflow UIs that read it. MLflow 3.17's does not: it opens an
# experiment on its GenAI page unless the browser's GenAI / Model training switch says otherwise
# (mlflow/mlflow#24498), or the link carries ?workflowType=machine_learning (ui_link's), or the UI
# is `python -m fashion_exp ui`'s (tracking/ui_app.py), which sets that switch's default.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
DEFAULT_URI = "sqlite:///mlflow.db"  # conf/tracking/local.yaml's


def ui_link(uri: str, experiment_id: str) -> str:
    """How to look at an experiment's runs in mlflow ui: the command (for a local store) and the
    link that opens its runs table."""
    page = f"#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    uri = redact(uri)  # printed: no password
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/{page}"
    command = "python -m fashion_exp ui" + ("" if uri == DEFAULT_URI else f" tracking.uri={uri}")
    return f"{command}   then open http://127.0.0.1:5000/{page}"


def connect(uri: str, experiment: str, description: str = "") -> tuple[MlflowClient, str]:
    """A client and the id of `experiment` (created if new, tagged EXPERIMENT_KIND, with
    `description` as its description); ConfigError if the store is unusable."""
    try:
        client = open_client(uri)
        found = client.get_experiment_by_name(experiment)
        if found is None:
            tags = dict([EXPERIMENT_KIND, *([(NOTE, description)] if description else [])])
            return client, client.create_experiment(experiment, tags=tags)
        if found.lifecycle_stage == "deleted":
            raise ConfigError(
                f"tracking.experiment: '{experiment}' is deleted in {redact(uri)}; "
                "restore it in mlflow ui or pick another name"
            )
        if EXPERIMENT_KIND[0] not in found.tags:  # made before fashion_exp tagged its experiments
            client.set_experiment_tag(found.experiment_id, *EXPERIMENT_KIND)
        return client, found.experiment_id
    except MlflowException as err:
        raise unusable(uri, err) from None
