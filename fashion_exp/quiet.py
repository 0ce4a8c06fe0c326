"""A quiet start: TensorFlow's native start-up lines and MLflow's INFO lines stay off the terminal.

TensorFlow 2.21 writes "oneDNN custom operations are on", "Could not find cuda drivers" and
"failed call to cuInit" from C++ before absl's logging is initialised, so TF_CPP_MIN_LOG_LEVEL
cannot silence them: `import_tensorflow` holds the process's stderr (file descriptor 2) while
TensorFlow loads and looks for GPUs, then writes back every line that is not one of those.
TensorFlow's Python warnings (a tf.function retracing warning in train-final) go below ERROR too,
and every Python warning a library raises is held back: scikit-learn's ConvergenceWarning from
keras-tuner's Bayesian oracle between two trials, Keras' "Skipping variable loading for optimizer"
when train-final loads a trial's checkpoint (its optimizer is not needed), deprecation notes.
FASHION_VERBOSE=1 (or --verbose), or TF_CPP_MIN_LOG_LEVEL set to 0 or 1, shows everything.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import tempfile
import warnings
from contextlib import contextmanager

# TensorFlow's and CUDA's start-up lines on a machine without a GPU (TensorFlow 2.16-2.21).
NOISE = re.compile(
    r"All log messages before absl::InitializeLog|oneDNN custom operations are on|Could not find cuda drivers"
    r"|failed call to cuInit|cpu_feature_guard|To enable the following instructions"
    r"|Unable to register cu(DNN|FFT|BLAS) factory|computation_placer|TF-TRT Warning"
)


def verbose() -> bool:
    """Whether the user asked for TensorFlow's and MLflow's own lines."""
    if os.environ.get("FASHION_VERBOSE", "").strip() not in ("", "0"):
        return True
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL", "").strip() in ("0", "1")


LIBRARIES = r"(keras|tensorflow|tf2onnx|onnx|onnxruntime|openvino|mlflow|keras_tuner|sklearn|scipy|optuna)(\.|$)"
_OURS: dict[str, str] = {}  # the variables configure() set, not the user


def configure(asked_verbose: bool = False) -> None:
    """Before TensorFlow or MLflow is imported: their log levels, unless the user set them, and
    MLflow's telemetry off.
    asked_verbose (--verbose) turns on what an earlier call turned off."""
    if asked_verbose:
        os.environ["FASHION_VERBOSE"] = "1"
    loud = verbose()
    wanted = {"TF_CPP_MIN_LOG_LEVEL": "1" if loud else "2", "MLFLOW_LOGGING_LEVEL": "INFO" if loud else "WARNING"}
    for name, value in wanted.items():
        if name not in os.environ or name in _OURS:
            os.environ[name] = _OURS[name] = value
    # MLflow 3 sends usage events (an installation id, the calls made, the store's kind) to its makers
    # unless told not to: off unless the user set it (MLFLOW_DISABLE_TELEMETRY=false turns it on)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    logging.getLogger("alembic").setLevel(logging.INFO if loud else logging.WARNING)  # MLflow's schema set-up
    if not loud:  # libraries' notes to their own developers, mid-work (see the module's docstring)
        warnings.filterwarnings("ignore", category=Warning, module=LIBRARIES)


@contextmanager
def native_stderr_filtered(noise: re.Pattern = NOISE):
    """Hold what native code writes to stderr during the block; write back the lines `noise` does not match."""
    if verbose():
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            kept = [line for line in held.read().decode(errors="replace").splitlines() if not noise.search(line)]
            if kept:
                print("\n".join(kept), file=sys.stderr, flush=True)


def import_tensorflow():
    """Import TensorFlow and list its GPUs (where CUDA's lines come from) with its start-up lines held back."""
    with native_stderr_filtered():
        import tensorflow as tf

        tf.config.list_physical_devices("GPU")
    if not verbose():  # its Python-side warnings, "triggered tf.function retracing" among them (train-final's restarts)
        tf.get_logger().setLevel("ERROR")
    return tf
