"""What watches a search: a progress bar, and the recorder that hands trials to MLflow tracking."""

from __future__ import annotations

from tqdm import tqdm

from fashion_exp.errors import last_line
from fashion_exp.hyperparameters import NAMES, HeadParams
from fashion_exp.search.tuner import TrialObserver
from fashion_exp.tracking.search_runs import SearchTracker


def trial_params(trial) -> dict:
    """A trial's values as MLflow params: the head hyperparameters that mean something for its
    head (table order, typed by the table; block_lr only with blocks > 0), then keras-tuner's own
    keys (Hyperband's tuner/epochs, ...)."""
    values = trial.hyperparameters.values
    extra = {k: v for k, v in values.items() if k not in NAMES}
    return {**HeadParams.from_values(values).active(), **extra}


class TrialProgress(TrialObserver):
    """A progress bar over trials with the best score so far."""

    def __init__(self, total: int, objective: str, direction: str):
        self.total = total
        self.objective = objective
        self.direction = direction
        self.best: float | None = None
        self.bar: tqdm | None = None

    def _better(self, score: float) -> bool:
        if self.best is None:
            return True
        return score > self.best if self.direction == "max" else score < self.best

    def _show_best(self) -> None:
        if self.best is not None:
            self.bar.set_postfix({f"best_{self.objective}": f"{self.best:.4f}"})

    def search_started(self, done: int, best_score: float | None) -> None:
        self.bar = tqdm(total=max(self.total, done), initial=done, desc="Trials", unit="trial")
        self.best = best_score
        self._show_best()

    def trial_ended(self, trial, best_model) -> None:
        if trial.status == "COMPLETED" and self._better(trial.score):
            self.best = trial.score
            self._show_best()
        elif trial.status != "COMPLETED":
            tqdm.write(f"Trial {trial.trial_id} failed: {last_line(trial.message)}")
        self.bar.update(1)

    def search_ended(self) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


class TrialRecorder(TrialObserver):
    """Hands each trial to the SearchTracker: a child run per trial with per-epoch metrics, the
    best epoch's metrics and checkpoint, or the error of a failed trial."""

    def __init__(self, tracker: SearchTracker, objective: str, tags: dict[str, str] | None = None):
        self.tracker = tracker
        self.objective = objective
        self.tags = tags or {}  # on every trial's run: who ran it

    def trial_started(self, trial) -> None:
        self.tracker.start_trial(trial.trial_id, trial_params(trial), self.tags)

    def epoch_ended(self, trial, epoch: int, logs: dict[str, float]) -> None:
        self.tracker.log_epoch(trial.trial_id, epoch, logs)

    def trial_ended(self, trial, best_model) -> None:
        if trial.status != "COMPLETED" or best_model is None:
            self.tracker.end_trial(trial.trial_id, "", None, error=trial.message or "")
            return
        best = {self.objective: trial.score, "best_epoch": trial.best_step}  # the score, by the objective's name
        title = f"trial {trial.trial_id}: {trial.hyperparameters.values}"
        self.tracker.end_trial(trial.trial_id, title, best, best_model)
