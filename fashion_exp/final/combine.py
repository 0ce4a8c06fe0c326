"""combine: shipped models (say a fine-tuned head trained on plain photos and one trained on
augmented views) averaged in one model that runs their common frozen backbone once.

Every model train-final ships is the frozen part (uint8 image -> preprocessing -> Xception up to
the features the heads read) followed by its heads and their softmax (the contract is written in
fashion_exp/head/parts.py, which also splits a model there). Models whose frozen parts are the
same (same weights file, size and cut, so the same `final.hp.blocks`) are split there: the
combined model holds one copy of the frozen part, every member's heads (with their own fine-tuned
blocks, if any) and the mean of the members' probabilities, each member weighted alike whatever
its number of heads. It is checked against the members themselves on every validation photo,
logged as a final run and registered, so evaluate, promote, predict, serve and export-onnx take it
like any train-final model.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import keras
import numpy as np

from fashion_exp.batching import pad_batch
from fashion_exp.config import Config
from fashion_exp.data.dataset import VALIDATION, scan_configured
from fashion_exp.data.images import Decoder
from fashion_exp.errors import UserError
from fashion_exp.final.ensemble import WEIGHTED, probabilities
from fashion_exp.final.evaluate import Evaluation, score
from fashion_exp.final.references import check_references
from fashion_exp.head.parts import find_heads, split_at_heads
from fashion_exp.screen import say
from fashion_exp.tracking import registry
from fashion_exp.tracking.run_logger import RunLogger
from fashion_exp.tracking.tags import KIND, VAL_ACCURACY, VAL_LOSS


@dataclass
class Member:
    """A loaded model split where its heads begin."""

    loaded: registry.LoadedModel
    frozen: keras.Model  # image -> the features its heads read
    heads: list  # the head layers (each with its own fine-tuned blocks, if any)


@dataclass
class CombineResult:
    run_id: str
    version: str
    members: list[Evaluation]  # each member's validation score
    combined: Evaluation
    max_abs_diff: float
    top1_agreement: float
    heads: int


def split(loaded: registry.LoadedModel) -> Member:
    """The model's frozen part and its heads; a one-line error for a model train-final did not make."""
    if not find_heads(loaded.model):
        raise UserError(f"model {loaded.uri} has no head layer: combine takes models made by train-final")
    if any(layer.name.endswith(WEIGHTED) for layer in loaded.model.layers):
        raise UserError(
            f"model {loaded.uri} is a weighted ensemble (final.ensemble=select): combine averages its members "
            "equally, which would change it; combine its members' own models, or train-final with final.members"
        )
    try:
        frozen, heads = split_at_heads(loaded.model)
    except ValueError as err:
        raise UserError(f"model {loaded.uri}: {err}: combine cannot split it") from None
    return Member(loaded, frozen, heads)


def _same_frozen(first: Member, other: Member) -> bool:
    mine, theirs = first.frozen.weights, other.frozen.weights
    if tuple(first.frozen.output.shape) != tuple(other.frozen.output.shape) or len(mine) != len(theirs):
        return False
    pairs = zip(mine, theirs, strict=True)
    return all(a.shape == b.shape and np.array_equal(np.asarray(a), np.asarray(b)) for a, b in pairs)


def check_members(members: list[Member]) -> None:
    """Refuse, in one line, models that cannot share one frozen part and one input."""
    first = members[0]
    for other in members[1:]:
        a, b = first.loaded, other.loaded
        for what, mine, theirs in (
            ("classes", a.class_names, b.class_names),
            ("image size", a.image_size, b.image_size),
            ("resize filter", a.interpolation, b.interpolation),
        ):
            if mine != theirs:
                raise UserError(f"{a.uri} and {b.uri} differ in {what} ({mine} vs {theirs}): they cannot be combined")
        if not _same_frozen(first, other):
            raise UserError(
                f"{a.uri} and {b.uri} do not share their frozen backbone (another weights file or "
                "final.hp.blocks): combine models trained with the same ones"
            )


def build(members: list[Member]) -> keras.Model:
    """uint8 image -> the one frozen part -> every member's heads -> the mean of the members' probabilities."""
    first = members[0].loaded.model
    image = keras.Input(first.inputs[0].shape[1:], dtype=first.inputs[0].dtype, name="image")
    features = members[0].frozen(image)
    outputs = [probabilities(member.heads, features, f"member_{index}_") for index, member in enumerate(members)]
    return keras.Model(image, keras.layers.Average(name="probabilities")(outputs), name="fashion_classifier")


@dataclass(frozen=True)
class OnValidation:
    """Probabilities on every validation photo: each member's and the combined model's."""

    each: list[np.ndarray]  # one array a member
    together: np.ndarray  # the combined model's
    labels: list[int]
    example: np.ndarray  # one decoded photo


def validation_probabilities(config: Config, members: list[Member], combined: keras.Model) -> OnValidation:
    """Every member and the combined model on every validation photo."""
    loaded = members[0].loaded
    dataset = scan_configured(config.data, [VALIDATION], config.work_dir)
    if dataset.classes != loaded.class_names:
        raise UserError(f"validation classes {dataset.classes} differ from the models' {loaded.class_names}")
    decoder = Decoder.for_data(config.data, loaded.image_size, loaded.interpolation)
    size = config.model.batch_size
    each, together, example = [[] for _ in members], [], None
    for images in decoder.load_batches(dataset.paths(VALIDATION), size, "Checking the members and the combined model"):
        example = images[:1] if example is None else example
        padded = pad_batch(images, size)
        for parts, member in zip(each, members, strict=True):
            parts.append(np.asarray(member.loaded.model.predict_on_batch(padded))[: len(images)])
        together.append(np.asarray(combined.predict_on_batch(padded))[: len(images)])
    return OnValidation(
        [np.concatenate(p) for p in each], np.concatenate(together), dataset.labels(VALIDATION), example
    )


def combine(config: Config, references: list[str]) -> CombineResult:
    """Load, check, build, score on validation, log and register the combined model."""
    started = time.time()
    check_references(references)
    say(f"Loading {len(references)} models ...")
    members = [split(registry.load(reference, config.tracking.uri)) for reference in references]
    check_members(members)
    combined = build(members)
    scored = score_on_validation(config, members, combined)
    report(scored, references)
    return register(config, references, members, combined, scored, started)


@dataclass
class Scored:
    """The members and the combined model on the validation photos."""

    members: list[Evaluation]
    combined: Evaluation
    max_abs_diff: float  # the combined model against the mean of the members' probabilities
    top1_agreement: float
    example: np.ndarray  # one decoded photo: the model's MLflow input example


def score_on_validation(config: Config, members: list[Member], combined: keras.Model) -> Scored:
    found = validation_probabilities(config, members, combined)
    mean = np.mean(found.each, axis=0)
    names = members[0].loaded.class_names
    return Scored(
        members=[score(p, found.labels, names) for p in found.each],
        combined=score(found.together, found.labels, names),
        max_abs_diff=float(np.max(np.abs(found.together - mean))),
        top1_agreement=float(np.mean(found.together.argmax(1) == mean.argmax(1))),
        example=found.example,
    )


def report(scored: Scored, references: list[str]) -> None:
    for reference, member in zip(references, scored.members, strict=True):
        say(f"{reference}: val_accuracy {member.accuracy:.4f}, val_loss {member.loss:.4f}")
    result = scored.combined
    say(
        f"Combined ({len(references)} models, one frozen backbone): "
        f"val_accuracy {result.accuracy:.4f}, val_loss {result.loss:.4f}"
    )
    say(
        "Combined model vs the mean of the members on validation photos: "
        f"max |diff| {scored.max_abs_diff:.2e}, top-1 agreement {scored.top1_agreement:.1%}"
    )


def register(
    config: Config, references: list[str], members: list[Member], combined, scored: Scored, started: float
) -> CombineResult:
    """Log the combined model as a final run and register it."""
    heads = sum(len(m.heads) for m in members)
    loaded = members[0].loaded
    run = RunLogger.start(
        config.tracking.uri,
        config.final.experiment,
        run_name=f"combined-{loaded.image_size}px-{time.strftime('%Y%m%d-%H%M%S')}",
        tags={KIND: "final", "combined_from": ",".join(references)},
    )
    with run.recording():
        log_scores(run, references, members, scored, heads)
        metadata = {
            "class_names": loaded.class_names,
            "image_size": loaded.image_size,
            "interpolation": loaded.interpolation,
            "ensemble_size": heads,
            "combined_from": references,
        }
        card = combined_card(references, heads, loaded.image_size, scored)
        version = registry.log_model(
            config.tracking.uri, run.run_id, combined, metadata, scored.example, config.final.registered_model, card
        )
        run.metrics({"combine_seconds": time.time() - started})
    return CombineResult(
        run_id=run.run_id,
        version=version,
        members=scored.members,
        combined=scored.combined,
        max_abs_diff=scored.max_abs_diff,
        top1_agreement=scored.top1_agreement,
        heads=heads,
    )


def combined_card(references: list[str], heads: int, image_size: int, scored: Scored) -> registry.ModelCard:
    """What the combined model is and how it scored on validation, for its LoggedModel and version."""
    return registry.ModelCard(
        {"members": ",".join(references), "ensemble_size": heads, "image_size": image_size},
        scored.combined.accuracy,
        scored.combined.loss,
        f"The mean of {', '.join(references)} ({heads} heads on one Xception pass), made by combine. "
        f"Validation accuracy {scored.combined.accuracy:.4f}: what promote ranks versions by (never test).",
    )


def log_scores(run: RunLogger, references: list[str], members: list[Member], scored: Scored, heads: int) -> None:
    run.params({"members": ",".join(references), "member_runs": ",".join(m.loaded.run_id or "" for m in members)})
    for index, member in enumerate(scored.members):
        run.metrics({f"member_{index}_val_accuracy": member.accuracy, f"member_{index}_val_loss": member.loss})
    run.metrics(
        {
            VAL_ACCURACY: scored.combined.accuracy,
            VAL_LOSS: scored.combined.loss,
            "ensemble_size": heads,
            "assembled_max_abs_diff": scored.max_abs_diff,
            "assembled_top1_agreement": scored.top1_agreement,
        }
    )
