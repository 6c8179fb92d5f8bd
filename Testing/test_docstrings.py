"""Every example in the library's docstrings runs and shows what it prints (scikit-image's rule: examples
that run).  Examples marked ``+SKIP`` need a trained model or minutes of work and are not run here."""
import doctest
import importlib
import pkgutil

import pytest

import SSIMQualityLib

MODULES = sorted(m.name for m in pkgutil.iter_modules(SSIMQualityLib.__path__))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    module = importlib.import_module(f"SSIMQualityLib.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS, verbose=False, report=True)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples in SSIMQualityLib.{name} failed"


def test_the_examples_are_found():
    """The check above must not pass by finding nothing."""
    found = sum(len([e for t in doctest.DocTestFinder().find(importlib.import_module(f"SSIMQualityLib.{n}"))
                     for e in t.examples]) for n in MODULES)
    assert found >= 40


def test_the_readme_python_example_runs(sample_path, tmp_path, monkeypatch, capsys):
    """The README's Python section, as a user copies it, on the bundled sample (it was never run by a test)."""
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    section = readme[readme.index("\n## Python\n"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert "scan.nii.gz" in code
    monkeypatch.chdir(tmp_path)
    exec(compile(code.replace("scan.nii.gz", str(sample_path)), "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "'verdict'" in printed and "'slices_with_head'" in printed
    assert (tmp_path / "motion.png").stat().st_size > 10_000
