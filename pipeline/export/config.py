"""Export's section of the config tree: the budget variants to write and whether to register them."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.configlib import FieldError, NonNegInt, Section


@dataclass(kw_only=True)
class ExportConfig(Section):
    """Budget variants (pipeline/export)."""

    output_dir: str | None = None
    """Where the variant directories go; null: <train.output_dir>/variants."""
    budgets: dict[str, list[NonNegInt]] = field(
        default_factory=lambda: {"full": [0, 128, 1], "balanced": [0, 32, 2], "tiny": [0, 16, 4]}
    )
    """name -> [layers (0: the last exit), dim, pool]."""
    model: str | None = None
    """A saved Retriever directory; null: <train.output_dir>/final."""
    results: str | None = None
    """Eval results.json holding the cards' quality; null: <eval output dir>/results.json."""
    register: bool = True
    """Register each variant as a version of tracking.registered_model."""

    def check(self) -> None:
        if not self.budgets:
            raise FieldError("budgets", "must name at least one variant")
        for name, spec in self.budgets.items():
            if not name:
                raise FieldError("budgets", "a variant name must not be empty")
            if len(spec) != 3 or spec[1] < 1 or spec[2] < 1:
                raise FieldError(f"budgets.{name}", f"must be [layers, dim >= 1, pool >= 1], got {spec}")
