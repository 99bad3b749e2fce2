"""The learning curve: nDCG@5 at a few budgets on the eval set, measured inside training every train.eval_every steps
(training takes it as a `measure` callable from its entry point).

Scores come from the evaluation stage's own functions (encode once per exit, apply the budget, MaxSim over the
stored codes at the budget's precision, pytrec_eval), so the value at the last step equals what
`python -m pipeline.evaluate` reports for the final weights. Under ZeRO-3 every rank runs the same forwards
(parameters are gathered per module); only rank 0 logs. Training state is untouched: no gradients, and the
train/eval mode is restored.
"""

from __future__ import annotations

import torch

from pipeline.evaluate.config import EvalConfig
from pipeline.evaluate.data import open_eval_set
from pipeline.evaluate.grid import encode_eval_set, run_for_budget
from pipeline.evaluate.metrics import mean_metrics
from pipeline.model.budgets import Budget, resolve_in, retriever_grid
from pipeline.model.config import ModelConfig
from pipeline.model.precision import PRECISIONS


class Curve:
    """nDCG@5 at `budgets` (train.curve_budgets) of `retriever` on the eval section's set at `shards`."""

    def __init__(self, budgets: list[Budget], model: ModelConfig, e: EvalConfig, shards: str | None,
                 retriever) -> None:
        grid = retriever_grid(retriever, model.widths, model.pools, PRECISIONS)
        self.budgets = [resolve_in(b, grid) for b in budgets]
        missing = [str(b) for b in self.budgets if b not in grid]
        if missing:
            raise ValueError(f"train.curve_budgets: {missing} not in the model's budget grid (exits {retriever.exits})")
        self.e, self.shards = e, shards
        self.open_eval_set()  # at set-up: a missing or corrupt eval set fails before training, not after it

    def open_eval_set(self):
        return open_eval_set(self.shards, self.e.split, self.e.parquet, self.e.max_pages)

    @torch.no_grad()
    def __call__(self, retriever) -> dict[str, float]:
        """{"ndcg_at_5/<budget>": value} for the current weights."""
        eval_set = self.open_eval_set()  # verified again: the bytes scored are the bytes checked
        was_training = retriever.training
        retriever.eval()
        try:
            exits = sorted({b.layers for b in self.budgets})
            enc = encode_eval_set(retriever, eval_set, exits, self.e.batch_size, keep=0, progress=False)
        finally:
            retriever.train(was_training)
        return {f"ndcg_at_5/{b}": mean_metrics(run_for_budget(enc, b, self.e.run_depth)[0],
                                               enc.qrels)["ndcg_at_5"] for b in self.budgets}
