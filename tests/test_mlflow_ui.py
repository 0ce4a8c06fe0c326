"""What a data scientist sees in MLflow's UI after tune and train-final (a real `python -m fashion_exp
ui` server, headless Chromium): the search experiment opens on its runs table from MLflow's home
page, a trial's name says what it tried, the final run lists its logged model, a registry version
shows its validation accuracy and description, and the parent run has the importance plot."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from fashion_exp.children import free_port
from fashion_exp.config import load_config
from fashion_exp.final.train import train_final
from fashion_exp.search.run import run_search
from fashion_exp.tracking.experiments import ui_link
from fashion_exp.tracking.server import healthy
from tests.test_serve import CHROMIUM

pytestmark = pytest.mark.slow  # a real MLflow server and headless Chromium

FINAL = ["final.image_size=32", "final.epochs=1", "final.views=1"]


@contextmanager
def subprocess_ui(overrides: list[str], cwd: Path) -> Iterator[str]:
    """`python -m fashion_exp ui` on the test's store, as a user starts it; yields its URL."""
    port = free_port()
    with open(cwd / "ui.out", "w") as log:
        server = subprocess.Popen(
            [sys.executable, "-m", "fashion_exp", "ui", "--port", str(port), *overrides],
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while not healthy(url):
            assert server.poll() is None and time.monotonic() < deadline, (cwd / "ui.out").read_text()[-2000:]
            time.sleep(0.5)
        yield url
    finally:
        server.send_signal(signal.SIGINT)  # Ctrl-C, as a user stops it: its server goes too
        server.wait(timeout=60)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_the_pages_a_data_scientist_reads(overrides, tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient
    from playwright.sync_api import sync_playwright

    monkeypatch.chdir(tmp_path)  # the runs' artifacts (./mlruns) where the ui's server reads them
    config = load_config([*overrides, "tuner.max_trials=3", "tuner.epochs=2", *FINAL])
    search = run_search(config)
    final = train_final(config)
    client = MlflowClient(config.tracking.uri)
    parent = client.get_run(search.parent_run_id)
    trial = client.search_runs([search.experiment_id], f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")[0]
    plots = [a.path for a in client.list_artifacts(parent.info.run_id, "plots")]
    assert "plots/hyperparameter_importance.png" in plots and "plots/parallel_coordinates.png" in plots
    assert any(key.startswith("importance.") for key in parent.data.metrics)
    final_experiment = client.get_run(final.run_id).info.experiment_id
    with subprocess_ui(overrides, tmp_path) as url, sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
        )
        page = browser.new_page()
        try:
            # MLflow's home page -> the search experiment: its runs table, not the GenAI overview
            page.goto(f"{url}/#/")
            page.get_by_role("link", name=config.tracking.experiment, exact=True).first.click(timeout=60_000)
            page.wait_for_url(f"**/experiments/{search.experiment_id}/runs**", timeout=60_000)
            page.get_by_text(parent.info.run_name).first.wait_for(timeout=60_000)
            # the link tune prints: this search's trials, best first, the score and what was searched as columns
            link = ui_link(config.tracking, search.experiment_id, search.parent_run_id).split(":5000/", 1)[1]
            page.goto(f"{url}/{link}")
            assert_trials_best_first(page, client.search_runs([search.experiment_id]), parent.info.run_id)
            page.screenshot(path=str(tmp_path / "runs-table.png"))
            # a trial's page: its name says what it tried
            assert trial.info.run_name.startswith(f"t{trial.data.tags['fashion_exp.trial_id']} lr=")
            page.goto(f"{url}/#/experiments/{search.experiment_id}/runs/{trial.info.run_id}")
            page.get_by_text(trial.info.run_name).first.wait_for(timeout=60_000)
            # the final run's page lists its logged model
            page.goto(f"{url}/#/experiments/{final_experiment}/runs/{final.run_id}")
            page.get_by_text("Logged models").first.wait_for(timeout=60_000)
            page.get_by_role("link", name=config.final.registered_model).first.wait_for(timeout=60_000)
            # the registry version: its validation accuracy and its description
            page.goto(f"{url}/#/models/{config.final.registered_model}/versions/{final.version}")
            page.get_by_text("val_accuracy").first.wait_for(timeout=60_000)
            page.get_by_text("what promote ranks versions by", exact=False).first.wait_for(timeout=60_000)
        finally:
            page.screenshot(path=str(tmp_path / "mlflow-ui.png"))
            browser.close()
    assert ui_link(config.tracking, search.experiment_id).endswith(
        f"#/experiments/{search.experiment_id}/runs?workflowType=machine_learning"
    )


SCORE = '[col-id="metrics.`val_accuracy`"][role="gridcell"]'
# the score column top to bottom (AG Grid places rows by their row-index, not in document order)
SHOWN = (
    f"() => [...document.querySelectorAll('{SCORE}')]"
    ".map(c => [parseInt(c.closest('[role=row]').getAttribute('row-index')), parseFloat(c.innerText)])"
    ".sort((a, b) => a[0] - b[0]).map(p => p[1])"
)


def assert_trials_best_first(page, runs: list, parent_id: str) -> None:
    """The runs table holds the search's trials alone (not its parent), sorted by val_accuracy, best
    first, with val_accuracy and each searched hyperparameter as a column."""
    trials = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id]
    page.locator(SCORE).first.wait_for(timeout=60_000)
    best_first = (  # (the table first shows the runs as fetched, then sorts them)
        f"() => {{ const v = ({SHOWN})();"
        f" return v.length === {len(trials)} && v.every((x, i) => !i || v[i - 1] >= x); }}"
    )
    page.wait_for_function(best_first, timeout=60_000)
    shown = page.evaluate(SHOWN)
    best = max(t.data.metrics["val_accuracy"] for t in trials)
    assert shown == sorted(shown, reverse=True) and abs(shown[0] - best) < 1e-3, shown
    for name in ("learning_rate", "size_inner", "droprate"):
        assert page.locator(f'[col-id="params.`{name}`"]').count() > 0, name
