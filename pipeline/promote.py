"""python -m pipeline.promote: move a registry alias to a version only when the quality gate passes.

    python -m pipeline.promote --alias balanced --version 3 [--dry-run]
    python -m pipeline.promote --alias tiny --max-bytes-per-page 512 [promote.tolerance=0.01]
    python -m pipeline.promote --list        (every version: budget, bytes/page, nDCG@5, eval set, aliases)

Prints one line (what moved, or why not). Exit status 0 when the alias moved (or would, in a dry run),
1 when the gate refused or a concurrent promotion won the race, 2 on a usage or config error.
"""

from __future__ import annotations

import sys

from pipeline.cli import Command, flag, parse, switch
from pipeline.logs import setup_logging

CLI = Command(
    "python -m pipeline.promote", "Move a registry alias when the quality gate passes.",
    flags=(flag("--alias", key="promote.alias"), flag("--version", key="promote.version", metavar="N"),
           flag("--max-bytes-per-page", key="promote.max_bytes_per_page", metavar="X"),
           flag("--tolerance", key="promote.tolerance"), switch("--dry-run", key="promote.dry_run"),
           flag("--model", key="tracking.registered_model", metavar="NAME"),
           flag("--tracking-uri", key="tracking.tracking_uri", metavar="URI"),
           switch("--list", help="list every version (budget, bytes/page, nDCG@5, eval set, aliases) and exit")),
    sections=("promote", "tracking"),
)


def main(argv: list[str] | None = None) -> int:
    cfg, ns = parse(CLI, argv)
    p = cfg.promote
    if not ns.list and (not p.alias or (p.version is None) == (p.max_bytes_per_page is None)):
        sys.stderr.write(f"{CLI.prog}: usage: --alias NAME and exactly one of --version N / --max-bytes-per-page X\n")
        return 2
    setup_logging()
    from mlflow import MlflowClient

    from pipeline.registry.promotion import describe, promote

    client = MlflowClient(tracking_uri=cfg.tracking.tracking_uri, registry_uri=cfg.tracking.tracking_uri)
    if ns.list:
        print("\n".join(describe(client, cfg.tracking.registered_model)))
        return 0
    d = promote(client, cfg.tracking.registered_model, p.alias, p.tolerance, version=p.version,
                max_bytes_per_page=p.max_bytes_per_page, dry_run=p.dry_run, retries=p.retries)
    prefix = "dry run, would promote: " if d.move and not d.applied else ("promoted: " if d.applied else "")
    print(f"{prefix}{d.reason}")
    return 0 if d.move else 1


if __name__ == "__main__":
    sys.exit(main())
