"""Which runtime serves a model (serve.backend): keras, onnx (fp32), onnx-int8, or auto.

auto serves the fastest backend that keeps the model's accuracy: on a CPU the int8 ONNX file when
export-onnx measured that it held validation accuracy (final/onnx_export.py), else the fp32 ONNX
file when there is one, else Keras; Keras when TensorFlow sees a GPU.
"""

from __future__ import annotations

from fashion_exp.final.onnx_export import INT8_ARTIFACT, INT8_HOLDS, ONNX_ARTIFACT, onnx_predictor
from fashion_exp.tracking import registry
from fashion_exp.tracking.queries import run_contents


def open_predictor(reference: str, tracking_uri: str, backend: str) -> tuple[object, str, str]:
    """(predictor, the backend it runs on, why that one) for the model `reference`."""
    loaded = registry.load(reference, tracking_uri)
    if backend == "keras":
        return loaded, "keras", "serve.backend=keras"
    if backend in ("onnx", "onnx-int8"):
        return onnx_predictor(loaded, tracking_uri, int8=backend == "onnx-int8"), backend, f"serve.backend={backend}"
    chosen, why = choose(loaded, tracking_uri)
    if chosen == "keras":
        return loaded, chosen, why
    return onnx_predictor(loaded, tracking_uri, int8=chosen == "onnx-int8"), chosen, why


def choose(loaded: registry.LoadedModel, tracking_uri: str) -> tuple[str, str]:
    """auto's pick for a loaded model, and the reason, in words."""
    from fashion_exp.features.runtime import gpu_visible

    if gpu_visible():
        return "keras", "auto: TensorFlow sees a GPU"
    if not loaded.run_id:
        return "keras", "auto: a model folder has no run to hold ONNX files"
    run = run_contents(tracking_uri, loaded.run_id, "onnx")
    files, metrics = run.files, run.metrics
    if INT8_ARTIFACT in files and run.tags.get(INT8_HOLDS) == "true":
        return "onnx-int8", (
            f"auto: int8 kept validation accuracy ({metrics.get('onnx_int8_val_accuracy', float('nan')):.4f} "
            f"vs Keras {metrics.get('keras_val_accuracy', float('nan')):.4f})"
        )
    if ONNX_ARTIFACT in files:
        reason = "int8 lost validation accuracy" if INT8_ARTIFACT in files else "no int8 file"
        return "onnx", f"auto: fp32 ONNX ({reason})"
    return "keras", "auto: no ONNX file (python -m fashion_exp export-onnx makes them)"
