"""preset=best's ladder: after stage 2's grid, while the budget lasts, fine-tune the neighbours of
the best configurations so far, the next rung by expected gain per minute.

A rung changes one thing of one configuration: the best so far, or the best of another
augmentation policy (the shipped ensemble takes one of each): one more trained block, the blocks'
learning rate doubled and halved, the head's learning rate doubled and halved. Its gain is a
prior (finetune_stage.ladder_gain, from the journal's measurements), halved for a configuration
that is not the best; its cost is measured on this machine (search/costs.py): its trials, and the
activations of a cut no stage extracted yet. Every rung trains with stage 2's recipe (size, seed,
epochs, patience, views), so each of its trials is a member train-final may reuse. The ladder
climbs: a rung that finds a new best makes that configuration's neighbours the next rungs. It
stops when nothing is left untried around the best configurations (the ladder ran out), or when
less than finetune_stage.ladder_reserve of the budget is left (a rung that does not fit whole
runs to the deadline: its trials keep their best epoch so far).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from fashion_exp.config import Config
from fashion_exp.data.dataset import TRAIN
from fashion_exp.features.features import jobs_for
from fashion_exp.hyperparameters import HeadParams, ParamSpace, label, max_blocks
from fashion_exp.search.costs import Rates


@dataclass(frozen=True)
class Rung:
    """One step of the ladder: configurations that differ from `base` in one thing."""

    changes: str  # what it changes: blocks, block_lr, learning_rate
    base: HeadParams
    configs: tuple[HeadParams, ...]
    gain: float  # expected points of validation accuracy (a prior)
    minutes: float  # expected cost on this machine

    def as_dict(self) -> dict:
        return {
            "changes": self.changes,
            "base": self.base.as_dict(),
            "configs": [c.as_dict() for c in self.configs],
            "gain": self.gain,
            "minutes": self.minutes,
        }

    @classmethod
    def from_dict(cls, row: dict) -> Rung:
        configs = tuple(HeadParams.from_values(c) for c in row["configs"])
        return cls(
            str(row["changes"]), HeadParams.from_values(row["base"]), configs, float(row["gain"]), float(row["minutes"])
        )

    @property
    def value(self) -> float:
        return self.gain / max(self.minutes, 1e-6)

    @property
    def name(self) -> str:
        values = ", ".join(f"{getattr(c, self.changes):g}" for c in self.configs)
        return f"{self.changes} {values} on [{label(self.base.active())}]"


def neighbours(params: HeadParams, changes: str, most_blocks: int, bounds: dict) -> list[HeadParams]:
    """The configurations one step from `params` in `changes` (rates within bounds[changes])."""
    if changes == "blocks":
        return [replace(params, blocks=params.blocks + 1)] if params.blocks < most_blocks else []
    low, high = bounds.get(changes, (0.0, float("inf")))
    values = [float(f"{getattr(params, changes) * factor:.6g}") for factor in (2.0, 0.5)]
    return [replace(params, **{changes: value}) for value in values if low <= value <= high]


def most_blocks(config: Config) -> int:
    """The most blocks a rung trains: finetune_stage.max_blocks, at most what the backbone has."""
    return min(config.finetune_stage.max_blocks, max_blocks(config.model.backbone))


def bases(tried: list[tuple[HeadParams, float]], runner_up: float) -> list[tuple[HeadParams, float]]:
    """(configuration, gain factor): the best tried, then the best of each other policy (runner_up:
    finetune_stage.runner_up_gain, an ensemble member's share of the gain)."""
    ranked = sorted(tried, key=lambda row: -row[1])
    found, policies = [], set()
    for params, _ in ranked:
        if params.augmentation not in policies:
            policies.add(params.augmentation)
            found.append((params, 1.0 if not found else runner_up))
    return found


def rungs(config: Config, tried: list[tuple[HeadParams, float]], price, extracted: set[int]) -> list[Rung]:
    """Every rung around the best configurations that tries something untried; price(configs,
    extracted) -> minutes."""
    stage = config.finetune_stage
    most = most_blocks(config)
    done = {params for params, _ in tried}
    found = []
    for base, factor in bases(tried, stage.runner_up_gain):
        for changes, gain in stage.ladder_gain.items():
            if gain <= 0:  # (a rung turned off)
                continue
            configs = tuple(c for c in neighbours(base, changes, most, stage.ladder_bounds) if c not in done)
            if configs:
                found.append(Rung(changes, base, configs, gain * factor, price(configs, extracted)))
    return found


def pick(found: list[Rung], left: float, reserve: float) -> tuple[Rung | None, str]:
    """(the next rung, "") or (None, why the ladder stops): the most gain a minute among those
    that fit what is left, else the cheapest (it runs to the deadline), unless only the reserve is left."""
    if not found:
        return None, "the ladder ran out: every neighbour of the best configurations is tried"
    if left <= reserve:
        return None, f"the budget: {max(left, 0):.1f} min left"
    fitting = [rung for rung in found if rung.minutes <= left]
    if fitting:
        return max(fitting, key=lambda rung: rung.value), ""
    return min(found, key=lambda rung: rung.minutes), ""


def price(config: Config, rates: Rates, counts: dict[str, int], size: int):
    """configs, extracted (blocks, policy) pairs -> expected minutes: each trial to its last epoch,
    and the activations of each (cut, policy) not extracted yet (its views; a new cut's validation)."""
    stage = config.finetune_stage

    def minutes(configs: tuple[HeadParams, ...], extracted: set[tuple[int, str]]) -> float:
        trials = sum(rates.finetune_seconds(counts[TRAIN], stage.epochs, c.blocks, size) for c in configs)
        cuts = {blocks for blocks, _ in extracted}
        images = 0
        for blocks, policy in {(c.blocks, c.augmentation) for c in configs} - extracted:
            views = _with_views({policy: config.augmentation[policy]}, stage.views)
            images += sum(counts[job.split] for job in jobs_for(views) if job.split == TRAIN or blocks not in cuts)
        return (trials + rates.extraction_seconds(images, size, cut=True)) / 60

    return minutes


def _with_views(policies: dict, views: int) -> dict:
    from fashion_exp.data.augment import is_identity

    return {name: p if is_identity(p) else replace(p, views=views) for name, p in policies.items()}


def rung_space(rung: Rung) -> dict[str, ParamSpace]:
    """The rung's grid: one value of everything but what it changes (so the grid is its configs)."""
    names = ("learning_rate", "size_inner", "droprate", "augmentation", "blocks", "block_lr")
    return {name: ParamSpace("choice", list(dict.fromkeys(getattr(c, name) for c in rung.configs))) for name in names}


def plan_lines(config: Config, rates: Rates, counts: dict[str, int], size: int, base_blocks: int) -> list[str]:
    """What the ladder expects each kind of rung to cost here (two trials; a deeper cut extracts)."""
    stage = config.finetune_stage
    minutes = price(config, rates, counts, size)
    policy = stage.augmentation[-1]
    rows = []
    for changes, gain in stage.ladder_gain.items():
        blocks = base_blocks + 1 if changes == "blocks" else base_blocks
        if blocks > most_blocks(config) or gain <= 0:
            continue
        probe = HeadParams(0.001, 0, 0.0, policy, blocks=blocks)
        trials = 1 if changes == "blocks" else 2
        cost = minutes((probe,) * trials, {(base_blocks, name) for name in stage.augmentation})
        rows.append(f"{changes} (+{gain:g} pts expected, {trials} trial(s) ~{cost:.1f} min)")
    return [
        f"  then, while time is left, the ladder at {size}px by expected gain per minute: " + "; ".join(rows),
        f"  (each rung per best configuration and per policy's best; it stops when less than "
        f"{100 * stage.ladder_reserve:g}% of the budget is left or nothing is left to try)",
    ]
