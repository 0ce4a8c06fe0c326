"""The docs keep up with the code: docs/developing.md's layout names every module of fashion_exp/
and nothing that is gone, benchmarks/README.md names every script, and every benchmark script and
local link the docs and the code cite exists."""

from __future__ import annotations

import re
import subprocess
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


RETIRED = re.compile(r"^\| `(\w+\.py)` \| .* \| `git show ([0-9a-f]{7,40}):benchmarks/\1 > \1` \|$", re.MULTILINE)


def test_every_benchmark_script_is_described_and_every_cited_one_exists_or_is_retired_at_a_commit():
    """benchmarks/README.md describes each script; a cited script exists, or README's table of retired
    scripts names the commit whose tree still has it (issue 37, item 6)."""
    scripts = {p.name for p in (ROOT / "benchmarks").glob("*.py") if p.name != "common.py"}
    described = (ROOT / "benchmarks" / "README.md").read_text()
    retired = dict(RETIRED.findall(described))
    assert sorted(name for name in scripts if f"`{name}`" not in described.split("## Retired scripts")[0]) == []
    assert sorted(set(retired) & scripts) == [], "a retired script is still in benchmarks/"
    for name, commit in retired.items():
        kept = subprocess.run(["git", "cat-file", "-e", f"{commit}:benchmarks/{name}"], cwd=ROOT, capture_output=True)
        assert kept.returncode == 0, f"{name}: commit {commit} does not hold benchmarks/{name}"
    cited = set()
    for path in [*DOCS, *PACKAGE.rglob("*.py"), *(ROOT / "conf").rglob("*.yaml")]:
        text = path.read_text()
        cited |= set(re.findall(r"\b(bench_\w+\.py)\b", text)) | set(re.findall(r"benchmarks/(\w+\.py)\b", text))
    assert sorted(cited - scripts - set(retired)) == [], "cited benchmark scripts that do not exist"


def test_every_local_link_in_the_docs_points_at_a_file():
    broken = []
    for page in DOCS:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
            if "://" not in target and not (page.parent / target).exists():
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert broken == []
