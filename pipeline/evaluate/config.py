"""Evaluation's section of the config tree: which eval set, which model, how the index is stored."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from pipeline.configlib import FieldError, NonNegInt, PosInt, Section
from pipeline.model.config import PRECISIONS, Precision, StageField


class EvalConfig(Section):
    """Budget-grid evaluation (pipeline/evaluate)."""

    shards: str | None = None
    """The eval shard directory; null: data.shards."""
    split: str = "eval"
    """The manifest split to evaluate on."""
    parquet: str | None = None
    """A page-image Parquet set with queries and qrels instead of shards."""
    batch_size: PosInt = 16
    """Pages or queries encoded at once."""
    output_dir: str | None = None
    """Where results.json/.md/.csv and the plot go; null: <train.output_dir>/eval."""
    max_pages: PosInt | None = None
    """Evaluate on the first N pages only (null: all)."""
    model: str | None = None
    """A saved Retriever directory; null: <train.output_dir>/final."""
    run_depth: Annotated[int, Field(ge=10)] = 100
    """Pages kept per query in the ranked run (the metrics need 10)."""
    precisions: list[Precision] = list(PRECISIONS)
    """Page-vector precisions of the grid (each budget at each; pipeline/model/precision.py)."""
    cascades: list[list[StageField]] = []
    """Cascades scored beside the grid (rows in results.json "cascades"): each [[budget, limit], ..., [budget, n]],
    the first stage ranking every page, each later one re-ranking the previous stage's pages (serve.cascade's
    semantics, exact)."""
    timing_pages: NonNegInt = 16
    """Pages encoded per exit to time encoding (0: no timing)."""
    log_mlflow: bool = True
    """Log table, plot and metrics to the training run (<train.output_dir>/run.json)."""
    progress: bool = True
    """tqdm bars over pages and budgets (stderr)."""

    @model_validator(mode="after")
    def check(self):
        if not self.precisions or len(set(self.precisions)) != len(self.precisions):
            raise FieldError("precisions", f"must name each precision once, got {self.precisions}")
        return self
