"""The MLflow model registry: budget variants as versions of one registered model, and gated alias promotion."""
