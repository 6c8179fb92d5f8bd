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
