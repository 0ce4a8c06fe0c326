"""A staged tune (preset=best) in MLflow: one parent run for the whole command, its stages' search
runs nested under it, their trials under them. The tune run holds what a user asks of the tune as
a whole: the plan it printed, the minutes each stage spent, what the budget left out, each
stage's best and the tune's best (the last stage's, which train-final trains from)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from fashion_exp.tracking.experiments import connect
from fashion_exp.tracking.run_logger import RunLogger, source_tags, status_for
from fashion_exp.tracking.search_runs import EXPERIMENT_NOTE
from fashion_exp.tracking.tags import KIND, NOTE, PARENT, TUNE_ID


def describe_tune(objective: str) -> str:
    return (
        "A staged tune (preset=best): its stages' searches are nested runs (tag fashion_exp.stage), each with "
        f"a nested run per trial. plan.txt: the plan it printed; `stage<n>_minutes`: each stage's time; "
        f"`stage<n>_{objective}`: each stage's best trial's score (stage 1's is cross-validated); `{objective}`: "
        "the last stage's best, the search train-final trains from."
    )


class TuneRun:
    """The tune's parent run: new, or the one a rerun of the same command (tune id) left."""

    def __init__(self, uri: str, experiment: str, tune_id: str, objective: str, started: float | None = None):
        client, experiment_id = connect(uri, experiment, EXPERIMENT_NOTE)
        found = client.search_runs(
            [experiment_id],
            filter_string=f"tags.`{TUNE_ID}` = '{tune_id}' and tags.`{KIND}` = 'tune'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        self.objective = objective
        self.reopened = bool(found)
        if found:
            run_id = found[0].info.run_id
            client.update_run(run_id, status="RUNNING")
        else:
            at = None if started is None else int(started * 1000)
            tags = {**source_tags(), TUNE_ID: tune_id, KIND: "tune", NOTE: describe_tune(objective)}
            name = f"tune-{tune_id[:6]}-{time.strftime('%Y%m%d-%H%M%S')}"
            run_id = client.create_run(experiment_id, run_name=name, tags=tags, start_time=at).info.run_id
        self.run = RunLogger(client, run_id)

    @property
    def run_id(self) -> str:
        return self.run.run_id

    def stage_tags(self) -> dict[str, str]:
        """Tags that nest a stage's search run under this run."""
        return {PARENT: self.run_id}

    def log_plan(self, params: dict[str, object], lines: list[str]) -> None:
        self.run.params(params)
        self.run.text("\n".join(lines) + "\n", "plan.txt")

    def log_stages(self, spent: dict[str, float], best: dict[str, float | None], skipped: list[str]) -> None:
        """Each stage's minutes (every run of the command) and best score, what was skipped; the
        tune's score is the best of the fine-tuning stages (stage 2 and the ladder's), or stage 1's."""
        self.run.metrics({f"{stage}_minutes": minutes for stage, minutes in spent.items()})
        scores = {f"{stage}_{self.objective}": score for stage, score in best.items() if score is not None}
        tuned = [score for stage, score in best.items() if score is not None and stage != "stage1"]
        tuned = tuned or [score for score in best.values() if score is not None]
        pick = min if self.objective == "val_loss" else max
        self.run.metrics({**scores, **({self.objective: pick(tuned)} if tuned else {})})
        self.run.text("\n".join(skipped) + "\n" if skipped else "nothing: every stage ran to its end\n", "skipped.txt")

    @contextmanager
    def recording(self) -> Iterator[TuneRun]:
        """FINISHED when the block completes, KILLED on Ctrl-C, FAILED on an error. (Its stages'
        runs record the system metrics.)"""
        try:
            yield self
        except BaseException as err:
            self.run.end(status_for(err))
            raise
        self.run.end("FINISHED")
