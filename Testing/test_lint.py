"""Static checks: no unused imports or undefined names; the library never imports Slicer or Qt."""
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_pyflakes_clean():
    r = subprocess.run([sys.executable, "-m", "pyflakes", "SSIMQualityLib", "SSIMQuality", "SSIMQualityCLI", "Testing"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_library_has_no_slicer_or_qt_imports():
    import re

    for f in (ROOT / "SSIMQualityLib").glob("*.py"):
        text = f.read_text(encoding="utf-8")
        assert not re.search(r"^\s*(import|from)\s+(slicer|qt|ctk|vtk)\b", text, re.M), f.name


def test_library_imports_on_old_python_syntax():
    """Slicer 5.8 ships Python 3.9: the library must parse there (no match statements, no X | Y at run time)."""
    import ast

    for f in (ROOT / "SSIMQualityLib").glob("*.py"):
        tree = ast.parse(f.read_text(encoding="utf-8"), feature_version=(3, 9))
        assert tree is not None
        text = f.read_text(encoding="utf-8")
        assert "from __future__ import annotations" in text or f.name == "__init__.py", f.name
