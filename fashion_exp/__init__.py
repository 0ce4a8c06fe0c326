"""fashion_exp: find, track and ship the best Xception transfer-learning fashion classifier."""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # keep TensorFlow's C++ start-up chatter off the terminal

__version__ = "0.1.0"
