"""The head's search space: rules a config must meet, and its translation to keras-tuner hyperparameters."""

from __future__ import annotations

from typing import Any

from fashion_exp.config import Config, ParamSpace
from fashion_exp.data import INTERPOLATIONS
from fashion_exp.errors import ConfigError

BACKBONES = ("xception", "tiny")
TUNERS = ("random", "bayesian", "hyperband", "grid")
TYPES = ("choice", "int", "float")
# Per-parameter value rules: (test, what the rule says) for every value the space can produce.
RULES = {
    "learning_rate": (lambda v: _is_number(v) and v > 0, "a number > 0"),
    "size_inner": (lambda v: _is_int(v) and v >= 0, "an integer >= 0 (0 = no inner layer)"),
    "droprate": (lambda v: _is_number(v) and 0 <= v < 1, "a number in [0, 1)"),
}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return _is_number(value) and float(value).is_integer()


def validate_param(name: str, space: ParamSpace, policies: list[str], tuner: str) -> None:
    """Raise ConfigError naming `search.<name>` if the space is unusable."""
    key = f"search.{name}"
    if space.type not in TYPES:
        raise ConfigError(f"{key}.type: unknown type '{space.type}' (use one of {', '.join(TYPES)})")
    if name == "augmentation":
        if space.type != "choice":
            raise ConfigError(f"{key}.type: augmentation must be a choice of policy names")
        if not space.values:
            raise ConfigError(f"{key}.values: empty choice list (name at least one policy)")
        for value in space.values:
            if value not in policies:
                known = ", ".join(policies) or "none loaded"
                raise ConfigError(
                    f"{key}.values: unknown augmentation policy '{value}' (loaded: {known}; "
                    f"add it with augmentation=[{','.join([*policies, str(value)])}])"
                )
        return
    test, rule = RULES[name]
    if space.type == "choice":
        if not space.values:
            raise ConfigError(f"{key}.values: empty choice list")
        for value in space.values:
            if not test(value):
                raise ConfigError(f"{key}.values: {value!r} is not {rule}")
        return
    if space.min is None or space.max is None:
        raise ConfigError(f"{key}: a {space.type} range needs both min and max")
    if space.min > space.max:
        raise ConfigError(f"{key}: min {space.min} is greater than max {space.max}")
    for bound in (space.min, space.max):
        if not test(bound):
            raise ConfigError(f"{key}: bound {bound!r} is not {rule}")
    if space.type == "int" and not (_is_int(space.min) and _is_int(space.max)):
        raise ConfigError(f"{key}: an int range needs integer min and max")
    if space.step is not None and space.step <= 0:
        raise ConfigError(f"{key}.step: {space.step} must be > 0")
    if space.log and space.min <= 0:
        raise ConfigError(f"{key}.log: log sampling needs min > 0, got {space.min}")
    if tuner == "grid" and space.type == "float" and space.step is None:
        raise ConfigError(f"{key}.step: the grid tuner needs a step for a float range")


def validate_config(config: Config) -> None:
    """Check the values no schema type can: names, ranges and the search space."""
    if config.model.backbone not in BACKBONES:
        raise ConfigError(
            f"model.backbone: unknown backbone '{config.model.backbone}' (use one of {', '.join(BACKBONES)})"
        )
    if config.data.interpolation not in INTERPOLATIONS:
        raise ConfigError(
            f"data.interpolation: unknown '{config.data.interpolation}' (use one of {', '.join(INTERPOLATIONS)})"
        )
    if config.tuner.type not in TUNERS:
        raise ConfigError(f"tuner.type: unknown tuner '{config.tuner.type}' (use one of {', '.join(TUNERS)})")
    positive = {
        "data.image_size": config.data.image_size,
        "model.batch_size": config.model.batch_size,
        "tuner.max_trials": config.tuner.max_trials,
        "tuner.epochs": config.tuner.epochs,
        "tuner.batch_size": config.tuner.batch_size,
    }
    for key, value in positive.items():
        if value < 1:
            raise ConfigError(f"{key}: {value} must be at least 1")
    if config.model.backbone == "xception" and config.data.image_size < 71:
        raise ConfigError(f"data.image_size: Xception needs at least 71 pixels, got {config.data.image_size}")
    if config.model.backbone == "xception" and config.final.image_size < 71:
        raise ConfigError(f"final.image_size: Xception needs at least 71 pixels, got {config.final.image_size}")
    if config.final.epochs < 1:
        raise ConfigError(f"final.epochs: {config.final.epochs} must be at least 1")
    if config.final.restarts < 1:
        raise ConfigError(f"final.restarts: {config.final.restarts} must be at least 1")
    if config.final.views is not None and config.final.views < 1:
        raise ConfigError(f"final.views: {config.final.views} must be at least 1 or null")
    if config.serve.backend not in ("keras", "onnx"):
        raise ConfigError(f"serve.backend: unknown backend '{config.serve.backend}' (use keras or onnx)")
    if not 0 < config.serve.port < 65536:
        raise ConfigError(f"serve.port: {config.serve.port} is not a TCP port")
    if config.serve.max_upload_mb <= 0 or config.serve.top_k < 1:
        raise ConfigError("serve.max_upload_mb must be > 0 and serve.top_k at least 1")
    if config.data.limit_per_class is not None and config.data.limit_per_class < 1:
        raise ConfigError(f"data.limit_per_class: {config.data.limit_per_class} must be at least 1 or null")
    if config.tuner.objective != "val_accuracy":
        raise ConfigError(f"tuner.objective: only val_accuracy is supported, got '{config.tuner.objective}'")
    for name, policy in config.augmentation.items():
        if policy.views < 1:
            raise ConfigError(f"augmentation.{name}.views: {policy.views} must be at least 1")
        for attr in ("rotation", "shift", "shear", "zoom"):
            if getattr(policy, attr) < 0:
                raise ConfigError(f"augmentation.{name}.{attr}: must be >= 0")
        if policy.zoom >= 1:
            raise ConfigError(f"augmentation.{name}.zoom: {policy.zoom} must be below 1")
    policies = list(config.augmentation)
    for name in RULES.keys() | {"augmentation"}:
        validate_param(name, getattr(config.search, name), policies, config.tuner.type)


def define(hp, name: str, space: ParamSpace):
    """Declare one parameter on a keras-tuner HyperParameters object; returns its current value."""
    if space.type == "choice":
        cast = {"learning_rate": float, "droprate": float, "size_inner": int}.get(name, str)
        return hp.Choice(name, [cast(v) for v in space.values], ordered=name != "augmentation")
    sampling = "log" if space.log else "linear"
    if space.type == "int":
        step = int(space.step) if space.step else None
        return hp.Int(name, int(space.min), int(space.max), step=step, sampling=sampling)
    return hp.Float(name, float(space.min), float(space.max), step=space.step, sampling=sampling)


def describe(config: Config) -> dict[str, dict[str, Any]]:
    """The search space as plain data, for logging."""
    out = {}
    for name in ("learning_rate", "size_inner", "droprate", "augmentation"):
        space = getattr(config.search, name)
        out[name] = {k: v for k, v in vars(space).items() if v is not None}
    return out
