"""Typed config: the schema of conf/ and load_config(), which composes it with Hydra's compose API."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fashion_exp.errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"


@dataclass
class DataConfig:
    root: str = "data/clothing-dataset-small"
    url: str = ""
    image_size: int = 150
    interpolation: str = "nearest"
    limit_per_class: int | None = None
    max_image_pixels: int = 89_478_485


@dataclass
class ModelConfig:
    backbone: str = "xception"
    weights: str = "imagenet"
    batch_size: int = 32


@dataclass
class AugmentationPolicy:
    views: int = 1
    rotation: float = 0.0
    shift: float = 0.0
    shear: float = 0.0
    zoom: float = 0.0
    horizontal_flip: bool = False


@dataclass
class ParamSpace:
    type: str = "choice"
    values: list[Any] | None = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    log: bool = False


@dataclass
class SearchSpace:
    learning_rate: ParamSpace = field(default_factory=ParamSpace)
    size_inner: ParamSpace = field(default_factory=ParamSpace)
    droprate: ParamSpace = field(default_factory=ParamSpace)
    augmentation: ParamSpace = field(default_factory=ParamSpace)


@dataclass
class TunerConfig:
    type: str = "random"
    max_trials: int = 20
    epochs: int = 10
    batch_size: int = 32
    objective: str = "val_accuracy"
    factor: int = 3
    initial_points: int | None = None


@dataclass
class TrackingConfig:
    uri: str = "sqlite:///mlflow.db"
    experiment: str = "fashion-classifier-search"


@dataclass
class FinalConfig:
    image_size: int = 299
    epochs: int = 30
    restarts: int = 5
    experiment: str = "fashion-classifier"
    registered_model: str = "fashion-classifier"
    views: int | None = None
    learning_rate: float | None = None
    size_inner: int | None = None
    droprate: float | None = None
    augmentation: str | None = None


@dataclass
class ServeConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    backend: str = "keras"
    max_upload_mb: float = 10.0
    top_k: int = 3


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    augmentation: dict[str, AugmentationPolicy] = field(default_factory=dict)
    search: SearchSpace = field(default_factory=SearchSpace)
    tuner: TunerConfig = field(default_factory=TunerConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    final: FinalConfig = field(default_factory=FinalConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    seed: int = 42
    work_dir: str = ".fashion_exp"
    fresh: bool = False
    from_run: str | None = None


def _one_line(message: str) -> str:
    return re.sub(r"\s+", " ", str(message)).strip()


def compose(overrides: list[str] | None = None, config_dir: Path | str | None = None):
    """Compose conf/config.yaml with Hydra overrides; returns a DictConfig (no schema applied)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.errors import HydraException

    directory = Path(config_dir or os.environ.get("FASHION_CONF") or CONFIG_DIR).resolve()
    if not (directory / "config.yaml").is_file():
        raise ConfigError(f"no config.yaml in {directory}: set FASHION_CONF to the conf/ folder")
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    for override in overrides or []:
        try:
            parser.parse_overrides([override])
        except HydraException as err:
            reason = _one_line(err).split(" See https")[0]
            raise ConfigError(f"cannot parse override '{override}': {reason}") from None
    try:
        with initialize_config_dir(config_dir=str(directory), version_base="1.3"):
            return hydra_compose(config_name="config", overrides=list(overrides or []))
    except (HydraException, OmegaConfBaseException, ValueError) as err:
        raise ConfigError(f"bad config override: {_one_line(err)}") from None


def load_config(overrides: list[str] | None = None, config_dir: Path | str | None = None) -> Config:
    """Compose the config, check every value against the schema and the search-space rules.

    Returns a typed Config; raises ConfigError with a one-line message naming the bad key.
    """
    from fashion_exp.space import validate_config

    raw = compose(overrides, config_dir)
    try:
        merged = OmegaConf.merge(OmegaConf.structured(Config), raw)
        config = OmegaConf.to_object(merged)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None)
        reason = _one_line(getattr(err, "msg", err)).split(" full_key:")[0]
        where = f"config key '{key}'" if key else "config"
        raise ConfigError(f"{where}: {reason}") from None
    validate_config(config)
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
