"""What `python -m pipeline.serve` does, as functions: resolve the served variant, index pages into its collection
(a new collection switched in atomically for a new version or budget set; an upsert into the live one otherwise),
delete documents, verify a collection, and build the searcher that `serve search` and `/search` use."""

from __future__ import annotations

import logging

from pipeline.serve.collections import NoCollection, Target, create, open_live, publish
from pipeline.serve.index import index_pages, stored_budgets
from pipeline.serve.search import Searcher, check_version

log = logging.getLogger("pipeline.serve")


def resolve(cfg) -> tuple[str, int | None]:
    """(model URI, registry version) of the variant to serve; version None for a URI that is not an alias."""
    uri = cfg.serve.model_uri or f"models:/{cfg.tracking.registered_model}@{cfg.serve.alias}"
    version = None
    if uri.startswith("models:/") and "@" in uri:
        from mlflow import MlflowClient

        name, alias = uri[len("models:/"):].split("@", 1)
        client = MlflowClient(tracking_uri=cfg.tracking.tracking_uri, registry_uri=cfg.tracking.tracking_uri)
        version = int(client.get_model_version_by_alias(name, alias).version)
    return uri, version


def load_pyfunc(cfg, uri: str):
    """The pyfunc model behind `uri`, a `models:/` URI resolved in the configured tracking store (MLflow resolves it
    in the process-wide one, which a fresh process has not set)."""
    import mlflow

    mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
    return mlflow.pyfunc.load_model(uri)


def load(cfg, uri: str):
    """The VariantModel (retriever + card) behind a pyfunc URI (safetensors weights, no pickle)."""
    return load_pyfunc(cfg, uri).unwrap_python_model()


def target(cfg) -> Target:
    return Target.of(cfg.serve, cfg.tracking.registered_model)


def _writing(t: Target):
    """An exclusive lock on an embedded target's directory for the write (a second writer is refused in one
    line); a server serialises writes itself."""
    import contextlib

    from pipeline.layout.lock import claim

    return contextlib.nullcontext() if t.server else claim(t.index_dir, "serve index")


def _live_or_none(t: Target):
    """The live collection, or None when there is none yet (a collection another process holds: CollectionBusy)."""
    try:
        return open_live(t)
    except NoCollection:
        return None


def index(cfg, shards: list, pages_fingerprint: str) -> dict:
    """Encode the pages of `shards` (already verified) with the served variant at every stored budget into its
    collection: upserted into the live one when it holds this version at these budgets, else into a new one that
    then goes live. Refusals (a busy directory or collection) come before the model loads. Returns a summary."""
    from pipeline.serve.pages import read_pages

    uri, version = resolve(cfg)
    t = target(cfg)
    with _writing(t):
        live = _live_or_none(t)
        model = load(cfg, uri)
        retriever = model.retriever
        budgets = stored_budgets(cfg.serve, retriever)
        info = {"model_uri": uri, "version": version, "registered_model": cfg.tracking.registered_model,
                "alias": cfg.serve.alias, "budget": str(retriever.default_budget),
                "eval_fingerprint": model.card.get("eval_fingerprint"), "pages_fingerprint": pages_fingerprint}
        same = live is not None and live.budgets == budgets and all(
            live.info.get(k) == info[k] for k in ("model_uri", "version"))
        engine, name = live, None
        if not same:
            if live is not None:
                live.close()
            engine, name = create(t, budgets, info)
        written = index_pages(engine, retriever, read_pages(shards), cfg.serve.batch_size)
        engine.finish()
        total = engine.count()
        engine.close()
        if name is not None:
            publish(t, name)
    return {"pages": written, "collection_pages": total, "new_collection": name, "budgets": [str(b) for b in budgets],
            "model_uri": uri, "version": version}


def delete(cfg) -> int:
    """Remove every page of serve.docs from the live collection; returns how many pages went."""
    t = target(cfg)
    with _writing(t):
        engine = open_live(t)
        try:
            return engine.delete_documents(list(cfg.serve.docs))
        finally:
            engine.close()


def verify(cfg) -> int:
    """Check the live collection's content against its fingerprint and the alias's version; returns its pages."""
    uri, version = resolve(cfg)
    engine = open_live(target(cfg))
    try:
        check_version(engine, uri, version)
        engine.verify()
        return engine.count()
    finally:
        engine.close()


def searcher(cfg) -> Searcher:
    """A Searcher for the alias's variant over its live collection (the version checked before the model loads)."""
    uri, version = resolve(cfg)
    t = target(cfg)
    engine = open_live(t)
    try:
        check_version(engine, uri, version)
    finally:
        engine.close()
    return Searcher(load(cfg, uri).retriever, t, cfg.serve, uri, version)
