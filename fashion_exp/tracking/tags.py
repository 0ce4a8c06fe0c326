"""The names fashion_exp writes on MLflow runs (tags and metrics that other commands read back).

Plain strings, no MLflow: every module that writes or queries runs takes the names from here.
"""

SEARCH_ID = "fashion_exp.search_id"  # on a tune parent run and its trials: the search's id (search/run.py search_id)
TRIAL_ID = "fashion_exp.trial_id"  # on a trial's run: keras-tuner's trial id
KIND = "fashion_exp.kind"  # what a run is: search, trial or final
WORKER = "fashion_exp.worker"  # on a trial's run: the tuner id that ran it (worker-0, ..., or tuner0)
HOST = "fashion_exp.host"  # on a trial's run: the machine that ran it
PARENT = "mlflow.parentRunId"  # MLflow's own tag: a nested run's parent
COMMAND_LINE = "fashion_exp.command_line"  # on every run: the command line that made it (passwords hidden)
NOTE = "mlflow.note.content"  # MLflow's own tag: the description of a run, an experiment or a LoggedModel
MODEL_ID = "fashion_exp.model_id"  # on a train-final run: the id of the LoggedModel it made (registry.log_model)
VAL_ACCURACY = "val_accuracy"  # a run's validation score, one name for all: a trial's (its best epoch, or its
VAL_LOSS = "val_loss"  # cross-validated mean), a search's best trial's, a final run's shipped model's (promote's)
EPOCH = "epoch_"  # the per-epoch curves: epoch_val_accuracy, epoch_loss, ... (history, not the run's score)
OLD_VAL_ACCURACY = ("shipped_val_accuracy", "best_val_accuracy")  # where runs made before 2026-12-01 kept it
OLD_VAL_LOSS = ("shipped_val_loss", "best_val_loss")
PRESET = "fashion_exp.preset"  # on a tune parent run: the conf/preset it ran under (train-final takes it)
STAGE = "fashion_exp.stage"  # on a staged search's parent runs: 1 (frozen heads) or 2 (fine-tuning)
TUNE_ID = "fashion_exp.tune_id"  # on a staged tune's parent run (kind tune): its ledger's id (search/stages.py Ledger)
STAGE1_RUN = "fashion_exp.stage1_run"  # on a stage-2 parent run: the stage-1 run whose best head it fine-tunes
