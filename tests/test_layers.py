"""Layers import downward only (docs/design.md Sec. 1): a test reads every module's imports."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).parents[1] / "growth"
# What each package may import from growth (besides itself and growth/errors.py, the user errors every
# layer raises, which imports nothing). Bottom: config, registry, model, distributed, data, objectives;
# then checkpoint; then expand, eval, train; then bench and cli.
ALLOWED = {
    "errors": set(),
    "config": set(),
    "registry": {"config"},
    "model": {"config", "registry"},
    "distributed": set(),
    "data": {"config", "registry"},
    "objectives": {"config", "registry", "data"},
    # checkpoint/hf/ converts Hugging Face folders with the model's name maps (growth/model/hf_llama.py, hf_model.py)
    "checkpoint": {"config", "distributed", "registry", "model"},
    "expand": {"config", "registry", "model", "distributed", "data", "objectives", "checkpoint"},
    "eval": {"config", "registry", "model", "distributed", "data", "objectives", "checkpoint"},
    # train/ grows inside a run with expand/'s operators (one code path); it never imports eval/.
    "train": {"config", "registry", "model", "distributed", "data", "objectives", "checkpoint", "expand"},
    "bench": {
        "config",
        "registry",
        "model",
        "distributed",
        "data",
        "objectives",
        "checkpoint",
        "expand",
        "eval",
        "train",
    },
    # the tools' one-line error answer (growth/cli.py); only tools/ and launch/ import it
    "cli": {"checkpoint"},
}


# The one sanctioned exception: validating a component name (``growth.config.choices``) imports the
# modules whose registrations define the names, inside the function, at call time.
REGISTRATIONS = {"config.py": {"registry", "model", "objectives"}}


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


def layer_of(path: Path) -> str:
    relative = path.relative_to(PACKAGE)
    return relative.parts[0] if len(relative.parts) > 1 else relative.stem


MODULES = sorted(p for p in PACKAGE.rglob("*.py") if layer_of(p) != "__init__")


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PACKAGE)))
def test_imports_go_downward(path):
    layer = layer_of(path)
    assert layer in ALLOWED, f"{layer} is not a known layer; add it to ALLOWED and docs/design.md"
    upward = growth_imports(path) - ALLOWED[layer] - {layer, "errors"} - REGISTRATIONS.get(path.name, set())
    assert not upward, f"{path.relative_to(PACKAGE)} ({layer}) imports {sorted(upward)}"


def test_the_check_sees_an_upward_import(tmp_path):
    module = tmp_path / "m.py"
    module.write_text(
        "def f():\n    from growth.train.run import train\n    from growth import checkpoint as ckpt\n"
    )
    assert growth_imports(module) == {"train", "checkpoint"}
