"""Export's section of the config tree: the budget variants to write and whether to register them."""

from __future__ import annotations

import warnings

from pydantic import model_validator

from pipeline.configlib import FieldError, Section
from pipeline.model.config import BudgetField

with warnings.catch_warnings():  # pydantic warns that the field `register` shadows ABCMeta.register: harmless
    warnings.filterwarnings("ignore", 'Field name "register"', UserWarning)

    class ExportConfig(Section):
        """Budget variants (pipeline/export)."""

        output_dir: str | None = None
        """Where the variant directories go; null: <train.output_dir>/variants."""
        budgets: dict[str, BudgetField] = {"full": "full", "balanced": "d32-p2", "balanced-bin": "d32-p2-bin",
                                           "tiny": "d16-p4"}
        """name -> budget: L2-d32-p2, L2-d32-p2-bin (precision fp16|int8|bin), d32-p2 (the last exit) or full."""
        model: str | None = None
        """A saved Retriever directory; null: <train.output_dir>/final."""
        results: str | None = None
        """Eval results.json holding the cards' quality; null: <eval output dir>/results.json."""
        register: bool = True
        """Register each variant as a version of tracking.registered_model."""

        @model_validator(mode="after")
        def check(self):
            if not self.budgets:
                raise FieldError("budgets", "must name at least one variant")
            if "" in self.budgets:
                raise FieldError("budgets", "a variant name must not be empty")
            return self
