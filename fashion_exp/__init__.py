"""fashion_exp: find, track and ship the best Xception transfer-learning fashion classifier.

The package follows the pipeline, one folder a stage, each importing only the stages before it:

    config, hyperparameters   the config schema and its rules; the table of head hyperparameters
    data/                     dataset discovery and check, image decoding, augmentation, download
    features/                 the frozen backbone, where it runs, the cache: one Features per size and cut
    head/                     the head: its builder, fitting on cached views, where it sits in a model
    tracking/                 MLflow runs, queries, the model registry and plots (the only MLflow users)
    search/                   keras-tuner (oracles, tuner, its fixes, observers) and the `tune` job
    final/                    train-final (restarts, assembly), combine, evaluate, export-onnx
    serving/                  predict and the HTTP service
    cli                       argument parsing and the command table
"""

import os

from fashion_exp import quiet

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
quiet.configure()  # TensorFlow's and MLflow's log levels, before either is imported

__version__ = "0.1.0"
