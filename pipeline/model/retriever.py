"""The budget-elastic late-interaction retriever: VLM backbone, per-exit heads, real early exit, save/load, variants.

Variants (for_budget) hold only the decoder layers they run and a head sliced to their width.
"""

from __future__ import annotations

import copy
import json
import logging
import threading
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from pipeline.model.config import ModelConfig
from pipeline.model import backbone as bb
from pipeline.model.budgets import Budget
from pipeline.model.families import named, of_config
from pipeline.model.heads import ExitHeads
from pipeline.model.pooling import apply_budget
from pipeline.model.processor import EncoderInputs, RetrieverProcessor
from pipeline.model.vectors import MultiVector

log = logging.getLogger(__name__)
RETRIEVER_CONFIG = "retriever_config.json"


def default_exits(num_layers: int) -> list[int]:
    """L/4, L/2, 3L/4, L (rounded, at least 1, distinct)."""
    return sorted({max(1, round(num_layers * i / 4)) for i in range(1, 5)})


@contextmanager
def truncated(lm: nn.Module, k: int):
    """Run only lm.layers[:k] inside the block (the later layers are not executed at all)."""
    full = lm.layers
    if k < len(full):
        lm.layers = full[:k]
    try:
        yield
    finally:
        lm.layers = full


class Retriever(nn.Module):
    """Pages -> one vector per image token, queries -> one per text token, at every exit, full width `dim`."""

    def __init__(self, backbone: nn.Module, processor: RetrieverProcessor, heads: ExitHeads, arch: str, dim: int,
                 default_budget: Budget | None = None):
        super().__init__()
        self.backbone = backbone
        self.heads = heads
        self.processor = processor
        self.arch = arch
        self.dim = dim
        self.default_budget = default_budget or Budget(max(heads.exits), dim, 1)
        self.lora_scaling = 0.0  # alpha / r once LoRA adapters are injected
        self._forward_lock = threading.RLock()  # held while the backbone's layer list is cut (see _encode)

    def __getstate__(self):  # a lock neither copies nor pickles: a copy gets its own
        state = super().__getstate__().copy()
        state.pop("_forward_lock", None)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self._forward_lock = threading.RLock()

    @property
    def family(self):
        """What differs between VLM families: the module pipeline/model/families/<arch>.py."""
        return named(self.arch)

    @property
    def exits(self) -> list[int]:
        return self.heads.exits

    @property
    def num_layers(self) -> int:
        with self._forward_lock:  # not while a concurrent encode has the layer list cut
            return len(bb.language_model(self.backbone).layers)

    @property
    def device(self) -> torch.device:
        return next(self.heads.parameters()).device

    # ---- loading and saving -------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls, path_or_name: str | Path, cfg: ModelConfig | None = None) -> "Retriever":
        """A saved retriever directory (backbone + heads), or any supported VLM checkpoint / hub name (fresh,
        seeded heads for cfg.exits). LoRA and quantization follow `cfg`."""
        cfg = cfg or ModelConfig(name_or_path=str(path_or_name))
        rc_file = Path(path_or_name) / RETRIEVER_CONFIG
        saved = json.loads(rc_file.read_text()) if rc_file.is_file() else None
        backbone = bb.load_backbone(path_or_name, cfg, plain_vlm=saved is None)
        family = of_config(backbone.config)
        tc = bb.text_config(backbone)
        if saved is not None:
            exits, dim = saved["exits"], saved["dim"]
            budget = Budget(**saved["default_budget"]) if saved.get("default_budget") else None
            if cfg.exits is not None and sorted(cfg.exits) != exits:
                log.warning("model.exits=%s ignored: %s was trained with exits %s", cfg.exits, path_or_name, exits)
        else:
            exits, dim, budget = sorted(cfg.exits or default_exits(tc.num_hidden_layers)), cfg.dim, None
        if max(exits) > tc.num_hidden_layers:
            raise ValueError(f"exits {exits} exceed the {tc.num_hidden_layers} decoder layers of {path_or_name}")
        heads = ExitHeads(exits, tc.hidden_size, dim, seed=cfg.head_seed, dtype=bb.resolve_dtype(cfg.dtype))
        if saved is not None:
            heads.load(path_or_name)
        else:
            log.info("%s has no retriever heads: new heads for exits %s, dim %d (seed %d)", path_or_name, exits, dim,
                     cfg.head_seed)
        prefix = saved.get("query_prefix", cfg.query_prefix) if saved else cfg.query_prefix
        processor = family.load_processor(path_or_name, backbone.config, prefix, cfg.max_query_tokens,
                                          cfg.min_pixels, cfg.max_pixels)
        model = cls(backbone, processor, heads.to(next(backbone.parameters()).device), family.NAME, dim, budget)
        if cfg.lora.r > 0:
            bb.add_lora(backbone, cfg)
            model.lora_scaling = cfg.lora.alpha / cfg.lora.r
        return model

    def save_pretrained(self, directory: str | Path, state_dict: dict[str, torch.Tensor] | None = None) -> Path:
        """Write safetensors weights (backbone through transformers, LoRA merged; heads.safetensors),
        retriever_config.json and the tokenizer / image processor files. `state_dict`: this module's full state
        (keys backbone.* and heads.*), e.g. consolidated from ZeRO-3 partitions, instead of the live weights."""
        if getattr(self.backbone.config, "quantization_config", None) is not None:
            raise NotImplementedError("saving a bitsandbytes-quantized backbone is not supported: load it unquantized")
        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        if state_dict is None:
            backbone_state, heads_state = bb.merged_state_dict(self.backbone), None
        else:
            backbone_state = bb.merge_lora_dict(
                {k[len("backbone."):]: v for k, v in state_dict.items() if k.startswith("backbone.")}, self.lora_scaling)
            heads_state = {k[len("heads."):]: v for k, v in state_dict.items() if k.startswith("heads.")}
        self.backbone.save_pretrained(out, state_dict=backbone_state)
        self.heads.save(out, heads_state)
        (out / RETRIEVER_CONFIG).write_text(json.dumps({
            "format": 1, "arch": self.arch, "exits": self.exits, "dim": self.dim, "num_layers": self.num_layers,
            "default_budget": self.default_budget.as_dict(), "query_prefix": self.processor.query_prefix,
        }, indent=2))
        self.processor.save_pretrained(out)
        return out

    # ---- encoding -----------------------------------------------------------------------------------------------
    def _forward_kwargs(self, inputs: EncoderInputs) -> dict:
        return self.family.forward_kwargs(inputs, pixel_dtype=self.heads.proj[str(self.exits[0])].weight.dtype)

    def _check_exits(self, exits: list[int] | None) -> list[int]:
        exits = self.exits if exits is None else sorted(set(exits))
        missing = [e for e in exits if e not in self.exits]
        if missing:
            raise ValueError(f"exits {missing} have no head (this model's exits: {self.exits})")
        return exits

    def _encode(self, inputs: EncoderInputs, exits: list[int] | None, grids: bool) -> dict[int, MultiVector]:
        """Run the backbone up to the deepest requested exit; capture each exit layer's output, gather the vector
        positions [B, N, H], final norm, head, L2 normalise -> {exit: MultiVector [B, N, dim]}.

        Thread-safe: concurrent calls (MLflow's scoring server predicts in parallel) each get their own inputs'
        vectors. The early exit cuts the shared decoder's layer list, the capture hooks sit on shared layers and
        Qwen2-VL keeps rope_deltas on the module, so the backbone forward holds this retriever's lock; the
        gather, norm and heads after it read only this call's tensors and run outside it."""
        exits = self._check_exits(exits)
        lm = bb.language_model(self.backbone)
        with self._forward_lock:
            captured = self._exit_states(lm, inputs, exits)
        index = inputs.vector_index
        out = {}
        for e in exits:
            hidden = captured[e]
            picked = torch.gather(hidden, 1, index.to(hidden.device).unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))
            vectors = F.normalize(self.heads(e, lm.norm(picked)), dim=-1)
            out[e] = MultiVector(vectors, inputs.vector_mask.to(hidden.device), inputs.grids if grids else None)
        return out

    def _exit_states(self, lm: nn.Module, inputs: EncoderInputs, exits: list[int]) -> dict[int, torch.Tensor]:
        """{exit: that decoder layer's output [B, L, H]}: one backbone forward through layers[:max(exits)] only
        (mutates shared module state: call it under self._forward_lock)."""
        captured: dict[int, torch.Tensor] = {}

        def hook(e):
            def fn(module, args, output):
                captured[e] = output[0] if isinstance(output, tuple) else output
            return fn

        handles = [lm.layers[e - 1].register_forward_hook(hook(e)) for e in exits]
        self.family.before_forward(self.backbone)  # e.g. Qwen2-VL's rope deltas of a previous batch
        try:
            with truncated(lm, max(exits)):
                self.backbone(**self._forward_kwargs(inputs))
        finally:
            for h in handles:
                h.remove()
        return captured

    def encode_pages(self, inputs: EncoderInputs, exits: list[int] | None = None) -> dict[int, MultiVector]:
        """PageInputs [B] -> {exit: MultiVector vectors [B, N, dim], mask [B, N], grids [B, 2]} (image tokens only)."""
        return self._encode(inputs, exits, grids=True)

    def encode_queries(self, inputs: EncoderInputs, exits: list[int] | None = None) -> dict[int, MultiVector]:
        """QueryInputs [B] -> {exit: MultiVector vectors [B, N, dim], mask [B, N], grids None} (text tokens only)."""
        return self._encode(inputs, exits, grids=False)

    # ---- serving ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def embed(self, pages: list | EncoderInputs | None = None, queries: list[str] | EncoderInputs | None = None,
              budget: Budget | None = None, batch_size: int = 8) -> list[torch.Tensor]:
        """Exactly one of `pages` (PIL images or PageInputs) / `queries` (texts or QueryInputs) -> per item the
        real vectors at `budget` (default: default_budget; pages pooled): a list of [n_i, budget.dim] tensors."""
        budget = budget or self.default_budget
        return [v[budget] for v in self.embed_budgets([budget], pages, queries, batch_size)]

    @torch.no_grad()
    def embed_budgets(self, budgets: list[Budget], pages: list | EncoderInputs | None = None,
                      queries: list[str] | EncoderInputs | None = None, batch_size: int = 8) -> list[dict]:
        """Like embed(), at several budgets from one forward per batch (run to the deepest exit they need, every
        exit captured on the way): per item {budget: [n_i, budget.dim] float vectors} (pages pooled; precision
        is how a store keeps them, not applied here)."""
        if (pages is None) == (queries is None):
            raise ValueError("embed() takes exactly one of pages= or queries=")
        exits = self._check_exits(sorted({b.layers for b in budgets}))
        items, is_pages = (pages, True) if pages is not None else (queries, False)
        out: list[dict] = []
        for start in range(0, len(items), batch_size):
            if isinstance(items, EncoderInputs):
                inputs = items.slice(start, start + batch_size)
            else:
                chunk = list(items[start : start + batch_size])
                inputs = self.processor.pages(chunk) if is_pages else self.processor.queries(chunk)
            encode = self.encode_pages if is_pages else self.encode_queries
            by_exit = encode(inputs.to(self.device), exits=exits)
            cut = {b: apply_budget(by_exit[b.layers], b.dim, b.pool).unpad() for b in budgets}
            out += [{b: cut[b][i] for b in budgets} for i in range(len(inputs))]
        return out

    def for_budget(self, budget: Budget) -> "Retriever":
        """A new retriever holding only the decoder layers `budget` runs and the heads of every exit up to it, sliced
        to budget.dim (so it also serves the smaller budgets below it: a cascade's cheaper stages); its
        default_budget is `budget`. Encodes equal this model's at the budget."""
        if budget.layers not in self.exits:
            raise ValueError(f"budget {budget} exits at {budget.layers}, which has no head (exits {self.exits})")
        if not 0 < budget.dim <= self.dim or budget.pool < 1:
            raise ValueError(f"budget {budget} does not fit a model of width {self.dim}")
        with self._forward_lock:  # copy the whole layer list, not one an encode has cut
            backbone = copy.deepcopy(self.backbone)
        lm = bb.language_model(backbone)
        lm.layers = lm.layers[: budget.layers]
        tc = bb.text_config(backbone)
        tc.num_hidden_layers = budget.layers
        if getattr(tc, "layer_types", None):
            tc.layer_types = list(tc.layer_types)[: budget.layers]
        heads = self.heads.sliced([e for e in self.exits if e <= budget.layers], budget.dim)
        variant = Retriever(backbone, self.processor, heads, self.arch, budget.dim, default_budget=budget)
        variant.lora_scaling = self.lora_scaling
        return variant
