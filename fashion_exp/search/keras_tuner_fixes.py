"""Every change fashion_exp makes to keras-tuner (pinned at 1.4.8), in one place.

keras-tuner is extended the way it is meant to be (HyperModel, Tuner hooks, Oracle subclasses) in
search/tuner.py and search/oracles.py. What cannot be done that way is here, each with the
upstream version or issue it works around; tests/test_keras_tuner_fixes.py fails when upstream
changes under a fix (the bug fixed, or a private member gone), so it is looked at again then.

Process-wide, installed once by each job that runs a search (install()):
  - atomic state files: keras-tuner 1.4.8's utils.save_json writes oracle.json and trial.json in
    place, so a kill -9 mid-write left a file no resume could read (search/state_files.py).
  - Parent.to_proto: keras-tuner 1.4.8 prints `self.values[0]` (a leftover debug print) each time a
    conditional hyperparameter (block_lr) crosses gRPC, several lines a trial on the chief.
  - oracle_client.TIMEOUT: keras-tuner 1.4.8 waits an hour for the chief in every call, a module
    constant with no argument to change it (set_chief_timeout).
  - oracle_client.OracleClient: keras-tuner 1.4.8's client opens grpc.insecure_channel in its
    __init__, with no way to add call metadata; TokenOracleClient is the same client on a channel
    whose calls carry the chief's oracle token (search/oracle_auth.py).

Oracle subclasses (their classes are named here; search/oracles.py adds the time budget):
  - DistinctBayesianOracle: keras-tuner's Gaussian-process oracle proposes finished points again
    on discrete spaces (keras-team/keras-tuner#608, #227).
  - ResumableGridOracle: a resumed grid search loses its place in the grid
    (keras-team/keras-tuner#1055: _ordered_ids and _populate_next are not saved).

PRIVATE names every private keras-tuner member fashion_exp uses, here and in search/ (the ledger:
fashion_exp/private.py).
"""

from __future__ import annotations

import functools
import itertools
import os

import keras_tuner as kt
import numpy as np
from keras_tuner.src import protos as kt_protos
from keras_tuner.src import utils as kt_utils
from keras_tuner.src.distribute import oracle_client
from keras_tuner.src.engine import conditions as kt_conditions
from keras_tuner.src.tuners import gridsearch as kt_gridsearch

from fashion_exp.private import Private
from fashion_exp.search import oracle_auth
from fashion_exp.search.state_files import save_json_atomically

KERAS_TUNER = "1.4.8"  # the version every fix here was written against (requirements.lock pins it)
_FIXES, _TUNER, _CLUSTER = "search/keras_tuner_fixes.py", "search/tuner.py", "search/cluster.py"
_BAYES = "keras_tuner:oracles.BayesianOptimizationOracle"
_DISTINCT = "DistinctBayesianOracle proposes untried points of a discrete space with the oracle's own Gaussian process"
_GRID = "ResumableGridOracle rebuilds the grid's place that GridSearchOracle does not save (#1055)"
PRIVATE = (
    Private(
        "keras_tuner.src.utils:save_json",
        (_FIXES, "search/state_files.py"),
        "replaced: atomic state files (keras-tuner writes oracle.json in place; no hook to change it)",
        "(path, obj)",
    ),
    Private(
        "keras_tuner.src.engine.conditions:Parent.to_proto", (_FIXES,), "replaced: without its stray print", "(self)"
    ),
    Private(
        "keras_tuner.src.distribute.oracle_client:TIMEOUT",
        (_FIXES,),
        "the chief timeout: a module constant, no argument sets it",
    ),
    Private(
        "keras_tuner.src.distribute.oracle_client:OracleClient",
        (_FIXES,),
        "replaced by TokenOracleClient: "
        "its channel is made in __init__, with no way to add the oracle token to its calls",
    ),
    Private(
        "keras_tuner.src.protos",
        (_FIXES, _CLUSTER),
        "the oracle's gRPC service and messages: the token "
        "channel's stub and the chief's server (keras-tuner starts its own chief server, without a token)",
    ),
    Private(
        "keras_tuner.src.distribute.oracle_chief:OracleServicer",
        (_CLUSTER,),
        "the chief's servicer, served by cluster.py (token, one call at a time, saved after each ended trial)",
        "(oracle)",
    ),
    Private(
        "keras_tuner.src.distribute.oracle_chief:exit_chief",
        (_CLUSTER,),
        "when a chief may stop: every worker's tuner ended (keras-tuner's own rule)",
    ),
    Private("keras_tuner.src.tuners.gridsearch:LinkedList", (_FIXES,), _GRID),
    Private("keras_tuner:oracles.GridSearchOracle._ordered_ids", (_FIXES,), _GRID, instance=True),
    Private("keras_tuner:oracles.GridSearchOracle._populate_next", (_FIXES,), _GRID, instance=True),
    Private("keras_tuner:oracles.GridSearchOracle._compare", (_FIXES,), _GRID, "(self, a, b)"),
    Private(f"{_BAYES}._compute_values_hash", (_FIXES,), _DISTINCT, "(self, values)"),
    Private("keras_tuner.src.engine.oracle:Oracle._tried_so_far", (_FIXES,), _DISTINCT, instance=True),
    Private(f"{_BAYES}._random_populate_space", (_FIXES,), _DISTINCT, "(self)"),
    Private(f"{_BAYES}._duplicate", (_FIXES,), _DISTINCT, "(self, values)"),
    Private(f"{_BAYES}._vectorize_trials", (_FIXES,), _DISTINCT, "(self)"),
    Private(f"{_BAYES}._nonfixed_space", (_FIXES,), _DISTINCT, "(self)"),
    Private(
        "keras_tuner:Tuner._populate_initial_space",
        (_TUNER,),
        "overridden: the hypermodel declares its whole space without building a model per conditional scope",
        "(self)",
    ),
    Private(
        "keras_tuner:Tuner._is_worker",
        (_TUNER,),
        "whether this tuner's oracle is a client of a chief's "
        "(then it holds no trials, and the deadline is the chief's)",
        "(self)",
    ),
    Private(
        "keras_tuner:Hyperband.__init__",
        (_TUNER,),
        "skipped: it builds its own oracle; ours (with the time budget) is given to Tuner.__init__",
    ),
)
STOCK_PARENT_TO_PROTO = kt_conditions.Parent.to_proto


STOCK_ORACLE_CLIENT = oracle_client.OracleClient


class TokenOracleClient(STOCK_ORACLE_CLIENT):
    """keras-tuner's OracleClient whose calls carry FASHION_ORACLE_TOKEN (oracle_auth.channel)."""

    def __init__(self, oracle):
        super().__init__(oracle)
        address = f"{os.environ['KERASTUNER_ORACLE_IP']}:{os.environ['KERASTUNER_ORACLE_PORT']}"
        self.stub = kt_protos.get_service_grpc().OracleStub(oracle_auth.channel(address))


def install() -> None:
    """Apply the process-wide fixes (idempotent): atomic state files, a quiet Parent.to_proto, a
    worker's oracle client that carries the oracle token."""
    kt_utils.save_json = save_json_atomically
    kt_conditions.Parent.to_proto = parent_to_proto
    oracle_client.OracleClient = TokenOracleClient


def set_chief_timeout(seconds: float) -> None:
    """How long a worker's calls to the chief's oracle wait (tuner.chief_timeout)."""
    oracle_client.TIMEOUT = seconds


def wait_for_chief() -> None:
    """Return once the chief's oracle (KERASTUNER_ORACLE_IP/_PORT) answers, or raise grpc.RpcError
    after the chief timeout (keras-tuner's OracleClient: no public way to ask before a tuner exists)."""
    oracle_client.OracleClient(None).get_space()


def parent_to_proto(condition: kt_conditions.Parent):
    """keras-tuner 1.4.8's Parent.to_proto without its stray `print(self.values[0])`, which put a
    line on the chief's terminal each time a conditional space (block_lr) crossed gRPC, several
    times a trial."""
    proto = kt_protos.get_proto()
    kinds = ((bool, "boolean_value"), (str, "string_value"), (int, "int_value"))  # bool first: it is an int
    field = next((name for kind, name in kinds if isinstance(condition.values[0], kind)), "float_value")
    values = [proto.Value(**{field: value}) for value in condition.values]
    return proto.Condition(parent=proto.Condition.Parent(name=condition.name, values=values))


def _grid(hp) -> list | None:
    """Every value a discrete hyperparameter can take; None for a continuous one."""
    if isinstance(hp, kt.engine.hyperparameters.Choice):
        return list(hp.values)
    if isinstance(hp, kt.engine.hyperparameters.Fixed):
        return [hp.value]
    if isinstance(hp, kt.engine.hyperparameters.Int | kt.engine.hyperparameters.Float) and hp.step:
        return list(hp.values) if hasattr(hp, "values") else None
    return None


class DistinctBayesianOracle(kt.oracles.BayesianOptimizationOracle):
    """keras-tuner's Gaussian-process oracle, made to work on discrete spaces.

    The stock oracle optimises its acquisition over a continuous box and snaps the optimum to the
    nearest choices, which on a choice grid proposes an already-finished point again and again. On
    a discrete space this oracle scores every untried point with the same Gaussian process and
    upper confidence bound and proposes the best; on continuous spaces it keeps the stock proposal
    and replaces a repeat by a random untried point.
    """

    def populate_space(self, trial_id):
        completed = [t for t in self.trials.values() if t.status == "COMPLETED"]
        initial = self.num_initial_points or max(3 * len(self.hyperparameters.space), 3)
        grids = {hp.name: _grid(hp) for hp in self.hyperparameters.space}
        if len(completed) < initial or any(g is None for g in grids.values()):
            proposal = super().populate_space(trial_id)
            values = proposal.get("values")
            if values is not None and self._compute_values_hash(values) in self._tried_so_far:
                return self._random_populate_space()
            return proposal
        untried = [values for values in self._points(grids) if not self._duplicate(values)]
        if not untried:
            return {"status": kt.engine.trial.TrialStatus.STOPPED, "values": None}
        x, y = self._vectorize_trials()
        self.gpr.fit(np.nan_to_num(x, posinf=0, neginf=0), np.nan_to_num(y, posinf=0, neginf=0))
        space = self._nonfixed_space()
        # an inactive hyperparameter sits at its default, as _vectorize_trials places finished trials
        candidates = np.array(
            [[hp.value_to_prob(values.get(hp.name, hp.default)) for hp in space] for values in untried]
        )
        mu, sigma = self.gpr.predict(candidates, return_std=True)
        best = int(np.argmin(np.asarray(mu).ravel() - self.beta * np.asarray(sigma).ravel()))  # scores are negated
        return {"status": kt.engine.trial.TrialStatus.RUNNING, "values": untried[best]}

    def _points(self, grids: dict[str, list]) -> list[dict]:
        """Every distinct point of a discrete space: a conditional hyperparameter (block_lr) takes
        values only where its condition holds (blocks > 0), so blocks=0 is one point, not one per
        block_lr."""
        points = {}
        for combo in itertools.product(*grids.values()):
            values = {}
            for hp, value in zip(self.hyperparameters.space, combo, strict=True):
                if all(condition.is_active(values) for condition in hp.conditions):
                    values[hp.name] = value
            points.setdefault(self._compute_values_hash(values), values)
        return list(points.values())


class ResumableGridOracle(kt.oracles.GridSearchOracle):
    """keras-tuner's grid oracle, made resumable.

    Its place in the grid (the tried points in grid order, and the points whose successor is to
    be tried next) is not part of its saved state, so a resumed grid search, interrupted or given
    more tuner.max_trials, found nothing left to try and ended with the trials it had. Both are
    rebuilt here from the reloaded trials: every tried point is expanded again, and a successor
    already tried is skipped as keras-tuner's own loop skips it.
    """

    def set_state(self, state):
        super().set_state(state)
        by_grid_order = functools.cmp_to_key(
            lambda a, b: self._compare(a.hyperparameters.values, b.hyperparameters.values)
        )
        tried = sorted(self.trials.values(), key=by_grid_order)
        self._ordered_ids = kt_gridsearch.LinkedList()  # (keras-tuner's own structure; no public one)
        for trial in tried:
            self._ordered_ids.insert(trial.trial_id)
        self._populate_next = [trial.trial_id for trial in tried]
