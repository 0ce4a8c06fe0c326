"""An MLflow experiment: open (or create) it by name, and the link that shows its runs in mlflow ui."""

from __future__ import annotations

import json

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
# A runs-table view MLflow's UI opens from a link (?viewStateShareKey=<key>): what its Share button
# writes, an experiment tag holding the table's state (sort, columns, filter) as JSON.
SHARED_VIEW = "mlflow.sharedViewState."


def trials_view(parent_run_id: str, objective: str, higher_is_better: bool, searched: list[str]) -> dict:
    """One search's trials in MLflow's runs table, best first by the objective, with val_accuracy
    and the searched hyperparameters as columns (the state MLflow's Share button saves)."""
    scores = list(dict.fromkeys([objective, "val_accuracy"]))
    return {
        "searchFilter": f"tags.`mlflow.parentRunId` = '{parent_run_id}'",
        "orderByKey": f"metrics.`{objective}`",
        "orderByAsc": not higher_is_better,
        "selectedColumns": [*(f"metrics.`{name}`" for name in scores), *(f"params.`{name}`" for name in searched)],
    }


def share_view(client: MlflowClient, experiment_id: str, key: str, state: dict) -> None:
    """Keep a runs-table view the link ui_link(..., view=key) opens."""
    client.set_experiment_tag(experiment_id, SHARED_VIEW + key, json.dumps(state))


def ui_link(tracking, experiment_id: str, view: str | None = None, plain_uri: str = "") -> str:
    """How to look at an experiment's runs in mlflow ui (tracking: the config's tracking section):
    the command (for a local store; plain_uri: the store `ui` opens without tracking.uri=) and the
    link that opens its runs table (on a view share_view kept, where one is named)."""
    page = f"#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    page += f"&viewStateShareKey={view}" if view else ""
    uri = redact(tracking.uri)  # printed: no password
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/{page}"
    command = "python -m fashion_exp ui" + ("" if tracking.uri == plain_uri else f" tracking.uri={uri}")
    return f"{command}   then open http://{tracking.ui_host}:{tracking.ui_port}/{page}"


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
