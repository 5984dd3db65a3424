"""The house rules of the code base, checked on the source (docs/architecture.md):

- layers run one way: edge -> acme_client -> store (store imports neither; acme_client does not import edge);
- no import circle between modules (imports at module level);
- no SQL outside store/ (no sqlalchemy, sqlmodel, psycopg or sqlite3 in edge/ or acme_client/);
- no private name imported across modules;
- nothing of the test bench in the installed package (edge/ never imports tests/ or bench/);
- a module over 600 lines says in its docstring which one concern it holds.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("edge", "acme_client", "store")
LAYER = {"store": 0, "acme_client": 1, "edge": 2}
SQL_MODULES = ("sqlalchemy", "sqlmodel", "psycopg", "sqlite3", "alembic")
MAX_LINES = 600


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            if "migrations" in path.parts:
                continue
            rel = path.relative_to(ROOT).with_suffix("")
            parts = list(rel.parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


MODULES = _modules()


def _imports(name: str, path: Path, *, top_level_only: bool) -> list[tuple[str, list[str], int]]:
    """(module imported, names imported from it, line) for every import of ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found = []
    for node in nodes:
        if top_level_only and isinstance(node, ast.If):  # ``if TYPE_CHECKING:`` blocks are not run
            continue
        if isinstance(node, ast.Import):
            found += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base if is_pkg else base[:-1]
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.append((mod, [a.name for a in node.names], node.lineno))
    return found


def _resolve(mod: str, names: list[str]) -> list[str]:
    """The project modules an import statement loads (``from pkg import submodule`` counts the submodule)."""
    out = []
    if mod in MODULES:
        out.append(mod)
    for n in names:
        if f"{mod}.{n}" in MODULES:
            out.append(f"{mod}.{n}")
    return out


def test_layers_run_one_way():
    bad = []
    for name, path in MODULES.items():
        own = LAYER[name.split(".")[0]]
        for mod, _, line in _imports(name, path, top_level_only=False):
            top = mod.split(".")[0]
            if top in LAYER and LAYER[top] > own:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {mod}")
    assert not bad, "lower layers must not import higher ones:\n" + "\n".join(bad)


def test_no_import_circle():
    graph = {name: set() for name in MODULES}
    for name, path in MODULES.items():
        for mod, names, _ in _imports(name, path, top_level_only=True):
            graph[name].update(m for m in _resolve(mod, names) if m != name and not name.startswith(m + "."))
    # a package's __init__ importing its own submodules is how packages work; a submodule importing its package
    # __init__ back only counts when that __init__ is more than re-exports
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(n: str, stack: list[str]) -> None:
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if m.startswith(n + "."):
                continue
            if state.get(m) == 1:
                cycles.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m, stack)
        stack.pop()
        state[n] = 2

    for n in sorted(graph):
        if n not in state:
            visit(n, [])
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_no_sql_outside_store():
    bad = []
    for name, path in MODULES.items():
        if name.startswith("store"):
            continue
        for mod, _, line in _imports(name, path, top_level_only=False):
            if mod.split(".")[0] in SQL_MODULES:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {mod}")
    assert not bad, "SQL belongs behind the storage seam (store/):\n" + "\n".join(bad)


def test_no_private_name_imported_across_modules():
    bad = []
    for name, path in MODULES.items():
        for mod, names, line in _imports(name, path, top_level_only=False):
            if mod.split(".")[0] not in LAYER:
                continue
            for n in names:
                extension = (ROOT / mod.replace(".", "/") / f"{n}.c").exists()  # a C extension module of the package
                if n.startswith("_") and not n.startswith("__") and f"{mod}.{n}" not in MODULES and not extension:
                    bad.append(f"{path.relative_to(ROOT)}:{line} imports {mod}.{n}")
    assert not bad, "private names used from another module:\n" + "\n".join(bad)


def test_the_package_holds_no_test_or_bench_tooling():
    bad = [f"{p.relative_to(ROOT)}:{line} imports {mod}" for name, p in MODULES.items()
           for mod, _, line in _imports(name, p, top_level_only=False) if mod.split(".")[0] in ("tests", "bench")]
    assert not bad, "\n".join(bad)
    assert "edge.acmeproxy" not in MODULES and "edge.bench_serve" not in MODULES and "edge.devenv" not in MODULES


@pytest.mark.parametrize("name", sorted(MODULES))
def test_a_long_module_says_which_one_concern_it_holds(name):
    path = MODULES[name]
    lines = path.read_text().count("\n")
    if lines <= MAX_LINES:
        return
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    assert "one concern" in doc.lower(), (f"{path.relative_to(ROOT)} has {lines} lines: split it, or say in its "
                                          f"docstring which one concern it holds (\"One concern: ...\")")


@pytest.mark.slow
def test_the_wheel_holds_the_product_only(tmp_path):
    """``pip install .`` installs edge, acme_client and store (with what the demo needs to start Pebble), never the
    test or bench tooling."""
    import subprocess
    import sys
    import zipfile
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                        str(tmp_path), str(ROOT)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    (wheel,) = tmp_path.glob("edgecert-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert tops == {"edge", "acme_client", "store"}, tops
    assert "edge/demo/components.py" in names and "edge/api/__init__.py" in names
    assert not [n for n in names if "acmeproxy" in n or "bench_serve" in n or "devenv" in n]
    assert any(n.startswith("store/migrations/versions/") for n in names)
    assert any(n.startswith("edge/templates/") for n in names)
