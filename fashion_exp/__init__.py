"""fashion_exp: find, track and ship the best Xception transfer-learning fashion classifier.

The package follows the pipeline, one folder a stage, each importing only the stages before it:

    config, hyperparameters   the config schema and its rules; the table of head hyperparameters
    data/                     dataset discovery and check, image decoding, augmentation, download
    features/                 the frozen backbone, the on-disk feature cache, prepare_features
    search/                   the head, keras-tuner (oracle, tuner, observers) and the `tune` job
    final/                    train-final (restarts, assembly), evaluate, export-onnx
    serving/                  predict and the HTTP service
    tracking/                 MLflow runs, the model registry and plots (the only MLflow users)
    cli                       argument parsing and dispatch
"""

import os

from fashion_exp import quiet

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
quiet.configure()  # TensorFlow's and MLflow's log levels, before either is imported

__version__ = "0.1.0"
