"""Which trials should train-final's forward selection choose among? Measured on validation only.

For a finished staged tune (preset=best), every fine-tuning trial's head is scored on the fp32
validation maps of its own cut (what train-final scores; a cut not yet cached is extracted once).
Then, for each set of candidates, forward selection (final/selection.py) chooses its ensemble on
a random half of the validation photos and is scored on the other half, over --splits splits,
the same splits for every set. Printed: each set's held-out mean and its paired difference from
the 4 best trials of the best's cut (train-final's candidates before final/cuts.py). Then how the
members are weighed: forward selection against equal means of the k best, chosen on one half.

With --mirror, each trial is also scored on every validation photo's mirror image (its cut's
maps extracted once more, fp32), and the sets are scored again with each head's probabilities
averaged over the photo and its mirror (test-time augmentation): printed against the same sets
without it, paired, and each trial's accuracy with and without.

    python benchmarks/bench_members.py --work-dir W --store sqlite:///S   # a minute, plus any extraction
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from common import real_data_parser


def mirrored_maps(features) -> np.ndarray:
    """The cut's fp32 maps of every validation photo flipped left to right."""
    from fashion_exp.data.dataset import VALIDATION

    samples, batch = features.dataset.splits[VALIDATION], features.extractor.batch_size
    decode = lambda sample: features.decoder.load(features.dataset.root / sample.path)[:, ::-1]  # noqa: E731
    batches = (np.stack([decode(s) for s in samples[i : i + batch]]) for i in range(0, len(samples), batch))
    return np.concatenate([features.extractor.runner.features(images) for images in batches]).astype(np.float32)


@dataclass
class Scored:
    """Every fine-tuning trial's head on the validation photos."""

    probs: np.ndarray  # (trials, photos, classes)
    labels: np.ndarray
    blocks: np.ndarray  # each trial's cut
    logged: np.ndarray  # each trial's logged val_accuracy
    mirrored: np.ndarray | None  # (trials, photos, classes) on the mirror images, with --mirror


def probabilities(overrides: list[str], mirror: bool = False) -> Scored:
    """Each trial's head scored on the fp32 validation maps of its own cut (and their mirrors)."""
    from fashion_exp.config import load_config
    from fashion_exp.final.ensemble import member_probabilities
    from fashion_exp.final.reuse import load_checkpoint
    from fashion_exp.final.train import chosen_members, open_features
    from fashion_exp.hyperparameters import NAMES, HeadParams
    from fashion_exp.tracking.queries import ranked_rows, trial_checkpoint, tune_searches

    config = load_config(overrides)
    uri, experiment = config.tracking.uri, config.tracking.experiment
    rows = ranked_rows(uri, experiment, tune_searches(uri, experiment, chosen_members(config).search_run))
    cuts, mirrored, found = {}, {}, []
    for row in rows:
        params = HeadParams.from_values({name: row[name] for name in NAMES if row.get(name, "") != ""})
        checkpoint = trial_checkpoint(uri, row["run_id"])
        if checkpoint is None:
            continue
        if params.blocks not in cuts:
            cuts[params.blocks] = open_features(config, [params]).first
            mirrored[params.blocks] = mirrored_maps(cuts[params.blocks]) if mirror else None
        head = load_checkpoint(checkpoint.path)
        flipped = member_probabilities([head], mirrored[params.blocks])[0] if mirror else None
        plain = member_probabilities([head], cuts[params.blocks].val)[0]
        found.append((plain, params.blocks, checkpoint.val_accuracy, flipped))
    column = lambda i: np.array([f[i] for f in found])  # noqa: E731
    labels = next(iter(cuts.values())).val_labels
    return Scored(column(0), labels, column(1), column(2), column(3) if mirror else None)


def held_out(probs: np.ndarray, labels: np.ndarray, sets: dict, splits: int, seed: int) -> dict[str, list[float]]:
    """Each set's score on one half of the photos after forward selection on the other, split by split."""
    from fashion_exp.final.selection import forward_select, score

    rng, scores = np.random.default_rng(seed), {name: [] for name in sets}
    for _ in range(splits):
        order = rng.permutation(len(labels))
        chosen, scored = order[: len(labels) // 2], order[len(labels) // 2 :]
        for name, members in sets.items():
            picked = forward_select(probs[members][:, chosen], labels[chosen], "val_accuracy", 20)
            mixed = np.tensordot(np.asarray(picked.weights), probs[members][:, scored], axes=1)
            scores[name].append(score(mixed, labels[scored])[0])
    return scores


def main() -> None:
    parser = real_data_parser(__doc__)
    parser.add_argument("--work-dir", required=True, help="the tune's work_dir")
    parser.add_argument("--store", required=True, help="the tune's tracking.uri")
    parser.add_argument("--splits", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--mirror", action="store_true", help="also score each photo averaged with its mirror image")
    args = parser.parse_args()
    overrides = [f"work_dir={args.work_dir}", f"tracking.uri={args.store}", f"data.root={args.data}"]
    scored = probabilities([*overrides, f"model.weights={args.weights}"], args.mirror)
    probs, labels, blocks, logged = scored.probs, scored.labels, scored.blocks, scored.logged
    order = np.argsort(-logged, kind="stable")
    best_cut = order[blocks[order] == blocks[order[0]]]
    sets = {
        "4 best of the best's cut": best_cut[:4],
        "every trial of the best's cut": best_cut,
        "4 best of any cut": order[:4],
        "every trial": order,
    }
    scores = held_out(probs, labels, sets, args.splits, args.seed)
    base = np.asarray(scores["4 best of the best's cut"])
    print(f"{len(probs)} trials ({', '.join(f'{(blocks == b).sum()} on {b} block(s)' for b in sorted(set(blocks)))})")
    print(f"| candidates | trials | held-out half, mean | minus the first row (sd, over {args.splits} splits) |")
    print("| --- | --- | --- | --- |")
    for name, members in sets.items():
        diff = np.asarray(scores[name]) - base
        gain = f"{100 * diff.mean():+.2f} pts ({100 * diff.std():.1f})"
        print(f"| {name} | {len(members)} | {np.mean(scores[name]):.4f} | {gain} |")
    weighing_table(probs, labels, args)
    if scored.mirrored is not None:
        mirror_table(probs, scored.mirrored, labels, sets, scores, args)


def weighing_table(probs, labels, args) -> None:
    """How the members are weighed, everything chosen on one half (the trials ranked by their
    accuracy on it) and scored on the other: forward selection over the 4 best, equal means of the
    k best, and the k train-final's ensemble=auto would choose on the half."""
    from fashion_exp.final.selection import forward_select

    accuracy = lambda p, photos: float((p.argmax(-1) == labels[photos]).mean())  # noqa: E731
    rng, rows = np.random.default_rng(args.seed), {}
    for _ in range(args.splits):
        order = rng.permutation(len(labels))
        chosen, scored = order[: len(labels) // 2], order[len(labels) // 2 :]
        ranked = np.argsort([-accuracy(p[chosen], chosen) for p in probs], kind="stable")
        picked = forward_select(probs[ranked[:4]][:, chosen], labels[chosen], "val_accuracy", 20)
        mixed = np.tensordot(np.asarray(picked.weights), probs[ranked[:4]][:, scored], axes=1)
        rows.setdefault("forward selection over the 4 best", []).append(accuracy(mixed, scored))
        for k in sorted({1, 4, 5, len(probs)}):
            rows.setdefault(f"equal mean of the {k} best", []).append(
                accuracy(probs[ranked[:k]][:, scored].mean(0), scored)
            )
        on_half = [accuracy(probs[ranked[:k]][:, chosen].mean(0), chosen) for k in range(1, 5)]
        k = int(np.argmax(on_half)) + 1  # (ties: fewer, as ensemble=auto)
        rows.setdefault("equal mean of the k best, k <= 4 chosen on the half", []).append(
            accuracy(probs[ranked[:k]][:, scored].mean(0), scored)
        )
    base = np.asarray(rows["forward selection over the 4 best"])
    print("\n| ensemble, chosen on one half | held-out half | minus forward selection (sd) |")
    print("| --- | --- | --- |")
    for name, values in rows.items():
        diff = np.asarray(values) - base
        print(f"| {name} | {np.mean(values):.4f} | {100 * diff.mean():+.2f} pts ({100 * diff.std():.1f}) |")


def mirror_table(probs, flipped, labels, sets: dict, plain: dict, args) -> None:
    """Each set with every head's probabilities averaged over the photo and its mirror, paired with
    the same set without (the same splits), and each trial's accuracy with and without."""
    averaged = (probs + flipped) / 2
    accuracy = lambda p: (p.argmax(-1) == labels).mean(-1)  # noqa: E731
    per_trial = accuracy(averaged) - accuracy(probs)
    print(f"\nmirror averaged, each trial: {100 * per_trial.mean():+.2f} pts (sd {100 * per_trial.std():.2f})")
    scores = held_out(averaged, labels, sets, args.splits, args.seed)
    print("| candidates | held-out half with the mirror, mean | minus without (sd) |")
    print("| --- | --- | --- |")
    for name in sets:
        diff = np.asarray(scores[name]) - np.asarray(plain[name])
        print(f"| {name} | {np.mean(scores[name]):.4f} | {100 * diff.mean():+.2f} pts ({100 * diff.std():.1f}) |")


if __name__ == "__main__":
    main()
