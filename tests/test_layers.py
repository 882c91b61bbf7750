"""Layers import downward only (docs/design.md Sec. 1): a test reads every module's imports."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx
import pytest

PACKAGE = Path(__file__).parents[1] / "growth"
# What each package may import from growth (besides itself and growth/errors.py, the user errors every
# layer raises, which imports nothing). An entry "pkg.mod" allows that one module of a package above: the
# config sections (growth/<pkg>/config.py) sit low although their package sits higher.
# Bottom: errors, schema (how a section is read), registry; the sections; model, distributed, data,
# objectives; config (the assembly of the sections); checkpoint; expand, eval, train; bench and cli.
BELOW_CONFIG = {"schema", "registry", "model", "data", "objectives", "train.config", "expand.options"}
ALLOWED = {
    "errors": set(),
    "schema": set(),
    "registry": set(),
    "model": {"schema", "registry"},
    "distributed": set(),
    "data": {"schema", "registry", "objectives.config"},
    "objectives": {"schema", "registry", "data"},
    "config": BELOW_CONFIG,
    # checkpoint/hf/ converts Hugging Face folders with the model's name maps (growth/model/hf_llama.py, hf_model.py)
    "checkpoint": {"config", "distributed", *BELOW_CONFIG},
    "expand": {"config", *BELOW_CONFIG, "distributed", "checkpoint"},
    "eval": {"config", *BELOW_CONFIG, "distributed", "checkpoint"},
    # train/ grows inside a run with expand/'s operators (one code path); it never imports eval/.
    "train": {"config", *BELOW_CONFIG, "distributed", "checkpoint", "expand"},
    "bench": {"config", *BELOW_CONFIG, "distributed", "checkpoint", "expand", "eval", "train"},
    # the tools' one-line error answer (growth/cli.py); only tools/ and launch/ import it
    "cli": {"checkpoint"},
}


def growth_imports(path: Path) -> set[str]:
    """The growth packages a module imports (``growth.X...`` -> X), at any depth of the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = (
            [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else []
            )
        )
        for name in names:
            parts = name.split(".")
            if parts[0] == "growth" and len(parts) > 1:
                found.add(parts[1])
            elif parts == ["growth"] and isinstance(node, ast.ImportFrom):
                found.update(a.name for a in node.names)
    return found


def growth_modules(path: Path) -> set[str]:
    """The growth modules a module imports, without the ``growth.`` prefix (``model.config``)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.update(
                [node.module] if node.module != "growth" else [f"growth.{a.name}" for a in node.names]
            )
    return {name.removeprefix("growth.") for name in found if name.startswith("growth.")}


def allowed(module: str, entries: set[str]) -> bool:
    """``a.b.c`` is allowed by an entry ``a`` or ``a.b`` (a package, or one module of it)."""
    parts = module.split(".")
    return any(".".join(parts[:n]) in entries for n in range(1, len(parts) + 1))


def layer_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if layer_of(p) != "__init__")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_downward(path):
    layer = layer_of(path)
    assert layer in ALLOWED, f"{layer} is not a known layer; add it to ALLOWED and docs/design.md"
    entries = ALLOWED[layer] | {layer, "errors"}
    upward = {module for module in growth_modules(path) if not allowed(module, entries)}
    assert not upward, f"{path.relative_to(PACKAGE)} ({layer}) imports {sorted(upward)}"


def test_the_check_sees_an_upward_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "def f():\n    from growth.train.run import train\n    from growth import checkpoint as ckpt\n"
    )
    assert growth_imports(module) == {"train", "checkpoint"}


# -- no import circle among runtime imports ------------------------------------------------------------
def runtime_imports(tree: ast.AST) -> list[str]:
    """Every module a file imports when it runs, at module level or inside functions; the body of an
    ``if TYPE_CHECKING:`` block is skipped (type-only: never executed)."""
    found: list[str] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.extend(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.extend(f"{node.module}.{a.name}" for a in node.names)  # a submodule, or a name (trimmed)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path, package: str = "growth") -> nx.DiGraph:
    """Module -> the package modules it makes Python import. ``import a.b.c`` runs ``a``'s and ``a.b``'s
    ``__init__`` first, except those the importer sits in (already imported before it)."""
    files = {module_name(p, root): p for p in (root / package).rglob("*.py")}
    graph = nx.DiGraph()
    graph.add_nodes_from(files)
    for importer, path in files.items():
        own = {".".join(importer.split(".")[:n]) for n in range(1, importer.count(".") + 2)}
        if path.name == "__init__.py":
            own.discard(importer)
        for name in runtime_imports(ast.parse(path.read_text())):
            parts = name.split(".")
            for n in range(2, len(parts) + 1):  # each package on the way, and the module itself
                target = ".".join(parts[:n])
                if target in files and target not in own and target != importer:
                    graph.add_edge(importer, target)
    return graph


def circles(graph: nx.DiGraph) -> list[list[str]]:
    """One import cycle per strongly connected component of more than one module."""
    components = [c for c in nx.strongly_connected_components(graph) if len(c) > 1]
    return [[a for a, _ in nx.find_cycle(graph.subgraph(c))] for c in components]


def test_no_runtime_import_circle():
    found = circles(import_graph(PACKAGE.parent))
    assert not found, "import circles:\n" + "\n".join(" -> ".join([*c, c[0]]) for c in found)


def test_the_circle_check_sees_a_function_level_circle(tmp_path):
    pkg = tmp_path / "growth"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from growth.sub import low\n")
    (pkg / "sub" / "low.py").write_text("def f():\n    import growth.top\n")
    (pkg / "top.py").write_text("from growth.sub.low import f\n")
    (pkg / "typed.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import growth.top\n"
    )
    graph = import_graph(tmp_path)
    # top imports sub.low, which runs sub's __init__ first; low imports top inside a function
    assert set(graph.successors("growth.top")) == {"growth.sub", "growth.sub.low"}
    assert not list(graph.successors("growth.typed"))  # type-only imports are not edges
    assert circles(graph) and set(circles(graph)[0]) == {"growth.top", "growth.sub", "growth.sub.low"}
