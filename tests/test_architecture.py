"""The layering rule of ARCHITECTURE.md, checked on the source: a top-level module of ``ofa_vl``
imports (at module scope, outside ``TYPE_CHECKING``) only modules of lower layers."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "ofa_vl"
# lowest first; ARCHITECTURE.md's table. A new top-level module gets its place here and there.
LAYERS: list[set[str]] = [
    {"errors"},
    {"config", "options", "text", "images", "runs", "hub", "visualize", "unpickle"},
    {"preprocess", "tokenizer", "zoo", "model", "distributed"},
    {"checkpoints", "generation", "lora"},
    {"tasks"},
    {"data", "api", "formats"},
    {"metrics", "publish", "onnx"},
    {"evaluate", "serve"},
    {"train", "bulk"},  # validate / reuse the run settings of evaluate
    {"cli"},
    {"__init__", "__main__"},
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}


def _imports(path: Path) -> set[str]:
    """The top-level ``ofa_vl`` modules ``path`` imports at module scope."""
    parts = list(path.relative_to(SRC).parts[:-1])
    found: set[str] = set()

    def visit(body: list[ast.stmt]) -> None:
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, (ast.If, ast.Try)):
                visit(node.body + node.orelse)
            if isinstance(node, ast.ImportFrom):
                if node.level == 0:
                    if (node.module or "").startswith("ofa_vl."):
                        found.add((node.module or "").split(".")[1])
                    continue
                where = parts[: len(parts) - (node.level - 1)] + (node.module or "").split(".")
                where = [w for w in where if w]
                found.update(where[:1] or [a.name for a in node.names])

    visit(ast.parse(path.read_text(encoding="utf-8")).body)
    return found


def test_every_module_has_a_layer() -> None:
    modules = {p.relative_to(SRC).parts[0].removesuffix(".py") for p in SRC.rglob("*.py")}
    missing = sorted(modules - set(LAYER))
    assert not missing, f"place {missing} in LAYERS here and in ARCHITECTURE.md"


def test_imports_go_down_the_layers() -> None:
    wrong = []
    for path in sorted(SRC.rglob("*.py")):
        module = path.relative_to(SRC).parts[0].removesuffix(".py")
        for target in _imports(path) - {module}:
            if LAYER.get(target, -1) >= LAYER.get(module, -1):
                wrong.append(f"{path.relative_to(SRC)} imports {target}")
    assert not wrong, "; ".join(wrong)


def test_the_rule_sees_an_upward_import(tmp_path: Path) -> None:
    """The checker itself: a model/ file importing api is caught, a TYPE_CHECKING one is not."""
    global SRC
    saved, SRC = SRC, tmp_path
    try:
        (tmp_path / "model").mkdir()
        bad = tmp_path / "model" / "x.py"
        bad.write_text(
            "from ..api import get_model\nif TYPE_CHECKING:\n    from ..cli import main\n"
        )
        assert _imports(bad) == {"api"}
    finally:
        SRC = saved
