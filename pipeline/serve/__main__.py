"""python -m pipeline.serve: serve a registered variant by alias.

    python -m pipeline.serve index  [--alias balanced] [--shards DIR] [--index-dir DIR]   pages -> on-disk index
    python -m pipeline.serve search --query "text" [--query ...] [-k 5] [--index-dir DIR]   top-k pages (JSON lines)
    python -m pipeline.serve http   [--alias balanced] [--port 5001]   MLflow's scoring app on serve.host (127.0.0.1)

The model is models:/<tracking.registered_model>@<serve.alias> (or serve.model_uri). Search refuses an index
built by another registry version than the alias names now: vectors of different variants do not compare. The
HTTP server answers a malformed request with a one-line 400 and an oversized one with 413 (pipeline/serve/http.py).
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
    "python -m pipeline.serve", "Serve a registered variant by alias: build an index, search it, or serve HTTP.",
    flags=(flag("--alias", key="serve.alias"), flag("--model-uri", key="serve.model_uri", metavar="URI"),
           flag("--model", key="tracking.registered_model", metavar="NAME"),
           flag("--tracking-uri", key="tracking.tracking_uri", metavar="URI")),
    verbs={
        "index": (_INDEX_DIR, flag("--shards", key="serve.shards", metavar="DIR"), flag("--split", key="serve.split")),
        "search": (_INDEX_DIR, repeat("--query", key="serve.queries", metavar="TEXT"), flag("-k", key="serve.k")),
        "http": (flag("--host", key="serve.host"), flag("--port", key="serve.port")),
    },
    sections=("serve", "tracking"),
)


def resolve(cfg: Config) -> tuple[str, dict]:
    """(model URI, {"model_uri", "version", "alias"}) of the variant to serve; version None for a non-registry URI."""
    uri = cfg.serve.model_uri or f"models:/{cfg.tracking.registered_model}@{cfg.serve.alias}"
    version = None
    if uri.startswith("models:/") and "@" in uri:
        from mlflow import MlflowClient

        name, alias = uri[len("models:/"):].split("@", 1)
        client = MlflowClient(tracking_uri=cfg.tracking.tracking_uri, registry_uri=cfg.tracking.tracking_uri)
        version = int(client.get_model_version_by_alias(name, alias).version)
    return uri, {"model_uri": uri, "version": version}


def load(cfg: Config, uri: str):
    """The VariantModel (retriever + card) behind a pyfunc URI."""
    import mlflow

    mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
    return mlflow.pyfunc.load_model(uri).unwrap_python_model()


def cmd_index(cfg: Config) -> int:
    from pipeline.data.reader import ShardPages as ShardEvalSet
    from pipeline.layout.run import StagePaths
    from pipeline.serve.index import build_index

    shards = StagePaths.from_config(cfg).serve_shards
    pages = ShardEvalSet(shards, cfg.serve.split)  # verified before the model loads
    uri, info = resolve(cfg)
    model = load(cfg, uri)
    info.update(budget=model.card["budget"], eval_fingerprint=model.card.get("eval_fingerprint"),
                pages_from=pages.name, pages_fingerprint=pages.fingerprint)
    index = build_index(model.retriever, pages.pages(), info, cfg.serve.batch_size)
    try:
        out = index.save(cfg.serve.index_dir)
    except ValueError as e:
        log.error("%s", e)
        return 1
    h = index.header()
    log.info("indexed %d pages (%d vectors at %s, %d bytes of codes = %.0f bytes/page) from %s at %s (v%s) -> %s",
             len(index.keys), h["vectors"], h["precision"], h["codes_bytes"], h["codes_bytes"] / max(len(index.keys), 1),
             shards, uri, info["version"], out)
    return 0


def cmd_search(cfg: Config) -> int:
    from pipeline.serve.index import Index, search

    if not cfg.serve.queries:
        sys.stderr.write("search needs at least one --query TEXT\n")
        return 2
    try:
        index = Index.load(cfg.serve.index_dir)
    except ValueError as e:
        sys.stderr.write(f"{e}\n")
        return 1
    uri, info = resolve(cfg)
    if uri != index.info["model_uri"] or info["version"] != index.info["version"]:
        sys.stderr.write(f"{uri} (v{info['version']}) is not what the index holds ({index.info['model_uri']} "
                         f"v{index.info['version']}): re-run `python -m pipeline.serve index`\n")
        return 1
    model = load(cfg, uri)
    hits = search(index, model.retriever.embed(queries=cfg.serve.queries), cfg.serve.k)
    for query, row in zip(cfg.serve.queries, hits):
        print(json.dumps({"query": query, "results": [{"rank": r + 1, "key": key, "score": score}
                                                      for r, (key, score) in enumerate(row)]}))
    return 0


def cmd_http(cfg: Config) -> int:
    from pipeline.serve.http import serve

    uri, info = resolve(cfg)
    s = cfg.serve
    log.info("serving %s (v%s) on http://%s:%d/invocations (at most %d rows, %g MiB per request)", uri,
             info["version"], s.host, s.port, s.max_rows, s.max_request_mb)
    serve(uri, s.host, s.port, s.max_request_mb, s.max_rows)
    return 0


def main(argv: list[str] | None = None) -> int:
    cfg, ns = parse(CLI, argv)
    setup_logging()
    import mlflow

    mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
    from pipeline.layout.shards import ManifestError, ShardError, error_line

    try:
        return {"index": cmd_index, "search": cmd_search, "http": cmd_http}[ns.verb](cfg)
    except (ManifestError, ShardError) as e:  # pages that are not what their manifest says: no index
        log.error("%s", error_line(e))
        return 1


if __name__ == "__main__":
    sys.exit(main())
