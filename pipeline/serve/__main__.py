"""python -m pipeline.serve: deploy a registered variant by alias.

    python -m pipeline.serve index  [--alias A] [--shards DIR] [--split S|all]    pages -> the alias's collection
    python -m pipeline.serve search --query "text" [--query ...] [-k 5]            top-k pages (JSON lines)
    python -m pipeline.serve delete --doc DOC [--doc ...]                        remove documents' pages
    python -m pipeline.serve verify                                              content and version check
    python -m pipeline.serve http   [--alias A] [--port 5001]                    /search and /invocations on 127.0.0.1

The model is models:/<tracking.registered_model>@<serve.alias> (or serve.model_uri). Pages go into Qdrant (an
embedded Edge shard under serve.index_dir, or the server at serve.qdrant_url) or the flat exact index
(serve.engine), at every budget of serve.budgets; search runs serve.cascade. A collection encoded by another
registry version than the alias names now is refused: vectors of different variants do not compare.
"""

from __future__ import annotations

import json
import logging
import sys

from pipeline.cli import Command, flag, parse, repeat
from pipeline.config import Config
from pipeline.logs import setup_logging

log = logging.getLogger("pipeline.serve")
_INDEX_DIR = flag("--index-dir", key="serve.index_dir", metavar="DIR")
CLI = Command(
    "python -m pipeline.serve", "Deploy a registered variant by alias: index pages, search them, or serve HTTP.",
    flags=(flag("--alias", key="serve.alias"), flag("--model-uri", key="serve.model_uri", metavar="URI"),
           flag("--model", key="tracking.registered_model", metavar="NAME"),
           flag("--tracking-uri", key="tracking.tracking_uri", metavar="URI"),
           flag("--engine", key="serve.engine"), flag("--qdrant-url", key="serve.qdrant_url", metavar="URL")),
    verbs={
        "index": (_INDEX_DIR, flag("--shards", key="serve.shards", metavar="DIR"), flag("--split", key="serve.split")),
        "search": (_INDEX_DIR, repeat("--query", key="serve.queries", metavar="TEXT"), flag("-k", key="serve.k")),
        "delete": (_INDEX_DIR, repeat("--doc", key="serve.docs", metavar="DOC")),
        "verify": (_INDEX_DIR,),
        "http": (_INDEX_DIR, flag("--host", key="serve.host"), flag("--port", key="serve.port")),
    },
    sections=("serve", "tracking"),
)


def cmd_index(cfg: Config) -> int:
    from pipeline.layout.shards import verified_fingerprint
    from pipeline.layout.run import StagePaths
    from pipeline.serve import deploy
    from pipeline.serve.pages import shards_of

    shards = shards_of(StagePaths.from_config(cfg).serve_shards, cfg.serve.split)
    fingerprint = verified_fingerprint(shards)  # every byte checked before the model loads
    s = deploy.index(cfg, shards, fingerprint)
    where = f"a new collection {s['new_collection']} (now live)" if s["new_collection"] else "the live collection"
    log.info("indexed %d pages at %s into %s: %d pages, %s v%s", s["pages"], ", ".join(s["budgets"]), where,
             s["collection_pages"], s["model_uri"], s["version"])
    return 0


def cmd_search(cfg: Config) -> int:
    from pipeline.serve import deploy

    if not cfg.serve.queries:
        sys.stderr.write("search needs at least one --query TEXT\n")
        return 2
    searcher = deploy.searcher(cfg)
    for query, hits in zip(cfg.serve.queries, searcher.search(cfg.serve.queries, cfg.serve.k)):
        results = [{"rank": r + 1, "key": h.key, "score": h.score, **_shown(h.payload)} for r, h in enumerate(hits)]
        print(json.dumps({"query": query, "results": results}))
    searcher.close()
    return 0


def _shown(payload: dict) -> dict:
    return {k: payload[k] for k in ("doc", "page", "shard") if k in payload}


def cmd_delete(cfg: Config) -> int:
    from pipeline.serve import deploy

    if not cfg.serve.docs:
        sys.stderr.write("delete needs at least one --doc DOC\n")
        return 2
    print(json.dumps({"deleted_pages": deploy.delete(cfg), "docs": cfg.serve.docs}))
    return 0


def cmd_verify(cfg: Config) -> int:
    from pipeline.serve import deploy

    print(json.dumps({"verified_pages": deploy.verify(cfg)}))
    return 0


def cmd_http(cfg: Config) -> int:
    from pipeline.serve.http import serve

    serve(cfg)
    return 0


def main(argv: list[str] | None = None) -> int:
    cfg, ns = parse(CLI, argv)
    setup_logging()
    from pipeline.layout.lock import DirectoryInUse
    from pipeline.layout.shards import ManifestError, ShardError, error_line

    try:
        return {"index": cmd_index, "search": cmd_search, "delete": cmd_delete, "verify": cmd_verify,
                "http": cmd_http}[ns.verb](cfg)
    except (ManifestError, ShardError, DirectoryInUse, ValueError) as e:  # refused in one line: nothing changed
        sys.stderr.write(f"{error_line(e)}\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
