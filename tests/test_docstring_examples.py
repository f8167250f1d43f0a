"""Every example in the public API's docstrings runs and prints what its docstring says.
The expected figures there come from published counts (torchvision's parameter and
multiply-add tables) and hand arithmetic, never from a run of archprof."""

from __future__ import annotations

import doctest
import importlib

import pytest

import archprof

_DOCUMENTED = (
    "archprof",
    "archprof.analysis",
    "archprof.api",
    "archprof.comparison",
    "archprof.diff",
    "archprof.fit",
    "archprof.report",
)


def _examples():
    finder = doctest.DocTestFinder(exclude_empty=True)
    for name in _DOCUMENTED:
        module = importlib.import_module(name)
        for test in finder.find(module, name, globs={"archprof": archprof}):
            if test.examples and test.name.startswith(name):  # not one found through an import
                yield pytest.param(test, id=test.name)


@pytest.mark.parametrize("test", list(_examples()))
def test_docstring_example_runs(test):
    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE)
    runner.run(test, out=lambda text: pytest.fail(text, pytrace=False))
    assert runner.summarize(verbose=False).attempted == len(test.examples)


def test_each_entry_point_has_an_example():
    """The functions and Report methods a user reaches first each show a call."""
    from archprof.report import Report

    entry_points = (
        archprof.analyze,
        archprof.compare,
        archprof.profile,
        archprof.diff.diff,
        archprof.fit.fit_batch,
        Report.by_operator,
        Report.by_module,
    )
    for entry in entry_points:
        assert ">>> " in (entry.__doc__ or ""), entry.__qualname__
