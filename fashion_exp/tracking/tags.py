"""The names fashion_exp writes on MLflow runs (tags and metrics that other commands read back).

Plain strings, no MLflow: every module that writes or queries runs takes the names from here.
"""

SEARCH_ID = "fashion_exp.search_id"  # on a tune parent run and its trials: the search's id (search/run.py search_id)
TRIAL_ID = "fashion_exp.trial_id"  # on a trial's run: keras-tuner's trial id
KIND = "fashion_exp.kind"  # what a run is: search, trial or final
WORKER = "fashion_exp.worker"  # on a trial's run: the tuner id that ran it (worker-0, ..., or tuner0)
HOST = "fashion_exp.host"  # on a trial's run: the machine that ran it
PARENT = "mlflow.parentRunId"  # MLflow's own tag: a nested run's parent
MODEL_ID = "fashion_exp.model_id"  # on a train-final run: the id of the LoggedModel it made (registry.log_model)
SHIPPED_VAL_ACCURACY = "shipped_val_accuracy"  # on a train-final run: the shipped model's validation score,
SHIPPED_VAL_LOSS = "shipped_val_loss"  # which promote ranks versions by (never by test)
PRESET = "fashion_exp.preset"  # on a tune parent run: the conf/preset it ran under (train-final takes it)
STAGE = "fashion_exp.stage"  # on a staged search's parent runs: 1 (frozen heads) or 2 (fine-tuning)
STAGE1_RUN = "fashion_exp.stage1_run"  # on a stage-2 parent run: the stage-1 run whose best head it fine-tunes
