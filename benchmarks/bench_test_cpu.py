"""Where the test suite's CPU goes: runs pytest with the given words, and every Python process it
starts (pytest's workers, `python -m fashion_exp` commands, `mlflow server`, MLflow's own helper
processes) writes its CPU time at exit; prints the CPU seconds and the count by kind of process.

Each process writes its first four command-line words and its CPU time to a log in a private
temporary folder, deleted at the end; the words are redacted before they are printed or written
to --out. A process killed with SIGKILL writes nothing (the kill -9 tests' victims are left out). Compare
kinds within one run, or runs on one host. It is how docs/results.md found MLflow's job runner and
requirement inference in the suite.

    python benchmarks/bench_test_cpu.py -- -n 0 tests/test_signals.py    # minutes: what pytest takes
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from fashion_exp.redact import redact_words

RECORDER = """
import atexit, json, os, resource, sys, time

_started = time.time()


def _record():
    try:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        row = {"argv": sys.argv[:4], "cpu_s": usage.ru_utime + usage.ru_stime, "wall_s": time.time() - _started}
        row["test"] = os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0]  # (pytest sets it; children inherit it)
        with open(os.environ["BENCH_CPU_LOG"], "a") as log:
            log.write(json.dumps(row) + "\\n")
    except Exception:
        pass


atexit.register(_record)
"""

PLUGIN = """
import json, os, resource, time

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    before, began = resource.getrusage(resource.RUSAGE_SELF), time.time()
    yield
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    row = {"argv": ["in-process"], "cpu_s": 0.0, "test": item.nodeid, "own_cpu_s": cpu, "began": began}
    row.update(ended=time.time(), worker=os.environ.get("PYTEST_XDIST_WORKER", "main"))
    with open(os.environ["BENCH_CPU_LOG"], "a") as log:
        log.write(json.dumps(row) + "\\n")
"""

KINDS = (  # (what the command line holds, the kind), first match wins
    ("huey_consumer", "MLflow's job runner (huey_consumer)"),
    ("_capture_modules", "MLflow's requirement inference (_capture_modules)"),
    ("fashion_exp/tracking/server.py", "the MLflow server's guard and group leader"),
    ("mlflow/__main__.py server", "mlflow server"),
    ("fashion_exp/tracking/store_server.py", "the MLflow server (store_server)"),
)


def kind_of(argv: list[str]) -> str:
    line = " ".join(argv)
    for text, kind in KINDS:
        if text in line:
            return kind
    if argv and argv[0].endswith("fashion_exp/__main__.py"):
        return f"python -m fashion_exp {argv[1] if len(argv) > 1 else ''}".strip()
    if argv and (argv[0] == "-c" or "pytest" in argv[0]):
        return "pytest, its workers and the tests' launchers (-c)"
    return "other: " + Path(argv[0]).name if argv else "other"


def by_test(rows: list[dict], most: int) -> None:
    """The tests that took the most CPU: in pytest's own worker (setup, call and teardown, measured
    around each test) and in the child processes it started."""
    children: dict[str, list[float]] = defaultdict(list)
    own: dict[str, float] = defaultdict(float)
    for row in rows:
        if "own_cpu_s" in row:
            own[row["test"]] += row["own_cpu_s"]
        elif row.get("test") and kind_of(row["argv"]) != "pytest, its workers and the tests' launchers (-c)":
            children[row["test"]].append(row["cpu_s"])
    tests = set(children) | set(own)
    if not tests:
        return
    total = {test: own.get(test, 0.0) + sum(children.get(test, [])) for test in tests}
    print(f"\n{'test':<90} {'own CPU s':>9} {'children':>8} {'CPU s':>8} {'all CPU s':>9}")
    for test in sorted(tests, key=lambda name: -total[name])[:most]:
        values = children.get(test, [])
        print(f"{test[:90]:<90} {own.get(test, 0.0):>9.1f} {len(values):>8} {sum(values):>8.1f} {total[test]:>9.1f}")
    print(f"{'all tests':<90} {sum(own.values()):>9.1f} {'':>8} {sum(sum(v) for v in children.values()):>8.1f}")


def by_worker(rows: list[dict], started: float) -> None:
    """Each pytest worker's span: when its first test began and its last ended (seconds from the
    start), the time it spent in tests, and its longest files: a worker that ends long before the
    others left cores idle at the end."""
    spans: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        if "began" in row:
            spans[row["worker"]].append(row)
    if not spans:
        return
    print(f"\n{'worker':<8} {'first began':>11} {'last ended':>10} {'in tests':>9}  longest files (s in tests)")
    for worker, tests in sorted(spans.items()):
        files: dict[str, float] = defaultdict(float)
        for row in tests:
            files[row["test"].split("::")[0].removeprefix("tests/")] += row["ended"] - row["began"]
        longest = ", ".join(f"{name} {seconds:.0f}" for name, seconds in sorted(files.items(), key=lambda f: -f[1])[:4])
        first, last = min(r["began"] for r in tests) - started, max(r["ended"] for r in tests) - started
        print(f"{worker:<8} {first:>11.0f} {last:>10.0f} {sum(files.values()):>9.0f}  {longest}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pytest_words", nargs="*", help="words for pytest, after --")
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    parser.add_argument("--tests", type=int, default=15, help="how many tests to list by their child processes' CPU")
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-test-cpu-") as tmp:
        Path(tmp, "sitecustomize.py").write_text(RECORDER)
        Path(tmp, "bench_cpu_plugin.py").write_text(PLUGIN)
        log = Path(tmp, "processes.jsonl")
        env = {**os.environ, "BENCH_CPU_LOG": str(log)}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [tmp, os.environ.get("PYTHONPATH")]))
        started, started_unix = time.monotonic(), time.time()
        plugins = ["-p", "no:cacheprovider", "-p", "bench_cpu_plugin"]
        pytest = [sys.executable, "-m", "pytest", "-q", *plugins, *args.pytest_words]
        done = subprocess.run(pytest, env=env)
        wall = time.monotonic() - started
        rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    for row in rows:  # (a command line may carry a tracking URI's password; --out keeps none)
        row["argv"] = redact_words(row["argv"])
    by_kind: dict[str, list[float]] = defaultdict(list)
    for row in (row for row in rows if "own_cpu_s" not in row):
        by_kind[kind_of(row["argv"])].append(row["cpu_s"])
    total = sum(sum(values) for values in by_kind.values())
    print(f"\npytest exited {done.returncode} after {wall:.0f} s; {len(rows)} processes, {total:.0f} s of CPU")
    print(f"{'kind of process':<55} {'count':>6} {'CPU s':>8} {'share':>6}")
    for kind, values in sorted(by_kind.items(), key=lambda item: -sum(item[1])):
        print(f"{kind:<55} {len(values):>6} {sum(values):>8.1f} {sum(values) / max(total, 1e-9):>6.0%}")
    by_test(rows, args.tests)
    by_worker(rows, started_unix)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"wall_s": wall, "rows": rows}, indent=1))
    return done.returncode


if __name__ == "__main__":
    sys.exit(main())
