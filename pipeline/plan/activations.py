"""Bytes that autograd keeps for backward, per token and layer, for the decoder layers and vision blocks of the
supported families, and for one gradient-cache chunk with and without gradient checkpointing.

The per-layer formulas list the tensors the layers save in transformers 5.x with SDPA (FlashAttention keeps the
same set: q, k, v, output and log-sum-exp, never the S x S scores); tests/plan/test_activations.py checks them
against what autograd really saves at the real widths. b is the compute dtype's size; norms and rotary maths run
in float32 (4 bytes) whatever the dtype.
"""

from __future__ import annotations

from pipeline.model.families import named
from pipeline.plan.flops import lora_shapes
from pipeline.plan.shape import ModelShape
from pipeline.plan.workload import Workload

F32 = 4


def text_layer_bytes(s: ModelShape, b: int, seq: int, attn: str = "sdpa", masked: bool = True) -> float:
    """Saved bytes per token of one decoder layer (Qwen2 / Gemma) in sequences of length `seq`.

    Per RMSNorm: its float32 input, 1/rms, the normalised input of the linears after it (b), and, when the norm
    weight trains, the normalised tensor its gradient needs (b for Qwen2, float32 for Gemma's (1 + w) form).
    Attention: q, output (heads x head_dim each), k, v (kv heads), float32 log-sum-exp per head, and an explicit
    [S, S] mask when one is passed (PaliGemma's prefix mask; padded batches). MLP: gate and up outputs, the
    activation's output and the product (4 x intermediate). LoRA (fitted to what peft saves): per adapted linear
    its dropout output and its rank-r product; base layers and norm weights then keep nothing for weights.
    """
    h, hq, kv = s.hidden, s.heads * s.head_dim, s.kv_heads * s.head_dim
    norm = F32 * h + F32 + b * h
    wgrad = b * h if s.norm == "rms" else F32 * h
    attention = b * (2 * hq + 2 * kv) + F32 * s.heads + (b * seq if masked else 0)
    if attn == "eager":
        attention += 2 * b * s.heads * seq  # scores and probabilities
    mlp = 4 * b * s.intermediate
    if not s.lora_r:
        return 2 * (norm + wgrad) + attention + mlp
    adapters = sum(b * (i * (5 / 3 if i != s.intermediate else 1) + s.lora_r)
                   for name, (i, _) in lora_shapes(s).items() if name in s.lora_targets)
    return 2 * norm + attention + mlp + adapters


def vision_block_bytes(s: ModelShape, b: int, image_patches: int, attn: str = "sdpa") -> float:
    """Saved bytes per patch of one vision block when the tower trains (0 when it is frozen: LoRA): the family's
    formula (pipeline/model/families/<arch>.py, vision_block_base_bytes) plus the attention heads' float32 statistics."""
    if not s.vision_trainable:
        return 0.0
    t = s.tower
    per = named(s.arch).vision_block_base_bytes(b, t) + F32 * t.heads
    if attn == "eager":
        per += 2 * b * t.heads * image_patches  # scores and probabilities within the page
    return per


def other_bytes(s: ModelShape, b: int, w: Workload, pages: bool) -> float:
    """Per page (or query): the exits' final norm (float32) and head inputs at every vector, the decoder's own
    final norm over the sequence (it runs though only the exits are used), the rotary tables, and when the tower
    trains the patch embedding's input and the merger / projector's inputs."""
    vectors, seq = (w.page_tokens, w.page_seq) if pages else (w.query_vectors, w.query_seq)
    # A trainable Gemma norm also keeps its float32 output for (1 + w)'s gradient.
    norm_f32 = (2 if s.norm == "gemma_rms" and not s.lora_r else 1) * F32 * s.hidden
    out = vectors * len(s.exits) * (norm_f32 + b * s.hidden + 2 * b * s.dim)
    out += seq * (norm_f32 + 2 * b * s.hidden + F32 + 2 * b * s.head_dim)  # the decoder's own final norm, rotary
    if pages and s.vision_trainable:
        t = s.tower
        out += w.page_patches * b * (t.patch_dim + t.width) + w.page_tokens * 3 * b * t.width * t.merge**2
    return out


def chunk_bytes(s: ModelShape, b: int, w: Workload, checkpointing: bool, attn: str = "sdpa") -> float:
    """Peak saved activations while one chunk of pages is re-encoded with the graph and back-propagated.

    Without checkpointing every layer's saved tensors; with it only each layer's input (b x hidden per token,
    b x width per patch when the tower trains) plus one layer recomputed in full. Either way plus the hidden
    stream's gradient in flight (2 x b x hidden per token). Pages, not queries, set the peak.
    """
    tokens, patches = w.chunk * w.page_seq, w.chunk * w.page_patches
    layer = text_layer_bytes(s, b, w.page_seq, attn) * tokens
    block = vision_block_bytes(s, b, w.page_patches, attn) * patches
    if checkpointing:
        kept = s.layers * b * s.hidden * tokens + (s.tower.depth * b * s.tower.width * patches if block else 0)
        graph = kept + max(layer, block)
    else:
        graph = s.layers * layer + s.tower.depth * block
    # Backward frees a layer's saved tensors as it makes that layer's gradients; the hidden stream's gradient
    # (2 x b x hidden per token) is what is in flight on top.
    return graph + w.chunk * other_bytes(s, b, w, pages=True) + 2 * b * s.hidden * tokens
