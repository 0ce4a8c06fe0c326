"""train-final's recorder: what each step of final/train.py computed, written to the run (MLflow,
through RunLogger) and to the screen (screen.say) once the step has computed it. The steps decide
and compute; this module only records (issue 37, item 1: compute first, record second)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import keras

from fashion_exp.config import Config, flatten, to_yaml
from fashion_exp.data.dataset import TRAIN, VALIDATION
from fashion_exp.features.features import Features
from fashion_exp.final.ensemble import EnsembleScore, probabilities
from fashion_exp.final.restarts import Restart, Restarts
from fashion_exp.hyperparameters import HeadParams
from fashion_exp.screen import say
from fashion_exp.tracking import plots, registry
from fashion_exp.tracking.run_logger import RunLogger
from fashion_exp.tracking.tags import EPOCH, VAL_ACCURACY, VAL_LOSS


@dataclass(frozen=True)
class BySize:
    """The ensembles of the k best restarts of one member, scored; `size` is the one final.ensemble keeps."""

    scores: list[EnsembleScore]
    size: int
    seeds: list[int]  # the kept restarts' seeds, best first


@dataclass(frozen=True)
class Selection:
    """Forward selection over every head of every member: one row per head, and the heads picked."""

    rows: list[dict]  # member, seed, hyperparameters, val_accuracy, val_loss, weight, trial_run_id
    picked: list[str]  # "member:seed x count" of each picked head
    score: EnsembleScore


@dataclass(frozen=True)
class AssemblyCheck:
    """The assembled model against the cached-feature heads on the validation photos."""

    max_abs_diff: float
    top1_agreement: float
    example: object  # one decoded photo (np.ndarray): the model's MLflow input example


class FinalRecord:
    """One train-final run: each method records one step's result."""

    def __init__(self, run: RunLogger, config: Config):
        self.run, self.config = run, config

    @property
    def run_id(self) -> str:
        return self.run.run_id

    @contextmanager
    def recording(self) -> Iterator[FinalRecord]:
        """The run ends FINISHED, or FAILED / KILLED with what stopped it (RunLogger.recording)."""
        with self.run.recording():
            yield self

    def inputs(self, features: Features, params: HeadParams, views: int, search_run: str, reused: dict) -> None:
        """What the run starts from: the chosen hyperparameters and settings, the data, the config."""
        config, final = self.config, self.config.final
        self.run.params(
            {
                **{f"hp.{k}": v for k, v in params.as_dict().items()},
                "image_size": final.image_size,
                "epochs": final.epochs,
                "patience": final.patience,
                "views": views,
                "restarts": final.restarts,
                "ensemble": final.ensemble,
                "members": final.members,
                "objective": config.tuner.objective,
                "tune_parent_run_id": search_run,
                "features_runtime": features.runtime,
                "features_runtime_why": features.runtime_why,
                "train_precision": features.precision,
            }
        )
        if reused:
            self.run.params({"reused_trials": ",".join(f"{i + 1}:{r.trial_run_id}" for i, r in sorted(reused.items()))})
        self.run.datasets([features.dataset.describe(TRAIN), features.dataset.describe(VALIDATION)])
        self.run.text(to_yaml(config), "config.yaml")
        self.run.text(features.scanned.report, "dataset_report.txt")
        self.run.json(flatten(config), "config_flat.json")
        self.run.json(features.dataset.classes, "class_names.json")

    def restart(self, member: int, restarts: int, reused: bool) -> Callable[[int, Restart], None]:
        """What records each restart of member `member` as it ends (its steps follow the earlier members')."""
        first = member * restarts

        def recorded(index: int, restart: Restart) -> None:
            ran = len(restart.history["val_accuracy"])  # fewer than final.epochs when final.patience stopped it
            metrics = {"restart_val_accuracy": restart.val_accuracy, "restart_val_loss": restart.val_loss}
            self.run.metrics({**metrics, "restart_epochs": ran}, step=first + index)
            self.run.curves({f"restart_{first + index}_val_accuracy": restart.history["val_accuracy"]})
            say(
                f"Restart {index + 1}/{restarts} (seed {restart.seed}): {ran} epochs, best epoch {restart.best_epoch}, "
                f"val_accuracy {restart.val_accuracy:.4f}, val_loss {restart.val_loss:.4f}"
                + (" (the search's trial, not trained again)" if reused and index == 0 else "")
            )

        return recorded

    def first_member(self, params: HeadParams, kept: Restarts) -> None:
        """Member 1's kept restart: its curves, seed and best epoch, the plots, its head."""
        chosen, size = kept.ranked[0], self.config.final.image_size
        self.run.curves({f"{EPOCH}{name}": values for name, values in chosen.history.items()})
        self.run.params({"seed": chosen.seed})
        order = [r.seed for r in kept.every]
        self.run.metrics({"best_epoch": chosen.best_epoch, "chosen_restart": order.index(chosen.seed)})
        title = f"final {size}px, seed {chosen.seed}: {params.as_dict()}"
        self.run.figure(plots.learning_curves(chosen.history, title), "plots/learning_curves.png")
        curves = {f"seed {r.seed}": r.history["val_accuracy"] for r in kept.every}
        name = f"final {size}px: val_accuracy of each restart"
        self.run.figure(
            plots.compare_trials(curves, f"seed {chosen.seed}", name, "val_accuracy"), "plots/restarts_val_accuracy.png"
        )
        self.run.keras(kept.heads[0], "checkpoint/head.keras")

    def ensemble(self, found: BySize | Selection, heads: list[keras.Model], val_shape: tuple[int, ...]) -> None:
        """The shipped ensemble: by size, or by forward selection."""
        if isinstance(found, Selection):
            self.selection(found)
        else:
            self.by_size(found, heads, val_shape)

    def by_size(self, found: BySize, heads: list[keras.Model], val_shape: tuple[int, ...]) -> None:
        """The ensembles of the k best restarts, the size kept, and its heads as one checkpoint."""
        for score in found.scores:
            self.run.metrics(
                {"ensemble_val_accuracy": score.val_accuracy, "ensemble_val_loss": score.val_loss}, step=score.size
            )
        chosen = found.scores[found.size - 1]
        table = ", ".join(f"{s.size}: {s.val_accuracy:.4f}" for s in found.scores)
        say(f"Ensembles of the k best restarts, val_accuracy by k: {table}")
        ensemble = self.config.final.ensemble
        say(f"Shipping k={found.size} (final.ensemble={ensemble}): val_accuracy {chosen.val_accuracy:.4f}")
        self.run.params({"ensemble_seeds": ",".join(str(seed) for seed in found.seeds)})
        self.run.metrics({"ensemble_size": found.size, VAL_ACCURACY: chosen.val_accuracy, VAL_LOSS: chosen.val_loss})
        if found.size > 1:
            inputs = keras.Input(val_shape, name="features")
            self.run.keras(keras.Model(inputs, probabilities(heads, inputs)), "checkpoint/ensemble.keras")

    def selection(self, found: Selection) -> None:
        """Every head's held-out score and weight, and the ensemble forward selection picked (or the mean)."""
        for row in found.rows:
            member, accuracy = row["member"] + 1, row["val_accuracy"]
            say(f"  member {member}, seed {row['seed']}: val_accuracy {accuracy:.4f}, weight {row['weight']:.2f}")
        score = found.score
        how = "the plain mean of every head" if self.config.final.ensemble == "mean" else "chosen by forward selection"
        say(f"Shipping {score.size} head(s), {how}: val_accuracy {score.val_accuracy:.4f}")
        self.run.json(found.rows, "ensemble.json")
        self.run.metrics({"ensemble_size": score.size, VAL_ACCURACY: score.val_accuracy, VAL_LOSS: score.val_loss})
        self.run.params({"ensemble_heads": ",".join(found.picked)})

    def model(self, features: Features, model: keras.Model, check: AssemblyCheck, search_run: str, card) -> str:
        """The assembly check and the model (with what predict and serve need to call it), registered;
        returns its version."""
        self.run.metrics(
            {"assembled_max_abs_diff": check.max_abs_diff, "assembled_top1_agreement": check.top1_agreement}
        )
        config = self.config
        metadata = {
            "class_names": features.dataset.classes,
            "image_size": config.final.image_size,
            "interpolation": config.data.interpolation,
            "tune_parent_run_id": search_run,
            "ensemble_size": int(card.params["heads"]),
        }
        return registry.log_model(
            config.tracking.uri, self.run.run_id, model, metadata, check.example, config.final.registered_model, card
        )

    def seconds(self, seconds: float) -> None:
        self.run.metrics({"train_final_seconds": seconds})
