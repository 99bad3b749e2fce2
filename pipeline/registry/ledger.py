"""The promotion ledger: an append-only log in the registry that turns "gate, then move the alias" into an atomic
compare-and-set, for every process that can reach the tracking store.

MLflow has no compare-and-set on aliases, but it numbers the versions of a registered model atomically: a new
version is max(version) + 1 under a unique (name, version) key, so versions are distinct, increasing, and a version
exists only after every lower one is visible. The ledger is the registered model `<name>.promotions`; each accepted
promotion appends one version (an entry) tagged with the alias, the candidate, and `based_on`: the ticket (version
number) of the entry it was gated against (0: none). An entry is *valid* when it was based on the valid entry just
before it; the valid entries form one chain, and its last entry (the head) says who holds the alias. Two promoters
that gated against the same head both append, but only the lower ticket is valid: the other learns it lost, gates
again against the new head, and either appends again or reports that it lost. Validity is a pure function of the
log, so every process reads the same answer, without locks, and a crashed promoter blocks nobody.

The MLflow alias follows the head: whoever appends a valid entry sets the alias to the head's candidate and reads
the ledger again, repeating until the head did not change meanwhile. The last alias write is therefore made after
the final head was appended (an entry appended later would be followed by its owner's own write), so the alias
ends on the head. Never delete ledger versions: ticket numbers must not be reused.
"""

from __future__ import annotations

from dataclasses import dataclass

from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

SUFFIX = ".promotions"
SOURCE = "ledger:///promotions"  # entries hold no files; MLflow wants an absolute, non-local source URI


@dataclass(frozen=True)
class Entry:
    """One accepted promotion: `ticket` (its ledger version), the candidate version and what it was based on."""

    ticket: int
    alias: str
    candidate: int
    based_on: int


def ledger_name(name: str) -> str:
    return f"{name}{SUFFIX}"


def ensure(client: MlflowClient, name: str) -> None:
    """Create the ledger of registered model `name` when missing (a concurrent creation is fine)."""
    try:
        client.get_registered_model(ledger_name(name))
    except MlflowException:
        try:
            client.create_registered_model(ledger_name(name), description=f"Promotion ledger of {name} (written by "
                                                                           "pipeline.promote; do not edit)")
        except MlflowException:
            client.get_registered_model(ledger_name(name))  # created meanwhile; anything else re-raises here


def read(client: MlflowClient, name: str, alias: str) -> list[Entry]:
    """Every entry of `alias`, in ticket order."""
    entries, token = [], None
    query = f"name = '{ledger_name(name)}' AND tags.alias = '{alias}'"
    while True:
        page = client.search_model_versions(query, page_token=token)
        for mv in page:
            t = mv.tags or {}
            entries.append(Entry(int(mv.version), t.get("alias", ""), int(t["candidate"]), int(t["based_on"])))
        token = page.token
        if not token:
            break
    return sorted((e for e in entries if e.alias == alias), key=lambda e: e.ticket)


def chain(entries: list[Entry]) -> list[Entry]:
    """The valid entries: each based on the valid entry before it (the first on none)."""
    out: list[Entry] = []
    for e in entries:
        if e.based_on == (out[-1].ticket if out else 0):
            out.append(e)
    return out


def head(client: MlflowClient, name: str, alias: str) -> Entry | None:
    """The last valid entry of `alias` (who holds it by the ledger), or None when the ledger has none."""
    valid = chain(read(client, name, alias))
    return valid[-1] if valid else None


def append(client: MlflowClient, name: str, alias: str, candidate: int, based_on: int) -> bool:
    """Try to move `alias` to `candidate`, decided against head ticket `based_on`; True when this entry is valid
    (the compare-and-set succeeded), False when another entry got there first."""
    tags = {"alias": alias, "candidate": str(candidate), "based_on": str(based_on)}
    ticket = int(client.create_model_version(ledger_name(name), SOURCE, tags=tags).version)
    return any(e.ticket == ticket for e in chain(read(client, name, alias)))


def settle(client: MlflowClient, name: str, alias: str) -> int:
    """Point the MLflow alias at the ledger's head until the head holds still; returns the version it holds."""
    top = head(client, name, alias)
    while True:
        client.set_registered_model_alias(name, alias, str(top.candidate))
        now = head(client, name, alias)
        if now.ticket == top.ticket:
            return top.candidate
        top = now
