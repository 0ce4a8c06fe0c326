"""Stage 4: the shipped model: train-final (restarts, assembly, registration), evaluate, export-onnx."""
