"""Gated alias promotion: an alias moves to a version only if it beats, or ties within a tolerance, the holder
on the same evaluation set (same eval fingerprint); every move records why, a refusal changes nothing.

The gate and the move are one compare-and-set through the promotion ledger (`ledger.py`): of concurrent promotions
of one alias, each is decided against the holder left by the ones before it, so the alias ends on the candidate
that beats the others, and a promotion that loses the race says so.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from pipeline.registry import ledger

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Standing:
    """What the gate needs to know about one model version (read from its tags)."""

    version: int
    ndcg_at_5: float
    eval_fingerprint: str
    bytes_per_page: float

    @staticmethod
    def from_version(mv) -> "Standing":
        """From an MLflow ModelVersion; a missing or non-numeric tag becomes NaN / '' (the gate then refuses)."""
        tags = mv.tags or {}
        return Standing(int(mv.version), _num(tags.get("ndcg_at_5")), tags.get("eval_fingerprint", ""),
                        _num(tags.get("bytes_per_page")))


@dataclass(frozen=True)
class Decision:
    """The gate's answer: move or not, one line of why, and the versions involved."""

    move: bool
    reason: str
    candidate: int | None
    holder: int | None
    applied: bool = False  # True once the alias was actually moved (False in a dry run or a refusal)
    lost: bool = False  # True when a concurrent promotion moved the alias first and this one was then refused


def _num(text: str | None) -> float:
    try:
        return float(text) if text is not None else math.nan
    except ValueError:
        return math.nan


def gate(alias: str, candidate: Standing, holder: Standing | None, tolerance: float) -> Decision:
    """The quality gate, a pure function: may `candidate` take `alias` from `holder`?"""
    c, h = candidate, holder
    if math.isnan(c.ndcg_at_5) or not c.eval_fingerprint:
        return Decision(False, f"refused: v{c.version} has no ndcg_at_5/eval_fingerprint tags", c.version, None)
    if h is None:
        return Decision(True, f"v{c.version} takes free alias '{alias}' (nDCG@5 {c.ndcg_at_5:.4f} on eval "
                              f"{c.eval_fingerprint})", c.version, None)
    if h.version == c.version:
        return Decision(False, f"refused: v{c.version} already holds '{alias}'", c.version, h.version)
    if c.eval_fingerprint != h.eval_fingerprint:
        return Decision(False, f"refused: v{c.version} was measured on eval {c.eval_fingerprint}, holder "
                               f"v{h.version} on eval {h.eval_fingerprint}; not comparable", c.version, h.version)
    if c.ndcg_at_5 > h.ndcg_at_5:
        return Decision(True, f"v{c.version} beats holder v{h.version} on eval {c.eval_fingerprint}: nDCG@5 "
                              f"{c.ndcg_at_5:.4f} > {h.ndcg_at_5:.4f}", c.version, h.version)
    if c.ndcg_at_5 >= h.ndcg_at_5 - tolerance:
        return Decision(True, f"v{c.version} ties holder v{h.version} on eval {c.eval_fingerprint} within "
                              f"{tolerance:g}: nDCG@5 {c.ndcg_at_5:.4f} vs {h.ndcg_at_5:.4f}", c.version, h.version)
    return Decision(False, f"refused: v{c.version} nDCG@5 {c.ndcg_at_5:.4f} is below holder v{h.version}'s "
                           f"{h.ndcg_at_5:.4f} by more than {tolerance:g} on eval {c.eval_fingerprint}",
                    c.version, h.version)


def holder_of(client: MlflowClient, name: str, alias: str) -> Standing | None:
    """The version that holds `alias` now, or None when the alias is free."""
    try:
        return Standing.from_version(client.get_model_version_by_alias(name, alias))
    except MlflowException:
        return None


def _holder(client: MlflowClient, name: str, alias: str) -> tuple[Standing | None, int]:
    """(holder by the promotion ledger, its ticket); without ledger entries, the alias's version and ticket 0."""
    top = ledger.head(client, name, alias)
    if top is None:
        return holder_of(client, name, alias), 0
    return Standing.from_version(client.get_model_version(name, str(top.candidate))), top.ticket


def best_under(client: MlflowClient, name: str, max_bytes_per_page: float) -> Standing | None:
    """The version with the best nDCG@5 whose bytes/page is <= the limit (ties: fewer bytes, then newer)."""
    rows = [Standing.from_version(mv) for mv in client.search_model_versions(f"name = '{name}'")]
    fits = [s for s in rows if s.bytes_per_page <= max_bytes_per_page and not math.isnan(s.ndcg_at_5)]
    if not fits:
        return None
    return max(fits, key=lambda s: (s.ndcg_at_5, -s.bytes_per_page, s.version))


def _record(client: MlflowClient, name: str, alias: str, d: Decision) -> None:
    """Write why the alias moved: a tag on the new version and a line appended to its description."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    version = str(d.candidate)
    client.set_model_version_tag(name, version, f"promotion.{alias}", f"{stamp} {d.reason}")
    old = client.get_model_version(name, version).description or ""
    line = f"[{stamp}] alias '{alias}': {d.reason}"
    client.update_model_version(name, version, description=f"{old}\n{line}".strip())
    if d.holder is not None:
        client.set_model_version_tag(name, str(d.holder), f"demotion.{alias}", f"{stamp} replaced by v{version}")


def promote(
    client: MlflowClient,
    name: str,
    alias: str,
    tolerance: float,
    version: int | None = None,
    max_bytes_per_page: float | None = None,
    dry_run: bool = False,
    retries: int = 10,
) -> Decision:
    """Move `alias` of registered model `name` to `version` (or the best version under `max_bytes_per_page`)
    if the gate passes against the current holder, atomically with respect to concurrent promotions; record why.
    A refusal, a lost race or a dry run changes nothing."""
    candidate = _candidate(client, name, version, max_bytes_per_page)
    if isinstance(candidate, Decision):
        return candidate
    if not dry_run:
        ledger.ensure(client, name)
    lost_to = None
    for _ in range(retries):
        holder, ticket = _holder(client, name, alias)
        decision = gate(alias, candidate, holder, tolerance)
        if not decision.move or dry_run:
            if lost_to is None:
                return decision
            return Decision(False, f"lost the race: v{lost_to} took '{alias}' first; {decision.reason}",
                            decision.candidate, decision.holder, lost=True)
        if ledger.append(client, name, alias, candidate.version, ticket):
            ledger.settle(client, name, alias)
            _record(client, name, alias, decision)
            log.info("alias '%s' of %s -> v%s", alias, name, decision.candidate)
            return Decision(True, decision.reason, decision.candidate, decision.holder, applied=True)
        lost_to = ledger.head(client, name, alias).candidate  # another promotion was first: gate again
    return Decision(False, f"lost the race: '{alias}' kept moving during {retries} attempts; try again",
                    candidate.version, None, lost=True)


def _candidate(client: MlflowClient, name: str, version: int | None,
               max_bytes_per_page: float | None) -> Standing | Decision:
    """The candidate's standing, or a refusal naming why there is none."""
    if (version is None) == (max_bytes_per_page is None):
        raise ValueError("give exactly one of a version or a max bytes/page limit")
    if version is not None:
        try:
            return Standing.from_version(client.get_model_version(name, str(version)))
        except MlflowException:
            return Decision(False, f"refused: {name} has no version {version}", version, None)
    best = best_under(client, name, max_bytes_per_page)
    if best is None:
        return Decision(False, f"refused: no version of {name} fits {max_bytes_per_page:g} bytes/page", None, None)
    return best


def describe(client: MlflowClient, name: str) -> list[str]:
    """One line per version of `name` (newest first): budget, bytes/page, nDCG@5, eval fingerprint, aliases."""
    lines = [f"{'version':>7} {'variant':>12} {'budget':>18} {'bytes/page':>10} {'nDCG@5':>7} {'eval':>16}  aliases"]
    versions = sorted(client.search_model_versions(f"name = '{name}'"), key=lambda v: -int(v.version))
    held: dict[str, list[str]] = {}
    for alias, version in (client.get_registered_model(name).aliases or {}).items():
        held.setdefault(str(version), []).append(alias)
    for mv in versions:
        t = mv.tags or {}
        budget = f"L{t.get('budget.layers', '?')}-d{t.get('budget.dim', '?')}-p{t.get('budget.pool', '?')}"
        budget += "" if t.get("budget.precision", "fp16") == "fp16" else f"-{t['budget.precision']}"
        lines.append(f"{mv.version:>7} {t.get('variant', ''):>12} {budget:>18} {_num(t.get('bytes_per_page')):10.0f} "
                     f"{_num(t.get('ndcg_at_5')):7.4f} {t.get('eval_fingerprint', ''):>16}  "
                     f"{','.join(sorted(held.get(str(mv.version), [])))}")
    return lines
