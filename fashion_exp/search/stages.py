"""A staged search (preset=best): the plan, then stage 1 (frozen heads), then stage 2 (fine-tuning
under stage 1's best head), all within tuner.max_minutes.

Each stage is a search of its own (search.run.run_search: its id, its MLflow parent run tagged with
the tune and the stage, resumable after kill -9). The budget is a ledger in work_dir that survives
the process: a rerun of the same command spends what is left of it, stage by stage (a kill -9
forgets the time since its stage last started). Stage 2's space is derived from stage 1's result,
so it is the same space on every rerun once stage 1 is done.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from fashion_exp import writers
from fashion_exp.config import Config
from fashion_exp.data.augment import is_identity
from fashion_exp.data.dataset import TRAIN, VALIDATION, report, scan_configured
from fashion_exp.errors import ConfigError, UserError
from fashion_exp.features.backbone import feature_shape_at
from fashion_exp.features.cache import GB, bytes_per_image
from fashion_exp.features.features import Scan, jobs_for
from fashion_exp.hardware import cpu_of
from fashion_exp.hyperparameters import HeadParams, ParamSpace
from fashion_exp.screen import say
from fashion_exp.search import follow, ladder
from fashion_exp.search.costs import RateBook, Rates, extraction_rate, finetune_key, prior
from fashion_exp.search.probe import probe_finetuning
from fashion_exp.search.run import SearchResult, run_search, search_policies
from fashion_exp.tracking.tags import STAGE, STAGE1_RUN
from fashion_exp.tracking.tune_runs import TuneRun

PROBED = "finetune_ms_per_image"  # the rate probe.py measures (with the cut's extraction) when no stage has yet
FROZEN_HEAD = ("learning_rate", "size_inner", "droprate")  # what stage 2 takes from stage 1's best (and more rates)


@dataclass(frozen=True)
class StagePlan:
    name: str
    image_size: int
    trials: int
    extraction_s: float
    trials_s: float  # every trial to its last epoch (early stopping makes it less)
    disk_bytes: float

    @property
    def minutes(self) -> float:
        return (self.extraction_s + self.trials_s) / 60

    @property
    def least_minutes(self) -> float:
        """Its features and half its trials (at least one)."""
        return (self.extraction_s + self.trials_s * max(self.trials // 2, 1) / max(self.trials, 1)) / 60


def _images(jobs, counts: dict[str, int]) -> int:
    """Photos a list of extraction jobs passes through the backbone."""
    return sum(counts[job.split] for job in jobs)


def stage1_plan(config: Config, rates: Rates, counts: dict[str, int]) -> StagePlan:
    """Frozen-head trials at data.image_size (k heads a trial with tuner.folds)."""
    size, heads = config.data.image_size, max(config.tuner.folds, 1)
    images = _images(jobs_for(search_policies(config), clean_train=heads > 1), counts)
    rows = counts[TRAIN] + (counts[VALIDATION] if heads > 1 else 0)
    seconds = config.tuner.max_trials * heads * rates.head_seconds(rows, config.tuner.epochs)
    disk = images * bytes_per_image(feature_shape_at(config.model.backbone, size, 0))
    extraction = rates.extraction_seconds(images, size)
    return StagePlan("stage 1: frozen heads", size, config.tuner.max_trials, extraction, seconds, disk)


def stage2_trials(config: Config, best_lr: float | None = None) -> int:
    """The grid's size (with stage 1's best learning rate, when known, among finetune_stage's)."""
    stage = config.finetune_stage
    rates = len(head_rates(config, best_lr)) if best_lr is not None else len(stage.learning_rate) + 1
    return len(stage.blocks) * rates * len(stage.block_lr) * len(stage.augmentation)


def head_rates(config: Config, best_lr: float) -> list[float]:
    """Stage 1's best learning rate, then finetune_stage.learning_rate's others."""
    return list(dict.fromkeys([float(best_lr), *map(float, config.finetune_stage.learning_rate)]))


def stage2_plan(config: Config, rates: Rates, counts: dict[str, int], size: int) -> StagePlan:
    """The fine-tuning grid at `size`: each cut's activations of every policy's views, then the trials."""
    stage, cuts = config.finetune_stage, sorted(set(config.finetune_stage.blocks))
    images = _images(jobs_for(stage2_policies(config)), counts)
    shape = {blocks: feature_shape_at(config.model.backbone, size, blocks) for blocks in cuts}
    disk = images * sum(bytes_per_image(shape[blocks]) for blocks in cuts)
    per_trial = [rates.finetune_seconds(counts[TRAIN], stage.epochs, blocks, size) for blocks in stage.blocks]
    seconds = sum(per_trial) / len(per_trial) * stage2_trials(config)
    extraction = rates.extraction_seconds(images, size, cut=True) * len(cuts)
    return StagePlan("stage 2: fine-tuning", size, stage2_trials(config), extraction, seconds, disk)


def stage2_policies(config: Config) -> dict:
    """Stage 2's augmentation policies, finetune_stage.views views each."""
    return {
        name: config.augmentation[name]
        if is_identity(config.augmentation[name])
        else replace(config.augmentation[name], views=config.finetune_stage.views)
        for name in config.finetune_stage.augmentation
    }


@dataclass(frozen=True)
class Plan:
    rates: Rates
    budget_minutes: float
    stage1: StagePlan
    stage2: StagePlan  # at the size that fits what the budget leaves stage 1 (the shipped one if it can)
    stage1_minutes: float  # stage 1's share of the budget
    final: StagePlan  # train-final afterwards (not in the budget)
    why: str = ""  # why stage 2 is not at the shipped size, if it is not
    ladder: tuple[str, ...] = ()  # the ladder's lines (finetune_stage.ladder): what each kind of rung should cost

    def lines(self) -> list[str]:
        rows = [
            f"Plan ({self.budget_minutes:g} min in all, tuner.max_minutes; {self.rates.source()}):",
        ]
        for stage, limit in ((self.stage1, f"at most {self.stage1_minutes:.1f} min"), (self.stage2, "the rest")):
            rows.append(
                f"  {stage.name}: {stage.trials} trials at {stage.image_size}px, about "
                f"{stage.extraction_s / 60:.1f} min of extraction + {stage.trials_s / 60:.1f} min of trials "
                f"(given {limit}); {stage.disk_bytes / GB:.2f} GB of cached features"
            )
        if self.why:
            rows.append(f"  ({self.why})")
        rows.extend(self.ladder)
        final = self.final
        rows.append(
            f"  then {final.name}: {final.trials} head(s) to train at {final.image_size}px, "
            f"about {final.minutes:.0f} min "
            f"({final.extraction_s / 60:.0f} of extraction), not counted in the budget"
        )
        return rows


def make_plan(config: Config, counts: dict[str, int], rates: Rates) -> Plan:
    """The stages and what they should take; ConfigError if the budget cannot fit stage 1's
    extraction and finetune_stage.min_stage1_trials trials."""
    budget, fewest = config.tuner.max_minutes, config.finetune_stage.min_stage1_trials
    if budget is None:
        raise ConfigError("tuner.max_minutes: preset=best needs a time budget (e.g. tuner.max_minutes=150)")
    first = stage1_plan(config, rates, counts)
    least = (first.extraction_s + first.trials_s * min(fewest, first.trials) / first.trials) / 60
    if budget < least:
        raise ConfigError(
            f"tuner.max_minutes: {budget:g} min cannot fit stage 1 (about {least:.1f} min for its features and "
            f"{fewest} trials on a {rates.host}); give more minutes"
        )
    stage1_minutes = max(budget * config.finetune_stage.stage1_share, least)  # what it leaves unused is stage 2's
    second, why = stage2_at_size(config, rates, counts, budget - stage1_minutes)
    final = final_plan(config, rates, counts, second)
    climbs = ladder.plan_lines(config, rates, counts, second.image_size, min(config.finetune_stage.blocks))
    return Plan(
        rates, budget, first, second, stage1_minutes, final, why, tuple(climbs if config.finetune_stage.ladder else ())
    )


def stage2_at_size(config: Config, rates: Rates, counts: dict[str, int], left: float) -> tuple[StagePlan, str]:
    """(stage 2's plan at the shipped size if its features and half its trials fit `left` minutes
    (the budget stops the rest, each keeping its best epoch, and train-final reuses them: at the
    search size train-final would train every member again at the shipped size, outside the
    budget), else at data.image_size; why it is not at the shipped size, or "")."""
    second = stage2_plan(config, rates, counts, config.finetune_stage.image_size)
    if second.least_minutes <= left or config.finetune_stage.image_size == config.data.image_size:
        return second, ""
    why = (
        f"stage 2 at {second.image_size}px needs about {second.least_minutes:.0f} min for its features and half its "
        f"trials, more than the {left:.0f} min stage 1 leaves: it fine-tunes at {config.data.image_size}px"
    )
    return stage2_plan(config, rates, counts, config.data.image_size), why


def final_plan(config: Config, rates: Rates, counts: dict[str, int], second: StagePlan) -> StagePlan:
    """train-final after a staged search: final.members x final.restarts fine-tuned heads at
    final.image_size (its features are stage 2's when stage 2 ran at that size, and with
    final.reuse each member's first restart is its stage-2 trial), then its check on validation."""
    size, final = config.final.image_size, config.final
    reused = min(final.members, second.trials) if final.reuse and second.image_size == size and reusable(config) else 0
    heads = final.members * final.restarts - reused
    blocks = min(config.finetune_stage.blocks)
    seconds = heads * rates.finetune_seconds(counts[TRAIN], final.epochs, blocks, size)
    images = counts[VALIDATION] + counts[TRAIN] * (1 + (final.views or 1) * (final.members - 1))
    extraction = 0.0 if second.image_size == size else rates.extraction_seconds(images, size, cut=True)
    check = rates.extraction_seconds(
        counts[VALIDATION], size, cut=True
    )  # the assembled model on every validation photo
    name = f"train-final ({reused} of stage 2's trials reused)" if reused else "train-final"
    return StagePlan(name, size, heads, extraction, seconds + check, 0.0)


def reusable(config: Config) -> bool:
    """Whether stage 2's trials train what train-final would (final/reuse.py checks each for real)."""
    stage, final = config.finetune_stage, config.final
    return stage.epochs == final.epochs and stage.patience == final.patience and stage.views == final.views


def stage2_config(config: Config, best: dict, image_size: int, minutes: float) -> Config:
    """Stage 2's search: stage 1's best head, a grid of the fine-tuning choices, at image_size."""
    stage = config.finetune_stage
    search = {name: ParamSpace("choice", [best[name]]) for name in FROZEN_HEAD}
    search["learning_rate"] = ParamSpace("choice", head_rates(config, best["learning_rate"]))
    search["augmentation"] = ParamSpace("choice", list(stage.augmentation))
    search["blocks"] = ParamSpace("choice", list(stage.blocks))
    search["block_lr"] = ParamSpace("choice", list(stage.block_lr))
    policies = {**config.augmentation, **stage2_policies(config)}
    tuner = replace(
        config.tuner,
        type="grid",
        folds=0,
        epochs=stage.epochs,
        patience=stage.patience,
        max_trials=stage2_trials(config, best["learning_rate"]),
        max_minutes=max(minutes, 1e-3),
        initial_points=None,
        factor=None,
    )
    return replace(
        config, search=search, tuner=tuner, augmentation=policies, data=replace(config.data, image_size=image_size)
    )


class Ledger:
    """Minutes each stage has spent, kept in work_dir so that a rerun spends only what is left.
    While a stage runs its time is written every HEARTBEAT seconds: a kill -9 loses less than that."""

    HEARTBEAT = 10.0

    def __init__(self, config: Config):
        identity = json.dumps({"budget_of": config.tuner.max_minutes, "seed": config.seed, "preset": config.preset})
        self.tune_id = hashlib.sha256(identity.encode()).hexdigest()[:12]  # (the tune's MLflow run is found by it)
        self.path = Path(config.work_dir) / "tuner" / f"tune-{self.tune_id}.json"
        self.spent: dict[str, float] = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self._lock = threading.Lock()

    def minutes(self, stage: str) -> float:
        return self.spent.get(stage, 0.0)

    @property
    def rungs_path(self) -> Path:
        return self.path.with_name(f"tune-{self.tune_id}-ladder.json")

    def rungs(self) -> list[ladder.Rung]:
        """The ladder's rungs picked so far, in order (a rerun climbs them again before picking)."""
        try:
            return [ladder.Rung.from_dict(row) for row in json.loads(self.rungs_path.read_text())]
        except FileNotFoundError:
            return []
        except (ValueError, KeyError, TypeError) as err:
            raise UserError(
                f"{self.rungs_path}: the ladder's record is damaged ({err}); delete it to pick the rungs again"
            ) from None

    def add_rung(self, rung: ladder.Rung) -> None:
        rows = [r.as_dict() for r in self.rungs()] + [rung.as_dict()]
        partial = writers.temporary(self.rungs_path)
        partial.write_text(json.dumps(rows, indent=1))
        partial.replace(self.rungs_path)

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self.spent[stage] = self.minutes(stage) + seconds / 60
            self.path.parent.mkdir(parents=True, exist_ok=True)
            partial = writers.temporary(self.path)
            partial.write_text(json.dumps(self.spent))
            partial.replace(self.path)

    def timing(self, stage: str, run):
        """run(), its time added to `stage` as it goes (every HEARTBEAT seconds) and when it ends."""
        done = threading.Event()
        last = [time.monotonic()]

        def lap() -> None:
            now = time.monotonic()
            self.add(stage, now - last[0])
            last[0] = now

        def beat() -> None:
            while not done.wait(self.HEARTBEAT):
                lap()

        self.add(stage, 0)  # the ledger exists from the first stage's start: a rerun knows it resumes
        threading.Thread(target=beat, name=f"ledger-{stage}", daemon=True).start()
        try:
            return run()
        finally:
            done.set()
            lap()


@dataclass
class TuneResult:
    searches: list[SearchResult]  # one per stage that ran
    skipped: list[str]  # what the budget left out, one line each
    spent: dict[str, float] = field(default_factory=dict)  # stage -> minutes (every run of the command)
    tune_run_id: str | None = None  # a staged tune's parent run (its stages' searches nested in it)

    @property
    def last(self) -> SearchResult:
        return self.searches[-1]


def run_tune(config: Config, overrides: list[str] | None = None) -> TuneResult:
    """The `tune` job: one search, or with finetune_stage.enabled (preset=best) the staged one."""
    if not config.finetune_stage.enabled:
        return TuneResult([run_search(config, overrides)], [])
    dataset = scan_configured(config.data, [TRAIN, VALIDATION], config.work_dir)
    return run_staged(config, Scan(dataset, report(dataset)), overrides)


def run_staged(config: Config, scanned: Scan, overrides: list[str] | None = None) -> TuneResult:
    """Plan (from this machine's measured rates: the first batches of fine-tuning are timed when
    none are kept yet), then stage 1, then stage 2 and the ladder in what the budget leaves
    (ledger: across reruns), under one MLflow parent run for the tune (its stages' search runs
    nested in it)."""
    import tensorflow as tf

    started = time.time()
    counts = {split: len(scanned.dataset.splits[split]) for split in (TRAIN, VALIDATION)}
    gpus = len(tf.config.list_physical_devices("GPU"))
    book, table = rate_book(config, gpus), prior(config.finetune_stage.prior_rates, config.model.backbone, gpus)
    make_plan(config, counts, book.rates(table))  # a budget too small is refused before any work
    ledger = Ledger(config)
    if ledger.spent:
        say(f"Resuming the staged search: {sum(ledger.spent.values()):.1f} of {config.tuner.max_minutes:g} min spent")
    if PROBED not in book.read():
        ledger.timing("probe", lambda: book.note(**asdict(probe_finetuning(config, scanned))))
    plan = make_plan(config, counts, book.rates(table))
    for line in plan.lines():
        say(line)
    tune = TuneRun(config.tracking.uri, config.tracking.experiment, ledger.tune_id, config.tuner.objective, started)
    say(f"{'Resuming' if tune.reopened else 'Started'} the tune's MLflow parent run {tune.run_id}")
    with tune.recording():
        tune.log_plan(plan_params(config, plan), plan.lines())
        result = _stages(Staging(config, plan, ledger, Measuring(book, counts), overrides, tune.stage_tags()))
        if config.tuner.distributed and result.searches:  # workers following the tune stop here
            follow.link(config.work_dir, result.last.search_id, None)
        best = {f"stage{number}": search.best_score for number, search in enumerate(result.searches, 1)}
        tune.log_stages(result.spent, best, result.skipped)
    return replace(result, tune_run_id=tune.run_id)


def plan_params(config: Config, plan: Plan) -> dict[str, object]:
    """The tune run's params: the budget and what the plan gives each stage."""
    params: dict[str, object] = {"preset": config.preset, "tuner.max_minutes": plan.budget_minutes}
    for key, stage in (("stage1", plan.stage1), ("stage2", plan.stage2)):
        params.update({f"{key}.image_size": stage.image_size, f"{key}.trials": stage.trials})
    params.update({"stage1.max_minutes": round(plan.stage1_minutes, 2), "final.image_size": plan.final.image_size})
    return params


def rate_book(config: Config, gpus: int) -> RateBook:
    """Where this machine's measured rates are kept: per backbone and CPU flags (or GPU)."""
    machine = "gpu" if gpus else cpu_of(config.model.cpu_features).key
    return RateBook(config.work_dir, f"{config.model.backbone}-{machine}")


@dataclass(frozen=True)
class Measuring:
    """Turns what a stage computed into measured rates for the next plan (search/costs.py)."""

    book: RateBook
    counts: dict[str, int]

    def stage1(self, config: Config, result: SearchResult) -> None:
        work = result.work
        if work is None:
            return
        heads = max(config.tuner.folds, 1)
        rows = self.counts[TRAIN] + (self.counts[VALIDATION] if heads > 1 else 0)
        size = config.data.image_size
        head = 1000 * work.trial_seconds / (work.epochs_run * rows * heads) if work.epochs_run else 0.0
        self.book.note(
            extract_per_s=extraction_rate(work.extracted_images, work.extraction_seconds, size), head_ms_per_row=head
        )

    def finetuning(self, config: Config, result: SearchResult) -> None:
        """Stage 2's or a ladder rung's rates: the cut's extraction and an epoch of its blocks (block14
        alone, or each deeper cut's own)."""
        work = result.work
        if work is None:
            return
        size, blocks = config.data.image_size, min(config.search["blocks"].values)
        per_image = 1000 * work.trial_seconds / (work.epochs_run * self.counts[TRAIN]) if work.epochs_run else 0.0
        rates = {finetune_key(blocks): per_image / (size / 299) ** 2}
        self.book.note(cut_extract_per_s=extraction_rate(work.extracted_images, work.extraction_seconds, size), **rates)


@dataclass(frozen=True)
class Staging:
    """What every stage of one tune shares: its config and plan, the ledger of minutes spent, what
    measures the rates, the command line's overrides (for local workers), the tune run's tags."""

    config: Config
    plan: Plan
    ledger: Ledger
    measuring: Measuring
    overrides: list[str] | None
    nest: dict[str, str]  # tags that nest a stage's search run in the tune's run


def _stages(staging: Staging) -> TuneResult:
    config, plan, ledger, measuring = staging.config, staging.plan, staging.ledger, staging.measuring
    overrides, nest = staging.overrides, staging.nest
    left1 = plan.stage1_minutes - ledger.minutes("stage1")
    first_config = replace(config, tuner=replace(config.tuner, max_minutes=max(left1, 1e-3)))  # (workers: no deadline)
    ends = time.monotonic() + 60 * left1  # the stage's start-up and extraction count too
    tags = {STAGE: "1", **nest}
    first = ledger.timing("stage1", lambda: run_search(first_config, overrides, stage=tags, deadline=ends))
    measuring.stage1(first_config, first)
    if first.best_trial_id is None:
        return TuneResult([first], ["stage 2: no stage-1 trial completed"], ledger.spent)
    left2 = plan.budget_minutes - sum(ledger.spent.values())  # (the probe's minute too)
    if left2 <= 0:
        return TuneResult([first], [f"stage 2: the {plan.budget_minutes:g} min budget is spent"], ledger.spent)
    second, second_config = _stage2(staging, first, left2)
    skipped, grid = [], stage2_trials(config, first.best_hyperparameters["learning_rate"])
    if second.trials < grid:
        skipped.append(f"stage 2: {grid - second.trials} of {grid} trials (time budget)")
    searches = [first, second]
    if config.finetune_stage.ladder and second.best_trial_id is not None and second.trials >= grid:
        climbed, stopped = climb(Climb(config, plan, second_config, ledger, measuring, overrides), searches, nest)
        searches += climbed
        skipped.append(f"ladder: stopped by {stopped}")
    return TuneResult(searches, skipped, ledger.spent)


def _stage2(staging: Staging, first: SearchResult, minutes: float) -> tuple[SearchResult, Config]:
    config, plan, measuring = staging.config, staging.plan, staging.measuring
    rates = measuring.book.rates(plan.rates)  # with what stage 1 measured
    planned, why = stage2_at_size(config, rates, measuring.counts, minutes)
    size = planned.image_size
    second_config = stage2_config(config, first.best_hyperparameters, size, minutes)
    say(
        f"Stage 2: {second_config.tuner.max_trials} fine-tuning trials at {size}px under stage 1's best head "
        f"(trial {first.best_trial_id}), {minutes:.1f} min left, about {planned.minutes:.1f} min by "
        f"{rates.source()}" + (f" ({why})" if why else "")
    )
    tags, ends = {STAGE: "2", STAGE1_RUN: first.parent_run_id, **staging.nest}, time.monotonic() + 60 * minutes
    overrides = staging.overrides
    run = lambda: run_search(second_config, overrides, stage=tags, deadline=ends, after=first.search_id)  # noqa: E731
    second = staging.ledger.timing("stage2", run)
    measuring.finetuning(second_config, second)
    return second, second_config


@dataclass(frozen=True)
class Climb:
    """What the ladder's rungs share: the tune's config, its plan and ledger, stage 2's search config."""

    config: Config
    plan: Plan
    second: Config  # stage 2's search config: each rung's recipe (size, seed, epochs, patience, views)
    ledger: Ledger
    measuring: Measuring
    overrides: list[str] | None

    def left(self) -> float:
        return self.plan.budget_minutes - sum(self.ledger.spent.values())


def climb(climb: Climb, searches: list[SearchResult], nest: dict[str, str]) -> tuple[list[SearchResult], str]:
    """The ladder's rungs after stage 2 (search/ladder.py), each a search of its own; returns
    (their results, what stopped the ladder)."""
    size, stage = climb.second.data.image_size, climb.config.finetune_stage
    tried = [(HeadParams.from_values(values), score) for values, score in searches[-1].tried]
    extracted, climbed = {(blocks, policy) for blocks in stage.blocks for policy in stage.augmentation}, []
    picked = climb.ledger.rungs()  # a rerun climbs the rungs an earlier run picked first, in order
    while True:
        replayed = len(climbed) < len(picked)
        if replayed:
            rung = picked[len(climbed)]
        else:
            rates = climb.measuring.book.rates(climb.plan.rates)
            found = ladder.rungs(
                climb.config, tried, ladder.price(climb.config, rates, climb.measuring.counts, size), extracted
            )
            rung, stopped = ladder.pick(found, climb.left(), stage.ladder_reserve * climb.plan.budget_minutes)
            if rung is None:
                say(f"Ladder: stopped by {stopped}")
                return climbed, stopped
            climb.ledger.add_rung(rung)
        number = 3 + len(climbed)
        tags = {STAGE: str(number), STAGE1_RUN: searches[0].parent_run_id, **nest}
        result = _rung(climb, rung, number, tags, (climbed or searches)[-1].search_id)
        climbed.append(result)
        tried += [(HeadParams.from_values(values), score) for values, score in result.tried]
        extracted |= {(params.blocks, params.augmentation) for params in rung.configs}
        if not replayed and result.work is not None and not result.work.trials_run:  # (the deadline came first)
            say("Ladder: stopped by the budget (the rung's deadline came before a trial ended)")
            return climbed, "the budget"


def _rung(climb: Climb, rung, number: int, tags: dict[str, str], after: str) -> SearchResult:
    left = climb.left()
    config = replace(
        climb.second,
        search=ladder.rung_space(rung),
        tuner=replace(climb.second.tuner, max_trials=len(rung.configs), max_minutes=max(left, 1e-3)),
    )
    say(
        f"Stage {number} (ladder): {rung.name}, {len(rung.configs)} trial(s), about {rung.minutes:.1f} min for "
        f"+{rung.gain:g} pts expected ({rung.value:.2f} pts/min), {left:.1f} min left"
    )
    ends = time.monotonic() + 60 * left
    run = lambda: run_search(config, climb.overrides, stage=tags, deadline=ends, after=after)  # noqa: E731
    result = climb.ledger.timing("ladder", run)
    climb.measuring.finetuning(config, result)
    return result
