"""`python -m demo.tiny [--config FILE] [--out DIR]`: write the demo's tiny random Qwen2-VL to model.name_or_path,
with the synthetic corpus's code vocabulary (synth.*) as single tokens."""

from __future__ import annotations

import logging

from data_prep.synth import code_vocab
from pipeline.cli import Command, flag, parse_cli
from pipeline.logs import setup_logging
from pipeline.model.tiny import build_tiny_qwen2vl

CLI = Command("python -m demo.tiny", "Write a tiny random Qwen2-VL with the synthetic code vocabulary.",
              flags=(flag("--out", key="model.name_or_path", metavar="DIR"),), sections=("synth",))


def main(argv: list[str] | None = None) -> None:
    cfg = parse_cli(CLI, argv)
    setup_logging()
    words = code_vocab(cfg.synth.vocab_size, cfg.synth.code_len, cfg.synth.vocab_seed)
    out = build_tiny_qwen2vl(cfg.model.name_or_path, words=words, vocab_size=max(2048, 2 * len(words) + 1800),
                             seed=cfg.train.seed)
    logging.getLogger(__name__).info("tiny Qwen2-VL written to %s (%d code words)", out, len(words))


if __name__ == "__main__":
    main()
