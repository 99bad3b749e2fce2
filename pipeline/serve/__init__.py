"""Serving a registered variant: over HTTP with `mlflow models serve`, and an on-disk index with top-k search."""
