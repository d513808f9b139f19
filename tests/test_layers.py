"""The packages form layers, and no module imports from a layer above its own (function-local
imports included): what keeps the service free of training code and every package loop out."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "embrecall"

# Lowest first; a module may import from its own layer and the ones below.
LAYERS = [
    {"errors", "channel_table", "progress", "__init__"},
    {"config"},
    {"data"},
    {"features", "index"},
    {"models"},
    {"evaluation"},
    {"export"},
    {"training", "serve"},
    {"pipeline", "tune", "served_tuning", "tune_all", "update", "starter", "cli"},
]
LEVEL = {name: level for level, names in enumerate(LAYERS) for name in names}


def _package(parts: tuple[str, ...]) -> str:
    return parts[0] if parts else "__init__"


def _imports() -> list[tuple[str, str, int, str]]:
    """(file, its package, line, imported package) for every ``embrecall`` import in the source."""
    found = []
    for path in SRC.rglob("*.py"):
        own = _package(path.relative_to(SRC).with_suffix("").parts)
        for node in ast.walk(ast.parse(path.read_text())):
            names = (
                [node.module]
                if isinstance(node, ast.ImportFrom) and node.module and not node.level
                else [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else []
            )
            for name in names:
                if name.startswith("embrecall."):
                    found.append((str(path.relative_to(SRC)), own, node.lineno, name.split(".")[1]))
    return found


def test_every_package_has_a_layer():
    packages = {_package(p.relative_to(SRC).with_suffix("").parts) for p in SRC.rglob("*.py")}
    assert packages <= set(LEVEL), sorted(packages - set(LEVEL))


def test_no_module_imports_from_a_layer_above_its_own():
    upward = [
        f"{file}:{line} imports embrecall.{target}"
        for file, own, line, target in _imports()
        if LEVEL[target] > LEVEL[own]
    ]
    assert not upward, "\n".join(upward)


def test_the_service_imports_no_training_package():
    for file, own, line, target in _imports():
        if own == "serve":
            assert target not in ("training", "pipeline", "tune"), f"{file}:{line} imports embrecall.{target}"
