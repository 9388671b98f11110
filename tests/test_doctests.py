"""Every ``>>>`` example in every partdisco module runs and prints what it says (issue #12, point 7)."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import partdisco

# __main__ runs the CLI on import, and has no examples.
MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(partdisco.__path__, prefix="partdisco.")
    if info.name != "partdisco.__main__"
)
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _run_examples(name: str) -> tuple[int, int, str]:
    """Run the examples of module ``name``: (attempted, failed, the failure report)."""
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    report: list[str] = []
    for test in finder.find(module, name, globs=vars(module).copy()):
        runner.run(test, out=report.append)
    result = runner.summarize(verbose=False)
    return result.attempted, result.failed, "".join(report)


def test_modules_are_found() -> None:
    assert {"partdisco.imaging.color", "partdisco.cli", "partdisco.engine.train"} <= set(MODULES)
    assert len(MODULES) > 40


def test_examples_exist() -> None:
    """The package documents itself by example: most modules carry at least one."""
    with_examples = [name for name in MODULES if _run_examples(name)[0] > 0]
    assert len(with_examples) >= 26


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str) -> None:
    attempted, failed, report = _run_examples(name)
    assert failed == 0, f"{failed} of {attempted} examples failed in {name}:\n{report}"


def test_a_wrong_example_fails() -> None:
    """The runner above really compares outputs (guards against a check that cannot fail)."""
    test = doctest.DocTestParser().get_doctest(">>> 1 + 1\n3\n", {}, "wrong", None, 0)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    runner.run(test, out=lambda _: None)
    assert runner.summarize(verbose=False).failed == 1
