"""train-final: the best hyperparameters of a search -> a 299x299 model a user can call on raw photos.

Trains the head on cached features at the final size, keeps the best epoch by val_accuracy, and
assembles frozen Xception (preprocessing inside) + head + softmax into one Keras model, which is
logged with MLflow's Keras flavour and registered.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from fashion_exp import plots, registry
from fashion_exp.config import AugmentationPolicy, Config, flatten, to_yaml
from fashion_exp.data import TRAIN, VALIDATION, Decoder, report, scan_configured
from fashion_exp.errors import ConfigError
from fashion_exp.features import Backbone, FeatureCache, build_backbone, extract_features, jobs_for_policy
from fashion_exp.restarts import Restart, train_once, train_restarts
from fashion_exp.space import RULES
from fashion_exp.tracking import KIND, RunLogger, best_from_search


@dataclass
class FinalResult:
    run_id: str
    version: str
    val_accuracy: float
    best_epoch: int
    seed: int
    hyperparameters: dict
    max_abs_diff: float
    top1_agreement: float


def resolve_hyperparameters(config: Config, tuned: dict[str, str]) -> dict:
    """The search's best values, typed, with any final.* override applied; validated."""
    casts = {"learning_rate": float, "size_inner": int, "droprate": float, "augmentation": str}
    values = {}
    for name, cast in casts.items():
        override = getattr(config.final, name)
        raw = override if override is not None else tuned.get(name)
        if raw is None:
            raise ConfigError(f"final.{name}: the search logged no value; set final.{name}=...")
        values[name] = cast(float(raw)) if cast is int else cast(raw)
        if name in RULES and not RULES[name][0](values[name]):
            raise ConfigError(f"final.{name}: {values[name]!r} is not {RULES[name][1]}")
    if values["augmentation"] not in config.augmentation:
        raise ConfigError(
            f"final.augmentation: policy '{values['augmentation']}' is not loaded "
            f"(loaded: {', '.join(config.augmentation)}); add it with augmentation=[...]"
        )
    return values


def assemble(backbone: Backbone, head: keras.Model) -> keras.Model:
    """uint8 images -> frozen Xception features -> head logits -> softmax probabilities."""
    probabilities = keras.layers.Softmax(name="probabilities")(head(backbone.model.output))
    return keras.Model(backbone.model.input, probabilities, name="fashion_classifier")


def train_final(config: Config, echo=print) -> FinalResult:
    """Train, assemble, log and register the final model. Returns the run id and registered version."""
    started = time.time()
    search_run, tuned = best_from_search(config.tracking.uri, config.tracking.experiment, config.from_run)
    hp = resolve_hyperparameters(config, tuned)
    policy: AugmentationPolicy = config.augmentation[hp["augmentation"]]
    if config.final.views is not None:
        policy = replace(policy, views=config.final.views)
    echo(f"Hyperparameters from tune run {search_run}: {hp}")

    dataset = scan_configured(config.data, [TRAIN, VALIDATION], config.work_dir)
    echo(report(dataset))
    size = config.final.image_size
    decoder = Decoder(size, config.data.interpolation, config.data.max_image_pixels)
    backbone = build_backbone(config.model, size, config.seed)
    train_jobs = jobs_for_policy(TRAIN, policy)
    val_job = jobs_for_policy(VALIDATION, AugmentationPolicy())[0]
    features = extract_features(
        backbone,
        dataset,
        FeatureCache(Path(config.work_dir) / "features"),
        [val_job, *train_jobs],
        decoder,
        config.model.batch_size,
        config.seed,
    )

    run = RunLogger.start(
        config.tracking.uri,
        config.final.experiment,
        run_name=f"final-{size}px-{time.strftime('%Y%m%d-%H%M%S')}",
        tags={KIND: "final", "tune_parent_run_id": search_run},
    )
    try:
        run.params(
            {
                **{f"hp.{k}": v for k, v in hp.items()},
                "image_size": size,
                "epochs": config.final.epochs,
                "views": len(train_jobs),
                "restarts": config.final.restarts,
                "tune_parent_run_id": search_run,
            }
        )
        run.text(to_yaml(config), "config.yaml")
        run.text(report(dataset), "dataset_report.txt")
        run.json(flatten(config), "config_flat.json")
        run.json(dataset.classes, "class_names.json")
        val = (features[val_job], dataset.labels(VALIDATION))
        seeds = [config.seed + i for i in range(config.final.restarts)]

        def logged(index: int, restart: Restart) -> None:
            run.metrics(
                {"restart_val_accuracy": restart.val_accuracy, "restart_val_loss": restart.val_loss}, step=index
            )
            run.curves({f"restart_{index}_val_accuracy": restart.history["val_accuracy"]})
            echo(
                f"Restart {index + 1}/{len(seeds)} (seed {restart.seed}): best val_accuracy "
                f"{restart.val_accuracy:.4f} at epoch {restart.best_epoch} (val_loss {restart.val_loss:.4f})"
            )

        echo(f"Training the head {len(seeds)} time(s) for {config.final.epochs} epochs on cached features ...")
        views = tf.constant(np.stack([features[j] for j in train_jobs]))
        train = partial(
            train_once,
            views,
            dataset.labels(TRAIN),
            val,
            len(dataset.classes),
            hp,
            config.final.epochs,
            config.tuner.batch_size,
        )
        head, chosen, restarts = train_restarts(train, seeds, on_restart=logged)
        run.curves(chosen.history)
        best_epoch, score = chosen.best_epoch, chosen.val_accuracy
        run.params({"seed": chosen.seed})
        run.metrics(
            {
                "best_epoch": best_epoch,
                "best_val_accuracy": score,
                "best_val_loss": chosen.val_loss,
                "chosen_restart": seeds.index(chosen.seed),
            }
        )
        title = f"final {size}px, seed {chosen.seed}: {hp}"
        run.figure(plots.learning_curves(chosen.history, title), "plots/learning_curves.png")
        curves = {f"seed {r.seed}": r.history["val_accuracy"] for r in restarts}
        run.figure(
            plots.compare_trials(curves, f"seed {chosen.seed}", f"final {size}px: val_accuracy of each restart"),
            "plots/restarts_val_accuracy.png",
        )
        run.keras(head, "checkpoint/head.keras")

        model = assemble(backbone, head)
        echo("Checking the assembled model on the validation photos ...")
        images = np.stack([decoder.load(p) for p in dataset.paths(VALIDATION)])
        assembled = model.predict(images, batch_size=config.model.batch_size, verbose=0)
        reference = tf.nn.softmax(head.predict(features[val_job], verbose=0)).numpy()
        max_diff = float(np.max(np.abs(assembled - reference)))
        agreement = float(np.mean(assembled.argmax(1) == reference.argmax(1)))
        run.metrics({"assembled_max_abs_diff": max_diff, "assembled_top1_agreement": agreement})
        metadata = {
            "class_names": dataset.classes,
            "image_size": size,
            "interpolation": config.data.interpolation,
            "tune_parent_run_id": search_run,
        }
        version = registry.log_model(
            config.tracking.uri, run.run_id, model, metadata, images[:1], config.final.registered_model
        )
        run.metrics({"train_final_seconds": time.time() - started})
        run.end("FINISHED")
    except BaseException:
        run.end("KILLED")
        raise
    return FinalResult(run.run_id, version, score, best_epoch, chosen.seed, hp, max_diff, agreement)
