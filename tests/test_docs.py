"""The docs keep up with the code: docs/developing.md's layout names every module of fashion_exp/
and nothing that is gone, benchmarks/README.md names every script, and every benchmark script and
local link the docs and the code cite exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "fashion_exp"
DOCS = [ROOT / "README.md", ROOT / "benchmarks" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def layout() -> str:
    text = (ROOT / "docs" / "developing.md").read_text()
    return text.split("## The layout follows the pipeline", 1)[1].split("```", 2)[1]


def test_the_layout_names_every_module_and_only_modules_that_exist():
    block = layout()
    named = set(re.findall(r"^  (\w+\.py|\w+/)\s", block, flags=re.MULTILINE))
    present = {p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}
    present |= {f"{p.name}/" for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert sorted(present - named) == [], "modules missing from docs/developing.md's layout"
    assert sorted(named - present) == [], "docs/developing.md's layout names modules that do not exist"
    inner = set(re.findall(r"\b(\w+\.py)\b", block)) - named
    every = {p.name for p in PACKAGE.rglob("*.py")}
    assert sorted(inner - every) == [], "the layout cites modules that do not exist"


def test_every_benchmark_script_is_described_and_every_cited_one_exists():
    scripts = {p.name for p in (ROOT / "benchmarks").glob("*.py") if p.name != "common.py"}
    described = (ROOT / "benchmarks" / "README.md").read_text()
    assert sorted(name for name in scripts if f"`{name}`" not in described) == []
    cited = set()
    for path in [*DOCS, *PACKAGE.rglob("*.py")]:
        text = path.read_text()
        cited |= set(re.findall(r"\b(bench_\w+\.py)\b", text)) | set(re.findall(r"benchmarks/(\w+\.py)\b", text))
    assert sorted(cited - scripts) == [], "cited benchmark scripts that do not exist"


def test_every_local_link_in_the_docs_points_at_a_file():
    broken = []
    for page in DOCS:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert broken == []
