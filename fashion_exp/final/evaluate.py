"""evaluate: a model on the held-out test split: accuracy, loss, per-class table, confusion matrix."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fashion_exp.config import Config
from fashion_exp.data.dataset import TEST, Dataset, scan_configured
from fashion_exp.data.images import Decoder
from fashion_exp.errors import DataError
from fashion_exp.screen import say
from fashion_exp.tracking import plots, registry
from fashion_exp.tracking.queries import latest_final_run
from fashion_exp.tracking.run_logger import RunLogger


@dataclass
class Evaluation:
    accuracy: float
    loss: float
    confusion: np.ndarray
    per_class: list[dict]  # {class, precision, recall, f1, support}
    class_names: list[str]


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, n_classes: int) -> np.ndarray:
    """Counts: rows are true classes, columns predicted classes."""
    matrix = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


def per_class_metrics(matrix: np.ndarray, class_names: list[str]) -> list[dict]:
    """Precision, recall, F1 and support per class from a confusion matrix (0 where undefined)."""
    rows = []
    for i, name in enumerate(class_names):
        tp = matrix[i, i]
        predicted, actual = matrix[:, i].sum(), matrix[i, :].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / actual if actual else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append(
            {
                "class": name,
                "precision": float(precision),
                "recall": float(recall),
                "f1": float(f1),
                "support": int(actual),
            }
        )
    return rows


def score(probabilities: np.ndarray, labels: np.ndarray, class_names: list[str]) -> Evaluation:
    """All test metrics from predicted probabilities (n, classes) and true labels (n,)."""
    predicted = probabilities.argmax(axis=1)
    picked = probabilities[np.arange(len(labels)), labels]
    loss = float(-np.mean(np.log(np.clip(picked, 1e-7, 1.0))))
    matrix = confusion_matrix(labels, predicted, len(class_names))
    return Evaluation(
        float(np.mean(predicted == labels)), loss, matrix, per_class_metrics(matrix, class_names), class_names
    )


def table(evaluation: Evaluation) -> str:
    lines = [f"{'class':<12}{'precision':>10}{'recall':>10}{'f1':>10}{'support':>10}"]
    for row in evaluation.per_class:
        lines.append(
            f"{row['class']:<12}{row['precision']:>10.3f}{row['recall']:>10.3f}{row['f1']:>10.3f}{row['support']:>10}"
        )
    total = sum(r["support"] for r in evaluation.per_class)
    lines.append(f"{'accuracy':<12}{'':>20}{evaluation.accuracy:>10.4f}{total:>10}")
    lines.append(f"{'loss':<12}{'':>20}{evaluation.loss:>10.4f}")
    return "\n".join(lines)


def latest_model(config: Config) -> str:
    """The model of the latest train-final run, as a runs:/ URI."""
    return f"runs:/{latest_final_run(config.tracking.uri, config.final.experiment)}/{registry.MODEL_ARTIFACT}"


def evaluate(config: Config, model_ref: str | None) -> tuple[Evaluation, registry.LoadedModel]:
    """Evaluate a model (URI, path, or the latest train-final run's) on the test split; log to its run."""
    if model_ref is None:
        model_ref = latest_model(config)
    loaded = registry.load(model_ref, config.tracking.uri)
    dataset = _test_split(config, loaded)
    decoder = Decoder.for_data(config.data, loaded.image_size, loaded.interpolation)
    probabilities = _predict(loaded, decoder, dataset.paths(TEST), config.model.batch_size)
    result = score(probabilities, dataset.labels(TEST), loaded.class_names)
    say(table(result))
    if loaded.run_id:
        run = RunLogger.reopen(config.tracking.uri, loaded.run_id)
        _log_scores(run, dataset.describe(TEST), result)
        grid = _misclassified(decoder, dataset.paths(TEST), dataset.labels(TEST), probabilities, loaded.class_names)
        if grid is not None:
            run.figure(grid, "evaluation/misclassified.png")
        versions = registry.record_test_accuracy(
            config.tracking.uri, config.final.registered_model, loaded.run_id, result.accuracy, result.loss
        )
        say(_logged(loaded.run_id, versions, result))
    return result, loaded


def _test_split(config: Config, loaded: registry.LoadedModel) -> Dataset:
    """The scanned test split; DataError when its classes are not the model's."""
    dataset = scan_configured(config.data, [TEST], config.work_dir)
    if dataset.classes != loaded.class_names:
        raise DataError(f"test classes {dataset.classes} differ from the model's {loaded.class_names}")
    return dataset


def _predict(loaded: registry.LoadedModel, decoder: Decoder, paths: list[Path], batch_size: int) -> np.ndarray:
    """The model's probabilities (n, classes) for every photo, batch_size at a time, with a progress bar."""
    batches = decoder.load_batches(paths, batch_size, f"Evaluating on {TEST}")
    return np.concatenate([loaded.predict(images, batch_size) for images in batches])


def _log_scores(run: RunLogger, test: dict, result: Evaluation) -> None:
    """The test split as the run's input; accuracy, loss and per-class F1 (linked to the run's model);
    the per-class table, the report and the confusion matrix as files."""
    run.datasets([test])
    per_class = {f"test_f1.{r['class']}": r["f1"] for r in result.per_class}
    run.metrics({"test_accuracy": result.accuracy, "test_loss": result.loss, **per_class}, model_of=test)
    run.json(result.per_class, "evaluation/per_class.json")
    run.text(table(result), "evaluation/report.txt")
    title = f"test confusion matrix (accuracy {result.accuracy:.4f})"
    run.figure(plots.confusion_matrix(result.confusion, result.class_names, title), "evaluation/confusion_matrix.png")


def _misclassified(decoder: Decoder, paths: list[Path], labels: np.ndarray, probabilities: np.ndarray, names):
    """A grid of the first 36 misclassified photos with their true and predicted class; None if none is wrong."""
    wrong = np.flatnonzero(probabilities.argmax(1) != labels)
    if not len(wrong):
        return None
    shown = wrong[:36]
    return plots.image_grid(
        [decoder.load(paths[i]) for i in shown],
        [
            f"true {names[labels[i]]}\npred {names[probabilities[i].argmax()]} {probabilities[i].max():.2f}"
            for i in shown
        ],
        f"misclassified test photos ({len(wrong)} in all)",
    )


def _logged(run_id: str, versions: list[str], result: Evaluation) -> str:
    """Where the results went: the run, and the registry versions tagged with the test scores."""
    tagged = (
        f"; registry version(s) {', '.join(versions)} tagged "
        f"test_accuracy={result.accuracy:.4f}, test_loss={result.loss:.4f}"
    )
    return f"Logged to run {run_id}" + (tagged if versions else "")
