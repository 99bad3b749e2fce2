"""FLOPs of one optimizer step (global, all ranks): forward, backward, gradient-checkpointing recompute and the
gradient cache's extra no-grad forward, counted separately.

Conventions: a matmul [m, k] x [k, n] is 2mkn FLOPs; attention costs 4 * S * (heads * head_dim) per token for
QK^T and AV over the full S x S square (no halving for causal masks, as in the PaLM / nanoGPT MFU convention);
norms, activations and softmax are not counted. Backward: 2x forward for layers whose weights train, 1x (input
gradients only) for frozen linears that gradients must cross (LoRA's decoder), 0 for a frozen vision tower;
attention backward is 2x its forward either way. MFU uses forward + backward only ("model FLOPs").
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.plan.shape import ModelShape
from pipeline.plan.workload import Workload


@dataclass
class Parts:
    """FLOPs split into weight matmuls (`linear`), attention (`attn`) and trainable adapters (`lora`)."""

    linear: float = 0.0
    attn: float = 0.0
    lora: float = 0.0

    @property
    def total(self) -> float:
        return self.linear + self.attn + self.lora


def lora_shapes(s: ModelShape) -> dict[str, tuple[int, int]]:
    hq, kv = s.heads * s.head_dim, s.kv_heads * s.head_dim
    return {"q_proj": (s.hidden, hq), "k_proj": (s.hidden, kv), "v_proj": (s.hidden, kv), "o_proj": (hq, s.hidden),
            "gate_proj": (s.hidden, s.intermediate), "up_proj": (s.hidden, s.intermediate),
            "down_proj": (s.intermediate, s.hidden)}


def decoder_forward(s: ModelShape, tokens: int, seq: int) -> Parts:
    """All decoder layers over `tokens` tokens in sequences of length `seq`."""
    hq, kv = s.heads * s.head_dim, s.kv_heads * s.head_dim
    linear = 2 * (s.hidden * hq + 2 * s.hidden * kv + hq * s.hidden + 3 * s.hidden * s.intermediate)
    shapes = lora_shapes(s)
    lora = sum(2 * s.lora_r * (i + o) for name, (i, o) in shapes.items() if name in s.lora_targets)
    n = s.layers * tokens
    return Parts(linear * n, 4 * seq * hq * n, lora * n)


def vision_forward(s: ModelShape, pages: int, w: Workload) -> Parts:
    """Patch embedding, every vision block (full attention within a page) and the merger / projector."""
    t = s.tower
    patches = pages * w.page_patches
    block = 2 * (t.width * 3 * t.width + t.width * t.width + 2 * t.width * t.mlp)
    merged = t.width * t.merge**2
    merger = 2 * (merged * merged + merged * s.hidden) if t.merge > 1 else 2 * t.width * s.hidden
    linear = patches * (2 * t.patch_dim * t.width + t.depth * block) + pages * w.page_tokens * merger
    return Parts(linear, patches * t.depth * 4 * w.page_patches * t.width)


def heads_forward(s: ModelShape, vectors: int) -> float:
    return vectors * len(s.exits) * 2 * s.hidden * s.dim


def loss_forward(s: ModelShape, w: Workload, n_budgets: int) -> float:
    """MaxSim of every query against every page of the global batch, per trained budget (full width, pool 1:
    an upper bound for narrower or pooled budgets)."""
    return n_budgets * 2 * (w.global_batch * w.query_vectors) * (w.global_batch * w.page_tokens) * (s.dim + 1)


def step_flops(s: ModelShape, w: Workload, n_budgets: int, checkpointing: bool,
               grad_cache: bool) -> dict[str, float]:
    """Global FLOPs of one step: forward, backward, recompute, grad_cache_forward, model (fwd + bwd), total."""
    g = w.global_batch
    dec = decoder_forward(s, g * w.page_seq, w.page_seq)
    q = decoder_forward(s, g * w.query_seq, w.query_seq)
    dec = Parts(dec.linear + q.linear, dec.attn + q.attn, dec.lora + q.lora)
    vis = vision_forward(s, g, w)
    heads = heads_forward(s, g * (w.page_tokens + w.query_vectors))
    lossf = loss_forward(s, w, n_budgets)
    encode = dec.total + vis.total + heads
    if s.vision_trainable:  # full fine-tuning: weight and input gradients everywhere
        backward = 2 * (dec.total + vis.total + heads)
    else:  # LoRA: input gradients through the frozen decoder, adapter and head weights, nothing in the tower
        backward = dec.linear + 2 * dec.attn + 2 * dec.lora + 2 * heads
    backward += lossf
    recompute = (dec.total + (vis.total if s.vision_trainable else 0.0)) if checkpointing else 0.0
    cache = encode if grad_cache else 0.0
    forward = encode + lossf
    return {"forward": forward, "backward": backward, "recompute": recompute, "grad_cache_forward": cache,
            "model": forward + backward, "total": forward + backward + recompute + cache}
