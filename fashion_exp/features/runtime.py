"""Where the frozen backbone runs (model.runtime): TensorFlow, or ONNX Runtime in fp32 or int8.

`auto` picks the fastest runtime whose features keep the search's accuracy (benchmarks/
bench_runtime.py): ONNX int8 for the search where its features stay close to fp32's (int8_holds,
model.auto_int8_min_cosine), else ONNX fp32; ONNX fp32 where features must equal what the shipped
Keras model computes (train-final); TensorFlow when it sees a GPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fashion_exp.batching import pad_batch
from fashion_exp.config import ModelConfig
from fashion_exp.features.backbone import Backbone
from fashion_exp.features.onnx_files import Calibration, OnnxFiles, open_session

EXACT = ("tensorflow", "onnx")  # features equal to the Keras model's (ONNX fp32: max abs diff ~1e-5)


def gpu_visible() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def resolve(runtime: str, exact: bool) -> str:
    """The runtime `runtime` means here; exact=True (features the shipped model must reproduce)
    never gives int8."""
    if runtime == "auto":
        if gpu_visible():
            return "tensorflow"
        return "onnx" if exact else "onnx-int8"
    if exact and runtime not in EXACT:
        return "onnx"
    return runtime


@dataclass
class Runner:
    """The backbone on one runtime: uint8 images (n, s, s, 3) -> float32 features (n, dim).

    `fingerprint` names the features it computes (feature cache keys, search ids): the weights'
    fingerprint, plus the runtime for ONNX, plus the calibration for int8. An ONNX file is made
    (or taken from work_dir) at the first batch, so a run whose features are all cached never
    exports or quantizes anything.
    """

    runtime: str
    backbone: Backbone
    batch_size: int
    files: OnnxFiles | None = None
    calibration: Calibration | None = None  # int8 only
    _session: object = None

    @property
    def fingerprint(self) -> str:
        if self.runtime == "tensorflow":
            return self.backbone.fingerprint  # TensorFlow computes the weights' own features: no suffix
        if self.runtime == "onnx":
            return f"{self.backbone.fingerprint}+onnx"
        return f"{self.backbone.fingerprint}+onnx-int8-{self.files.int8_key(self.backbone, self.calibration)}"

    def features(self, images: np.ndarray) -> np.ndarray:
        if self.runtime == "tensorflow":  # padded to a fixed shape: one compiled graph for every batch
            padded = pad_batch(images, self.batch_size)
            return np.asarray(self.backbone.model.predict_on_batch(padded), np.float32)[: len(images)]
        session = self._open()
        return np.asarray(session.run(None, {session.get_inputs()[0].name: images})[0], np.float32)

    def _open(self):
        if self._session is None:
            path = self._file()
            try:
                self._session = open_session(path)
            except Exception:  # noqa: BLE001 - a damaged file (ONNX Runtime raises several types): make it again
                path.unlink(missing_ok=True)
                self._session = open_session(self._file())
        return self._session

    def _file(self) -> Path:
        if self.runtime == "onnx":
            return self.files.fp32(self.backbone)
        return self.files.int8(self.backbone, self.calibration)


def int8_holds(runner: Runner, min_cosine: float, echo=print) -> bool:
    """Whether auto may extract with this int8 runner: its features' mean cosine to fp32 on the
    calibration photos reaches min_cosine (quantizes now if needed; says why when not)."""
    cosine = runner.files.int8_cosine(runner.backbone, runner.calibration)
    if cosine >= min_cosine:
        return True
    echo(
        f"int8 features at {runner.backbone.image_size}px: mean cosine {cosine:.3f} to fp32 on the calibration "
        f"photos (< {min_cosine}): model.runtime=auto extracts with onnx (fp32) here"
    )
    return False


def choose_runner(
    model: ModelConfig, backbone: Backbone, work_dir: Path | str, exact: bool, photos: Callable[[], Calibration], echo
) -> Runner:
    """The backbone on the runtime model.runtime means here (resolve; exact=True: features the
    shipped Keras model must reproduce), falling back from int8 to fp32 under auto when int8_holds
    says no; `photos` makes the int8 calibration. Says which runtime it took."""
    runtime = resolve(model.runtime, exact)
    if model.runtime not in ("auto", runtime):
        echo(f"model.runtime={model.runtime}: using {runtime}, whose features equal the shipped Keras model's")
    runner = open_runner(backbone, runtime, model.batch_size, work_dir, photos() if runtime == "onnx-int8" else None)
    if model.runtime == "auto" and runtime == "onnx-int8" and not int8_holds(runner, model.auto_int8_min_cosine, echo):
        runner = open_runner(backbone, "onnx", model.batch_size, work_dir)
    cut = f", cut below the top {backbone.blocks} block(s)" if backbone.blocks else ""
    echo(f"Backbone runtime: {runner.runtime} (model.runtime={model.runtime}){cut}")
    return runner


def open_runner(
    backbone: Backbone, runtime: str, batch_size: int, work_dir: Path | str, calibration: Calibration | None = None
) -> Runner:
    """A Runner for a resolved runtime (resolve()); onnx-int8 needs the calibration photos."""
    if runtime == "onnx-int8" and calibration is None:
        raise ValueError("onnx-int8 needs calibration photos")
    files = None if runtime == "tensorflow" else OnnxFiles(Path(work_dir) / "backbones")
    return Runner(runtime, backbone, batch_size, files, calibration)
