"""train-final: the best hyperparameters of a search -> a 299x299 model a user can call on raw photos.

Trains the head on cached features at the final size (several restarts, the best epoch by the
objective), assembles frozen Xception (preprocessing inside) + head + softmax into one Keras
model, checks it against the cached-feature head on every validation photo, then logs it with
MLflow's Keras flavour and registers it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from functools import partial

import keras
import numpy as np
from tqdm import tqdm

from fashion_exp.batching import pad_batch
from fashion_exp.config import Config, flatten, to_yaml
from fashion_exp.data.dataset import TRAIN, VALIDATION
from fashion_exp.data.images import Decoder
from fashion_exp.errors import ConfigError
from fashion_exp.features.extract import jobs_for_policy
from fashion_exp.features.features import Features, check_disk, jobs_for, scan
from fashion_exp.features.layers import plain_copy
from fashion_exp.final import reuse, selection
from fashion_exp.final.ensemble import (
    EnsembleScore,
    choose_size,
    member_probabilities,
    probabilities,
    score_sizes,
)
from fashion_exp.final.restarts import EpochBar, HeadTraining, Restart, train_once, train_restarts
from fashion_exp.hyperparameters import ROWS, HeadParams, has_default, label
from fashion_exp.screen import say
from fashion_exp.tracking import plots, registry
from fashion_exp.tracking.queries import best_from_search, ranked_rows, tune_searches
from fashion_exp.tracking.run_logger import RunLogger
from fashion_exp.tracking.tags import EPOCH, KIND, NOTE, VAL_ACCURACY, VAL_LOSS


@dataclass
class FinalResult:
    run_id: str
    version: str
    val_accuracy: float  # the best restart's
    best_epoch: int
    seed: int
    hyperparameters: HeadParams
    max_abs_diff: float
    top1_agreement: float
    ensemble_size: int = 1
    ensemble_val_accuracy: float | None = None  # the shipped model's (the best restart's when ensemble_size is 1)


@dataclass
class AssemblyCheck:
    """The assembled model against the cached-feature head on the validation photos."""

    max_abs_diff: float
    top1_agreement: float
    example: np.ndarray  # one decoded photo: the model's MLflow input example


def chosen_hyperparameters(config: Config) -> tuple[str, HeadParams]:
    """(tune parent run id, the search's best values with every final.hp.* override applied)."""
    search_run, tuned = best_from_search(config.tracking.uri, config.tracking.experiment, config.from_run)
    return search_run, with_overrides(config, tuned)


@dataclass(frozen=True)
class Shipped:
    """The heads train-final ships and what was measured of them on the validation photos."""

    heads: list[keras.Model]
    weights: list[float] | None  # each head's weight in the mean (forward selection); None: a plain mean
    score: EnsembleScore  # the shipped heads' validation score
    reference: np.ndarray  # their probabilities on the validation photos: what the assembled model must give
    best: Restart | None = None  # member 1's best restart (its seed, best epoch and curves are the run's)


@dataclass(frozen=True)
class Members:
    """What train-final trains: the configurations, best first, and the search run each came from."""

    search_run: str  # the best configuration's search
    params: list[HeadParams]
    sources: list[str]  # params[i]'s search run (a staged tune's fine-tuning searches: stage 2, the ladder's rungs)


def chosen_members(config: Config) -> Members:
    """The search's best, then (final.members > 1) the next best distinct ones that train as many
    blocks (their heads share one frozen part). After a staged tune, every trial of its fine-tuning
    searches (stage 2 and the ladder's rungs) is a candidate, ranked together."""
    uri, experiment = config.tracking.uri, config.tracking.experiment
    search_run, best = chosen_hyperparameters(config)
    runs = tune_searches(uri, experiment, search_run)
    rows = ranked_rows(uri, experiment, runs) if len(runs) > 1 or config.final.members > 1 else []
    if len(runs) > 1 and rows:
        search_run, best = rows[0]["search_run"], with_overrides(config, rows[0])
    members, sources = [best], [search_run]
    for row in rows if config.final.members > 1 else []:
        params = with_overrides(config, row)
        if params.blocks == best.blocks and params not in members and len(members) < config.final.members:
            members.append(params)
            sources.append(row["search_run"])
    return Members(search_run, members, sources)


def with_overrides(config: Config, tuned: dict) -> HeadParams:
    """A search's values (strings) with every final.hp.* override applied, checked."""
    values = {}
    for row in ROWS:
        override = config.final.hp.get(row.name)
        value = override if override is not None else tuned.get(row.name)
        if value is not None and value != "":  # (trials.csv leaves a row the space did not name empty)
            values[row.name] = value
        elif not has_default(row):  # (a row with a default the search did not vary keeps it: blocks 0)
            raise ConfigError(f"final.hp.{row.name}: the search logged no value; set final.hp.{row.name}=...")
    params = HeadParams.from_values(values)
    params.check("final.hp", config.choices())
    return params


def policies_for(config: Config, params: HeadParams) -> dict:
    """The chosen augmentation policy, with final.views applied."""
    policy = config.augmentation[params.augmentation]
    if config.final.views is not None:
        policy = replace(policy, views=config.final.views)
    return {params.augmentation: policy}


def warn_cost(config: Config, params: HeadParams) -> None:
    """With fine-tuned blocks every epoch passes the photos through them: say how many epochs that
    is, and how to spend fewer, before the long work starts."""
    epochs = config.final.restarts * config.final.epochs
    if params.blocks and epochs > 10:
        say(
            f"final.hp.blocks={params.blocks}: {config.final.restarts} restart(s) x {config.final.epochs} epochs = "
            f"{epochs} epochs that train Xception's top block(s), minutes each without a GPU "
            "(benchmarks/bench_finetune.py measures them); fewer: final.restarts=1 final.epochs=8, "
            "or final.patience=2 (stop a restart after 2 epochs without a better one)"
        )


def open_features(config: Config, members: list[HeadParams]) -> Features:
    """The final size's features, cut where the members' blocks say (nothing extracted yet)."""
    decoder = Decoder.for_data(config.data, config.final.image_size)
    checked, blocks = scan(config.data, config.work_dir), members[0].blocks
    return Features.open(checked, config.model, decoder, config.work_dir, seed=config.seed, blocks=blocks, exact=True)


def extract_features(config: Config, features: Features, training: list[HeadParams]) -> None:
    """Validation, and the training views (final.views of each policy) of the members that train,
    all extracted after a disk check."""
    jobs = jobs_for({name: p for member in training for name, p in policies_for(config, member).items()})
    remedy = "lower final.views" + (" or final.hp.blocks" if features.blocks else "")
    check_disk(config.work_dir, {features.blocks: features}, jobs, what="the final model's", remedy=remedy)
    if training:
        warn_cost(config, training[0])
    features.get(jobs)


def prepare(config: Config, chosen: Members, features: Features) -> dict:
    """Extract what training needs and find the members whose first restart the search already
    trained (final/reuse.py); returns member index -> Reused."""
    members = chosen.params
    policies = [policies_for(config, member)[member.augmentation] for member in members]
    found = reuse.candidates(config, chosen.sources, members, features, policies)
    fully = set(found) if config.final.restarts == 1 else set()  # members with no restart left to train
    extract_features(config, features, [m for i, m in enumerate(members) if i not in fully])
    reused = reuse.confirm(config, found, features)
    refused = [members[i] for i in sorted(fully - set(reused))]
    if refused:  # (a checkpoint that did not score its trial's val_accuracy: its member trains after all)
        extract_features(config, features, refused)
    return reused


def log_inputs(run: RunLogger, config: Config, features: Features, params: HeadParams, search_run: str):
    run.params(
        {
            **{f"hp.{k}": v for k, v in params.as_dict().items()},
            "image_size": config.final.image_size,
            "epochs": config.final.epochs,
            "patience": config.final.patience,
            "views": len(jobs_for_policy(TRAIN, policies_for(config, params)[params.augmentation])),
            "restarts": config.final.restarts,
            "ensemble": config.final.ensemble,
            "members": config.final.members,
            "objective": config.tuner.objective,
            "tune_parent_run_id": search_run,
            "features_runtime": features.runtime,
            "features_runtime_why": features.runtime_why,
            "train_precision": features.precision,
        }
    )
    run.datasets([features.dataset.describe(TRAIN), features.dataset.describe(VALIDATION)])
    run.text(to_yaml(config), "config.yaml")
    run.text(features.scanned.report, "dataset_report.txt")
    run.json(flatten(config), "config_flat.json")
    run.json(features.dataset.classes, "class_names.json")


def train_head(
    run: RunLogger, config: Config, features: Features, params: HeadParams, member: int = 0, reused=None
) -> tuple:
    """Train the head from final.restarts seeds, log every restart; returns (the heads of every
    restart, best first; their Restarts). Member i > 0 (final.members) logs its restarts after
    the earlier members' (restart steps i * restarts, ...) and leaves the run's seed and plots alone.
    reused (final/reuse.py Reused): the search's trial of it stands for the first seed's restart."""
    seeds = [config.seed + i for i in range(config.final.restarts)]
    objective = config.tuner.objective
    first = member * len(seeds)

    def logged(index: int, restart: Restart) -> None:
        ran = len(restart.history["val_accuracy"])  # fewer than final.epochs when final.patience stopped it
        metrics = {"restart_val_accuracy": restart.val_accuracy, "restart_val_loss": restart.val_loss}
        run.metrics({**metrics, "restart_epochs": ran}, step=first + index)
        run.curves({f"restart_{first + index}_val_accuracy": restart.history["val_accuracy"]})
        say(
            f"Restart {index + 1}/{len(seeds)} (seed {restart.seed}): {ran} epochs, best epoch {restart.best_epoch}, "
            f"val_accuracy {restart.val_accuracy:.4f}, val_loss {restart.val_loss:.4f}"
            + (" (the search's trial, not trained again)" if reused and index == 0 else "")
        )

    whose = f" of member {member + 1} ({params.as_dict()})" if config.final.members > 1 else ""
    trained = seeds[1:] if reused else seeds
    if trained:
        say(f"Training the head{whose} {len(trained)} time(s) for {config.final.epochs} epochs on cached features ...")
    policy = policies_for(config, params)[params.augmentation]
    training = []  # made when a restart first trains: a reused member may need no training views at all

    def restart(seed: int, bar) -> tuple:
        if reused and seed == seeds[0]:
            return reused.head, reused.restart
        if not training:
            training.append(HeadTraining.of(features, policy, config.final.epochs, config.tuner, config.final.patience))
        return train_once(training[0], params, seed, callbacks=[EpochBar(bar)])

    with tqdm(total=len(trained) * config.final.epochs, desc="Head epochs", unit="epoch") as bar:
        kept = train_restarts(partial(restart, bar=bar), seeds, objective, logged, keep=len(seeds))
    if member == 0:
        log_chosen(run, config.final.image_size, params, kept.ranked[0], kept.every)
        run.keras(kept.heads[0], "checkpoint/head.keras")
    return kept.heads, kept.ranked


def choose_ensemble(run: RunLogger, config: Config, features: Features, heads: list, ranked: list) -> Shipped:
    """Score the ensembles of the 1..n best restarts on validation, log them, keep final.ensemble's
    size (auto: the best)."""
    members = member_probabilities(heads, features.val)
    scores = score_sizes(members, features.val_labels)
    for score in scores:
        run.metrics({"ensemble_val_accuracy": score.val_accuracy, "ensemble_val_loss": score.val_loss}, step=score.size)
    size = choose_size(scores, config.final.ensemble, config.tuner.objective)
    chosen = scores[size - 1]
    table = ", ".join(f"{s.size}: {s.val_accuracy:.4f}" for s in scores)
    say(f"Ensembles of the k best restarts, val_accuracy by k: {table}")
    say(f"Shipping k={size} (final.ensemble={config.final.ensemble}): val_accuracy {chosen.val_accuracy:.4f}")
    run.params({"ensemble_seeds": ",".join(str(r.seed) for r in ranked[:size])})
    shipped = {VAL_ACCURACY: chosen.val_accuracy, VAL_LOSS: chosen.val_loss}
    run.metrics({"ensemble_size": size, **shipped})
    if size > 1:
        inputs = keras.Input(features.val.shape[1:], name="features")
        run.keras(keras.Model(inputs, probabilities(heads[:size], inputs)), "checkpoint/ensemble.keras")
    return Shipped(heads[:size], None, chosen, members[:size].mean(axis=0))


def train_heads(run: RunLogger, config: Config, features: Features, members: list[HeadParams], reused=None) -> Shipped:
    """Every member's restarts (reused: member index -> its search trial, final/reuse.py), then the
    ensemble final.ensemble says."""
    reused = reused or {}
    if reused:
        run.params({"reused_trials": ",".join(f"{i + 1}:{r.trial_run_id}" for i, r in sorted(reused.items()))})
    trained = [train_head(run, config, features, p, member=i, reused=reused.get(i)) for i, p in enumerate(members)]
    if features.blocks:  # blocks trained under mixed precision ship in float32: choose and check what ships
        trained = [([plain_copy(head) for head in heads], ranked) for heads, ranked in trained]
    heads, ranked = trained[0]
    if config.final.ensemble == "select":
        return replace(select_ensemble(run, config, features, members, trained, reused), best=ranked[0])
    return replace(choose_ensemble(run, config, features, heads, ranked), best=ranked[0])


def select_ensemble(
    run: RunLogger, config: Config, features: Features, members: list, trained: list, reused: dict
) -> Shipped:
    """Forward selection (final/selection.py) over every head of every member on the validation
    photos; log each head's held-out score, its weight (and the search trial it is, if reused) and
    the ensemble's."""
    heads = [head for member_heads, _ in trained for head in member_heads]
    who = [(i, r.seed) for i, (_, ranked) in enumerate(trained) for r in ranked]
    held_out = member_probabilities(heads, features.val)
    picked = selection.forward_select(
        held_out, features.val_labels, config.tuner.objective, config.final.selection_rounds
    )
    rows = []
    for index, ((member, seed), counts) in enumerate(zip(who, picked.counts, strict=True)):
        accuracy, loss = selection.score(held_out[index], features.val_labels)
        rows.append(
            {
                "member": member,
                "seed": seed,
                "hyperparameters": members[member].as_dict(),
                "val_accuracy": accuracy,
                "val_loss": loss,
                "weight": counts / sum(picked.counts),
                "trial_run_id": reused[member].trial_run_id if member in reused and seed == config.seed else None,
            }
        )
        say(f"  member {member + 1}, seed {seed}: val_accuracy {accuracy:.4f}, weight {rows[-1]['weight']:.2f}")
    say(f"Shipping {len(picked.members)} head(s) chosen by forward selection: val_accuracy {picked.val_accuracy:.4f}")
    run.json(rows, "ensemble.json")
    shipped = {VAL_ACCURACY: picked.val_accuracy, VAL_LOSS: picked.val_loss}
    run.metrics({"ensemble_size": len(picked.members), **shipped})
    run.params({"ensemble_heads": ",".join(f"{who[i][0]}:{who[i][1]}x{picked.counts[i]}" for i in picked.members)})
    weights = [picked.weights[i] for i in picked.members]
    reference = np.tensordot(np.asarray(weights), held_out[picked.members], axes=1)
    chosen = EnsembleScore(len(picked.members), picked.val_accuracy, picked.val_loss)
    return Shipped([heads[i] for i in picked.members], weights, chosen, reference)


def log_chosen(run: RunLogger, size: int, params: HeadParams, chosen: Restart, restarts: list[Restart]) -> None:
    """The kept restart's curves, seed and best epoch, and the plots of it and of every restart."""
    run.curves({f"{EPOCH}{name}": values for name, values in chosen.history.items()})
    run.params({"seed": chosen.seed})
    run.metrics({"best_epoch": chosen.best_epoch, "chosen_restart": [r.seed for r in restarts].index(chosen.seed)})
    title = f"final {size}px, seed {chosen.seed}: {params.as_dict()}"
    run.figure(plots.learning_curves(chosen.history, title), "plots/learning_curves.png")
    curves = {f"seed {r.seed}": r.history["val_accuracy"] for r in restarts}
    run.figure(
        plots.compare_trials(
            curves, f"seed {chosen.seed}", f"final {size}px: val_accuracy of each restart", "val_accuracy"
        ),
        "plots/restarts_val_accuracy.png",
    )


def assemble(features: Features, heads: list[keras.Model], weights: list[float] | None = None) -> keras.Model:
    """uint8 images -> frozen Xception features -> each head (with its fine-tuned blocks, if any)
    -> softmax (averaged over the heads). Fine-tuned heads are shipped with Keras' own layers and
    without their optimizer (features/layers.plain_copy): the model loads without fashion_exp."""
    backbone = features.backbone.model
    if features.blocks:
        heads = [plain_copy(head) for head in heads]
    outputs = probabilities(heads, backbone.output, weights=weights)
    return keras.Model(backbone.input, outputs, name="fashion_classifier")


def check_assembled(model: keras.Model, reference: np.ndarray, features: Features, batch_size: int):
    """Run the assembled model on every validation photo and compare with `reference`, the
    probabilities the heads give on the cached validation features. Returns an AssemblyCheck."""
    paths = features.dataset.paths(VALIDATION)
    batches = features.decoder.load_batches(paths, batch_size, "Checking the assembled model on validation photos")
    parts, example = [], None
    for images in batches:
        example = images[:1] if example is None else example
        parts.append(np.asarray(model.predict_on_batch(pad_batch(images, batch_size)))[: len(images)])
    assembled = np.concatenate(parts)
    return AssemblyCheck(
        max_abs_diff=float(np.max(np.abs(assembled - reference))),
        top1_agreement=float(np.mean(assembled.argmax(1) == reference.argmax(1))),
        example=example,
    )


def train_final(config: Config) -> FinalResult:
    """Train, assemble, check, log and register the final model. Returns the run id and registered version."""
    started = time.time()
    chosen = chosen_members(config)
    search_run, members = chosen.search_run, chosen.params
    params = members[0]
    for number, (member, source) in enumerate(zip(members, chosen.sources, strict=True), 1):
        say(
            f"Hyperparameters from tune run {source}{f' (member {number})' if len(members) > 1 else ''}: "
            f"{member.as_dict()}"
        )
    features = open_features(config, members)
    reused = prepare(config, chosen, features)
    run = RunLogger.start(
        config.tracking.uri,
        config.final.experiment,
        run_name=f"final-{config.final.image_size}px-{time.strftime('%Y%m%d-%H%M%S')}",
        tags={KIND: "final", "tune_parent_run_id": search_run, NOTE: final_note(config, search_run)},
        started=started,  # the features' extraction is the command's and the run's (train_final_seconds)
    )
    with run.recording():
        log_inputs(run, config, features, params, search_run)
        shipped = train_heads(run, config, features, members, reused)
        model = assemble(features, shipped.heads, shipped.weights)
        check = check_assembled(model, shipped.reference, features, config.model.batch_size)
        card = model_card(config, features, members, search_run, len(shipped.heads), shipped.score)
        version = register(run, config, features, model, check, search_run, card)
        run.metrics({"train_final_seconds": time.time() - started})
    best = shipped.best
    return FinalResult(
        run_id=run.run_id,
        version=version,
        val_accuracy=best.val_accuracy,
        best_epoch=best.best_epoch,
        seed=best.seed,
        hyperparameters=params,
        max_abs_diff=check.max_abs_diff,
        top1_agreement=check.top1_agreement,
        ensemble_size=len(shipped.heads),
        ensemble_val_accuracy=shipped.score.val_accuracy,
    )


def final_note(config: Config, search_run: str) -> str:
    final = config.final
    return (
        f"train-final at {final.image_size}px from search run {search_run} ({final.members} member(s) x "
        f"{final.restarts} restart(s), final.ensemble={final.ensemble}). `val_accuracy` / `val_loss`: the shipped "
        "model's validation scores (promote ranks by them); `epoch_*`: the kept restart's curves; `restart_*`: each "
        "restart's best; the model is this run's logged model."
    )


def model_card(config: Config, features: Features, members: list[HeadParams], search_run: str, heads: int, shipped):
    """What the model is and how it was chosen, for its LoggedModel and registry version."""
    final = config.final
    params = {**{f"hp.{k}": v for k, v in members[0].as_dict().items()}, "image_size": final.image_size}
    params.update({"heads": heads, "members": len(members), "restarts": final.restarts, "ensemble": final.ensemble})
    params.update({"epochs": final.epochs, "tune_parent_run_id": search_run, "features_runtime": features.runtime})
    tried = "; ".join(label(member.as_dict()) for member in members)
    description = (
        f"Xception + head ({tried}) at {final.image_size}px, {heads} head(s) (final.ensemble={final.ensemble}), "
        f"trained by train-final from search run {search_run}. Validation accuracy {shipped.val_accuracy:.4f}: "
        "what promote ranks versions by (the test split only scores a model, it never chooses one)."
    )
    validation = features.dataset.describe(VALIDATION)
    return registry.ModelCard(params, shipped.val_accuracy, shipped.val_loss, description, validation)


def register(
    run: RunLogger, config: Config, features: Features, model, check: AssemblyCheck, search_run: str, card
) -> str:
    """Log the assembly check and the model (with what predict and serve need to call it); returns
    its registered version."""
    run.metrics({"assembled_max_abs_diff": check.max_abs_diff, "assembled_top1_agreement": check.top1_agreement})
    metadata = {
        "class_names": features.dataset.classes,
        "image_size": config.final.image_size,
        "interpolation": config.data.interpolation,
        "tune_parent_run_id": search_run,
        "ensemble_size": int(card.params["heads"]),
    }
    return registry.log_model(
        config.tracking.uri, run.run_id, model, metadata, check.example, config.final.registered_model, card
    )
