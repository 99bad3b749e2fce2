"""Registering variants: each is a version of one registered model carrying its budget and quality tags; after
promotion, models:/NAME@ALIAS loads as a pyfunc that encodes exactly as the variant does."""

import mlflow
import pandas as pd
import pytest
import torch
from mlflow import MlflowClient

from pipeline.export.variants import load_variant
from pipeline.registry.promotion import promote
from pipeline.registry.pyfunc import encode_image
from tests.helpers.chain import NAME


@pytest.fixture(scope="module")
def stages(chain):
    return chain.config(), chain.exported(), chain.registered()


def test_versions_carry_budget_and_quality_tags(stages):
    cfg, _, cards = stages
    client = MlflowClient(tracking_uri=cfg.tracking.tracking_uri)
    for name, card in cards.items():
        mv = client.get_model_version(NAME, str(card["registered"]["version"]))
        b = card["budget"]
        assert mv.tags["budget.layers"] == str(b["layers"]) and mv.tags["budget.dim"] == str(b["dim"])
        assert mv.tags["budget.pool"] == str(b["pool"]) and mv.tags["variant"] == name
        assert mv.tags["budget.precision"] == b["precision"] and f"{b['precision']} page vectors" in mv.description
        assert float(mv.tags["bytes_per_page"]) == card["bytes_per_page"]
        assert float(mv.tags["ndcg_at_5"]) == card["ndcg_at_5"]  # repr round-trips floats exactly
        assert mv.tags["eval_fingerprint"] == card["eval_fingerprint"] and mv.tags["eval_set"] == card["eval_set"]
        assert "source_run" in mv.tags and f"pool {b['pool']}" in mv.description
    mlflow.set_tracking_uri(cfg.tracking.tracking_uri)  # models:/ resolves against the process-wide registry
    info = mlflow.models.get_model_info(f"models:/{NAME}/{cards['full']['registered']['version']}")
    assert [c.name for c in info.signature.inputs.inputs] == ["query", "image"]


def test_alias_resolves_to_a_pyfunc_that_encodes_like_the_variant(stages):
    cfg, variants, cards = stages
    client = MlflowClient(tracking_uri=cfg.tracking.tracking_uri, registry_uri=cfg.tracking.tracking_uri)
    version = cards["quarter"]["registered"]["version"]
    decision = promote(client, NAME, "tiny", cfg.promote.tolerance, version=version)
    assert decision.applied or "already holds" in decision.reason
    mlflow.set_tracking_uri(cfg.tracking.tracking_uri)
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@tiny")
    retriever, card = load_variant(variants["quarter"][0])
    from PIL import Image

    image = Image.new("RGB", (112, 112), "white")
    out = model.predict(pd.DataFrame({"query": ["ABC", None], "image": [None, encode_image(image)]}))
    assert [o["kind"] for o in out] == ["query", "page"]
    torch.testing.assert_close(torch.tensor(out[0]["vectors"]), retriever.embed(queries=["ABC"])[0])
    torch.testing.assert_close(torch.tensor(out[1]["vectors"]), retriever.embed(pages=[image])[0])
    assert torch.tensor(out[1]["vectors"]).shape == (1, 16)  # pool 4 on a 4 x 4 grid, dim 16


def test_max_bytes_per_page_counts_precision(stages):
    """The bit variant stores the half variant's vectors in 1/16 of the bytes: a byte limit below every fp16
    variant promotes it, and the listing names its precision."""
    from pipeline.registry.promotion import describe

    cfg, _, cards = stages
    client = MlflowClient(tracking_uri=cfg.tracking.tracking_uri, registry_uri=cfg.tracking.tracking_uri)
    bits = cards["half-bin"]
    assert bits["bytes_per_page"] * 16 == cards["half"]["bytes_per_page"]
    assert bits["bytes_per_page"] < min(c["bytes_per_page"] for n, c in cards.items() if n != "half-bin")
    d = promote(client, NAME, "smallest", 0.0, max_bytes_per_page=bits["bytes_per_page"], dry_run=True)
    assert d.move and d.candidate == bits["registered"]["version"]
    d = promote(client, NAME, "smallest", 0.0, max_bytes_per_page=bits["bytes_per_page"] - 1, dry_run=True)
    assert not d.move and "fits" in d.reason
    line = next(x for x in describe(client, NAME) if x.split()[0] == str(bits["registered"]["version"]))
    assert "L2-d32-p2-bin" in line and f"{bits['bytes_per_page']:.0f}" in line
