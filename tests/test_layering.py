"""The layering the design promises, checked: the library never imports streamlit, and the app process
(ui.py, the pages and every neuronrank module they import) never imports torch — it never loads a model."""

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{a.name}" for a in node.names}
    return names


def _in_fresh_python(code: str) -> str:
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_library_never_imports_streamlit():
    for path in (REPO / "neuronrank").rglob("*.py"):
        assert not any(m.split(".")[0] == "streamlit" for m in _imported_modules(path)), path.name
    # and at run time: importing every library module pulls in no streamlit either
    mods = sorted(".".join(p.relative_to(REPO).with_suffix("").parts).removesuffix(".__init__")
                  for p in (REPO / "neuronrank").rglob("*.py") if p.stem != "__main__")
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
    assert "neuronrank.runs.jobs" in importable and "ui" in importable
    assert _in_fresh_python(code).splitlines()[-1] == "[]"
