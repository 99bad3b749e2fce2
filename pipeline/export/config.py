"""Export's section of the config tree: the budget variants to write and whether to register them."""

from __future__ import annotations

from dataclasses import dataclass, field

from pipeline.configlib import FieldError, Section
from pipeline.model.config import PRECISIONS


@dataclass(kw_only=True)
class ExportConfig(Section):
    """Budget variants (pipeline/export)."""

    output_dir: str | None = None
    """Where the variant directories go; null: <train.output_dir>/variants."""
    budgets: dict[str, list[int | str]] = field(
        default_factory=lambda: {"full": [0, 128, 1], "balanced": [0, 32, 2], "balanced-bin": [0, 32, 2, "bin"],
                                 "tiny": [0, 16, 4]}
    )
    """name -> [layers (0: the last exit), dim, pool] or [layers, dim, pool, precision (fp16|int8|bin)]."""
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
            ints, precision = spec[:3], spec[3:]
            if (len(spec) not in (3, 4) or not all(isinstance(x, int) for x in ints) or ints[0] < 0 or min(ints[1:]) < 1
                    or any(x not in PRECISIONS for x in precision)):
                raise FieldError(f"budgets.{name}", "must be [layers, dim >= 1, pool >= 1] or [layers, dim, pool, "
                                                    f"precision ({'|'.join(PRECISIONS)})], got {spec}")
