"""What `python -m pipeline.serve` does, as functions: resolve the served variant, index pages into its collection
(a new collection switched in atomically for a new version or budget set; an upsert into the live one otherwise),
delete documents, verify a collection, and build the searcher that `serve search` and `/search` use."""

from __future__ import annotations

import logging

from pipeline.config import Config
from pipeline.serve.collections import Target, create, open_live, publish
from pipeline.serve.index import index_pages, stored_budgets
from pipeline.serve.search import Searcher, check_version

log = logging.getLogger("pipeline.serve")


def resolve(cfg: Config) -> tuple[str, int | None]:
    """(model URI, registry version) of the variant to serve; version None for a URI that is not an alias."""
    uri = cfg.serve.model_uri or f"models:/{cfg.tracking.registered_model}@{cfg.serve.alias}"
    version = None
    if uri.startswith("models:/") and "@" in uri:
        from mlflow import MlflowClient

        name, alias = uri[len("models:/"):].split("@", 1)
        client = MlflowClient(tracking_uri=cfg.tracking.tracking_uri, registry_uri=cfg.tracking.tracking_uri)
        version = int(client.get_model_version_by_alias(name, alias).version)
    return uri, version


def load(cfg: Config, uri: str):
    """The VariantModel (retriever + card) behind a pyfunc URI (safetensors weights, no pickle)."""
    import mlflow

    mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
    return mlflow.pyfunc.load_model(uri).unwrap_python_model()


def target(cfg: Config) -> Target:
    return Target.of(cfg.serve, cfg.tracking.registered_model)


def _writing(t: Target):
    """An exclusive lock on an embedded target's directory for the write (a second writer is refused in one
    line); a server serialises writes itself."""
    import contextlib

    from pipeline.layout.lock import claim

    return contextlib.nullcontext() if t.server else claim(t.index_dir, "serve index")


def _reusable(t: Target, info: dict, budgets: list) -> object | None:
    """The live collection when it holds this version's vectors at these budgets (pages are then upserted into
    it), else None (a new collection is built and switched in)."""
    try:
        engine = open_live(t)
    except ValueError:
        return None
    same = engine.budgets == budgets and all(engine.info.get(k) == info[k] for k in ("model_uri", "version"))
    if not same:
        engine.close()
    return engine if same else None


def index(cfg: Config, shards: list, pages_fingerprint: str) -> dict:
    """Encode the pages of `shards` (already verified) with the served variant at every stored budget into its
    collection; returns a summary."""
    from pipeline.serve.pages import read_pages

    uri, version = resolve(cfg)
    model = load(cfg, uri)
    retriever, t = model.retriever, target(cfg)
    budgets = stored_budgets(cfg.serve, retriever)
    info = {"model_uri": uri, "version": version, "registered_model": cfg.tracking.registered_model,
            "alias": cfg.serve.alias, "budget": str(retriever.default_budget),
            "eval_fingerprint": model.card.get("eval_fingerprint"), "pages_fingerprint": pages_fingerprint}
    with _writing(t):
        engine, name = _reusable(t, info, budgets), None
        if engine is None:
            engine, name = create(t, budgets, info)
        written = index_pages(engine, retriever, read_pages(shards), cfg.serve.batch_size)
        engine.finish()
        total = engine.count()
        engine.close()
        if name is not None:
            publish(t, name)
    return {"pages": written, "collection_pages": total, "new_collection": name, "budgets": [str(b) for b in budgets],
            "model_uri": uri, "version": version}


def delete(cfg: Config) -> int:
    """Remove every page of serve.docs from the live collection; returns how many pages went."""
    t = target(cfg)
    with _writing(t):
        engine = open_live(t)
        try:
            return engine.delete_documents(list(cfg.serve.docs))
        finally:
            engine.close()


def verify(cfg: Config) -> int:
    """Check the live collection's content against its fingerprint and the alias's version; returns its pages."""
    uri, version = resolve(cfg)
    engine = open_live(target(cfg))
    try:
        check_version(engine, uri, version)
        engine.verify()
        return engine.count()
    finally:
        engine.close()


def searcher(cfg: Config) -> Searcher:
    """A Searcher for the alias's variant over its live collection (the version checked before the model loads)."""
    uri, version = resolve(cfg)
    t = target(cfg)
    engine = open_live(t)
    try:
        check_version(engine, uri, version)
    finally:
        engine.close()
    return Searcher(load(cfg, uri).retriever, t, cfg.serve, uri, version)
