"""What one optimizer step processes: pages and queries per rank and chunk, and tokens per page and query at the
configured caps (a page at the largest size the configured max pixels allow, a query at max_query_tokens)."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.cli import RunConfig
from pipeline.plan.shape import ModelShape

QWEN_DEFAULT_MAX_PIXELS = 12_845_056  # Qwen2-VL image processor's default when model.max_pixels is unset
PROMPT_TOKENS = 8  # tokens around a page's image tokens (Qwen: chat turn + vision markers; PaliGemma: bos + prompt)
QUERY_EXTRA_TOKENS = 2  # PaliGemma's bos and newline around a query (Qwen: none); an upper bound for both


@dataclass
class Workload:
    world: int  # ranks (GPUs) in the job
    global_batch: int  # query/page pairs per optimizer step
    local_batch: int
    chunk: int  # pairs per gradient-cache chunk (the plain step puts the whole local batch in one graph)
    page_tokens: int  # image tokens (= vectors) per page
    page_patches: int  # vision-tower positions per page
    page_seq: int  # decoder sequence of a page
    query_vectors: int
    query_seq: int

    @property
    def tokens_per_step(self) -> int:
        """Decoder tokens of the global batch (pages + queries)."""
        return self.global_batch * (self.page_seq + self.query_seq)


def page_tokens(cfg: RunConfig, shape: ModelShape) -> tuple[int, int]:
    """(image tokens, vision positions) of the largest page: Qwen2-VL at the smaller of model.max_pixels and
    render.max_pixels; PaliGemma at its fixed image size."""
    t = shape.tower
    if t.image_size is not None:
        n = (t.image_size // t.patch) ** 2
        return n, n
    cap = min(cfg.model.max_pixels or QWEN_DEFAULT_MAX_PIXELS, cfg.render.max_pixels)
    tokens = cap // (t.patch * t.merge) ** 2
    return tokens, tokens * t.merge**2


def make_workload(cfg: RunConfig, shape: ModelShape, world: int, grad_cache: bool | None = None) -> Workload:
    """The step of `cfg` on `world` ranks; raises ValueError when the global batch does not split evenly."""
    if cfg.data.global_batch % world:
        raise ValueError(f"data.global_batch {cfg.data.global_batch} is not a multiple of {world} GPUs")
    local = cfg.data.global_batch // world
    use_cache = cfg.train.grad_cache if grad_cache is None else grad_cache
    tokens, patches = page_tokens(cfg, shape)
    q = cfg.model.max_query_tokens
    return Workload(world, cfg.data.global_batch, local, min(cfg.train.chunk_size, local) if use_cache else local,
                    tokens, patches, tokens + PROMPT_TOKENS, q, q + QUERY_EXTRA_TOKENS)
