"""The house's plan, checked from the source: the package's import graph (every import statement, those inside
functions too) has no cycle; the rooms without torch import none, and neither does the app process; the
library never imports streamlit; nothing inside the package imports one of its faces."""

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "neuronrank"

# the torch boundary in the path: these import no torch when imported (the app reads them)
NO_TORCH = ("neuronrank.errors", "neuronrank.config", "neuronrank.data", "neuronrank.analysis", "neuronrank.views",
            "neuronrank.runs", "neuronrank.queue.jobs", "neuronrank.search.study",
            "neuronrank.scoring")
TORCH_ROOMS = ("neuronrank.engine", "neuronrank.prune", "neuronrank.evaluation")
# the README's and the design's names for moved modules: for users, never for the package itself
FACES = ("neuronrank.stats", "neuronrank.scoring", "neuronrank.models", "neuronrank.corpora")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def _resolve(name: str) -> str | None:
    """The package module a dotted name lands in (`from pkg import name` where name is no module: pkg)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it imports, anywhere in its source."""
    graph = {}
    for mod, path in MODULES.items():
        assert not any(isinstance(n, ast.ImportFrom) and n.level for n in ast.walk(ast.parse(path.read_text()))), \
            f"{mod}: relative import"
        targets = {_resolve(n) for n in _imported_modules(path) if n.split(".")[0] == "neuronrank"}
        graph[mod] = {t for t in targets if t and t != mod}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of two or more modules (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _in_fresh_python(code: str) -> str:
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_the_import_graph_has_no_cycle():
    graph = import_graph()
    assert len(graph) > 40 and "neuronrank.prune.sequential" in graph["neuronrank.prune"]  # the graph is real
    assert cycles(graph) == []
    # the detector itself finds a cycle, also one through a function-level import
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_nothing_inside_the_package_imports_a_face():
    graph = import_graph()
    offenders = {m: sorted(graph[m] & set(FACES)) for m in graph if graph[m] & set(FACES)}
    assert offenders == {}


def test_the_rooms_without_torch_import_none():
    """Statically (no module-level `import torch` in a no-torch room) and at run time (importing each of them,
    and everything they import, leaves torch out of sys.modules)."""
    no_torch = sorted(m for m in MODULES if any(m == r or m.startswith(r + ".") for r in NO_TORCH))
    for mod in no_torch:
        top = ast.parse(MODULES[mod].read_text()).body
        imports = {a.name for n in top if isinstance(n, ast.Import) for a in n.names} | \
                  {n.module for n in top if isinstance(n, ast.ImportFrom) and n.module}
        assert not any(i.split(".")[0] == "torch" for i in imports), mod
        assert not any(i == r or i.startswith(r + ".") for i in imports for r in TORCH_ROOMS), mod
    out = _in_fresh_python("import importlib, sys\n"
                           + "".join(f"importlib.import_module({m!r})\n" for m in no_torch)
                           + "print(sorted(k for k in sys.modules if k.split('.')[0] == 'torch'))")
    assert out.splitlines()[-1] == "[]"
    # ... and the torch rooms are those that need it
    assert all(any(m.startswith(r) for m in MODULES) for r in TORCH_ROOMS)


def test_library_never_imports_streamlit():
    for path in PACKAGE.rglob("*.py"):
        assert not any(m.split(".")[0] == "streamlit" for m in _imported_modules(path)), path.name
    # and at run time: importing every library module pulls in no streamlit either
    mods = sorted(m for m in MODULES if not m.endswith("__main__"))
    out = _in_fresh_python("import importlib, sys\n"
                           + "".join(f"importlib.import_module('{m}')\n" for m in mods)
                           + "print('streamlit' in sys.modules)")
    assert out == "False"


def test_app_process_never_imports_torch():
    """Every module the app's files import at the top, imported together: torch stays out."""
    files = [REPO / "app.py", REPO / "ui.py", *sorted((REPO / "app_pages").glob("*.py"))]
    wanted = set()
    for f in files:
        wanted |= {m for m in _imported_modules(f) if m.split(".")[0] in ("neuronrank", "ui")}
    importable = sorted(m for m in wanted if not m.endswith(("UserError",)))
    code = ("import importlib, sys\n"
            "for m in %r:\n"
            "    try:\n"
            "        importlib.import_module(m)\n"
            "    except ModuleNotFoundError:\n"
            "        pass  # a name imported from a module, not a module\n"
            "print(sorted(k for k in sys.modules if k == 'torch' or k.startswith('torch.')))" % importable)
    assert "neuronrank.queue.jobs" in importable and "ui" in importable
    assert _in_fresh_python(code).splitlines()[-1] == "[]"
