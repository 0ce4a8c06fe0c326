"""Guard rails on the package's shape: data flows one way, and only the tracking modules talk to MLflow."""

import ast
from pathlib import Path

import fashion_exp

PACKAGE = Path(fashion_exp.__file__).resolve().parent
MLFLOW_MODULES = {"fashion_exp.tracking.runs", "fashion_exp.tracking.registry", "fashion_exp.tracking.store"}


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
    assert "fashion_exp.search.run" in edges and "fashion_exp.features.prepare" in edges["fashion_exp.search.run"]
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges))


def test_only_tracking_and_registry_import_mlflow():
    found = modules()
    users = {name for name, path in found.items() if any(m.split(".")[0] == "mlflow" for m in imported(path, set()))}
    assert users == MLFLOW_MODULES


def test_earlier_stages_never_import_later_ones():
    order = ["config", "data", "features", "search", "final", "serving", "cli"]  # tracking is beside them all

    def stage(name: str) -> int | None:
        part = name.split(".")[1] if "." in name else ""
        return order.index(part) if part in order else None

    for module, targets in graph().items():
        for target in targets:
            if stage(module) is not None and stage(target) is not None:
                assert stage(target) <= stage(module), f"{module} imports the later stage {target}"
