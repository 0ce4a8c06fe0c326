"""export-onnx: the Keras model as ONNX in fp32 and in int8, each checked against Keras on every
validation photo (and, on a CPU with BF16 units, the fp32 file on OpenVINO in bf16), and the
predictors `serve` and `predict` run them with.

fp32 must agree with Keras (top-1 on every photo). int8 is the backbone's search recipe
(features/onnx_files.quantize: static QDQ, ranges from training photos spread over the split, the
first convolutions and the head in fp32); it is faster, not equal, so what it costs is measured:
its validation accuracy against Keras'. It `holds` when it loses at most final.int8_tolerance of
accuracy (conf/final). bf16 `holds` when, on the validation photos paired with Keras fp32, the
accuracy it may lose and the share of photos that change class stay under model.auto_accuracy_margin
and model.auto_max_changed (fashion_exp/gate.py, the rule auto's extraction check applies); it is
`exact` when its top-1 agrees on every photo (logged too, with its largest probability
difference). Each backend's speed on those photos is logged too: `serve.backend=auto` serves the
fastest that holds (serving/backends.py)."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fashion_exp.config import Config
from fashion_exp.data.dataset import TRAIN, VALIDATION, scan_configured
from fashion_exp.data.images import Decoder
from fashion_exp.errors import UserError
from fashion_exp.features.onnx_files import OpenVinoSession, calibration, open_session, quantize, spread
from fashion_exp.gate import GateResult, GateRule, judge
from fashion_exp.hardware import cpu_of
from fashion_exp.screen import say
from fashion_exp.tracking import registry
from fashion_exp.tracking.queries import artifact_file
from fashion_exp.tracking.run_logger import RunLogger

ONNX_ARTIFACT = "onnx/model.onnx"
INT8_ARTIFACT = "onnx/model.int8.onnx"
INT8_HOLDS = "fashion_exp.onnx_int8_holds"  # run tag: "true" when the int8 file kept validation accuracy
BF16_EXACT = "fashion_exp.onnx_bf16_exact"  # run tag: "true" when OpenVINO bf16 agreed with Keras on every photo
BF16_HOLDS = "fashion_exp.onnx_bf16_holds"  # run tag: "true" when OpenVINO bf16 passed the gate (gate.py) against Keras
HEAD_OPS = ("GlobalAveragePool", "ReduceMean", "MatMul", "Gemm")  # from the pooling on: the head, in fp32


class OnnxPredictor:
    """Same interface as registry.LoadedModel, running an ONNX file with ONNX Runtime on the CPU, or
    with OpenVINO's CPU plugin at a pinned precision (`openvino`: "bf16" or "f32")."""

    def __init__(self, path: Path | str, like: registry.LoadedModel, openvino: str | None = None):
        if openvino:
            self.session = OpenVinoSession(path, openvino)
            self.precision = self.session.precision  # what the plugin runs (f32 on a CPU without BF16)
        else:
            self.session, self.precision = open_session(path), "f32"
            self.input_name = self.session.get_inputs()[0].name
        self.openvino = openvino
        self.class_names = like.class_names
        self.image_size = like.image_size
        self.interpolation = like.interpolation
        self.name, self.version, self.run_id = like.name, like.version, like.run_id

    def predict(self, images: np.ndarray, batch_size: int | None = None) -> np.ndarray:
        """Probabilities for a batch (both runtimes take any batch size: batch_size is not needed)."""
        if self.openvino:
            return self.session.run(images.astype(np.uint8))
        return self.session.run(None, {self.input_name: images.astype(np.uint8)})[0]


@dataclass
class Compared:
    """One backend against Keras fp32 on every validation photo."""

    backend: str  # onnx | onnx-int8 | openvino-bf16
    precision: str  # what it ran in (OpenVINO runs f32 where bf16 was asked of a CPU without BF16)
    agreement: float  # top-1 agreement with Keras
    max_prob_diff: float  # largest probability difference from Keras
    accuracy: float
    images_per_s: float  # after the first batch
    predicted: list[int] = field(default_factory=list)  # its class for each validation photo


@dataclass
class ExportResult:
    path: str
    int8_path: str
    run_id: str | None
    images: int
    keras_accuracy: float  # on the validation photos
    int8_tolerance: float  # final.int8_tolerance: the accuracy int8 may lose and still hold
    compared: dict[str, Compared] = field(default_factory=dict)
    keras_images_per_s: float = 0.0
    labels: list[int] = field(default_factory=list)  # the validation photos' classes
    keras_predicted: list[int] = field(default_factory=list)
    rule: GateRule | None = None  # what a lower precision must show against Keras (model.auto_*)

    @property
    def max_abs_diff(self) -> float:
        return self.compared["onnx"].max_prob_diff

    @property
    def top1_agreement(self) -> float:
        return self.compared["onnx"].agreement

    @property
    def int8_accuracy(self) -> float:
        return self.compared["onnx-int8"].accuracy

    @property
    def int8_agreement(self) -> float:
        return self.compared["onnx-int8"].agreement

    @property
    def int8_holds(self) -> bool:
        return self.int8_accuracy >= self.keras_accuracy - self.int8_tolerance - 1e-9

    @property
    def bf16(self) -> Compared | None:
        """OpenVINO bf16, where the CPU has BF16 units (model.cpu_features)."""
        return self.compared.get("openvino-bf16")

    @property
    def bf16_exact(self) -> bool:
        return self.bf16 is not None and self.bf16.precision == "bf16" and self.bf16.agreement == 1.0

    @property
    def bf16_gate(self) -> GateResult | None:
        """bf16 against Keras on the validation photos (None without a bf16 run or a rule)."""
        if self.bf16 is None or self.rule is None:
            return None
        return judge(self.labels, self.keras_predicted, self.bf16.predicted, self.rule)

    @property
    def bf16_holds(self) -> bool:
        gate = self.bf16_gate
        return gate is not None and self.bf16.precision == "bf16" and gate.holds

    def metrics(self) -> dict[str, float]:
        """What the model's run logs: each backend's agreement, difference, accuracy and speed."""
        names = {"onnx": "onnx", "onnx-int8": "onnx_int8", "openvino-bf16": "onnx_bf16"}
        logged = {"keras_val_accuracy": self.keras_accuracy, "keras_images_per_s": self.keras_images_per_s}
        for backend, row in self.compared.items():
            prefix = names[backend]
            logged.update(
                {
                    f"{prefix}_top1_agreement": row.agreement,
                    f"{prefix}_max_prob_diff": row.max_prob_diff,
                    f"{prefix}_val_accuracy": row.accuracy,
                    f"{prefix}_images_per_s": row.images_per_s,
                }
            )
        logged["onnx_max_abs_diff"] = self.max_abs_diff  # (the name earlier versions logged)
        return logged


def export(config: Config, model_ref: str) -> ExportResult:
    """Export in fp32 and int8, compare both (and bf16 on a CPU with BF16 units) with Keras on
    every validation photo, log the files and the comparison to the model's run (or write them to
    work_dir for a model folder)."""
    loaded = registry.load(model_ref, config.tracking.uri)
    dataset = scan_configured(config.data, [TRAIN, VALIDATION], config.work_dir)
    decoder = Decoder.for_data(config.data, loaded.image_size, loaded.interpolation)
    with tempfile.TemporaryDirectory() as tmp:
        path, int8_path = Path(tmp) / "model.onnx", Path(tmp) / "model.int8.onnx"
        size = loaded.image_size
        loaded.predict(np.zeros((1, size, size, 3), np.uint8), 1)  # keras exports only a model it has called
        loaded.model.export(str(path), format="onnx", verbose=False)
        photos = calibration(dataset, decoder, config.model)
        count = len(spread(len(dataset.paths(TRAIN)), photos.photos))
        say(f"Quantizing the model to int8 on {count} training photos ...")
        quantize(path, int8_path, photos.load(), float_from=HEAD_OPS)
        backends = {"onnx": OnnxPredictor(path, loaded), "onnx-int8": OnnxPredictor(int8_path, loaded)}
        if cpu_of(config.model.cpu_features).bf16:
            backends["openvino-bf16"] = OnnxPredictor(path, loaded, openvino="bf16")
        result = _compare(loaded, backends, dataset, decoder, config.model.batch_size, config.final.int8_tolerance)
        result.rule = GateRule.of(config.model)
        if loaded.run_id:
            run = RunLogger.reopen(config.tracking.uri, loaded.run_id)
            run.file(path, "onnx")
            run.file(int8_path, "onnx")
            run.metrics(result.metrics())
            holds = {INT8_HOLDS: result.int8_holds, BF16_EXACT: result.bf16_exact, BF16_HOLDS: result.bf16_holds}
            run.tags({tag: str(value).lower() for tag, value in holds.items()})
        else:
            target = Path(config.work_dir)
            target.mkdir(parents=True, exist_ok=True)
            for made in (path, int8_path):
                (target / made.name).write_bytes(made.read_bytes())
            result.path, result.int8_path = str(target / path.name), str(target / int8_path.name)
    return result


def _compare(loaded, backends: dict[str, OnnxPredictor], dataset, decoder, batch_size: int, tolerance: float):
    """Every backend against Keras on every validation photo, each timed after its first batch."""
    paths, labels = dataset.paths(VALIDATION), dataset.labels(VALIDATION)
    names = ["keras", *backends]
    outputs = {name: [] for name in names}
    seconds = dict.fromkeys(names, 0.0)
    timed = 0
    what = f"Comparing {', '.join(backends)} with Keras"
    for batch, images in enumerate(decoder.load_batches(paths, batch_size, what)):
        for name in names:
            started = time.perf_counter()
            got = loaded.predict(images, batch_size) if name == "keras" else backends[name].predict(images)
            seconds[name] += (time.perf_counter() - started) if batch else 0.0
            outputs[name].append(np.asarray(got, np.float32))
        timed += len(images) if batch else 0
    probs = {name: np.concatenate(parts) for name, parts in outputs.items()}
    keras_top = probs["keras"].argmax(1)

    def speed(name: str) -> float:
        return timed / seconds[name] if seconds[name] else float("nan")

    compared = {
        name: Compared(
            name,
            predictor.precision,
            float(np.mean(probs[name].argmax(1) == keras_top)),
            float(np.max(np.abs(probs[name] - probs["keras"]))),
            float(np.mean(probs[name].argmax(1) == labels)),
            speed(name),
            [int(c) for c in probs[name].argmax(1)],
        )
        for name, predictor in backends.items()
    }
    return ExportResult(
        ONNX_ARTIFACT,
        INT8_ARTIFACT,
        loaded.run_id,
        len(paths),
        float(np.mean(keras_top == labels)),
        tolerance,
        compared,
        speed("keras"),
        [int(c) for c in labels],
        [int(c) for c in keras_top],
    )


def load_onnx(model_ref: str, tracking_uri: str, int8: bool = False) -> OnnxPredictor:
    """The ONNX file (fp32, or int8) that export-onnx logged to the model's run, ready to serve."""
    return onnx_predictor(registry.load(model_ref, tracking_uri), tracking_uri, int8)


def onnx_predictor(
    loaded: registry.LoadedModel, tracking_uri: str, int8: bool = False, openvino: str | None = None
) -> OnnxPredictor:
    """The model's fp32 ONNX file (on ONNX Runtime, or on OpenVINO at `openvino` precision) or its int8 file."""
    if not loaded.run_id:
        raise UserError(f"model {loaded.uri} has no MLflow run to hold its ONNX file")
    with artifact_file(tracking_uri, loaded.run_id, INT8_ARTIFACT if int8 else ONNX_ARTIFACT) as path:
        if path is None:
            what = "int8 ONNX file" if int8 else "ONNX file"
            raise UserError(f"model {loaded.uri} has no {what} yet: run `python -m fashion_exp export-onnx` first")
        return OnnxPredictor(path, loaded, openvino)  # (both runtimes read the whole file here: the copy can go)
