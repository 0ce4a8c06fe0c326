"""Typed config: the schema of conf/, each section's rules beside its fields, and load_config().

The dataclasses hold types only: every default lives in conf/ (a schema default would one day
disagree with the YAML). load_config composes conf/ with Hydra's compose API, merges it into the
schema and runs each section's check(), which raises ConfigError naming the bad key.
"""

from __future__ import annotations

import copy
import functools
import os
import re
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fashion_exp import hardware
from fashion_exp.errors import ConfigError, one_line
from fashion_exp.hyperparameters import NAMES, ROWS, ParamSpace, candidates, check_value, has_default, max_blocks

CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"
INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "lanczos")
BACKBONES = ("xception", "tiny")
# model.runtime: where the backbone runs
RUNTIMES = ("auto", "tensorflow", "onnx", "onnx-int8", "openvino", "openvino-bf16")
PRECISIONS = ("auto", "float32", "bfloat16", "float16")  # model.train_precision: fine-tuned blocks' compute dtype
TUNERS = ("random", "bayesian", "hyperband", "grid")
OBJECTIVES = {"val_accuracy": "max", "val_loss": "min"}  # name -> keras-tuner direction
ROLES = ("single", "chief")
# tuner keys that say where (and how long) trials run, not what the search is: not part of the search id
PLACEMENT_KEYS = (
    "max_trials",
    "max_minutes",
    "workers",
    "role",
    "oracle_address",
    "gpus_per_worker",
    "worker_restarts",
    "chief_timeout",
    "oracle_threads",
    "tls_cert",
    "tls_key",
    "tls_ca",
)
PRESETS = ("fast", "best")  # conf/preset: one switch sets a whole search strategy
LADDER_STEPS = ("blocks", "block_lr", "learning_rate")  # what a ladder rung may change (search/ladder.py)
SERVE_BACKENDS = ("auto", "keras", "onnx", "onnx-int8", "openvino-bf16")
XCEPTION_MIN_SIZE = 71  # Keras' Xception refuses smaller inputs


def _at_least(key: str, value: float | None, least: float = 1, nullable: bool = False) -> None:
    if value is None and nullable:
        return
    if value is None or value < least:
        raise ConfigError(f"{key}: {value} must be at least {least}{' or null' if nullable else ''}")


def _one_of(key: str, value: str, allowed: Collection[str], what: str = "value") -> None:
    if value not in allowed:
        raise ConfigError(f"{key}: unknown {what} '{value}' (use one of {', '.join(allowed)})")


def split_address(address: str) -> tuple[str, str]:
    """(host, port) of 'host:port' (the port after the last colon)."""
    host, _, port = str(address).rpartition(":")
    return host, port


def check_address(key: str, address: str) -> None:
    """host:port with a port in 0..65535 (0: any free port)."""
    host, port = split_address(address)
    if not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(
            f"{key}: '{address}' is not host:port (for example 127.0.0.1:8470, or port 0 for any free port)"
        )


@dataclass
class DataConfig:
    root: str
    url: str
    image_size: int
    interpolation: str
    limit_per_class: int | None
    max_image_pixels: int
    scan_size: int
    download_timeout_s: float  # fetch-data: seconds without an answer before the download gives up

    def check(self, key: str) -> None:
        _at_least(f"{key}.image_size", self.image_size)
        if not self.download_timeout_s > 0:
            raise ConfigError(f"{key}.download_timeout_s: {self.download_timeout_s} must be > 0")
        _one_of(f"{key}.interpolation", self.interpolation, INTERPOLATIONS)
        _at_least(f"{key}.limit_per_class", self.limit_per_class, nullable=True)
        _at_least(f"{key}.max_image_pixels", self.max_image_pixels)
        _at_least(f"{key}.scan_size", self.scan_size)


@dataclass
class ModelConfig:
    backbone: str
    weights: str
    batch_size: int
    runtime: str
    auto_min_cosine: float  # runtime=auto extracts in lower precision only where features stay this close to fp32's
    auto_accuracy_margin: float  # ... and heads on its features lose less validation accuracy than this (upper bound)
    auto_max_changed: float  # ... and fewer photos than this share change class (upper bound)
    auto_confidence: float  # the one-sided confidence of both bounds (fashion_exp/gate.py)
    auto_check_photos: int  # training photos auto's check fits its heads on (it scores every validation photo)
    race_batches: int  # batches each fp32 runtime is timed on (after a warm-up batch) to find the faster
    int8_calibration_photos: int  # training photos int8's activation ranges are measured on
    int8_min_cosine: float  # an int8 backbone whose features' mean cosine to fp32's is below this is refused
    cpu_features: Any  # "auto", or the CPU flags to act as: a list, or one string (hardware.parse_setting)
    train_precision: str  # compute dtype of fine-tuned blocks (PRECISIONS)

    def check(self, key: str) -> None:
        _one_of(f"{key}.backbone", self.backbone, BACKBONES, "backbone")
        _one_of(f"{key}.runtime", self.runtime, RUNTIMES, "runtime")
        _one_of(f"{key}.train_precision", self.train_precision, PRECISIONS, "precision")
        _at_least(f"{key}.batch_size", self.batch_size)
        _at_least(f"{key}.auto_check_photos", self.auto_check_photos, 2)
        _at_least(f"{key}.race_batches", self.race_batches)
        _at_least(f"{key}.int8_calibration_photos", self.int8_calibration_photos)
        if not 0 < self.int8_min_cosine <= 1:
            raise ConfigError(f"{key}.int8_min_cosine: a cosine above 0 and at most 1, got {self.int8_min_cosine}")
        if not self.auto_min_cosine >= 0:  # (above 1: auto never extracts in lower precision)
            raise ConfigError(f"{key}.auto_min_cosine: a cosine of at least 0, got {self.auto_min_cosine}")
        for name in ("auto_accuracy_margin", "auto_max_changed"):
            if not 0 < getattr(self, name) <= 1:
                raise ConfigError(f"{key}.{name}: a fraction above 0 and at most 1, got {getattr(self, name)}")
        if not 0.5 <= self.auto_confidence < 1:
            raise ConfigError(f"{key}.auto_confidence: a confidence from 0.5 to below 1, got {self.auto_confidence}")
        hardware.parse_setting(self.cpu_features)

    def check_size(self, key: str, size: int) -> None:
        """A backbone's smallest input: Xception needs 71 pixels."""
        if self.backbone == "xception" and size < XCEPTION_MIN_SIZE:
            raise ConfigError(f"{key}: Xception needs at least {XCEPTION_MIN_SIZE} pixels, got {size}")


@dataclass
class AugmentationPolicy:
    views: int  # K precomputed random views per training image
    rotation: float
    shift: float
    shear: float
    zoom: float
    horizontal_flip: bool

    def check(self, key: str) -> None:
        _at_least(f"{key}.views", self.views)
        for name in ("rotation", "shift", "shear", "zoom"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{key}.{name}: must be >= 0")
        if self.zoom >= 1:
            raise ConfigError(f"{key}.zoom: {self.zoom} must be below 1")


@dataclass
class TunerConfig:
    type: str
    max_trials: int
    epochs: int
    batch_size: int
    validation_batch_size: int
    objective: str
    max_consecutive_failed_trials: int
    workers: int  # local worker processes (0: trials run in this process)
    role: str  # single | chief (serve the oracle to workers started elsewhere)
    oracle_address: str  # host:port the chief's oracle listens on (port 0: any free port)
    gpus_per_worker: int  # GPUs each local worker sees through CUDA_VISIBLE_DEVICES (0: leave it alone)
    worker_restarts: int  # times a local worker that died is started again before the search stops
    chief_timeout: int  # seconds a worker waits for the chief to answer before it gives up
    oracle_threads: (
        int  # the chief's gRPC server threads (the oracle answers one call at a time; a slow caller holds one)
    )
    tls_cert: str | None  # PEM certificate the chief's oracle serves TLS with (with tls_key); null: plain gRPC
    tls_key: str | None  # its PEM private key
    tls_ca: str | None  # PEM certificate(s) workers trust for the chief (null: tls_cert itself, self-signed)
    folds: int  # 0: score trials on the validation split; k >= 2: k-fold cross-validation over train + validation
    max_minutes: float | None  # no trial starts after this many minutes (null: no time budget)
    patience: int | None  # stop a trial after this many epochs without a better objective (null: every epoch)
    factor: int | None  # hyperband only (conf/tuner/hyperband.yaml; null in the others)
    initial_points: int | None  # bayesian only (conf/tuner/bayesian.yaml; null in the others)

    @property
    def distributed(self) -> bool:
        """Whether trials run in worker processes that ask a chief oracle for hyperparameters."""
        return self.workers > 0 or self.role == "chief"

    @property
    def direction(self) -> str:
        """'max' or 'min': how the objective ranks trials, epochs and restarts."""
        return OBJECTIVES[self.objective]

    def check(self, key: str) -> None:
        _one_of(f"{key}.type", self.type, TUNERS, "tuner")
        _one_of(f"{key}.objective", self.objective, OBJECTIVES, "objective")
        for name in ("max_trials", "epochs", "batch_size", "validation_batch_size", "max_consecutive_failed_trials"):
            _at_least(f"{key}.{name}", getattr(self, name))
        if self.type == "hyperband":
            _at_least(f"{key}.factor", self.factor, least=2)
        _at_least(f"{key}.initial_points", self.initial_points, nullable=True)
        _one_of(f"{key}.role", self.role, ROLES, "role")
        for name in ("workers", "gpus_per_worker", "worker_restarts"):
            _at_least(f"{key}.{name}", getattr(self, name), least=0)
        _at_least(f"{key}.chief_timeout", self.chief_timeout)
        _at_least(f"{key}.oracle_threads", self.oracle_threads)
        _at_least(f"{key}.folds", self.folds, least=0)
        _at_least(f"{key}.patience", self.patience, nullable=True)
        if self.max_minutes is not None and not (isinstance(self.max_minutes, int | float) and self.max_minutes > 0):
            raise ConfigError(f"{key}.max_minutes: {self.max_minutes!r} is not a number of minutes > 0 (or null)")
        if self.folds == 1:
            raise ConfigError(f"{key}.folds: 1 fold holds nothing out; use 0 (the validation split) or k >= 2")
        if self.folds and self.type == "hyperband":
            raise ConfigError(
                f"{key}.folds: Hyperband continues one model between rounds, which {self.folds} fold heads are not; "
                f"use tuner=bayesian (or random, grid) with folds, or {key}.folds=0"
            )
        check_address(f"{key}.oracle_address", self.oracle_address)
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError(
                f"{key}.tls_cert and {key}.tls_key: give both (the chief's certificate and its key) or neither"
            )
        for name in ("tls_cert", "tls_key", "tls_ca"):
            path = getattr(self, name)
            if path is not None and not Path(path).expanduser().is_file():
                raise ConfigError(f"{key}.{name}: no such file {path}")


@dataclass
class TrackingConfig:
    uri: str
    experiment: str
    ui_host: str  # where `ui` listens unless --host says
    ui_port: int  # ... and its port unless --port says
    lock_wait_s: float  # how long a command waits for another holding one of the store's locks

    def check(self, key: str) -> None:
        if not self.uri.strip() or not self.experiment.strip():
            raise ConfigError(f"{key}.uri and {key}.experiment must not be empty")
        if not self.ui_host.strip():
            raise ConfigError(f"{key}.ui_host must not be empty")
        if not 0 < self.ui_port < 65536:
            raise ConfigError(f"{key}.ui_port: {self.ui_port} is not a TCP port")
        if isinstance(self.lock_wait_s, bool) or not isinstance(self.lock_wait_s, int | float) or self.lock_wait_s <= 0:
            raise ConfigError(f"{key}.lock_wait_s: {self.lock_wait_s!r} must be a number of seconds > 0")


@dataclass
class FinalConfig:
    image_size: int
    epochs: int
    restarts: int
    experiment: str
    registered_model: str
    views: int | None
    patience: int | None
    ensemble: Any  # "auto" or k (the mean of the k best restarts), "select" (forward selection), "mean" (every head)
    members: int  # the search's best configurations train-final trains (final.restarts each), for ensemble=select/mean
    reuse: bool  # a member's first restart is its search trial when that trial trained what train-final would
    int8_tolerance: float  # export-onnx: validation accuracy the int8 file may lose against Keras and still be served
    selection_rounds: int  # ensemble=select: forward selection's rounds (each adds one head, repeats allowed)
    hp: dict[str, Any]  # head hyperparameter -> value replacing the search's pick (null = the pick)

    def check(self, key: str) -> None:
        _at_least(f"{key}.image_size", self.image_size)
        _at_least(f"{key}.epochs", self.epochs)
        _at_least(f"{key}.restarts", self.restarts)
        heads = self.ensemble if isinstance(self.ensemble, int) and not isinstance(self.ensemble, bool) else None
        _at_least(f"{key}.members", self.members)
        _at_least(f"{key}.selection_rounds", self.selection_rounds)
        if self.members > 1 and self.ensemble not in ("select", "mean"):
            raise ConfigError(
                f"{key}.members: {self.members} configurations are ensembled by {key}.ensemble=select or mean"
            )
        if self.ensemble not in ("auto", "select", "mean") and not (heads and 1 <= heads <= self.restarts):
            raise ConfigError(
                f"{key}.ensemble: {self.ensemble!r} is not 'auto', 'select', 'mean' or a number of heads from 1 to "
                f"{key}.restarts ({self.restarts})"
            )
        _at_least(f"{key}.views", self.views, nullable=True)
        _at_least(f"{key}.patience", self.patience, nullable=True)
        if not 0 <= self.int8_tolerance < 1:
            raise ConfigError(f"{key}.int8_tolerance: {self.int8_tolerance} is not an accuracy from 0 to below 1")
        unknown = sorted(set(self.hp) - set(NAMES))
        if unknown:
            raise ConfigError(f"{key}.hp.{unknown[0]}: not a head hyperparameter (known: {', '.join(NAMES)})")


HOST_KINDS = ("avx512", "avx2", "gpu", "tiny")  # search/costs.py's host_kind
PRIOR_RATES = ("extract_per_s", "head_ms_per_row", "finetune_ms_per_image")


def _check_rates(key: str, table: dict[str, dict[str, Any]]) -> None:
    """A row for every kind of host, each with a name and every rate, a positive number."""
    for kind in HOST_KINDS:
        row = table.get(kind)
        if not isinstance(row, dict):
            raise ConfigError(f"{key}.{kind}: missing; give {{host: ..., {': ..., '.join(PRIOR_RATES)}: ...}}")
        for name in set(row) - {"host", *PRIOR_RATES}:
            raise ConfigError(f"{key}.{kind}.{name}: unknown; the rates are {', '.join(PRIOR_RATES)}")
        for name in PRIOR_RATES:
            value = row.get(name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
                raise ConfigError(f"{key}.{kind}.{name}: {value!r} must be a number > 0")


@dataclass
class FinetuneStageConfig:
    """Stage 2 of a staged search (preset=best): fine-tune Xception's top blocks under the best
    stage-1 head, at the shipped size when the budget allows (conf/preset/best.yaml)."""

    enabled: bool  # false: tune runs one stage, the search configured by search/ and tuner/
    image_size: int  # the size stage 2 trains at when it fits the budget (the shipped size)
    blocks: list[int]  # the grid's values of search.blocks (>= 1)
    learning_rate: list[float]  # head learning rates the grid tries besides stage 1's best
    block_lr: list[float]  # the grid's values of search.block_lr
    augmentation: list[str]  # the grid's policies
    views: int  # views of each augmentation policy (each costs a backbone pass over train at image_size)
    epochs: int  # epochs per stage-2 trial (its best epoch is kept)
    patience: int | None  # stop a stage-2 trial after this many epochs without a better objective
    stage1_share: float  # the most of tuner.max_minutes stage 1 may use (the rest is stage 2's)
    ladder: bool  # after stage 2's grid, keep fine-tuning neighbours of the best while time is left (search/ladder.py)
    ladder_gain: dict[str, float]  # what a rung may change -> its expected gain in points (rungs go by gain a minute)
    ladder_reserve: float  # the ladder stops when less than this share of tuner.max_minutes is left
    ladder_bounds: dict[str, list[float]]  # block_lr, learning_rate -> [lowest, highest] a rung may try
    max_blocks: int  # the most blocks a ladder rung trains (at most what the backbone has)
    probe_photos: int  # training photos the first timing of fine-tuning runs on (search/probe.py)
    min_stage1_trials: int  # a budget that cannot fit stage 1's features and this many of its trials is refused
    runner_up_gain: float  # a ladder rung on the best configuration of another policy: this share of the gain
    prior_rates: dict[str, dict[str, Any]]  # kind of host -> the plan's costs before this machine measured its own

    def check(self, key: str, choices: Collection[str], most_blocks: int) -> None:
        _at_least(f"{key}.image_size", self.image_size)
        for name in ("blocks", "block_lr", "augmentation"):
            if not getattr(self, name):
                raise ConfigError(f"{key}.{name}: empty; give at least one value")
        if min(self.blocks) < 1 or max(self.blocks) > most_blocks:
            raise ConfigError(
                f"{key}.blocks: {self.blocks} must lie from 1 to {most_blocks} (the blocks that can train)"
            )
        for name in ("block_lr", "learning_rate"):
            if getattr(self, name) and min(getattr(self, name)) <= 0:
                raise ConfigError(f"{key}.{name}: {getattr(self, name)} must all be > 0")
        for name in self.augmentation:
            _one_of(f"{key}.augmentation", name, choices, "augmentation policy")
        for name in ("views", "epochs"):
            _at_least(f"{key}.{name}", getattr(self, name))
        _at_least(f"{key}.patience", self.patience, nullable=True)
        if not 0 < self.stage1_share < 1:
            raise ConfigError(f"{key}.stage1_share: {self.stage1_share} must lie between 0 and 1")
        for name, gain in self.ladder_gain.items():
            _one_of(f"{key}.ladder_gain", name, LADDER_STEPS, "ladder step")
            if not isinstance(gain, int | float) or gain < 0:
                raise ConfigError(f"{key}.ladder_gain.{name}: {gain!r} must be a number of points >= 0 (0: off)")
        for name, bounds in self.ladder_bounds.items():
            _one_of(f"{key}.ladder_bounds", name, LADDER_STEPS[1:], "rate")
            if len(bounds) != 2 or not 0 < bounds[0] <= bounds[1]:
                raise ConfigError(
                    f"{key}.ladder_bounds.{name}: {list(bounds)} must be [lowest, highest] with 0 < lowest <= highest"
                )
        if not 0 <= self.ladder_reserve < 1:
            raise ConfigError(f"{key}.ladder_reserve: {self.ladder_reserve} must lie from 0 to below 1")
        _at_least(f"{key}.probe_photos", self.probe_photos, 2)
        _at_least(f"{key}.min_stage1_trials", self.min_stage1_trials)
        if not 0 <= self.runner_up_gain <= 1:
            raise ConfigError(f"{key}.runner_up_gain: {self.runner_up_gain} must lie from 0 to 1")
        _check_rates(f"{key}.prior_rates", self.prior_rates)
        if self.max_blocks < max(self.blocks):  # (above what the backbone has: its most, search/ladder.py)
            raise ConfigError(f"{key}.max_blocks: {self.max_blocks} is below max(blocks) = {max(self.blocks)}")


@dataclass
class PredictConfig:
    top_k: int
    backend: str  # SERVE_BACKENDS: what runs the model

    def check(self, key: str) -> None:
        _at_least(f"{key}.top_k", self.top_k)
        _one_of(f"{key}.backend", self.backend, SERVE_BACKENDS, "backend")


@dataclass
class ServeConfig:
    host: str
    port: int
    backend: str
    max_upload_mb: float
    top_k: int
    max_batch: int
    max_wait_ms: float
    request_timeout_s: float
    max_image_pixels: (
        int  # an upload with more pixels is refused (the model sees 299x299; data.max_image_pixels is for datasets)
    )
    decoders: int | None  # uploads decoded at once (null: one per CPU core, at most max_decoders)
    max_decoders: int  # decoders=null's ceiling (memory is decode_budget_mb's)
    small_share: (
        float  # an upload costing at most this share of decode_budget_mb is small: it may use the reserved share
    )
    decode_budget_mb: float  # memory decoding uploads may hold at once (serving/memory.py)
    decode_bytes_per_value: float  # a decode's bytes per pixel and band (its cost against the budget)
    max_waiting: int  # uploads waiting for a decoder; one more gets 503 with Retry-After
    max_connections: int  # open connections uvicorn accepts (limit_concurrency), idle ones included; more get 503
    max_requests: int  # requests handled at once (GET /health never counts); more get 503 with Retry-After
    header_timeout_s: float  # a connection whose request line and headers have not arrived by then is closed (408)
    read_timeout_s: float  # an upload whose body has not arrived by then gets 408 (slow clients hold no connection)
    keep_alive_s: float  # an idle keep-alive connection is closed after this many seconds

    def check(self, key: str) -> None:
        _one_of(f"{key}.backend", self.backend, SERVE_BACKENDS, "backend")
        _at_least(f"{key}.max_image_pixels", self.max_image_pixels)
        _at_least(f"{key}.decoders", self.decoders, nullable=True)
        _at_least(f"{key}.max_decoders", self.max_decoders)
        if not 0 < self.small_share < 1:
            raise ConfigError(f"{key}.small_share: {self.small_share} must lie between 0 and 1")
        for name in ("decode_budget_mb", "decode_bytes_per_value"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"{key}.{name}: {getattr(self, name)} must be > 0")
        _at_least(f"{key}.max_waiting", self.max_waiting, least=0)
        _at_least(f"{key}.max_connections", self.max_connections)
        _at_least(f"{key}.max_requests", self.max_requests)
        for name in ("read_timeout_s", "header_timeout_s", "keep_alive_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{key}.{name}: {getattr(self, name)} must be > 0")
        _at_least(f"{key}.max_batch", self.max_batch)
        _at_least(f"{key}.max_wait_ms", self.max_wait_ms, least=0)
        if self.request_timeout_s <= 0:
            raise ConfigError(f"{key}.request_timeout_s: {self.request_timeout_s} must be > 0")
        if not 0 < self.port < 65536:
            raise ConfigError(f"{key}.port: {self.port} is not a TCP port")
        if self.max_upload_mb <= 0:
            raise ConfigError(f"{key}.max_upload_mb: {self.max_upload_mb} must be > 0")
        _at_least(f"{key}.top_k", self.top_k)


@dataclass
class Config:
    data: DataConfig
    model: ModelConfig
    augmentation: dict[str, AugmentationPolicy]
    search: dict[str, ParamSpace]  # head hyperparameter -> its space (fashion_exp/hyperparameters.py)
    tuner: TunerConfig
    tracking: TrackingConfig
    final: FinalConfig
    finetune_stage: FinetuneStageConfig
    predict: PredictConfig
    serve: ServeConfig
    preset: str  # the conf/preset file that set the search strategy (fast | best)
    seed: int
    work_dir: str
    fresh: bool
    from_run: str | None

    def choices(self) -> dict[str, list[str]]:
        """Config group -> the names a categorical hyperparameter may take (the loaded policies)."""
        return {"augmentation": list(self.augmentation)}

    def check(self) -> None:
        """Every section's rules, then the rules that span sections."""
        for section in ("data", "model", "tuner", "tracking", "final", "predict", "serve"):
            getattr(self, section).check(section)
        for name, policy in self.augmentation.items():
            policy.check(f"augmentation.{name}")
        self.model.check_size("data.image_size", self.data.image_size)
        self.model.check_size("final.image_size", self.final.image_size)
        missing = [row.name for row in ROWS if row.name not in self.search and not has_default(row)]
        if missing:
            raise ConfigError(f"search.{missing[0]}: no entry (every head hyperparameter needs a space in conf/search)")
        unknown = sorted(set(self.search) - set(NAMES))
        if unknown:
            raise ConfigError(f"search.{unknown[0]}: not a head hyperparameter (known: {', '.join(NAMES)})")
        for row in ROWS:
            if row.name in self.search:
                self.search[row.name].check(f"search.{row.name}", row, self.choices(), self.tuner.type)
            override = self.final.hp.get(row.name)
            if override is not None:
                check_value(row, override, f"final.hp.{row.name}", self.choices())
        self._check_blocks()
        _one_of("preset", self.preset, PRESETS, "preset")
        most = max_blocks(self.model.backbone)
        if self.finetune_stage.enabled:  # (a stage that does not run must not block a command)
            self.finetune_stage.check("finetune_stage", self.choices()["augmentation"], most)
            self.model.check_size("finetune_stage.image_size", self.finetune_stage.image_size)

    def _check_blocks(self) -> None:
        most = max_blocks(self.model.backbone)
        for key, values in (
            ("search.blocks", candidates(self.search, "blocks")),
            ("final.hp.blocks", [self.final.hp.get("blocks") or 0]),
        ):
            if max(values) > most:
                raise ConfigError(f"{key}: {max(values)} blocks, but {self.model.backbone} has {most} that can train")
        if self.tuner.folds and max(candidates(self.search, "blocks")) > 0:
            raise ConfigError(
                f"tuner.folds: cross-validating a fine-tuning trial trains its blocks {self.tuner.folds} times "
                "(minutes each); use tuner.folds=0 with search.blocks > 0"
            )


def weights_file(weights: str) -> Path | None:
    """The file model.weights names (None for imagenet); ConfigError when there is none. The CLI
    calls it before the dataset scan and TensorFlow's import, the backbone before it loads."""
    if weights == "imagenet":
        return None
    path = Path(weights).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"model.weights: no weights file at {path.resolve()} (set FASHION_WEIGHTS or model.weights= to an "
            "Xception no-top .weights.h5, or use model.weights=imagenet with internet access)"
        )
    return path


def _register_generated_nodes() -> None:
    """conf/final/default.yaml pulls in `final/hp_overrides`: one null per head hyperparameter,
    made from the table so that `final.hp.<name>=value` works for every row without a YAML copy."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(group="final", name="hp_overrides", node=dict.fromkeys(NAMES))


ADDED_GROUPS = ("experiment",)  # conf/ groups that config.yaml's defaults list leaves out


def _added_group(override: str) -> str:
    """`experiment=name` as Hydra spells it, `+experiment=name`: a group config.yaml's defaults list
    leaves out is appended after config.yaml's own values, so an experiment file overrides them."""
    return f"+{override}" if override.split("=", 1)[0] in ADDED_GROUPS else override


def compose(overrides: list[str] | None = None, config_dir: Path | str | None = None):
    """Compose conf/config.yaml with Hydra overrides; returns a DictConfig (no schema applied).

    Hydra composes the config groups, then sets each `key=value` on the result with
    OmegaConf.update. The groups' composition (about 0.1 s: every YAML file parsed again) is kept
    per conf/ folder, group choices and file stamps, and the plain `key=value` overrides are set on
    a copy of it as Hydra sets them; any other override, or one that fails, takes Hydra's whole
    composition, which words the error."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    directory = Path(config_dir or os.environ.get("FASHION_CONF") or CONFIG_DIR).resolve()
    if not (directory / "config.yaml").is_file():
        raise ConfigError(f"no config.yaml in {directory}: set FASHION_CONF to the conf/ folder")
    overrides = [_added_group(override) for override in overrides or []]
    parser, parsed = OverridesParser.create(), []
    for override in overrides:
        try:
            parsed.extend(parser.parse_overrides([override]))
        except HydraException as err:
            reason = one_line(err).split(" See https")[0]
            raise ConfigError(f"cannot parse override '{override}': {reason}") from None
    _register_generated_nodes()
    groups, values = [], []
    for override in parsed:
        if _is_group(override, directory):
            groups.append(override.input_line)
        else:
            values.append(override)
    if all(_plain(o) for o in values):
        composed = copy.deepcopy(_composed(directory, tuple(groups), _stamp(directory)))
        try:
            for override in values:
                OmegaConf.update(composed, override.key_or_group, override.value(), merge=True)
            return composed
        except (OmegaConfBaseException, ValueError, TypeError):  # (`values.x=1` on a list: ValueError)
            pass  # Hydra's whole composition below says what is wrong
    return _hydra_compose(directory, overrides)


def _hydra_compose(directory: Path, overrides: list[str] | tuple[str, ...]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException

    try:
        with initialize_config_dir(config_dir=str(directory), version_base="1.3"):
            return hydra_compose(config_name="config", overrides=list(overrides))
    except (HydraException, OmegaConfBaseException, ValueError) as err:
        raise ConfigError(_explain(one_line(err), directory)) from None


@functools.lru_cache(maxsize=16)
def _composed(directory: Path, groups: tuple[str, ...], stamp: tuple):
    """Hydra's composition of these config group choices (the caller copies it)."""
    return _hydra_compose(directory, groups)


def _stamp(directory: Path) -> tuple:
    """The conf/ folder's files as (name, size, mtime): a changed file composes again."""
    stats = sorted((str(path), path.stat()) for path in directory.rglob("*") if path.is_file())
    return tuple((name, stat.st_size, stat.st_mtime_ns) for name, stat in stats)


def _is_group(override, directory: Path) -> bool:
    """A config group choice (`model=tiny`, `+experiment=x`, `augmentation=[none]`), as Hydra tells them."""
    key = override.key_or_group
    return "." not in key and (directory / key).is_dir() and not isinstance(override.value(), dict)


def _plain(override) -> bool:
    """`key=value`: no +, ++ or ~, no sweep, package or hydra key."""
    flags = (override.is_add(), override.is_force_add(), override.is_delete(), override.is_sweep_override())
    return not any(flags) and override.package is None and not override.is_hydra_override()


def _explain(reason: str, directory: Path) -> str:
    """One line for Hydra's composition errors: the closest valid key for a typo, the choices of a group."""
    unknown = re.search(r"Could not override '([^']+)'", reason)
    if unknown:
        return f"{unknown.group(1)}: no such config key{did_you_mean(unknown.group(1), directory)}"
    option = re.search(r"Could not find '([^'/]+)/([^']+)'", reason)
    if option:
        group, name = option.groups()
        choices = sorted(path.stem for path in (directory / group).glob("*.yaml"))
        return f"{group}={name}: no such {group} option (choose one of: {', '.join(choices)})"
    return f"bad config override: {reason.split(' Config search path:')[0]}"


def did_you_mean(key: str, directory: Path | str | None = None) -> str:
    """' (did you mean X?)' with the config key closest to `key`, or '' when none is close."""
    import difflib

    keys = config_keys(directory)
    groups = [path.name for path in Path(directory or CONFIG_DIR).iterdir() if path.is_dir()]
    close = difflib.get_close_matches(key, keys + groups, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else " (python -m fashion_exp show-config lists the keys)"


def config_keys(directory: Path | str | None = None) -> list[str]:
    """Every dotted key of the default config (leaves and sections)."""
    keys: list[str] = []

    def walk(prefix: str, node: Any) -> None:
        for name, value in node.items():
            key = f"{prefix}.{name}" if prefix else str(name)
            keys.append(key)
            if isinstance(value, dict):
                walk(key, value)

    walk("", OmegaConf.to_container(compose([], directory), resolve=False))
    return keys


def load_config(overrides: list[str] | None = None, config_dir: Path | str | None = None) -> Config:
    """Compose the config, type it with the schema and check every rule.

    Returns a typed Config; raises ConfigError with a one-line message naming the bad key.
    """
    raw = compose(overrides, config_dir)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(Config), raw)
        config = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None)
        reason = one_line(getattr(err, "msg", err)).split(" full_key:")[0]
        where = f"config key '{key}'" if key else "config"
        hint = did_you_mean(key, config_dir) if key and "not in" in reason else ""
        raise ConfigError(f"{where}: {reason}{hint}") from None
    config.check()
    return config


def to_yaml(config: Config) -> str:
    """The resolved config as YAML text (what runs log as an artifact)."""
    return OmegaConf.to_yaml(OmegaConf.structured(config))


def flatten(config: Config) -> dict[str, str]:
    """The resolved config as flat dotted keys -> strings (for MLflow params)."""
    flat: dict[str, str] = {}

    def walk(prefix: str, node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                walk(f"{prefix}.{key}" if prefix else str(key), value)
        else:
            flat[prefix] = str(node)

    walk("", OmegaConf.to_container(OmegaConf.structured(config), resolve=True))
    return flat
