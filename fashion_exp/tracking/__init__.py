"""Stage 4: MLflow runs, queries, the model registry and the figures they hold: the only modules that use mlflow."""
