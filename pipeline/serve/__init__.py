"""Serving a registered variant: over HTTP (MLflow's scoring app behind a request guard), and an on-disk index with
top-k search."""
