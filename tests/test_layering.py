"""The layering rule of STYLE.md, enforced: functional <- modules <- models <- {generation, training,
interop, viz} <- recipes <- serve <- cli; data and evaluation sit beside and import no models; ``qkv.hardware``
sits at the bottom (imports no qkv) and ``functional`` never asks it anything (it reads no CPU flags); ``kernels``
sits above ``hardware`` and beside ``functional`` (it registers into ``functional.accelerators``; functional never
imports it)."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "qkv"
LOWER = {"functional", "modules", "models", "hardware"}
ALLOWED = {
    "functional": {"functional"},  # faster kernels reach it through functional.accelerators, registered from above
    "kernels": {"functional", "hardware", "kernels"},
    "modules": {"functional", "modules", "hardware"},
    "models": LOWER,
    "generation": LOWER | {"generation"},
    "training": LOWER | {"data", "evaluation", "training"},
    "interop": LOWER | {"data", "interop"},
    "viz": LOWER | {"viz"},
    "data": {"functional.masks", "data"},
    "evaluation": {"evaluation"},
    "serve": LOWER | {"data", "evaluation", "generation", "recipes", "training", "viz", "serve"},
}


def qkv_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("qkv."):
            found.add(node.module[4:])
        elif isinstance(node, ast.Import):
            found |= {a.name[4:] for a in node.names if a.name.startswith("qkv.")}
    return found


def test_no_upward_or_sideways_imports():
    files = [p for p in SRC.rglob("*.py") if len(p.relative_to(SRC).parts) > 1]
    assert files, "no package files found"
    bad = []
    for path in files:
        layer = path.relative_to(SRC).parts[0]
        allowed = ALLOWED.get(layer)
        if allowed is None:  # cli and anything new on top may import everything
            continue
        for mod in qkv_imports(path):
            if not any(mod == a or mod.startswith(a + ".") for a in allowed):
                bad.append(f"{path.relative_to(SRC)} imports qkv.{mod}")
    assert not bad, "layering violations:\n" + "\n".join(bad)


def test_hardware_imports_no_qkv():
    path = SRC / "hardware.py"
    assert path.is_file()
    assert qkv_imports(path) == set(), f"qkv.hardware must import torch only, imports {qkv_imports(path)}"
