"""Imports flow one way along the stages: a module imports its own stage and earlier ones, never a later one.

layout (with the shared foundation) < data_prep < data < model < train < evaluate < export < registry < serve.
Entry points (a `__main__.py`, or a module run as a script: an `if __name__ == "__main__":` block), the plan, the
command line and the tree it parses, the demo and the benchmarks compose stages and may import any of them; no
stage imports them. Every import in the tree counts, including those inside functions; there is no exception list.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("pipeline", "data_prep", "demo", "benchmarks")
STAGES = [  # earliest first: each entry is the module prefixes of one stage
    ("pipeline.layout", "pipeline.configlib", "pipeline.logs", "pipeline.procs", "pipeline.ranks",
     "pipeline.tracking_store", "pipeline.gc_phases"),
    ("data_prep",),
    ("pipeline.data",),
    ("pipeline.model",),
    ("pipeline.train",),
    ("pipeline.evaluate",),
    ("pipeline.export",),
    ("pipeline.registry",),
    ("pipeline.serve",),
]
COMPOSERS = ("pipeline.config", "pipeline.cli", "pipeline.plan", "demo", "benchmarks")
TOP = len(STAGES)


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _is_entry_point(module: str, tree: ast.Module) -> bool:
    return module.endswith(".__main__") or any(
        isinstance(node, ast.If) and isinstance(node.test, ast.Compare) and isinstance(node.test.left, ast.Name)
        and node.test.left.id == "__name__" for node in tree.body)


def stage_of(module: str, tree: ast.Module | None = None) -> int:
    """The stage index of `module` (TOP for a composer or an entry point); a module of no stage fails the test."""
    if any(_within(module, p) for p in COMPOSERS) or (tree is not None and _is_entry_point(module, tree)):
        return TOP
    for i, prefixes in enumerate(STAGES):
        if any(_within(module, p) for p in prefixes):
            return i
    if module == "pipeline":
        return 0
    raise AssertionError(f"{module} belongs to no stage: add it to STAGES in {Path(__file__).name}")


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(tree: ast.Module, known: set[str]) -> set[str]:
    """Every module of ours that `tree` imports (`from pkg import mod` names the module mod)."""
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out |= {f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in known else node.module
                    for a in node.names}
    return {m for m in out if m.split(".")[0] in PACKAGES}


def violations(trees: dict[str, ast.Module]) -> list[str]:
    """'importer (stage) imports imported (stage)' for every backward import among `trees` {module: parsed code}."""
    known = set(trees)
    found = []
    for module, tree in sorted(trees.items()):
        own = stage_of(module, tree)
        for target in sorted(imported_modules(tree, known)):
            theirs = stage_of(target, trees.get(target))
            if theirs > own:
                found.append(f"{module} (stage {own}) imports {target} (stage {theirs})")
    return found


@functools.cache
def _trees() -> dict[str, ast.Module]:
    return {module_name(p): ast.parse(p.read_text()) for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def test_every_import_flows_from_a_later_stage_to_an_earlier_one():
    assert violations(_trees()) == []


@pytest.mark.parametrize("module,code,bad", [
    ("pipeline.model.x", "def f():\n    from pipeline.train.loop import train\n", True),  # even inside a function
    ("pipeline.model.x", "from pipeline.config import Config\n", True),  # the root tree is a composer's
    ("data_prep.x", "from pipeline import cli\n", True),
    ("pipeline.train.x", "import pipeline.evaluate.grid\n", True),
    ("pipeline.serve.x", "from pipeline.model import retriever\nfrom pipeline.evaluate.data import open_eval_set\n",
     False),
    ("pipeline.model.x", "from pipeline.model.budgets import Budget\nfrom data_prep.synth import code_vocab\n", True),
    ("pipeline.model.x", "from pipeline.cli import parse\nif __name__ == '__main__':\n    pass\n", False),
])
def test_the_check_catches_a_backward_import(module, code, bad):
    trees = _trees() | {module: ast.parse(code)}
    assert any(v.startswith(f"{module} ") for v in violations(trees)) == bad


def test_every_module_has_a_stage():
    for module, tree in _trees().items():
        stage_of(module, tree)
