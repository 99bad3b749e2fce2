"""What autograd really keeps for backward while a retriever encodes pages: bytes per decoder layer, per vision
block and elsewhere, by storage (a tensor saved twice or a view counts once; parameters do not count)."""

from __future__ import annotations

import collections

import torch

from pipeline.model import backbone as bb


def vision_blocks(backbone) -> list:
    visual = getattr(backbone, "visual", None)
    if visual is not None:
        return list(visual.blocks)
    tower = backbone.vision_tower
    return list(getattr(tower, "vision_model", tower).encoder.layers)


def saved_bytes(retriever, pages) -> dict[str, float]:
    """{"text0": bytes, "text1": ..., "vision0": ..., "other": ...} saved during retriever.encode_pages(pages)."""
    stack, seen, acc = ["other"], set(), collections.Counter()
    kept = []  # every saved tensor stays alive until the end, so no storage address is freed and reused meanwhile
    params = {p.untyped_storage().data_ptr() for p in retriever.parameters()}
    handles = []
    modules = [(f"text{i}", m) for i, m in enumerate(bb.language_model(retriever.backbone).layers)]
    modules += [(f"vision{i}", m) for i, m in enumerate(vision_blocks(retriever.backbone))]

    def enter(name):
        return lambda module, args: stack.append(name)  # returns None: the inputs stay

    def leave(module, args, out):
        stack.pop()  # a forward hook must return None, or its value replaces the output

    for name, m in modules:
        handles += [m.register_forward_pre_hook(enter(name)), m.register_forward_hook(leave)]

    def pack(t):
        key = t.untyped_storage().data_ptr()
        if key not in params and key not in seen:
            seen.add(key)
            acc[stack[-1]] += t.untyped_storage().nbytes()
        kept.append(t)
        return t

    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            retriever.encode_pages(pages)
    finally:
        for h in handles:
            h.remove()
    return dict(acc)
