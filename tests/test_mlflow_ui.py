"""The link tune prints opens a fresh search in mlflow ui's model-training runs view (real MLflow
server, headless Chromium). Without ?workflowType=machine_learning MLflow 3.17 opens its GenAI
overview, whatever the experiment's mlflow.experimentKind tag says."""

from __future__ import annotations

import pytest

from fashion_exp.config import load_config
from fashion_exp.search.run import run_search
from fashion_exp.tracking.experiments import ui_link
from fashion_exp.tracking.server import shared_store
from tests.test_serve import CHROMIUM

pytestmark = pytest.mark.slow  # a real MLflow server and headless Chromium


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (.ci/run installs it)")
def test_a_fresh_search_opens_in_the_runs_view(overrides, tmp_path):
    from mlflow.tracking import MlflowClient
    from playwright.sync_api import sync_playwright

    config = load_config([*overrides, "tuner.max_trials=1", "tuner.epochs=1"])
    result = run_search(config, echo=lambda *_: None)
    client = MlflowClient(config.tracking.uri)
    parent = client.get_run(result.parent_run_id)
    with shared_store(config.tracking.uri, tmp_path / "server.log", echo=lambda *_: None) as url:
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=CHROMIUM,
                args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"],
            )
            page = browser.new_page()
            page.goto(ui_link(url, parent.info.experiment_id))
            page.get_by_text(parent.info.run_name).first.wait_for(timeout=60_000)  # the runs table lists the search
            page.get_by_text("Run Name").first.wait_for(timeout=10_000)
            page.get_by_text("data/train").first.wait_for(timeout=10_000)  # the Dataset column: our splits
            page.screenshot(path=str(tmp_path / "mlflow-ui.png"))
            browser.close()
    assert client.get_experiment(parent.info.experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
