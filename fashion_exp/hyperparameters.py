"""The head's hyperparameters: one table, and everything that is derived from it.

`HeadParams` is the table. Each field is one row: its name, its type (the cast applied to values
from config, keras-tuner and MLflow), the rule a value must meet, and by its position the order in
every table and in the keras-tuner space. The search-space checks, the keras-tuner definition,
`describe()`, the trials CSV columns, train-final's `final.hp.*` overrides and the MLflow params
all read these rows; nothing else names a hyperparameter.

Adding one: a field here, an entry in conf/search/default.yaml, and the code that uses the value.
(No `from __future__ import annotations` here: the rows' types are read as classes.)
"""

import math
from collections.abc import Callable, Collection, Mapping
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

from fashion_exp.errors import ConfigError

SPACE_TYPES = ("choice", "int", "float")

# blocks -> the layer whose input is the cut. Xception: block14 (4.7M weights) is a plain pair of
# separable convolutions; below it block13 (+2.0M) has a residual branch (conv2d_3), which a cut at
# its input keeps inside the top.
CUTS = {
    "xception": {1: "block14_sepconv1", 2: "block13_sepconv1_act"},
    "tiny": {1: "conv2", 2: "mid"},
}
MAX_BLOCKS = max(max(cuts) for cuts in CUTS.values())


def max_blocks(backbone: str) -> int:
    """How many top blocks of `backbone` can train (the `blocks` row's limit for it)."""
    return max(CUTS[backbone])


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _integer(value: Any) -> bool:
    return _number(value) and float(value).is_integer()


@dataclass(frozen=True)
class Rule:
    """What a value of one hyperparameter must be: `test(value)`, said in words as `says`.

    choices_from names a config group whose entries are the only allowed values (for example the
    loaded augmentation policies); such a hyperparameter is categorical.
    """

    says: str
    test: Callable[[Any], bool] = lambda value: True
    choices_from: str | None = None
    active_if: str | None = None  # the row whose value must be > 0 for this one to mean anything


def hyperparameter(
    says: str,
    test: Callable[[Any], bool] | None = None,
    choices_from: str | None = None,
    default: Any = MISSING,
    active_if: str | None = None,
):
    """One row of the table (a dataclass field of HeadParams). A row with a default may be left
    out of a search file, an MLflow run or a constructor call: the default is what heads did
    before the row existed. A row `active_if` another only means something where that row's value
    is > 0: the search declares it conditional (keras-tuner tries it only there), and it needs a
    default, the value a head holds where it is inactive."""
    if active_if is not None and default is MISSING:
        raise TypeError("a conditional row needs a default")
    rule = Rule(says, test or Rule.test, choices_from, active_if)
    return field(default=default, metadata={"rule": rule})


@dataclass(frozen=True)
class HeadParams:
    """One head's hyperparameters: a trial's, or the final model's."""

    learning_rate: float = hyperparameter("a number > 0", lambda v: _number(v) and v > 0)
    size_inner: int = hyperparameter("an integer >= 0 (0 = no inner layer)", lambda v: _integer(v) and v >= 0)
    droprate: float = hyperparameter("a number in [0, 1)", lambda v: _number(v) and 0 <= v < 1)
    augmentation: str = hyperparameter("the name of a loaded augmentation policy", choices_from="augmentation")
    blocks: int = hyperparameter(
        f"an integer from 0 to {MAX_BLOCKS} (the backbone's top blocks that train; 0 = frozen)",
        lambda v: _integer(v) and 0 <= v <= MAX_BLOCKS,
        default=0,
    )
    block_lr: float = hyperparameter(
        "a number > 0 (the trained blocks' learning rate as a fraction of learning_rate)",
        lambda v: _number(v) and v > 0,
        default=0.1,
        active_if="blocks",  # a frozen backbone has no block learning rate: one blocks=0 trial, not one per value
    )
    ema: float = hyperparameter(
        "a momentum in [0, 1) (0 = off): validation, checkpoints and the shipped head use an exponential moving "
        "average of the weights",
        lambda v: _number(v) and 0 <= v < 1,
        default=0.0,
    )
    label_smoothing: float = hyperparameter(
        "a number in [0, 1) (0 = off): the share of each label spread evenly over the classes in the training loss",
        lambda v: _number(v) and 0 <= v < 1,
        default=0.0,
    )

    @classmethod
    def from_values(cls, values: Mapping[str, Any]) -> "HeadParams":
        """From keras-tuner values, MLflow params (strings) or config: cast by each row's type.

        Keys that are not head hyperparameters (keras-tuner's `tuner/epochs`, ...) are ignored; a
        row with a default may be absent (a search from before it existed).
        """
        missing = [row.name for row in ROWS if row.name not in values and not has_default(row)]
        if missing:
            raise KeyError(f"no value for {', '.join(missing)}")
        return cls(**{row.name: cast(row, values[row.name]) for row in ROWS if row.name in values})

    def as_dict(self) -> dict[str, Any]:
        """Name -> value, in table order."""
        return asdict(self)

    def active(self) -> dict[str, Any]:
        """Name -> value of the rows that mean something for this head (block_lr only with blocks > 0)."""
        values = asdict(self)
        return {row.name: values[row.name] for row in ROWS if not (parent := rule(row).active_if) or values[parent] > 0}

    def check(self, key: str, choices: Mapping[str, Collection[str]]) -> None:
        """Raise ConfigError naming `key.<name>` for a value that breaks its row's rule."""
        for row in ROWS:
            check_value(row, getattr(self, row.name), f"{key}.{row.name}", choices)


ROWS = fields(HeadParams)
NAMES = tuple(row.name for row in ROWS)
SHORT = {
    **{"learning_rate": "lr", "size_inner": "inner", "droprate": "drop", "augmentation": "", "block_lr": "blr"},
    "label_smoothing": "smooth",
}


def label(values: Mapping[str, Any]) -> str:
    """What a head tried, short, for a run's name: "lr=0.001 inner=100 drop=0.2 none blocks=1 blr=0.1"
    (the rows that mean something for it; a row without a value, and a row at the default every head
    had before it existed, blocks=0 or ema=0, are left out)."""
    known = {name: values[name] for name in NAMES if name in values}
    try:
        known = HeadParams.from_values(known).active()
    except KeyError:
        pass  # some rows missing: name what there is
    words = []
    for name, value in known.items():
        row = row_named(name)
        if has_default(row) and not rule(row).active_if and value == row.default:
            continue  # a frozen backbone, no averaging, ...: said by saying nothing
        short = SHORT.get(name, name)
        words.append(f"{short}={value:g}" if isinstance(value, float) else f"{short}={value}" if short else str(value))
    return " ".join(words)


def rule(row) -> Rule:
    return row.metadata["rule"]


def row_named(name: str):
    """The table row called `name`."""
    return next(row for row in ROWS if row.name == name)


def has_default(row) -> bool:
    return row.default is not MISSING


def is_categorical(row) -> bool:
    return row.type is str


def cast(row, value: Any) -> Any:
    """A value (possibly the string MLflow stored) as the row's type; an int row accepts '100.0'."""
    if row.type is int:
        return int(float(value))
    return row.type(value)


def check_value(row, value: Any, key: str, choices: Mapping[str, Collection[str]]) -> None:
    """Raise ConfigError naming `key` if `value` breaks the row's rule (choices: group -> names)."""
    if rule(row).choices_from:
        allowed = list(choices.get(rule(row).choices_from, ()))
        if value not in allowed:
            group = rule(row).choices_from
            raise ConfigError(
                f"{key}: unknown {group} '{value}' (loaded: {', '.join(allowed) or 'none'}; "
                f"load it with {group}=[{','.join([*allowed, str(value)])}])"
            )
    elif not rule(row).test(value):
        raise ConfigError(f"{key}: {value!r} is not {rule(row).says}")


# ---- the search space of one hyperparameter -------------------------------------------------


@dataclass
class ParamSpace:
    """conf/search/<file>.yaml, one entry: a choice list or a range.

    The None/False defaults mean "not given" (a choice has no min, a range no values); the
    search files hold every real value.
    """

    type: str
    values: list[Any] | None = None
    min: float | None = None
    max: float | None = None
    step: float | None = None
    log: bool = False

    def check(self, key: str, row, choices: Mapping[str, Collection[str]], tuner: str) -> None:
        """Raise ConfigError naming `key` if this space cannot produce valid values of `row`."""
        if self.type not in SPACE_TYPES:
            raise ConfigError(f"{key}.type: unknown type '{self.type}' (use one of {', '.join(SPACE_TYPES)})")
        if self.type == "choice":
            if not self.values:
                raise ConfigError(f"{key}.values: empty choice list")
            for value in self.values:
                check_value(row, value, f"{key}.values", choices)
            return
        if is_categorical(row):
            raise ConfigError(f"{key}.type: {row.name} is categorical: use a choice list")
        if self.min is None or self.max is None:
            raise ConfigError(f"{key}: a {self.type} range needs both min and max")
        if self.min > self.max:
            raise ConfigError(f"{key}: min {self.min} is greater than max {self.max}")
        for bound in (self.min, self.max):
            if not rule(row).test(bound):
                raise ConfigError(f"{key}: bound {bound!r} is not {rule(row).says}")
        if self.type == "int" and not (_integer(self.min) and _integer(self.max)):
            raise ConfigError(f"{key}: an int range needs integer min and max")
        if self.step is not None and self.step <= 0:
            raise ConfigError(f"{key}.step: {self.step} must be > 0")
        if self.log and self.min <= 0:
            raise ConfigError(f"{key}.log: log sampling needs min > 0, got {self.min}")
        if tuner == "grid" and self.type == "float" and self.step is None:
            raise ConfigError(f"{key}.step: the grid tuner needs a step for a float range")

    def as_dict(self) -> dict[str, Any]:
        """The keys that were given (for logging and the search id)."""
        return {k: v for k, v in vars(self).items() if v is not None}


def define(hp, row, space: ParamSpace) -> Any:
    """Declare one row on a keras-tuner HyperParameters object; returns its current value."""
    if space.type == "choice":
        return hp.Choice(row.name, [cast(row, v) for v in space.values], ordered=not is_categorical(row))
    sampling = "log" if space.log else "linear"
    if space.type == "int":
        step = int(space.step) if space.step else None
        return hp.Int(row.name, int(space.min), int(space.max), step=step, sampling=sampling)
    return hp.Float(row.name, float(space.min), float(space.max), step=space.step, sampling=sampling)


def condition(search: Mapping[str, ParamSpace], row) -> list[Any] | None:
    """The values of the row's `active_if` parent under which it is active in `search`; None when
    it is active for every head of the space (nothing to declare)."""
    parent = rule(row).active_if
    if parent is None:
        return None
    values = candidates(search, parent)
    active = [v for v in values if v > 0]
    return None if len(active) == len(values) else active


def define_all(hp, search: Mapping[str, ParamSpace]) -> HeadParams:
    """Declare every row the space names, in table order, on a keras-tuner HyperParameters
    object (a row with a default that the space leaves out keeps its default; a conditional row
    is declared in keras-tuner's conditional scope, and holds its default where inactive)."""
    values = {}
    for row in ROWS:
        if row.name not in search:
            continue
        when = condition(search, row)
        if when is None:
            values[row.name] = define(hp, row, search[row.name])
        elif when:  # (never active, as with search.blocks=[0]: not declared at all)
            with hp.conditional_scope(rule(row).active_if, when):
                value = define(hp, row, search[row.name])
            if value is not None:
                values[row.name] = value
    return HeadParams(**values)


def describe(search: Mapping[str, ParamSpace]) -> dict[str, dict[str, Any]]:
    """The search space as plain data in table order, for logging and the search id (a space
    without the optional rows describes, and so resumes, as before they existed; a conditional
    row says so, so a space whose trials it changes gets a search id of its own)."""
    described = {}
    for row in ROWS:
        if row.name in search:
            described[row.name] = search[row.name].as_dict()
            if condition(search, row) is not None:
                described[row.name]["active_if"] = f"{rule(row).active_if} > 0"
    return described


def candidates(search: Mapping[str, ParamSpace], name: str) -> list[Any]:
    """Every value an int or choice row can take in `search` (its default when left out)."""
    row = row_named(name)
    if name not in search:
        return [row.default]
    space = search[name]
    if space.type == "choice":
        return sorted({cast(row, v) for v in space.values})
    return list(range(int(space.min), int(space.max) + 1, int(space.step or 1)))
