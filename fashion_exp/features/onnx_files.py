"""The backbone's ONNX files in work_dir/backbones: exported once, quantized to int8 once, each
made by one process while the others wait for it (claimed like feature cache entries), and
written under a temporary name, then renamed into place; and the sessions that run them (ONNX
Runtime, or OpenVINO's CPU plugin at a pinned precision).

int8 is ONNX Runtime's static QDQ quantization: int8 per-channel weights (7-bit range on a CPU
without VNNI, see quantize), uint8 activations with MinMax ranges from model.int8_calibration_photos
training photos, the first KEEP_FLOAT convolutions left in fp32; a quantized backbone whose features
are not fp32's (mean cosine under model.int8_min_cosine) is refused.
Measured on clothing-dataset-small at 150px (docs/results.md, "Extraction runtimes"): quantizing those
two convolutions, which see the raw [-1, 1] pixels, costs most of the error (mean feature cosine to
fp32 0.92 with them, 0.98 without); more photos or percentile/entropy ranges did not help.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from fashion_exp import locks
from fashion_exp.config import ModelConfig
from fashion_exp.data.dataset import TRAIN, Dataset
from fashion_exp.data.images import Decoder
from fashion_exp.errors import UserError
from fashion_exp.features.backbone import Backbone
from fashion_exp.hardware import Cpu

KEEP_FLOAT = 2
CALIBRATION_BATCH = 8


@dataclass(frozen=True)
class Calibration:
    """The photos int8 ranges are measured on: `identity` names them (the training split's
    fingerprint and the decoding) without decoding anything; `load` decodes them (`photos` of
    them at most); and the mean feature cosine to fp32's on them a quantized backbone must keep."""

    identity: str
    load: Callable[[], np.ndarray]
    photos: int
    min_cosine: float


def calibration(dataset: Dataset, decoder: Decoder, model: ModelConfig) -> Calibration:
    """int8 calibration photos: training photos spread over the (class-sorted) split, undistorted."""
    paths, count = dataset.paths(TRAIN), model.int8_calibration_photos

    def load() -> np.ndarray:
        return np.stack([decoder.load(paths[i]) for i in spread(len(paths), count)])

    return Calibration(f"{dataset.fingerprint([TRAIN])}-{decoder.key}", load, count, model.int8_min_cosine)


def spread(n_items: int, count: int) -> list[int]:
    """`count` indices spread evenly over n_items (every class of a class-sorted split is seen)."""
    return sorted({int(i) for i in np.linspace(0, n_items - 1, min(count, n_items))})


class OnnxFiles:
    def __init__(self, directory: Path | str):
        self.directory = Path(directory)

    def fp32(self, backbone: Backbone) -> Path:
        path = self.directory / f"{backbone.fingerprint}-{backbone.image_size}px.onnx"
        return self.make(path, "Exporting the backbone to ONNX", lambda tmp: _export(backbone, tmp))

    def int8_key(self, backbone: Backbone, calibration: Calibration, cpu: Cpu) -> str:
        """The int8 recipe's name: calibration, ONNX Runtime's version and the CPU flags that change
        its kernels' numbers (VNNI: full-range weights, else 7-bit: int8_reduce_range)."""
        import onnxruntime

        recipe = {
            "calibration": calibration.identity,
            "photos": calibration.photos,
            "keep_float": KEEP_FLOAT,
            "method": "minmax-qdq-per-channel" + ("-reduce-range" if int8_reduce_range(cpu) else ""),
            "onnxruntime": onnxruntime.__version__,
        }
        if not int8_reduce_range(cpu):  # (AVX2 machines keep their old key: the recipe there is unchanged)
            recipe["cpu"] = cpu.key
        return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]

    def int8(self, backbone: Backbone, calibration: Calibration, cpu: Cpu) -> Path:
        fp32 = self.fp32(backbone)
        key = self.int8_key(backbone, calibration, cpu)
        path = self.directory / f"{backbone.fingerprint}-{backbone.image_size}px-int8-{key}.onnx"
        what = f"Quantizing the backbone to int8 on {calibration.photos} training photos"

        def write(tmp: Path) -> None:
            images = calibration.load()
            quantize(fp32, tmp, images, reduce_range=int8_reduce_range(cpu))
            measured = cosine(fp32, tmp, images)
            _checked(measured, calibration.min_cosine)
            _write_atomically(path.with_suffix(".json"), json.dumps({"cosine": measured}))  # before the file itself

        return self.make(path, what, write)

    def int8_cosine(self, backbone: Backbone, calibration: Calibration, cpu: Cpu) -> float:
        """Mean cosine of the int8 backbone's features to fp32's on the calibration photos
        (quantizing first if needed). An int8 file without that record (made by a version that
        kept none, or whose record was lost) is measured again and the record written."""
        path = self.int8(backbone, calibration, cpu)
        record = path.with_suffix(".json")
        try:
            return float(json.loads(record.read_text())["cosine"])
        except (OSError, ValueError, KeyError, TypeError):
            tqdm.write(f"Measuring {path.name} against fp32 on the calibration photos (it has no record) ...")
            measured = cosine(self.fp32(backbone), path, images=calibration.load())
            _write_atomically(record, json.dumps({"cosine": measured}))
            return measured

    def make(self, path: Path, what: str, write: Callable[[Path], None]) -> Path:
        if path.is_file():
            return path
        path.parent.mkdir(parents=True, exist_ok=True)
        with locks.exclusive(
            self.directory / "claims" / f"{path.stem}.lock",
            f"the backbone file {path.name}",
            wait=float("inf"),
            on_wait=lambda holder: tqdm.write(locks.waiting_line(holder, f"is writing {path}")),
        ):
            if path.is_file():  # made by the process we waited for
                return path
            tqdm.write(f"{what} (once; kept in {self.directory}) ...")
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            try:
                write(tmp)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
        return path


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _checked(measured: float, least: float) -> None:
    """Refuse an int8 backbone whose features left fp32's (nothing is kept: the file is not written)."""
    if measured < least:
        raise UserError(
            f"the int8 backbone's features are not fp32's (mean cosine {measured:.3f} < {least} on the "
            "calibration photos, model.int8_min_cosine): pass model.runtime=onnx"
        )


def _export(backbone: Backbone, target: Path) -> None:
    size = backbone.image_size
    backbone.model.predict_on_batch(np.zeros((1, size, size, 3), np.uint8))  # keras exports only a called model
    backbone.model.export(str(target), format="onnx", verbose=False)


class _Batches:
    """onnxruntime's CalibrationDataReader protocol over an array of images."""

    def __init__(self, images: np.ndarray, input_name: str):
        self._feeds = iter(
            {input_name: images[i : i + CALIBRATION_BATCH]} for i in range(0, len(images), CALIBRATION_BATCH)
        )

    def get_next(self):
        return next(self._feeds, None)


def int8_reduce_range(cpu: Cpu) -> bool:
    """Whether int8 weights use 7 of their 8 bits here: yes without VNNI, where ONNX Runtime's u8s8
    kernels saturate on full-range weights (see quantize); no where VNNI's dot products do not."""
    return not cpu.vnni


def quantize(
    fp32: Path, target: Path, images: np.ndarray, float_from: tuple[str, ...] = (), reduce_range: bool = True
) -> None:
    """Write the int8 (static QDQ) version of the ONNX file fp32 to target, ranges measured on
    `images`. The first KEEP_FLOAT convolutions stay fp32, and so does every node from the first
    one whose op type is in float_from to the end (a classifier's head, softmax included: int8
    probabilities come in steps of 1/255 and tie). With reduce_range (int8_reduce_range: a CPU
    without VNNI) weights use 7 of their 8 bits: with full-range int8 weights, ONNX Runtime's u8s8
    convolutions saturate on AVX2 kernels and Xception's 299px features came out unrelated to
    fp32's (mean cosine 0.18; 0.954 with reduce_range, and 0.963 -> 0.988 at 150px); with VNNI,
    full range measured 0.995 against 0.992 (issue 28's table). `cosine` measures what the file lost."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared))
        graph = onnx.load(str(prepared)).graph
        nodes = list(graph.node)  # names after pre-processing's fusions, in topological order
        convolutions = [node.name for node in nodes if node.op_type == "Conv"]
        tail = next((i for i, node in enumerate(nodes) if node.op_type in float_from), len(nodes))
        input_name = graph.input[0].name
        quantize_static(
            str(prepared),
            str(target),
            _Batches(images, input_name),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=reduce_range,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=convolutions[:KEEP_FLOAT] + [node.name for node in nodes[tail:]],
        )


def cosine(fp32: Path, int8: Path, images: np.ndarray) -> float:
    """mean_cosine of the two ONNX files' outputs on `images`."""
    outputs = []
    for path in (fp32, int8):
        session = open_session(path)
        outputs.append(session.run(None, {session.get_inputs()[0].name: images})[0])
    return mean_cosine(*outputs)


def mean_cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over rows of the cosine between a's and b's rows (each row flattened)."""
    a, b = a.reshape(len(a), -1), b.reshape(len(b), -1)
    return float(np.mean(np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1) + 1e-12)))


def session_options():
    """ONNX Runtime options: as many threads as TensorFlow would use (search workers share the CPU)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = int(os.environ.get("TF_NUM_INTRAOP_THREADS", "0"))
    return options


def open_session(path: Path | str):
    """An ONNX Runtime CPU session on the file `path`, with session_options()."""
    import onnxruntime as ort

    return ort.InferenceSession(str(path), session_options(), providers=["CPUExecutionProvider"])


class OpenVinoSession:
    """An ONNX file compiled by OpenVINO's CPU plugin at a pinned inference precision ("f32" or
    "bf16": pinned both ways, since the plugin's default is bf16 where the CPU has it). `precision`
    is what the plugin runs: "f32" where bf16 was asked of a CPU without BF16 units."""

    def __init__(self, path: Path | str, precision: str):
        import threading

        core = _openvino_core()
        settings = {"INFERENCE_PRECISION_HINT": precision}
        threads = int(os.environ.get("TF_NUM_INTRAOP_THREADS", "0"))
        if threads:
            settings["INFERENCE_NUM_THREADS"] = threads
        self.compiled = core.compile_model(core.read_model(str(path)), "CPU", settings)
        self.precision = self.compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        self._request = self.compiled.create_infer_request()
        self._lock = threading.Lock()  # one request: the serving batcher and a caller may both ask

    def run(self, images: np.ndarray) -> np.ndarray:
        with self._lock:
            self._request.infer({0: images})
            return np.array(self._request.get_output_tensor(0).data, np.float32)


_CORE = []


def _openvino_core():
    """One OpenVINO Core for the process, never released: the CPU plugin points the main thread's
    signal stack (sigaltstack) into its own memory, and unloading the plugin with the last Core
    left it pointing at unmapped memory, so the next SIGTERM or Ctrl-C crashed the process
    (segmentation fault) instead of stopping it cleanly."""
    if not _CORE:
        import openvino as ov

        _CORE.append(ov.Core())
    return _CORE[0]
