"""Guard rails on the package's shape: data flows one way, and only the tracking modules talk to MLflow."""

import ast
import inspect
from pathlib import Path

import fashion_exp

PACKAGE = Path(fashion_exp.__file__).resolve().parent
MLFLOW_MODULES = {
    "fashion_exp.tracking.experiments",
    "fashion_exp.tracking.mlflow_private",  # the ledger of private MLflow members (fashion_exp/private.py)
    "fashion_exp.tracking.queries",
    "fashion_exp.tracking.registry",
    "fashion_exp.tracking.run_logger",
    "fashion_exp.tracking.store",
    "fashion_exp.tracking.store_server",  # the process of the MLflow servers fashion_exp starts
    "fashion_exp.tracking.system_metrics",
    "fashion_exp.tracking.ui_app",  # MLflow's server app, its page changed (python -m fashion_exp ui serves it)
}
STAGES = ["config", "data", "features", "head", "tracking", "search", "final", "serving", "cli"]  # data flows this way
CLIENT_MAKERS = {"MlflowClient", "open_client", "connect"}  # names that hand out an MLflow client


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imported(path: Path, known: set[str]) -> set[str]:
    """Every module the file imports, at its top or inside a function (a lazy import is still an edge)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names if f"{node.module}.{alias.name}" in known}
    return names


def graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: {m for m in imported(path, known) if m in known and m != name} for name, path in found.items()}


def find_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, str] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(edges):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_module_imports_another_in_a_cycle():
    edges = graph()
    assert "fashion_exp.search.run" in edges and "fashion_exp.features.features" in edges["fashion_exp.search.run"]
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges))


def test_only_tracking_and_registry_import_mlflow():
    found = modules()
    users = {name for name, path in found.items() if any(m.split(".")[0] == "mlflow" for m in imported(path, set()))}
    assert users == MLFLOW_MODULES


def stage(name: str) -> int | None:
    """The module's place in STAGES (fashion_exp.<stage> or fashion_exp.<stage>.*); None for shared pieces."""
    part = name.split(".")[1] if "." in name else ""
    return STAGES.index(part) if part in STAGES else None


def later_stage_imports(edges: dict[str, set[str]]) -> list[str]:
    return [
        f"{module} imports the later stage {target}"
        for module, targets in sorted(edges.items())
        for target in sorted(targets)
        if stage(module) is not None and stage(target) is not None and stage(target) > stage(module)
    ]


def test_the_stage_check_finds_an_upward_import():
    edges = {"fashion_exp.tracking.registry": {"fashion_exp.search.head"}, "fashion_exp.cli": {"fashion_exp.config"}}
    assert later_stage_imports(edges) == [
        "fashion_exp.tracking.registry imports the later stage fashion_exp.search.head"
    ]
    assert stage("fashion_exp.tracking") == STAGES.index("tracking") and stage("fashion_exp.locks") is None


def test_earlier_stages_never_import_later_ones():
    assert later_stage_imports(graph()) == []


def mlflow_client_uses(path: Path) -> list[str]:
    """Where a file gets an MLflow client from fashion_exp or mlflow (a CLIENT_MAKERS name) or calls
    a method of MlflowClient on anything (client.get_run(...)), as 'line: code'."""
    from mlflow.tracking import MlflowClient

    methods = {name for name, _ in inspect.getmembers(MlflowClient, inspect.isfunction) if not name.startswith("_")}
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            taken = [alias.name for alias in node.names if alias.name in CLIENT_MAKERS]
        elif isinstance(node, ast.Attribute) and node.attr in CLIENT_MAKERS:
            taken = [node.attr]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in methods:
            taken = [ast.unparse(node.func)]
        else:
            continue
        found += [f"{node.lineno}: {name}" for name in taken]
    return found


def test_the_client_check_finds_client_use(tmp_path: Path):
    source = tmp_path / "backend.py"
    source.write_text(
        "from fashion_exp.tracking.store import open_client\n"
        "client = open_client(uri)\n"
        "files = client.list_artifacts(run_id, 'onnx')\n"
        "run = store.connect(uri, 'e')\n"
        "tags = run.tags()\n"
    )
    assert mlflow_client_uses(source) == ["1: open_client", "3: client.list_artifacts", "4: connect"]


def test_only_tracking_modules_use_an_mlflow_client():
    """Other stages ask tracking functions in plain values; they never hold a client or call its methods."""
    outside = {name: path for name, path in modules().items() if stage(name) != STAGES.index("tracking")}
    used = {name: uses for name, path in outside.items() if (uses := mlflow_client_uses(path))}
    assert used == {}


def bundles(source: str) -> list[str]:
    """Functions that hand back a positional bundle (a tuple of more than two values, or one
    annotated so), and functions with an `echo` parameter: issue 37, item 1's rules. A shape
    (tuple[int, ...]) is a value, not a bundle."""
    found = []
    for fn in ast.walk(ast.parse(source)):
        if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        returns = [n.value for n in ast.walk(fn) if isinstance(n, ast.Return) and isinstance(n.value, ast.Tuple)]
        if any(len(t.elts) > 2 or any(isinstance(e, ast.Starred) for e in t.elts) for t in returns):
            found.append(f"{fn.name} returns a tuple of more than two")
        hint = fn.returns
        if isinstance(hint, ast.Subscript) and getattr(hint.value, "id", "") == "tuple":
            parts = hint.slice.elts if isinstance(hint.slice, ast.Tuple) else [hint.slice]
            if len(parts) > 2 and not any(isinstance(p, ast.Constant) and p.value is Ellipsis for p in parts):
                found.append(f"{fn.name} is annotated {ast.unparse(hint)}")
        if "echo" in [a.arg for a in [*fn.args.args, *fn.args.kwonlyargs]]:
            found.append(f"{fn.name} takes echo")
    return found


def test_the_bundle_check_finds_tuples_and_echo():
    source = (
        "def a():\n    return 1, 2, 3\n"
        "def b(x) -> tuple[int, str, float]:\n    return x\n"
        "def c(echo=print):\n    pass\n"
        "def d():\n    return (*x, y)\n"
        "def shape() -> tuple[int, ...]:\n    return 1, 2\n"
    )
    assert bundles(source) == [
        "a returns a tuple of more than two",
        "b is annotated tuple[int, str, float]",
        "c takes echo",
        "d returns a tuple of more than two",
    ]


def test_steps_return_named_results_and_take_no_echo():
    """Each step returns a named result (a dataclass), not a tuple of more than two, and says its
    lines through fashion_exp/screen.py, not an echo parameter."""
    found = [f"{name}: {problem}" for name, path in modules().items() for problem in bundles(path.read_text())]
    assert found == []


MOST_PARAMETERS = 7  # a step that needs more takes a named pack of them (a dataclass), as fit_on_views' Rows


def crowded(source: str) -> list[str]:
    """Functions with more than MOST_PARAMETERS parameters (self and cls not counted)."""
    found = []
    for fn in ast.walk(ast.parse(source)):
        if isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
            names = [a.arg for a in [*fn.args.posonlyargs, *fn.args.args, *fn.args.kwonlyargs]]
            count = len([name for name in names if name not in ("self", "cls")])
            if count > MOST_PARAMETERS:
                found.append(f"{fn.name} takes {count}")
    return found


def test_no_step_takes_more_than_seven_parameters():
    assert crowded("def f(a, b, c, d, e, f, g, h=1):\n    pass\ndef g(self, a, b, c, d, e, f, g):\n    pass\n") == [
        "f takes 8"
    ]
    found = [f"{name}: {problem}" for name, path in modules().items() for problem in crowded(path.read_text())]
    assert found == []


def test_the_files_the_suite_starts_first_exist():
    """conftest.LONGEST_FILES orders the suite (the longest files first): a renamed file must not drop out silently."""
    from tests.conftest import LONGEST_FILES

    missing = [name for name in LONGEST_FILES if not (Path(__file__).parent / name).is_file()]
    assert not missing, missing
