"""export-onnx: the Keras model as ONNX in fp32 and in int8, each checked against Keras on every
validation photo, and the ONNX Runtime predictor `serve` runs them with.

fp32 must agree with Keras (top-1 on every photo). int8 is the backbone's search recipe
(features/onnx_files.quantize: static QDQ, ranges from training photos spread over the split, the
first convolutions and the head in fp32); it is faster, not equal, so what it costs is measured:
its validation accuracy against Keras'. It `holds` when it loses at most final.int8_tolerance of
accuracy (conf/final), and only then does `serve.backend=auto` serve it."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fashion_exp.config import Config
from fashion_exp.data.dataset import TRAIN, VALIDATION, scan_configured
from fashion_exp.data.images import Decoder
from fashion_exp.errors import UserError
from fashion_exp.features.onnx_files import calibration, open_session, quantize, spread
from fashion_exp.tracking import registry
from fashion_exp.tracking.queries import download_artifact
from fashion_exp.tracking.run_logger import RunLogger

ONNX_ARTIFACT = "onnx/model.onnx"
INT8_ARTIFACT = "onnx/model.int8.onnx"
INT8_HOLDS = "fashion_exp.onnx_int8_holds"  # run tag: "true" when the int8 file kept validation accuracy
HEAD_OPS = ("GlobalAveragePool", "ReduceMean", "MatMul", "Gemm")  # from the pooling on: the head, in fp32


class OnnxPredictor:
    """Same interface as registry.LoadedModel, running an ONNX file with ONNX Runtime on the CPU."""

    def __init__(self, path: Path | str, like: registry.LoadedModel):
        self.session = open_session(path)
        self.input_name = self.session.get_inputs()[0].name
        self.class_names = like.class_names
        self.image_size = like.image_size
        self.interpolation = like.interpolation
        self.name, self.version, self.run_id = like.name, like.version, like.run_id

    def predict(self, images: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Probabilities for a batch (ONNX Runtime takes any batch size: batch_size is not needed)."""
        return self.session.run(None, {self.input_name: images.astype(np.uint8)})[0]


@dataclass
class ExportResult:
    path: str
    int8_path: str
    run_id: str | None
    images: int
    max_abs_diff: float
    top1_agreement: float
    keras_accuracy: float  # on the validation photos
    int8_accuracy: float
    int8_agreement: float  # top-1 agreement of int8 with Keras
    int8_tolerance: float  # final.int8_tolerance: the accuracy int8 may lose and still hold

    @property
    def int8_holds(self) -> bool:
        return self.int8_accuracy >= self.keras_accuracy - self.int8_tolerance - 1e-9


def export(config: Config, model_ref: str, echo=print) -> ExportResult:
    """Export in fp32 and int8, compare both with Keras on every validation photo, log the files
    and the comparison to the model's run (or write them to work_dir for a model folder)."""
    loaded = registry.load(model_ref, config.tracking.uri)
    dataset = scan_configured(config.data, [TRAIN, VALIDATION], config.work_dir)
    decoder = Decoder.for_data(config.data, loaded.image_size, loaded.interpolation)
    with tempfile.TemporaryDirectory() as tmp:
        path, int8_path = Path(tmp) / "model.onnx", Path(tmp) / "model.int8.onnx"
        size = loaded.image_size
        loaded.predict(np.zeros((1, size, size, 3), np.uint8), 1)  # keras exports only a model it has called
        loaded.model.export(str(path), format="onnx", verbose=False)
        echo(f"Quantizing the model to int8 on {len(spread(len(dataset.paths(TRAIN))))} training photos ...")
        quantize(path, int8_path, calibration(dataset, decoder).load(), float_from=HEAD_OPS)
        fp32, int8 = OnnxPredictor(path, loaded), OnnxPredictor(int8_path, loaded)
        result = _compare(loaded, fp32, int8, dataset, decoder, config.model.batch_size, config.final.int8_tolerance)
        if loaded.run_id:
            run = RunLogger.reopen(config.tracking.uri, loaded.run_id)
            run.file(path, "onnx")
            run.file(int8_path, "onnx")
            run.metrics(
                {
                    "onnx_max_abs_diff": result.max_abs_diff,
                    "onnx_top1_agreement": result.top1_agreement,
                    "onnx_int8_top1_agreement": result.int8_agreement,
                    "onnx_int8_val_accuracy": result.int8_accuracy,
                    "keras_val_accuracy": result.keras_accuracy,
                }
            )
            run.tags({INT8_HOLDS: str(result.int8_holds).lower()})
        else:
            target = Path(config.work_dir)
            target.mkdir(parents=True, exist_ok=True)
            for made in (path, int8_path):
                (target / made.name).write_bytes(made.read_bytes())
            result.path, result.int8_path = str(target / path.name), str(target / int8_path.name)
    return result


def _compare(
    loaded, fp32: OnnxPredictor, int8: OnnxPredictor, dataset, decoder, batch_size: int, tolerance: float
) -> ExportResult:
    """Both ONNX files against Keras on every validation photo; int8 holds within `tolerance` of accuracy."""
    paths, labels = dataset.paths(VALIDATION), dataset.labels(VALIDATION)
    diffs, agree, int8_agree, keras_right, int8_right, seen = [], 0, 0, 0, 0, 0
    for images in decoder.load_batches(paths, batch_size, "Comparing ONNX fp32 and int8 with Keras"):
        truth = labels[seen : seen + len(images)]
        seen += len(images)
        a, b, q = loaded.predict(images, batch_size), fp32.predict(images), int8.predict(images)
        diffs.append(float(np.max(np.abs(a - b))))
        agree += int(np.sum(a.argmax(1) == b.argmax(1)))
        int8_agree += int(np.sum(a.argmax(1) == q.argmax(1)))
        keras_right += int(np.sum(a.argmax(1) == truth))
        int8_right += int(np.sum(q.argmax(1) == truth))
    n = len(paths)
    return ExportResult(
        ONNX_ARTIFACT,
        INT8_ARTIFACT,
        loaded.run_id,
        n,
        max(diffs),
        agree / n,
        keras_right / n,
        int8_right / n,
        int8_agree / n,
        tolerance,
    )


def load_onnx(model_ref: str, tracking_uri: str, int8: bool = False) -> OnnxPredictor:
    """The ONNX file (fp32, or int8) that export-onnx logged to the model's run, ready to serve."""
    return onnx_predictor(registry.load(model_ref, tracking_uri), tracking_uri, int8)


def onnx_predictor(loaded: registry.LoadedModel, tracking_uri: str, int8: bool = False) -> OnnxPredictor:
    if not loaded.run_id:
        raise UserError(f"model {loaded.uri} has no MLflow run to hold its ONNX file")
    path = download_artifact(tracking_uri, loaded.run_id, INT8_ARTIFACT if int8 else ONNX_ARTIFACT)
    if path is None:
        what = "int8 ONNX file" if int8 else "ONNX file"
        raise UserError(f"model {loaded.uri} has no {what} yet: run `python -m fashion_exp export-onnx` first")
    return OnnxPredictor(path, loaded)
