"""python -m pipeline.serve: serve a registered variant by alias.

    python -m pipeline.serve index  [--alias balanced] [--shards DIR] [--index-dir DIR]   pages -> on-disk index
    python -m pipeline.serve search --query "text" [--query ...] [-k 5] [--index-dir DIR]   top-k pages (JSON lines)
    python -m pipeline.serve http   [--alias balanced] [--port 5001]   mlflow models serve on serve.host (127.0.0.1)

The model is models:/<tracking.registered_model>@<serve.alias> (or serve.model_uri). Search refuses an index
built by another registry version than the alias names now: vectors of different variants do not compare.
"""

from __future__ import annotations

import json
import logging
import os
import sys

from pipeline.config import Config, parse_cli
from pipeline.logs import setup_logging

log = logging.getLogger("pipeline.serve")
SHORTCUTS = {"--alias": "serve.alias", "--model-uri": "serve.model_uri", "--index-dir": "serve.index_dir",
             "--shards": "serve.shards", "--split": "serve.split", "-k": "serve.k", "--port": "serve.port",
             "--tracking-uri": "tracking.tracking_uri", "--model": "tracking.registered_model"}
VERBS = ("index", "search", "http")


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
    from pipeline.evaluate.data import ShardEvalSet
    from pipeline.serve.index import build_index

    uri, info = resolve(cfg)
    model = load(cfg, uri)
    shards = cfg.serve.shards or cfg.eval.shards or cfg.data.shards
    pages = ShardEvalSet(shards, cfg.serve.split)
    info.update(budget=model.card["budget"], eval_fingerprint=model.card.get("eval_fingerprint"),
                pages_from=pages.name, pages_fingerprint=pages.fingerprint)
    index = build_index(model.retriever, pages.pages(), info, cfg.serve.batch_size)
    out = index.save(cfg.serve.index_dir)
    log.info("indexed %d pages (%d vectors, %d bytes) from %s at %s (v%s) -> %s", len(index.keys),
             index.vectors.shape[0], index.vectors.numel() * 2, shards, uri, info["version"], out)
    return 0


def cmd_search(cfg: Config) -> int:
    from pipeline.serve.index import Index, search

    if not cfg.serve.queries:
        sys.stderr.write("search needs at least one --query TEXT\n")
        return 2
    index = Index.load(cfg.serve.index_dir)
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
    uri, info = resolve(cfg)
    env = {**os.environ, "MLFLOW_TRACKING_URI": cfg.tracking.tracking_uri}
    bin_dir = os.path.dirname(sys.executable)  # `mlflow models serve` execs uvicorn: the venv's bin first
    env["PATH"] = bin_dir + os.pathsep + env.get("PATH", "")
    cmd = [os.path.join(bin_dir, "mlflow"), "models", "serve", "-m", uri, "--env-manager", "local",
           "--host", cfg.serve.host, "--port", str(cfg.serve.port)]
    log.info("serving %s (v%s) on http://%s:%d/invocations", uri, info["version"], cfg.serve.host, cfg.serve.port)
    os.execvpe(cmd[0], cmd, env)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in VERBS:
        sys.stderr.write(f"usage: python -m pipeline.serve {{{','.join(VERBS)}}} [options] (see --help)\n")
        return 2
    verb, rest, queries = argv[0], [], []
    it = iter(argv[1:])
    for a in it:  # --query may repeat; parse_cli shortcuts take one value each
        if a == "--query":
            queries.append(next(it))
        else:
            rest.append(a)
    if queries:
        rest.append(f"serve.queries={json.dumps(queries)}")
    cfg = parse_cli(rest, f"pipeline.serve {verb}", SHORTCUTS)
    setup_logging()
    return {"index": cmd_index, "search": cmd_search, "http": cmd_http}[verb](cfg)


if __name__ == "__main__":
    sys.exit(main())
