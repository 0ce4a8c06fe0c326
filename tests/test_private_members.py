"""The ledger of private library members (fashion_exp/private.py): every member it names is still
upstream as written against, and fashion_exp uses no private member the ledger does not name
(issue 37, item 3). An upgrade that moves one fails the first test; a new private use that nobody
listed fails the second."""

import ast
import importlib
import inspect
import re
from pathlib import Path

import pytest

from fashion_exp.head import keras_private
from fashion_exp.private import Private
from fashion_exp.search import keras_tuner_fixes
from fashion_exp.tracking import mlflow_private

PACKAGE = Path(__file__).resolve().parents[1] / "fashion_exp"
LEDGERS = (keras_tuner_fixes, mlflow_private, keras_private)
LEDGER = [entry for ledger in LEDGERS for entry in ledger.PRIVATE]
STDLIB = {"os", "sys"}  # os._exit, sys._getframe: documented, public despite the underscore


def private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def private_module(module: str) -> bool:
    return ".src" in f".{module}" or any(private(part) for part in module.split("."))


def modules() -> dict[str, ast.Module]:
    return {str(path.relative_to(PACKAGE)): ast.parse(path.read_text()) for path in sorted(PACKAGE.rglob("*.py"))}


def defined_in(tree: ast.Module) -> set[str]:
    """Every name a module defines: functions, classes, assigned names and attributes, arguments."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Attribute | ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.attr if isinstance(node, ast.Attribute) else node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
    return names


def named(ledger: list[Private], module: str, name: str | None = None) -> set[str]:
    """Where the ledger lets a private module (or a member in it) be used."""
    return {
        place for entry in ledger if entry.module == module and name in (None, entry.name) for place in entry.used_in
    }


def listed(ledger: list[Private], name: str, place: str) -> bool:
    return any(entry.name == name and place in entry.used_in for entry in ledger)


def unlisted_uses(ledger: list[Private]) -> list[str]:
    """Private members and modules used in fashion_exp that no ledger entry names for that module."""
    found = []
    for place, tree in modules().items():
        own = defined_in(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module != "__future__":
                for alias in node.names:
                    whole = f"{node.module}.{alias.name}"
                    if private_module(whole) and place not in named(ledger, whole) | named(
                        ledger, node.module, alias.name
                    ):
                        found.append(f"{place}: imports {whole}")
            elif isinstance(node, ast.Attribute) and private(node.attr) and node.attr not in own:
                if isinstance(node.value, ast.Name) and node.value.id in STDLIB:
                    continue
                if not listed(ledger, node.attr, place):
                    found.append(f"{place}: uses {node.attr} (line {node.lineno})")
    return found


SELF_ASSIGNED = re.compile(r"self\.(_[A-Za-z]\w*)\s*(?::[^=\n]*)?=(?!=)")


def upstream_names_we_redefine(ledger: list[Private]) -> list[str]:
    """Private methods and instance attributes that our classes (and their mixins) define over a
    library class they derive from: overrides, and upstream state we set, each to be in the ledger."""
    found = set()
    for place, tree in modules().items():
        if not any(isinstance(node, ast.ClassDef) and node.bases for node in ast.walk(tree)):
            continue
        module = importlib.import_module("fashion_exp." + place[:-3].replace("/", "."))
        for cls in [
            value for value in vars(module).values() if inspect.isclass(value) and value.__module__ == module.__name__
        ]:
            ours = [c for c in cls.__mro__ if c.__module__.startswith("fashion_exp")]
            upstream = [c for c in cls.__mro__ if not c.__module__.startswith(("fashion_exp", "builtins"))]
            for own in ours if upstream else ():
                where = str(Path(inspect.getsourcefile(own)).relative_to(PACKAGE))
                for name in redefined(own):
                    if any(defines(base, name) for base in upstream) and not listed(ledger, name, where):
                        found.add(f"{where}: {own.__name__}.{name} redefines the library's")
    return sorted(found)


def redefined(cls: type) -> set[str]:
    """The private names a class's own source defines (Python's own, such as abc's _abc_impl, are not in it)."""
    source = inspect.getsource(cls)
    names = {name for name in vars(cls) if private(name) and re.search(rf"\b{name}\b", source)}
    return names | set(SELF_ASSIGNED.findall(source))


def defines(base: type, name: str) -> bool:
    """`base` has `name` as a member, or sets it on its instances."""
    if name in vars(base):
        return True
    try:
        return name in SELF_ASSIGNED.findall(inspect.getsource(base))
    except (OSError, TypeError):  # a class without Python source (a C extension's)
        return False


@pytest.fixture
def stock_keras_tuner(monkeypatch):
    """keras-tuner as upstream ships it: keras_tuner_fixes.install(), which an earlier test in this
    process may have run, replaced three of its members with ours."""
    from keras_tuner.src import utils as kt_utils
    from keras_tuner.src.distribute import oracle_client
    from keras_tuner.src.engine import conditions as kt_conditions

    from fashion_exp.search import state_files

    monkeypatch.setattr(kt_utils, "save_json", state_files.STOCK_SAVE_JSON)
    monkeypatch.setattr(kt_conditions.Parent, "to_proto", keras_tuner_fixes.STOCK_PARENT_TO_PROTO)
    monkeypatch.setattr(oracle_client, "OracleClient", keras_tuner_fixes.STOCK_ORACLE_CLIENT)


def test_every_private_member_in_the_ledger_is_as_written_against(stock_keras_tuner):
    problems = [problem for entry in LEDGER if (problem := entry.problem())]
    assert problems == [], "upstream changed: look at each use again\n" + "\n".join(problems)


def test_the_ledger_names_every_private_member_fashion_exp_uses():
    assert unlisted_uses(LEDGER) == []
    assert upstream_names_we_redefine(LEDGER) == []


def test_the_ledger_names_only_modules_that_exist_and_use_the_member():
    for entry in LEDGER:
        for place in entry.used_in:
            assert (PACKAGE / place).is_file(), f"{entry.member}: {place} does not exist"
            assert (
                entry.name in (PACKAGE / place).read_text()
                or entry.module.rsplit(".", 1)[-1] in (PACKAGE / place).read_text()
            ), f"{entry.member}: {place} does not use it"


def test_the_check_reads_upstream_even_after_the_fixes_are_installed(stock_keras_tuner):
    keras_tuner_fixes.install()  # (the fixture puts the stock members back after the test)
    installed = [entry.problem() for entry in LEDGER if entry.name in ("save_json", "to_proto")]
    assert all(problem and "signature" in problem for problem in installed)  # ours, not upstream's


def test_a_changed_or_unlisted_member_is_caught():
    """The checks can fail: a moved member, a changed signature, a gone instance attribute, and a
    private use the ledger does not name are each reported in one line."""
    gone = Private("keras_tuner:Tuner._gone_since_1_4_8", ("search/tuner.py",), "test")
    moved = Private("keras_tuner.src.no_such_module:x", ("search/tuner.py",), "test")
    changed = Private("keras_tuner:Tuner._is_worker", ("search/tuner.py",), "test", "(self, extra)")
    state = Private("keras_tuner:oracles.GridSearchOracle._never_set", ("search/tuner.py",), "test", instance=True)
    assert gone.problem() == "keras_tuner:Tuner._gone_since_1_4_8: gone"
    assert moved.problem().startswith("keras_tuner.src.no_such_module:x: its module no longer imports")
    assert changed.problem() == "keras_tuner:Tuner._is_worker: signature (self), written against (self, extra)"
    assert (
        state.problem() == "keras_tuner:oracles.GridSearchOracle._never_set: the class no longer sets self._never_set"
    )
    without = [entry for entry in LEDGER if entry.name not in ("_get_variable_index", "_populate_initial_space")]
    assert any(
        line.startswith("head/keras_private.py: uses _get_variable_index (line") for line in unlisted_uses(without)
    )
    assert "search/tuner.py: TrialHooks._populate_initial_space redefines the library's" in upstream_names_we_redefine(
        without
    )


@pytest.mark.parametrize("ledger", LEDGERS, ids=lambda ledger: ledger.__name__.rsplit(".", 1)[-1])
def test_each_ledger_pins_the_version_it_was_written_against(ledger):
    import keras
    import keras_tuner
    import mlflow

    version = {"keras_tuner_fixes": keras_tuner.__version__, "mlflow_private": mlflow.__version__}
    pinned = getattr(ledger, "KERAS_TUNER", None) or getattr(ledger, "MLFLOW", None) or ledger.KERAS
    name = ledger.__name__.rsplit(".", 1)[-1]
    assert version.get(name, keras.__version__) == pinned, f"{name}: upstream changed: review every entry"
