"""Where the frozen backbone runs (model.runtime): TensorFlow, ONNX Runtime in fp32 or int8, or
OpenVINO in f32 or bf16.

`auto` runs TensorFlow when it sees a GPU. On a CPU it first times the fp32 runtimes (ONNX
Runtime, OpenVINO f32) at the size and keeps the faster: that runs where features must equal what
the shipped Keras model computes (train-final), and is the reference of the search's check
(features/choice.py), which takes the fastest lower-precision runtime that keeps fp32's accuracy on
this machine: ONNX int8 or OpenVINO bf16 (where the CPU has BF16 units) for the frozen features, and
for a fine-tuning cut (the activations under the blocks a head trains, which those blocks compute
on in mixed bfloat16 on such a CPU anyway) OpenVINO bf16 only: int8 maps are what a fine-tuned
block would have to learn around.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fashion_exp.batching import pad_batch
from fashion_exp.config import ModelConfig
from fashion_exp.features.backbone import Backbone
from fashion_exp.features.onnx_files import Calibration, OnnxFiles, OpenVinoSession, open_session
from fashion_exp.hardware import Cpu, cpu_of, gpu_visible
from fashion_exp.screen import say

EXACT = ("tensorflow", "onnx", "openvino")  # features equal to the Keras model's (fp32: max abs diff ~1e-5)
OPENVINO = {"openvino": "f32", "openvino-bf16": "bf16"}  # runtime -> the precision OpenVINO is pinned to
FP32 = ("onnx", "openvino")  # auto's candidates for the fp32 reference: the faster here (measured) wins


def lower_precision(cpu: Cpu, cut: bool = False) -> list[str]:
    """The faster, inexact runtimes auto tries on this CPU: int8 for frozen features (its check
    decides; never for a cut), bf16 only where the CPU has BF16 units (elsewhere OpenVINO would run
    f32: nothing to gain)."""
    return [*([] if cut else ["onnx-int8"]), *(["openvino-bf16"] if cpu.bf16 else [])]


def resolve(runtime: str, exact: bool, cut: bool = False) -> str:
    """The runtime a named (not auto) model.runtime means here: exact=True (features the shipped
    model must reproduce) never gives a lower-precision one, a cut never int8."""
    if (exact and runtime not in EXACT) or (cut and runtime == "onnx-int8"):
        return "onnx"
    return runtime


@dataclass
class Runner:
    """The backbone on one runtime: uint8 images (n, s, s, 3) -> float32 features (n, dim).

    `fingerprint` names the features it computes (feature cache keys, search ids): the weights'
    fingerprint, plus the runtime where it is not TensorFlow, plus for lower precision what changes
    its numbers (int8: the recipe and calibration; bf16: the CPU's flags). An ONNX file is made
    (or taken from work_dir) at the first batch, so a run whose features are all cached never
    exports or quantizes anything.
    """

    runtime: str
    backbone: Backbone
    batch_size: int
    files: OnnxFiles | None = None
    calibration: Calibration | None = None  # int8 only
    cpu: Cpu = field(default_factory=cpu_of)
    why: str = ""  # why choose_runner took this runtime, in words
    _session: object = None

    @property
    def fingerprint(self) -> str:
        if self.runtime == "tensorflow":
            return self.backbone.fingerprint  # TensorFlow computes the weights' own features: no suffix
        if self.runtime == "onnx-int8":
            key = self.files.int8_key(self.backbone, self.calibration, self.cpu)
            return f"{self.backbone.fingerprint}+onnx-int8-{key}"
        if self.runtime == "openvino-bf16":
            return f"{self.backbone.fingerprint}+openvino-bf16-{self.cpu.key}"
        return f"{self.backbone.fingerprint}+{self.runtime}"

    @property
    def precision(self) -> str:
        """What the backbone computes in: f32, int8, or what OpenVINO runs (bf16, or f32 on a CPU
        without BF16 units: opens the session)."""
        if self.runtime in OPENVINO:
            return self._open().precision
        return "int8" if self.runtime == "onnx-int8" else "f32"

    def features(self, images: np.ndarray) -> np.ndarray:
        if self.runtime == "tensorflow":  # padded to a fixed shape: one compiled graph for every batch
            padded = pad_batch(images, self.batch_size)
            return np.asarray(self.backbone.model.predict_on_batch(padded), np.float32)[: len(images)]
        session = self._open()
        if self.runtime in OPENVINO:
            return session.run(images)
        return np.asarray(session.run(None, {session.get_inputs()[0].name: images})[0], np.float32)

    def _open(self):
        if self._session is None:
            path = self._file()
            try:
                self._session = self._start(path)
            except Exception:  # noqa: BLE001 - a damaged file (ONNX Runtime raises several types): make it again
                path.unlink(missing_ok=True)
                self._session = self._start(self._file())
        return self._session

    def _start(self, path: Path):
        if self.runtime not in OPENVINO:
            return open_session(path)
        session = OpenVinoSession(path, OPENVINO[self.runtime])
        if session.precision != OPENVINO[self.runtime]:
            say(
                f"{self.runtime}: OpenVINO's CPU plugin runs {session.precision} on this CPU, not "
                f"{OPENVINO[self.runtime]} (it has no BF16 units): the features are fp32's, at fp32's speed"
            )
        return session

    def _file(self) -> Path:
        if self.runtime == "onnx-int8":
            return self.files.int8(self.backbone, self.calibration, self.cpu)
        return self.files.fp32(self.backbone)


def choose_runner(
    model: ModelConfig,
    backbone: Backbone,
    work_dir: Path | str,
    exact: bool,
    photos: Callable[[], Calibration],
    check: Callable[[], object],
) -> Runner:
    """The backbone on the runtime model.runtime means here, and says which and why.

    exact=True: features the shipped Keras model must reproduce (never lower precision); a cut
    (backbone.blocks > 0) is offered bf16 only. `photos` makes the int8 calibration; `check` the
    photos auto's check runs on (choice.CheckPhotos).
    """
    from fashion_exp.features.choice import choose, fastest_fp32

    cpu, cut = cpu_of(model.cpu_features), backbone.blocks > 0

    def runner(runtime: str) -> Runner:
        return open_runner(backbone, runtime, model.batch_size, work_dir, photos, cpu)

    if model.runtime != "auto":
        chosen = resolve(model.runtime, exact, cut)
        why = f"model.runtime={model.runtime}"
        if chosen != model.runtime:
            whose = "equal the shipped Keras model's" if exact else "a fine-tuned block trains on"
            why += f": using {chosen}, whose features {whose}"
        picked = runner(chosen)
    elif gpu_visible():
        picked, why = runner("tensorflow"), "auto: TensorFlow sees a GPU"
    else:
        reference, fastest = fastest_fp32([runner(name) for name in FP32], check, model)
        candidates = [] if exact else [runner(name) for name in lower_precision(cpu, cut)]
        if candidates:
            picked, why = choose(reference, candidates, check, model)
        else:
            whose = "the shipped Keras model's features" if exact else "a cut runs bf16 only on a CPU with BF16 units"
            picked, why = reference, f"auto: {fastest}, {whose}"
    below = f", cut below the top {backbone.blocks} block(s)" if cut else ""
    say(f"Backbone runtime: {picked.runtime} ({why}){below}")
    picked.why = why
    return picked


def open_runner(
    backbone: Backbone,
    runtime: str,
    batch_size: int,
    work_dir: Path | str,
    calibration: Calibration | Callable[[], Calibration] | None = None,
    cpu: Cpu | None = None,
) -> Runner:
    """A Runner for a resolved runtime (resolve()); onnx-int8 needs the calibration photos (or a
    function that makes them)."""
    if runtime == "onnx-int8" and calibration is None:
        raise ValueError("onnx-int8 needs calibration photos")
    made = calibration() if runtime == "onnx-int8" and callable(calibration) else calibration
    files = None if runtime == "tensorflow" else OnnxFiles(Path(work_dir) / "backbones")
    return Runner(runtime, backbone, batch_size, files, made, cpu or cpu_of())
