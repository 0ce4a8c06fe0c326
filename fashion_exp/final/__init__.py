"""Stage 6: the shipped model: train-final (restarts, assembly, registration), combine, evaluate, export-onnx."""
