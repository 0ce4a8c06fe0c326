"""The backbone's ONNX files in work_dir/backbones: exported once, quantized to int8 once, each
made by one process while the others wait for it (claimed like feature cache entries), and
written under a temporary name, then renamed into place.

int8 is ONNX Runtime's static QDQ quantization: int8 per-channel weights, uint8 activations with
MinMax ranges from CALIBRATION_PHOTOS training photos, the first KEEP_FLOAT convolutions left in
fp32. Measured on clothing-dataset-small at 150px (benchmarks/bench_runtime.py): quantizing those
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
from fashion_exp.features.backbone import Backbone

CALIBRATION_PHOTOS = 32
KEEP_FLOAT = 2
CALIBRATION_BATCH = 8


@dataclass(frozen=True)
class Calibration:
    """The photos int8 ranges are measured on: `identity` names them (the training split's
    fingerprint and the decoding) without decoding anything; `load` decodes them."""

    identity: str
    load: Callable[[], np.ndarray]


def spread(n_items: int, count: int = CALIBRATION_PHOTOS) -> list[int]:
    """`count` indices spread evenly over n_items (every class of a class-sorted split is seen)."""
    return sorted({int(i) for i in np.linspace(0, n_items - 1, min(count, n_items))})


class OnnxFiles:
    def __init__(self, directory: Path | str):
        self.directory = Path(directory)

    def fp32(self, backbone: Backbone) -> Path:
        path = self.directory / f"{backbone.fingerprint}-{backbone.image_size}px.onnx"
        return self._make(path, "Exporting the backbone to ONNX", lambda tmp: _export(backbone, tmp))

    def int8_key(self, backbone: Backbone, calibration: Calibration) -> str:
        import onnxruntime

        recipe = {
            "calibration": calibration.identity,
            "photos": CALIBRATION_PHOTOS,
            "keep_float": KEEP_FLOAT,
            "method": "minmax-qdq-per-channel",
            "onnxruntime": onnxruntime.__version__,
        }
        return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]

    def int8(self, backbone: Backbone, calibration: Calibration) -> Path:
        fp32 = self.fp32(backbone)
        key = self.int8_key(backbone, calibration)
        path = self.directory / f"{backbone.fingerprint}-{backbone.image_size}px-int8-{key}.onnx"
        what = f"Quantizing the backbone to int8 on {CALIBRATION_PHOTOS} training photos"
        return self._make(path, what, lambda tmp: _quantize(fp32, tmp, calibration.load()))

    def _make(self, path: Path, what: str, write: Callable[[Path], None]) -> Path:
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


def _quantize(fp32: Path, target: Path, images: np.ndarray) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    model = onnx.load(str(fp32))
    convolutions = [node.name for node in model.graph.node if node.op_type == "Conv"]
    input_name = model.graph.input[0].name
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared))
        quantize_static(
            str(prepared),
            str(target),
            _Batches(images, input_name),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            nodes_to_exclude=convolutions[:KEEP_FLOAT],
        )
