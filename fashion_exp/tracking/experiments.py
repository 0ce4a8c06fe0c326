"""An MLflow experiment: open (or create) it by name, and the link that shows its runs in mlflow ui."""

from __future__ import annotations

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from fashion_exp.errors import ConfigError
from fashion_exp.redact import redact
from fashion_exp.tracking.store import open_client, unusable

# MLflow 3's UI opens an experiment of this kind in its model-training view (runs, metrics), not
# the GenAI one. MLflow 3.17's UI decides by a browser-wide GenAI / Model training switch instead
# (default GenAI) unless the link says ?workflowType=machine_learning: ui_link gives that link.
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def ui_link(uri: str, experiment_id: str) -> str:
    """How to look at an experiment's runs in mlflow ui: the command (for a local store) and the
    link that opens its runs table."""
    page = f"#/experiments/{experiment_id}?workflowType=machine_learning"
    uri = redact(uri)  # printed: no password
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/{page}"
    return f"mlflow ui --backend-store-uri {uri}   then open http://127.0.0.1:5000/{page}"


def connect(uri: str, experiment: str) -> tuple[MlflowClient, str]:
    """A client and the id of `experiment` (created if new, tagged EXPERIMENT_KIND); ConfigError if
    the store is unusable."""
    try:
        client = open_client(uri)
        found = client.get_experiment_by_name(experiment)
        if found is None:
            return client, client.create_experiment(experiment, tags=dict([EXPERIMENT_KIND]))
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
