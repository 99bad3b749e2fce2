"""python -m pipeline.promote: move a registry alias to a version only when the quality gate passes.

    python -m pipeline.promote --alias balanced --version 3 [--dry-run]
    python -m pipeline.promote --alias tiny --max-bytes-per-page 512 [promote.tolerance=0.01]
    python -m pipeline.promote --list        (every version: budget, bytes/page, nDCG@5, eval set, aliases)

Prints one line (what moved, or why not). Exit status 0 when the alias moved (or would, in a dry run),
1 when the gate refused, 2 on a usage error.
"""

from __future__ import annotations

import sys

from pipeline.config import parse_cli
from pipeline.logs import setup_logging

SHORTCUTS = {
    "--alias": "promote.alias",
    "--version": "promote.version",
    "--max-bytes-per-page": "promote.max_bytes_per_page",
    "--tolerance": "promote.tolerance",
    "--model": "tracking.registered_model",
    "--tracking-uri": "tracking.tracking_uri",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    listing = "--list" in argv
    if "--dry-run" in argv:  # a bare flag; parse_cli shortcuts take a value
        argv = argv + ["promote.dry_run=true"]
    argv = [a for a in argv if a not in ("--dry-run", "--list")]
    cfg = parse_cli(argv, "Move a registry alias when the quality gate passes.", SHORTCUTS)
    setup_logging()
    p = cfg.promote
    if listing:
        from mlflow import MlflowClient

        from pipeline.registry.promotion import describe

        client = MlflowClient(tracking_uri=cfg.tracking.tracking_uri, registry_uri=cfg.tracking.tracking_uri)
        print("\n".join(describe(client, cfg.tracking.registered_model)))
        return 0
    if not p.alias or (p.version is None) == (p.max_bytes_per_page is None):
        sys.stderr.write("usage: --alias NAME and exactly one of --version N / --max-bytes-per-page X\n")
        return 2
    from mlflow import MlflowClient

    from pipeline.registry.promotion import promote

    client = MlflowClient(tracking_uri=cfg.tracking.tracking_uri, registry_uri=cfg.tracking.tracking_uri)
    d = promote(client, cfg.tracking.registered_model, p.alias, p.tolerance, version=p.version,
                max_bytes_per_page=p.max_bytes_per_page, dry_run=p.dry_run)
    prefix = "dry run, would promote: " if d.move and not d.applied else ("promoted: " if d.applied else "")
    print(f"{prefix}{d.reason}")
    return 0 if d.move else 1


if __name__ == "__main__":
    sys.exit(main())
