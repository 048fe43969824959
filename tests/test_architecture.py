"""The floor plan of ARCHITECTURE.md, checked on the source: a top-level module of ``ofa_vl``
imports (at module scope, outside ``TYPE_CHECKING``) only modules of lower layers; an import inside
a function crosses the layers only where :data:`LAZY_CROSSINGS` says why; and no module imports,
even lazily, one that imports it back (no import circles)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "ofa_vl"
# lowest first; ARCHITECTURE.md's table. A new top-level module gets its place here and there.
LAYERS: list[set[str]] = [
    {"errors"},
    {
        "config",
        "options",
        "overlay",
        "text",
        "images",
        "runs",
        "hub",
        "visualize",
        "unpickle",
        "arguments",
        "allocator",
    },
    {"preprocess", "tokenizer", "generation", "distributed", "shapes"},
    {"model", "zoo"},  # OFA.generate drives generation (HF's GenerationMixin)
    {"checkpoints", "lora"},
    {"model_folder"},
    {"tasks"},
    {"publish"},  # a model folder to the hub, with its generated card
    {"data", "api", "formats"},
    {"metrics", "onnx"},
    {"evaluate", "serve"},
    {"train", "bulk"},  # validate / reuse the run settings of evaluate
    {"cli"},
    {"__init__", "__main__"},
]
LAYER = {name: i for i, names in enumerate(LAYERS) for name in names}
# The imports inside a function that reach a module of the same or a higher layer, each with its
# reason (ARCHITECTURE.md lists them too): (importing file, top-level module imported).
LAZY_CROSSINGS = {
    ("api.py", "data"): "load_answers reads an answer list with data.vqa's reader",
    ("api.py", "onnx"): 'get_model(backend="onnxruntime"): onnxruntime only when asked',
    ("shapes/world.py", "tasks"): "write_shapes_folder: the task writes a scene's folder lines",
}


def _module_of(path: Path) -> str:
    """``ofa_vl.a.b`` for ``a/b.py``, ``ofa_vl.a`` for ``a/__init__.py``."""
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(["ofa_vl", *parts[: -1 if parts[-1] == "__init__" else None]])


def _statements(path: Path) -> list[tuple[ast.ImportFrom | ast.Import, bool]]:
    """Every import of ``path`` outside ``TYPE_CHECKING`` blocks, and whether it is at module
    scope (else inside a function or class body)."""
    found: list[tuple[ast.ImportFrom | ast.Import, bool]] = []

    def visit(body: list[ast.stmt], top: bool) -> None:
        for node in body:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                found.append((node, top))
            for name in ("body", "orelse", "finalbody", "handlers"):
                inner = getattr(node, name, None)
                if isinstance(inner, list) and inner and isinstance(inner[0], ast.AST):
                    nested = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                    visit(inner, top and not nested)  # type: ignore[arg-type]

    visit(ast.parse(path.read_text(encoding="utf-8")).body, True)
    return found


def _targets(path: Path, node: ast.ImportFrom | ast.Import) -> set[str]:
    """The ``ofa_vl`` modules (dotted; a package is its ``__init__``) one import statement loads."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name.split(".")[0] == "ofa_vl"}
    if node.level == 0:
        base = node.module or ""
        if base.split(".")[0] != "ofa_vl":
            return set()
    else:
        package = _module_of(path).split(".")
        if path.name != "__init__.py":
            package = package[:-1]
        package = package[: len(package) - (node.level - 1)]
        base = ".".join(package + ([node.module] if node.module else []))
    out = {base}
    for alias in node.names:  # `from . import shapes`: a submodule
        sub = f"{base}.{alias.name}"
        rel = Path(*sub.split(".")[1:])
        if (SRC / rel).with_suffix(".py").is_file() or (SRC / rel / "__init__.py").is_file():
            out.add(sub)
    return out


def _tops(path: Path, module_scope: bool) -> set[str]:
    """The top-level modules ``path`` imports at module scope (or inside functions); ``from ..
    import x`` names ``x``, not the package every module is already in."""
    found = {
        t.split(".")[1]
        for node, top in _statements(path)
        if top == module_scope
        for t in _targets(path, node)
        if "." in t
    }
    return found


def _imports(path: Path) -> set[str]:
    """The top-level ``ofa_vl`` modules ``path`` imports at module scope."""
    return _tops(path, True)


def _lazy_crossings(path: Path) -> set[str]:
    """The top-level modules of the same or a higher layer ``path`` imports inside a function."""
    own = path.relative_to(SRC).parts[0].removesuffix(".py")
    lazy = _tops(path, False) - {own}
    return {t for t in lazy if LAYER.get(t, -1) >= LAYER.get(own, -1)}


def _graph() -> dict[str, set[str]]:
    """module -> the modules it imports, lazily or not (``TYPE_CHECKING`` aside); importing a
    submodule loads its packages' ``__init__`` too."""
    edges: dict[str, set[str]] = {}
    for path in sorted(SRC.rglob("*.py")):
        here = _module_of(path)
        out = edges.setdefault(here, set())
        for node, _ in _statements(path):
            for target in _targets(path, node):
                parts = target.split(".")
                loaded = {".".join(parts[:i]) for i in range(2, len(parts) + 1)}  # a, a.b, ...
                out.update(m for m in loaded if not here.startswith(m + "."))  # not its own
        out.discard(here)
    return edges


def _circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while (w := stack.pop()) != v:
                group.append(w)
            if group:
                groups.append(sorted([v, *group]))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return groups


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


def test_lazy_imports_cross_the_layers_only_where_documented() -> None:
    found = {
        (str(path.relative_to(SRC)), target)
        for path in sorted(SRC.rglob("*.py"))
        for target in _lazy_crossings(path)
    }
    undocumented = sorted(found - set(LAZY_CROSSINGS))
    assert not undocumented, f"lazy imports up the layers, not in LAZY_CROSSINGS: {undocumented}"
    assert not set(LAZY_CROSSINGS) - found, "LAZY_CROSSINGS lists an import no longer there"
    documented = (SRC.parents[1] / "ARCHITECTURE.md").read_text(encoding="utf-8")
    for file, target in LAZY_CROSSINGS:
        assert f"`{file}` -> `{target}`" in documented, f"ARCHITECTURE.md: {file} -> {target}"


def test_no_import_circles() -> None:
    circles = _circles(_graph())
    assert not circles, "import circles: " + "; ".join(" <-> ".join(c) for c in circles)


def test_the_rules_see_what_they_check(tmp_path: Path) -> None:
    """The checkers themselves: a model/ file importing api at module scope is caught, a
    TYPE_CHECKING one is not, a lazy one is a crossing; two modules importing each other (one of
    them lazily) are a circle."""
    global SRC
    saved, SRC = SRC, tmp_path
    try:
        (tmp_path / "model").mkdir()
        bad = tmp_path / "model" / "x.py"
        bad.write_text(
            "from ..api import get_model\nif TYPE_CHECKING:\n    from ..cli import main\n"
            "def f():\n    from ..serve import app\n"
        )
        (tmp_path / "model" / "y.py").write_text("def g():\n    from .x import f\n")
        (tmp_path / "model" / "z.py").write_text("from . import y\n")
        (tmp_path / "model" / "__init__.py").write_text("")
        assert _imports(bad) == {"api"}
        assert _lazy_crossings(bad) == {"serve"}
        (tmp_path / "api.py").write_text("from .model.y import g\n")
        assert _circles(_graph()) == [["ofa_vl.api", "ofa_vl.model.x", "ofa_vl.model.y"]]
        bad.write_text("def f():\n    pass\n")
        assert _circles(_graph()) == []
        bad.write_text("def f():\n    from .y import g\n")
        assert _circles(_graph()) == [["ofa_vl.model.x", "ofa_vl.model.y"]]
    finally:
        SRC = saved
