"""tracking/run_logger.py: what a run records when two commands write to one store at once."""

from __future__ import annotations

import pytest
from mlflow.tracking import MlflowClient


def test_two_commands_logging_the_same_new_split_at_once_both_record_it(store_uri, dataset_root, monkeypatch):
    """Two different searches started at once on a fresh store: MLflow looks for the split's dataset
    and then inserts it, so the slower insert broke the unique key and its tune ended with
    `MLflow: (sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, ...`
    (test_concurrency's two searches, once in a fresh clone). The rolled-back insert is tried again
    and finds the other's dataset; any other refusal still stops the command."""
    from mlflow.exceptions import MlflowException

    from fashion_exp.tracking.run_logger import log_datasets
    from tests.synthetic import scan

    client = MlflowClient(store_uri)
    experiment = client.create_experiment("e")
    first, second = (client.create_run(experiment).info.run_id for _ in range(2))
    splits = [scan(dataset_root, ["train"]).describe("train")]
    log_inputs, lost = MlflowClient.log_inputs, []

    def slower(self, run_id, datasets=None, models=None):
        if run_id == second and not lost:  # the other command's insert lands between our look and ours
            log_inputs(self, first, datasets)
            lost.append(run_id)
            raise MlflowException(
                "(sqlite3.IntegrityError) UNIQUE constraint failed: datasets.experiment_id, "
                "datasets.name, datasets.digest"
            )
        return log_inputs(self, run_id, datasets, models)

    monkeypatch.setattr(MlflowClient, "log_inputs", slower)
    log_datasets(client, second, splits)
    for run in (first, second):
        assert [d.dataset.digest for d in client.get_run(run).inputs.dataset_inputs] == [splits[0]["digest"]]
    monkeypatch.setattr(MlflowClient, "log_inputs", lambda *args: (_ for _ in ()).throw(MlflowException("no")))
    with pytest.raises(MlflowException, match="no"):
        log_datasets(client, first, splits)
