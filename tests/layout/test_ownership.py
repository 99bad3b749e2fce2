"""One owner per on-disk contract, checked on the source: run-directory and shard-directory names are spelled in
pipeline/layout only, one sha256 of a file, one free_port, no webdataset (whose openers run `pipe:` URLs) in the
pipeline, and export's library imports neither the evaluate entry point nor the registry."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CODE = sorted(p for d in ("pipeline", "data_prep", "demo") for p in (ROOT / d).rglob("*.py"))
LAYOUT_NAMES = {"run.json", "results.json", "card.json", "manifest.json", "metrics.jsonl", "rejects.jsonl", "final",
                "checkpoints", "variants", "manifest.partial.json"}


def _trees():
    return [(p.relative_to(ROOT).as_posix(), ast.parse(p.read_text())) for p in CODE]


def _imports(tree) -> set[str]:
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            out |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return out


def test_layout_names_are_spelled_in_the_layout_package_only():
    found = [(path, node.lineno, node.value) for path, tree in _trees() if not path.startswith("pipeline/layout/")
             for node in ast.walk(tree) if isinstance(node, ast.Constant) and node.value in LAYOUT_NAMES]
    assert found == []


def test_one_sha256_of_a_file_one_free_port():
    defs = [(path, node.name) for path, tree in _trees() for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef) and ("sha256" in node.name or "free_port" in node.name)]
    assert sorted(defs) == [("pipeline/layout/files.py", "sha256_file"), ("pipeline/procs.py", "free_port")]


def test_no_url_interpreting_opener_in_the_pipeline():
    users = [path for path, tree in _trees() if any(m.split(".")[0] == "webdataset" for m in _imports(tree))]
    assert users == []


def test_export_library_imports_neither_the_evaluate_entry_point_nor_the_registry():
    for path, tree in _trees():
        if path.startswith("pipeline/export/"):
            imported = _imports(tree)
            assert not {m for m in imported if m.startswith("pipeline.evaluate.__main__")}, path
            if not path.endswith("__main__.py"):
                assert not {m for m in imported if m.startswith("pipeline.registry")}, path


def test_demo_takes_generic_process_helpers_from_pipeline_procs():
    imported = _imports(dict(_trees())["demo/__main__.py"])
    assert "pipeline.procs.free_port" in imported and "data_prep.ray_head.free_port" not in imported
