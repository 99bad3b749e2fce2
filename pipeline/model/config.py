"""The model's section of the config tree: the budget-elastic retriever, LoRA, precision and quantisation; and the
budget as a config value (one spelling, parsed at load)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, PlainSerializer, PlainValidator, model_validator

from pipeline.configlib import FieldError, NonNegInt, PosInt, Section
from pipeline.model.budgets import PRECISIONS, Budget, Precision, pool_of, pool_token

__all__ = ["PRECISIONS", "BudgetField", "LoraConfig", "ModelConfig", "PoolField", "Precision", "StageField"]


def _budget(value: Any) -> Budget:
    return value if isinstance(value, Budget) else Budget.parse(value)


# A budget in the config: written as text ("L2-d32-p2-bin", "d32-p2", "full"), held as a parsed Budget.
BudgetField = Annotated[Budget, PlainValidator(_budget), PlainSerializer(str, return_type=str)]
# One stage of a cascade search, written [budget, limit] (how many pages the stage keeps).
StageField = Annotated[tuple[BudgetField, PosInt], BeforeValidator(lambda v: tuple(v) if isinstance(v, list) else v)]
# A pool factor in the config: an integer >= 1 or a level's name ("page": one vector per page), held as the factor.
PoolField = Annotated[int, PlainValidator(pool_of), PlainSerializer(pool_token)]


class LoraConfig(Section):
    """LoRA adapters on the backbone (peft)."""

    r: NonNegInt = 0
    """Adapter rank; 0 disables LoRA."""
    alpha: PosInt = 32
    """LoRA scaling numerator (scale = alpha / r)."""
    dropout: Annotated[float, Field(ge=0, le=0.99)] = 0.1
    """Dropout on the adapter input."""
    target_modules: list[str] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    """Module names that get adapters."""


class ModelConfig(Section):
    """The budget-elastic retriever (pipeline/model)."""

    name_or_path: str = "demo_out/tiny-qwen2vl"
    """A local directory or a hub name."""
    dim: PosInt = 128
    """Full width of every exit head; must be one of widths."""
    exits: list[PosInt] | None = None
    """Decoder layers with a head; null: L/4, L/2, 3L/4, L."""
    widths: list[PosInt] = [128, 64, 32, 16]
    """Widths of the budget grid (each at most dim)."""
    pools: list[PoolField] = [1, 2, 4]
    """Pool factors of the budget grid (1: every vector; page: one vector per page, the mean of all of them)."""
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2"] = "auto"
    """auto: flash_attention_2 on CUDA when flash-attn is installed, else sdpa."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Weights dtype; auto: bfloat16 on CUDA, float32 on CPU (training takes auto, float32 or bfloat16)."""
    quantization: Literal["none", "8bit", "4bit"] = "none"
    """bitsandbytes loading of the backbone (QLoRA with lora.r > 0)."""
    lora: LoraConfig = Field(default_factory=LoraConfig)
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass (less memory, more time)."""
    max_query_tokens: PosInt = 32
    """Query tokens kept (longer queries are truncated)."""
    query_prefix: str = ""
    """Text before each query (e.g. "Query: "); its tokens are never vectors."""
    head_seed: int = 0
    """Fresh exit heads are drawn from this seed (the same on every rank)."""
    min_pixels: PosInt | None = None
    """Image processor's lower bound on page pixels (null: the processor's default)."""
    max_pixels: PosInt | None = None
    """Image processor's upper bound on page pixels (null: the processor's default)."""

    def saved_at(self, model_dir) -> ModelConfig:
        """This config for the saved retriever in `model_dir` (its adapters, if any, already merged: no new ones)."""
        return self.model_copy(update={"name_or_path": str(model_dir), "lora": self.lora.model_copy(update={"r": 0})})

    @model_validator(mode="after")
    def check(self) -> ModelConfig:
        for name in ("widths", "pools"):
            if not getattr(self, name):
                raise FieldError(name, "must not be empty")
        if self.dim not in self.widths:
            raise FieldError("dim", f"{self.dim} is not one of widths {self.widths}")
        if max(self.widths) > self.dim:
            raise FieldError("widths", f"{max(self.widths)} exceeds dim {self.dim}")
        if self.exits is not None and not self.exits:
            raise FieldError("exits", "must not be empty (null: the default exits)")
        if self.min_pixels and self.max_pixels and self.min_pixels > self.max_pixels:
            raise FieldError("min_pixels", f"{self.min_pixels} exceeds max_pixels {self.max_pixels}")
        return self
