"""export-onnx: the Keras model as ONNX, checked against Keras on the validation photos, and an
ONNX Runtime predictor for `serve backend=onnx`."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fashion_exp.config import Config
from fashion_exp.data.dataset import VALIDATION, scan_configured
from fashion_exp.data.images import Decoder
from fashion_exp.errors import UserError
from fashion_exp.tracking import registry
from fashion_exp.tracking.runs import RunLogger, download_artifact

ONNX_ARTIFACT = "onnx/model.onnx"


class OnnxPredictor:
    """Same interface as registry.LoadedModel, running an ONNX file with ONNX Runtime on the CPU."""

    def __init__(self, path: Path | str, like: registry.LoadedModel):
        import onnxruntime as ort

        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
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
    run_id: str | None
    images: int
    max_abs_diff: float
    top1_agreement: float


def export(config: Config, model_ref: str, echo=print) -> ExportResult:
    """Export, compare with Keras on every validation photo, log the file to the model's run."""
    loaded = registry.load(model_ref, config.tracking.uri)
    dataset = scan_configured(config.data, [VALIDATION], config.work_dir)
    decoder = Decoder.for_data(config.data, loaded.image_size, loaded.interpolation)
    batch_size = config.model.batch_size
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        size = loaded.image_size
        loaded.predict(np.zeros((1, size, size, 3), np.uint8), 1)  # keras exports only a model it has called
        loaded.model.export(str(path), format="onnx", verbose=False)
        onnx = OnnxPredictor(path, loaded)
        paths = dataset.paths(VALIDATION)
        diffs, agree = [], 0
        for images in decoder.load_batches(paths, batch_size, "Comparing ONNX with Keras"):
            a, b = loaded.predict(images, batch_size), onnx.predict(images)
            diffs.append(float(np.max(np.abs(a - b))))
            agree += int(np.sum(a.argmax(1) == b.argmax(1)))
        result = ExportResult(ONNX_ARTIFACT, loaded.run_id, len(paths), max(diffs), agree / len(paths))
        if loaded.run_id:
            run = RunLogger.reopen(config.tracking.uri, loaded.run_id)
            run.file(path, "onnx")
            run.metrics({"onnx_max_abs_diff": result.max_abs_diff, "onnx_top1_agreement": result.top1_agreement})
        else:
            target = Path(config.work_dir) / "model.onnx"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
            result.path = str(target)
    return result


def load_onnx(model_ref: str, tracking_uri: str) -> OnnxPredictor:
    """The ONNX file that export-onnx logged to the model's run, ready to serve."""
    loaded = registry.load(model_ref, tracking_uri)
    if not loaded.run_id:
        raise UserError(f"model {model_ref} has no MLflow run to hold its ONNX file")
    path = download_artifact(tracking_uri, loaded.run_id, ONNX_ARTIFACT)
    if path is None:
        raise UserError(f"model {model_ref} has no ONNX file yet: run `python -m fashion_exp export-onnx` first")
    return OnnxPredictor(path, loaded)
