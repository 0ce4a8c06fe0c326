"""Which runtime serves a model (serve.backend, predict.backend): keras, onnx (fp32), onnx-int8,
openvino-bf16 (the fp32 ONNX file on OpenVINO's CPU plugin in bf16), or auto.

auto is the model's own choice, from what export-onnx measured on every validation photo: the
fastest backend that holds (fp32 ONNX; int8 when it kept validation accuracy; bf16 when this CPU
has BF16 units and it passed the gate against Keras, fashion_exp/gate.py: validation accuracy held
and few photos changed class, or, for exports from before the gate, it was exact); Keras when
TensorFlow sees a GPU or there is no ONNX file.
"""

from __future__ import annotations

from dataclasses import dataclass

from fashion_exp.final.onnx_export import (
    BF16_EXACT,
    BF16_HOLDS,
    INT8_ARTIFACT,
    INT8_HOLDS,
    ONNX_ARTIFACT,
    onnx_predictor,
)
from fashion_exp.hardware import Cpu, cpu_of
from fashion_exp.tracking import registry
from fashion_exp.tracking.queries import run_contents

SPEED = {"onnx": "onnx_images_per_s", "onnx-int8": "onnx_int8_images_per_s", "openvino-bf16": "onnx_bf16_images_per_s"}
UNTIMED = {"onnx-int8": 2.0, "onnx": 1.0}  # exports before speeds were logged: int8 was the faster


@dataclass(frozen=True)
class Opened:
    """A model ready to predict: the predictor, the backend it runs on, and why that one."""

    predictor: object  # registry.LoadedModel (keras) or OnnxPredictor
    backend: str
    why: str


def open_predictor(reference: str, tracking_uri: str, backend: str, cpu_features="auto") -> Opened:
    """The model `reference` on `backend` (auto: the one this CPU serves best, backends.choose)."""
    described = registry.load(reference, tracking_uri, keras_model=False)  # (an ONNX backend needs no Keras copy)
    if backend == "auto":
        backend, why = choose(described, tracking_uri, cpu_of(cpu_features))
    else:
        why = f"backend={backend}"
    if backend == "keras":
        from fashion_exp import quiet

        quiet.import_tensorflow()  # (serve imports it only for this backend: its start-up lines held back)
        return Opened(registry.load(reference, tracking_uri), backend, why)
    predictor = onnx_predictor(
        described, tracking_uri, int8=backend == "onnx-int8", openvino="bf16" if backend == "openvino-bf16" else None
    )
    return Opened(predictor, backend, why)


def holding(files: list[str], tags: dict[str, str], metrics: dict[str, float], cpu: Cpu) -> dict[str, float]:
    """The ONNX backends that hold for this model on this CPU -> their measured images a second."""
    held = []
    if ONNX_ARTIFACT in files:
        held.append("onnx")
        if cpu.bf16 and "true" in (tags.get(BF16_HOLDS), tags.get(BF16_EXACT)):
            held.append("openvino-bf16")
    if INT8_ARTIFACT in files and tags.get(INT8_HOLDS) == "true":
        held.append("onnx-int8")
    return {name: metrics.get(SPEED[name], UNTIMED.get(name, 0.0)) for name in held}


def choose(loaded: registry.LoadedModel, tracking_uri: str, cpu: Cpu) -> tuple[str, str]:
    """auto's pick for a loaded model, and the reason, in words."""
    from fashion_exp.hardware import gpu_visible

    if gpu_visible():
        return "keras", "auto: TensorFlow sees a GPU"
    if not loaded.run_id:
        return "keras", "auto: a model folder has no run to hold ONNX files"
    run = run_contents(tracking_uri, loaded.run_id, "onnx")
    return pick_backend(run.files, run.tags, run.metrics, cpu)


def pick_backend(files: list[str], tags: dict[str, str], metrics: dict[str, float], cpu: Cpu) -> tuple[str, str]:
    """(backend, why): the fastest ONNX backend that holds (holding), else keras."""
    speeds = holding(files, tags, metrics, cpu)
    if not speeds:
        return "keras", "auto: no ONNX file (python -m fashion_exp export-onnx makes them)"
    best = max(speeds, key=speeds.get)
    detail = {
        "onnx": "fp32 ONNX",
        "onnx-int8": (
            f"int8 kept validation accuracy ({metrics.get('onnx_int8_val_accuracy', float('nan')):.4f} "
            f"vs Keras {metrics.get('keras_val_accuracy', float('nan')):.4f})"
        ),
        "openvino-bf16": (
            f"bf16 kept validation accuracy ({metrics.get('onnx_bf16_val_accuracy', float('nan')):.4f} vs Keras "
            f"{metrics.get('keras_val_accuracy', float('nan')):.4f}, top-1 agreement "
            f"{metrics.get('onnx_bf16_top1_agreement', float('nan')):.1%})"
        ),
    }[best]
    others = ", ".join(f"{name} {speed:.1f}" for name, speed in sorted(speeds.items(), key=lambda kv: -kv[1]))
    timed = SPEED[best] in metrics
    return best, f"auto: {detail}; " + (f"images/s at export: {others}" if timed else "the fastest that holds")
