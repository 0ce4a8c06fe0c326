"""MLflow runs, the model registry and the figures they hold: the only modules that import mlflow."""
