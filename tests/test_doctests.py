"""Every docstring example in the installed package runs as a test (River's habit).

The examples are collected through the package's import names (``tessera.schemas``,
not the repository folder ``schemas/``), so they run against the same modules users get.
"""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

ROOTS = ("tessera", "tessera.schemas", "tessera.streams", "tessera.agents", "tessera.infra")


def _modules() -> list[str]:
    names: set[str] = set()
    for root in ROOTS:
        package = importlib.import_module(root)
        names.add(root)
        for info in pkgutil.walk_packages(package.__path__, root + "."):
            names.add(info.name)
    return sorted(names)


def _with_examples() -> list[str]:
    finder = doctest.DocTestFinder()
    return [name for name in _modules()
            if any(t.examples for t in finder.find(importlib.import_module(name)))]


@pytest.mark.parametrize("module", _with_examples())
def test_docstring_examples(module: str) -> None:
    flags = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS
    result = doctest.testmod(importlib.import_module(module), optionflags=flags, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {module}"
