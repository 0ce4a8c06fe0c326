"""train-final: the best hyperparameters of a search -> a 299x299 model a user can call on raw photos.

Trains the head on cached features at the final size (several restarts, the best epoch by the
objective), assembles frozen Xception (preprocessing inside) + head + softmax into one Keras
model, checks it against the cached-feature head on every validation photo, then logs it with
MLflow's Keras flavour and registers it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

import keras
import numpy as np
from tqdm import tqdm

from fashion_exp.batching import pad_batch
from fashion_exp.config import Config
from fashion_exp.data.dataset import TRAIN, VALIDATION
from fashion_exp.data.images import Decoder
from fashion_exp.errors import ConfigError
from fashion_exp.features.extract import jobs_for_policy
from fashion_exp.features.features import Features, check_disk, choose_runtime, jobs_for, scan
from fashion_exp.features.layers import plain_copy
from fashion_exp.final import reuse, selection
from fashion_exp.final.cuts import MemberFeatures, reading
from fashion_exp.final.ensemble import (
    EnsembleScore,
    choose_size,
    member_probabilities,
    probabilities,
    score_sizes,
)
from fashion_exp.final.record import AssemblyCheck, BySize, FinalRecord, Selection
from fashion_exp.final.restarts import EpochBar, HeadTraining, Restart, Restarts, train_once, train_restarts
from fashion_exp.hyperparameters import ROWS, HeadParams, has_default, label
from fashion_exp.screen import say
from fashion_exp.tracking import registry
from fashion_exp.tracking.queries import best_from_search, ranked_rows, tune_searches
from fashion_exp.tracking.run_logger import RunLogger
from fashion_exp.tracking.tags import KIND, NOTE


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


def chosen_hyperparameters(config: Config) -> tuple[str, HeadParams]:
    """(tune parent run id, the search's best values with every final.hp.* override applied)."""
    search_run, tuned = best_from_search(config.tracking.uri, config.tracking.experiment, config.from_run)
    return search_run, with_overrides(config, tuned)


@dataclass(frozen=True)
class Shipped:
    """The heads train-final ships and what was measured of them on the validation photos."""

    heads: list[keras.Model]
    blocks: list[int]  # the blocks each head fine-tuned (the cut it reads)
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
    """The search's best, then (final.members > 1) the next best distinct ones, whatever blocks they
    train (final/cuts.py). After a staged tune, every trial of its fine-tuning searches (stage 2
    and the ladder's rungs) is a candidate, ranked together."""
    uri, experiment = config.tracking.uri, config.tracking.experiment
    search_run, best = chosen_hyperparameters(config)
    runs = tune_searches(uri, experiment, search_run)
    rows = ranked_rows(uri, experiment, runs) if len(runs) > 1 or config.final.members > 1 else []
    if len(runs) > 1 and rows:
        search_run, best = rows[0]["search_run"], with_overrides(config, rows[0])
    members, sources = [best], [search_run]
    for row in rows if config.final.members > 1 else []:
        params = with_overrides(config, row)
        if params not in members and len(members) < config.final.members:
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


def open_features(config: Config, members: list[HeadParams]) -> MemberFeatures:
    """The final size's features of every cut the members read (nothing extracted yet)."""
    decoder = Decoder.for_data(config.data, config.final.image_size)
    checked = scan(config.data, config.work_dir)
    by_blocks = {}
    for blocks in dict.fromkeys(member.blocks for member in members):
        runner = choose_runtime(
            checked, config.model, decoder, config.work_dir, seed=config.seed, blocks=blocks, exact=True
        )
        by_blocks[blocks] = Features.on(checked, runner, decoder, config.work_dir, config.model, config.seed)
    return MemberFeatures(by_blocks, by_blocks[members[0].blocks])


def extract_features(config: Config, features: Features, training: list[HeadParams]) -> None:
    """Validation, and the training views (final.views of each policy) of the members that train,
    all extracted after a disk check."""
    jobs = jobs_for({name: p for member in training for name, p in policies_for(config, member).items()})
    remedy = "lower final.views" + (" or final.hp.blocks" if features.blocks else "")
    check_disk(config.work_dir, {features.blocks: features}, jobs, what="the final model's", remedy=remedy)
    if training:
        warn_cost(config, training[0])
    features.get(jobs)


def prepare(config: Config, chosen: Members, features: MemberFeatures) -> dict:
    """Extract what training needs and find the members whose first restart the search already
    trained (final/reuse.py); returns member index -> Reused."""
    members = chosen.params
    policies = [policies_for(config, member)[member.augmentation] for member in members]
    own = [features.of(member.blocks) for member in members]
    found = reuse.candidates(config, chosen.sources, members, own, policies)
    fully = set(found) if config.final.restarts == 1 else set()  # members with no restart left to train
    extract_each_cut(config, features, [m for i, m in enumerate(members) if i not in fully])
    reused = reuse.confirm(config, found, own)
    refused = [members[i] for i in sorted(fully - set(reused))]
    if refused:  # (a checkpoint that did not score its trial's val_accuracy: its member trains after all)
        extract_each_cut(config, features, refused)
    return reused


def extract_each_cut(config: Config, features: MemberFeatures, training: list[HeadParams]) -> None:
    """extract_features for every cut: its validation, and the training views of its members that train."""
    for blocks, cut in features.by_blocks.items():
        extract_features(config, cut, [member for member in training if member.blocks == blocks])


def train_member(
    config: Config, features: Features, params: HeadParams, member: int, reused, on_restart: Callable
) -> Restarts:
    """Train member `member`'s head from final.restarts seeds (on_restart(index, Restart) as each
    ends); reused (final/reuse.py Reused): the search's trial of it stands for the first seed's restart."""
    seeds = [config.seed + i for i in range(config.final.restarts)]
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
        kept = train_restarts(partial(restart, bar=bar), seeds, config.tuner.objective, on_restart, keep=len(seeds))
    return kept


def ship(config: Config, features: MemberFeatures, members: list, trained: list[Restarts], reused: dict) -> tuple:
    """The heads final.ensemble ships from the trained members: (Shipped, BySize or Selection)."""
    # blocks trained under mixed precision ship in float32: choose and check what ships
    trained = [
        replace(kept, heads=[plain_copy(head) for head in kept.heads]) if member.blocks else kept
        for member, kept in zip(members, trained, strict=True)
    ]
    if config.final.ensemble in ("select", "mean"):
        return select(config, features, members, trained, reused)
    return by_size(config, features.of(members[0].blocks), trained[0])


def by_size(config: Config, features: Features, kept: Restarts) -> tuple[Shipped, BySize]:
    """The ensembles of the 1..n best restarts scored on validation; final.ensemble's size (auto: the best) ships."""
    members = member_probabilities(kept.heads, features.val)
    scores = score_sizes(members, features.val_labels)
    size = choose_size(scores, config.final.ensemble, config.tuner.objective)
    best = kept.ranked[0]
    shipped = Shipped(kept.heads[:size], [features.blocks] * size, None, scores[size - 1], members[:size].mean(0), best)
    return shipped, BySize(scores, size, [r.seed for r in kept.ranked[:size]])


def select(config: Config, features: MemberFeatures, members: list, trained: list[Restarts], reused: dict):
    """Forward selection (final/selection.py; final.ensemble=mean: the plain mean of them all) over
    every head of every member on the validation photos, each head on its own cut's features;
    returns (Shipped, Selection: each head's held-out score and weight, and the search trial it is
    where reused)."""
    heads = [head for kept in trained for head in kept.heads]
    who = [(i, r.seed) for i, kept in enumerate(trained) for r in kept.ranked]
    held_out = np.concatenate(
        [member_probabilities(kept.heads, features.of(members[i].blocks).val) for i, kept in enumerate(trained)]
    )
    labels = features.labels
    if config.final.ensemble == "mean":
        picked = selection.equal(held_out, labels)
    else:
        picked = selection.forward_select(held_out, labels, config.tuner.objective, config.final.selection_rounds)
    rows = []
    for index, ((member, seed), counts) in enumerate(zip(who, picked.counts, strict=True)):
        accuracy, loss = selection.score(held_out[index], labels)
        trial = reused[member].trial_run_id if member in reused and seed == config.seed else None
        weight = counts / sum(picked.counts)
        rows.append({"member": member, "seed": seed, "hyperparameters": members[member].as_dict()})
        rows[-1].update({"val_accuracy": accuracy, "val_loss": loss, "weight": weight, "trial_run_id": trial})
    weights = [picked.weights[i] for i in picked.members]
    reference = np.tensordot(np.asarray(weights), held_out[picked.members], axes=1)
    score = EnsembleScore(len(picked.members), picked.val_accuracy, picked.val_loss)
    blocks = [members[who[i][0]].blocks for i in picked.members]
    shipped = Shipped([heads[i] for i in picked.members], blocks, weights, score, reference, trained[0].ranked[0])
    names = [f"{who[i][0]}:{who[i][1]}x{picked.counts[i]}" for i in picked.members]
    return shipped, Selection(rows, names, score)


def assemble(features: MemberFeatures, shipped: Shipped) -> tuple[keras.Model, Features]:
    """(uint8 images -> frozen Xception features of the deepest cut a head reads -> each head (with
    its fine-tuned blocks, if any; a shallower cut's head through the frozen layers between:
    final/cuts.py) -> softmax (averaged over the heads), those features). Fine-tuned heads are
    shipped with Keras' own layers and without their optimizer (features/layers.plain_copy): the
    model loads without fashion_exp."""
    deepest = features.of(max(shipped.blocks))
    heads = [
        reading(deepest, plain_copy(head) if blocks else head, blocks)
        for head, blocks in zip(shipped.heads, shipped.blocks, strict=True)
    ]
    backbone = deepest.backbone.model
    outputs = probabilities(heads, backbone.output, weights=shipped.weights)
    return keras.Model(backbone.input, outputs, name="fashion_classifier"), deepest


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
    record = FinalRecord(start_run(config, search_run, started), config)
    with record.recording():
        views = len(jobs_for_policy(TRAIN, policies_for(config, params)[params.augmentation]))
        record.inputs(features.first, params, views, search_run, reused)
        restarts = config.final.restarts
        trained = [
            train_member(config, features.of(p.blocks), p, i, reused.get(i), record.restart(i, restarts, i in reused))
            for i, p in enumerate(members)
        ]
        record.first_member(params, trained[0])
        shipped, found = ship(config, features, members, trained, reused)
        record.ensemble(found, shipped.heads, features.first.val.shape[1:])
        model, deepest = assemble(features, shipped)
        check = check_assembled(model, shipped.reference, deepest, config.model.batch_size)
        card = model_card(config, features.first, members, search_run, len(shipped.heads), shipped.score)
        version = record.model(features.first, model, check, search_run, card)
        record.seconds(time.time() - started)
    best = shipped.best
    return FinalResult(
        run_id=record.run_id,
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


def start_run(config: Config, search_run: str, started: float) -> RunLogger:
    """train-final's MLflow run (its start: the command's, extraction included: train_final_seconds)."""
    return RunLogger.start(
        config.tracking.uri,
        config.final.experiment,
        run_name=f"final-{config.final.image_size}px-{time.strftime('%Y%m%d-%H%M%S')}",
        tags={KIND: "final", "tune_parent_run_id": search_run, NOTE: final_note(config, search_run)},
        started=started,
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
