"""Imports only go down the floors of docs/ARCHITECTURE.md, with no circle anywhere (issues #12, #23).

The floors, bottom up: ``config`` -> ``geometry`` / ``imaging`` -> ``data`` -> ``models`` -> ``losses`` ->
``engine`` -> ``api`` -> ``cli``; ``metrics`` and ``visualise`` are leaves that import only ``config``,
``geometry`` and ``imaging`` and are called by ``engine`` and ``api``. The CLI imports only ``api`` (or the
package root, which re-exports it) and ``config``. Every ``import`` in the source counts, including imports
inside functions.

Inside a floor, modules may import each other, but never in a circle (issue #23): a circle means no module
of it can be read, tested or replaced on its own. ``from partdisco.models.vit import x`` is an edge to
``partdisco.models.vit`` only (not to the package ``__init__``, which Python also runs): a package's
``__init__`` re-exports its modules, so counting the implicit parent import would make every re-export a
circle. ``from partdisco.models import x`` is an edge to the ``__init__`` (it runs all of it), or to the
module ``partdisco.models.x`` when ``x`` is one.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "partdisco"

_BELOW_ENGINE = {
    *("config", "fileio", "geometry", "imaging"),
    *("data", "models", "losses", "metrics", "visualise"),
}
ALLOWED: dict[str, set[str]] = {
    "config": {"fileio"},
    "fileio": set(),  # atomic file writes, on the bottom floor with config
    "geometry": {"config", "fileio"},
    "imaging": {"config", "fileio"},  # colour and the uint8 image rule, on the floor of geometry
    "metrics": {"config", "fileio", "geometry", "imaging"},
    "visualise": {"config", "fileio", "geometry", "imaging"},
    "data": {"config", "fileio", "geometry", "imaging"},
    "models": {"config", "fileio", "geometry", "imaging", "data"},
    "losses": {"config", "fileio", "geometry", "imaging", "data", "models"},
    "engine": _BELOW_ENGINE,
    "api": _BELOW_ENGINE | {"engine"},
    "<root>": {"api", "config"},  # partdisco/__init__.py: re-exports of the API
    "cli": {"api", "<root>", "config"},
    "__main__": {"cli"},
}

# Edges that break the rule today, each pinned so that the fix is noticed: when one is fixed,
# test_known_violations_are_still_there fails until the edge is deleted here. None left: the CLI edges
# (segment, convert, data) go through partdisco.api since issue #12.
KNOWN_VIOLATIONS: dict[tuple[str, str], str] = {}


def module_name(path: Path) -> str:
    """``src/partdisco/engine/train.py`` -> ``partdisco.engine.train`` (packages by their ``__init__``)."""
    parts = path.relative_to(SRC).with_suffix("").parts
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(("partdisco", *parts))


def imported_modules(source: str, module: str, is_package: bool) -> set[str]:
    """Every ``partdisco`` module that ``source`` (the text of ``module``) imports, relative ones resolved."""
    package = module if is_package else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                if node.module:
                    found.add(".".join([*base, node.module]))
                else:  # from . import io
                    found.update(".".join([*base, alias.name]) for alias in node.names)
            elif node.module:
                for alias in node.names:
                    sub = f"{node.module}.{alias.name}"
                    found.add(sub if _is_module(sub) else node.module)
    return {name for name in found if name == "partdisco" or name.startswith("partdisco.")}


def _is_module(name: str) -> bool:
    """``partdisco.models.vit`` names a file or package under src/ (not an attribute of a module)."""
    if not name.startswith("partdisco."):
        return False
    relative = SRC.joinpath(*name.split(".")[1:])
    return relative.with_suffix(".py").is_file() or (relative / "__init__.py").is_file()


def import_cycles(edges: set[tuple[str, str]]) -> list[list[str]]:
    """The circles among ``edges``: each strongly connected set of modules (Tarjan), sorted, biggest first."""
    graph: dict[str, set[str]] = {}
    for a, b in edges:
        graph.setdefault(a, set()).add(b)
        graph.setdefault(b, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found, key=lambda c: (-len(c), c))


def floor(module: str) -> str:
    """The floor of a module: its first package below ``partdisco`` (``<root>`` for the package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "<root>"


def violations(edges: set[tuple[str, str]]) -> set[tuple[str, str]]:
    """The (importer, imported) edges that go up or sideways between floors."""
    bad = set()
    for importer, imported in edges:
        a, b = floor(importer), floor(imported)
        if a != b and b not in ALLOWED[a]:
            bad.add((importer, imported))
    return bad


def package_edges() -> set[tuple[str, str]]:
    edges = set()
    for path in sorted(SRC.rglob("*.py")):
        module = module_name(path)
        for imported in imported_modules(path.read_text(), module, path.name == "__init__.py"):
            edges.add((module, imported))
    return edges


EDGES = package_edges()


def test_every_floor_is_known() -> None:
    floors = {floor(module_name(p)) for p in SRC.rglob("*.py")}
    assert floors == set(ALLOWED), f"a floor is missing from ALLOWED: {sorted(floors ^ set(ALLOWED))}"


def test_imports_go_down_the_floors() -> None:
    new = sorted(violations(EDGES) - set(KNOWN_VIOLATIONS))
    assert not new, "imports against the floors of docs/ARCHITECTURE.md:\n" + "\n".join(
        f"  {a} -> {b}" for a, b in new
    )


def test_no_import_circles() -> None:
    cycles = import_cycles(EDGES)
    assert not cycles, "import circles (function-level imports count):\n" + "\n".join(
        "  " + " <-> ".join(c) for c in cycles
    )


def test_known_violations_are_still_there() -> None:
    """Each pinned edge still exists; a fixed one fails here until it is deleted from KNOWN_VIOLATIONS."""
    fixed = sorted(set(KNOWN_VIOLATIONS) - violations(EDGES))
    assert not fixed, "fixed: delete from KNOWN_VIOLATIONS:\n" + "\n".join(f"  {a} -> {b}" for a, b in fixed)


class TestChecker:
    """The scanner itself: resolves relative imports, sees function-local imports, flags upward edges."""

    def test_relative_and_local_imports(self) -> None:
        source = "from . import io\nfrom ..geometry.warps import x\ndef f():\n    import partdisco.api\n"
        found = imported_modules(source, "partdisco.data.folder", is_package=False)
        assert found == {"partdisco.data.io", "partdisco.geometry.warps", "partdisco.api"}

    def test_upward_and_sideways_edges_are_flagged(self) -> None:
        edges = {
            ("partdisco.data.folder", "partdisco.api"),  # up
            ("partdisco.metrics.keypoints", "partdisco.visualise.overlay"),  # leaf to leaf
            ("partdisco.cli.train", "partdisco.engine.train"),  # CLI around the API
            ("partdisco.engine.train", "partdisco.models"),  # down: fine
            ("partdisco.cli.train", "partdisco.api"),  # fine
        }
        assert violations(edges) == {
            ("partdisco.data.folder", "partdisco.api"),
            ("partdisco.metrics.keypoints", "partdisco.visualise.overlay"),
            ("partdisco.cli.train", "partdisco.engine.train"),
        }

    def test_from_package_import_module_is_an_edge_to_the_module(self) -> None:
        found = imported_modules(
            "from partdisco.models import vit, build_segmenter\n", "partdisco.api", False
        )
        assert found == {"partdisco.models.vit", "partdisco.models"}

    def test_circles_are_found(self) -> None:
        edges = {
            ("partdisco.a", "partdisco.b"),
            ("partdisco.b", "partdisco.c"),
            ("partdisco.c", "partdisco.a"),  # a -> b -> c -> a
            ("partdisco.c", "partdisco.d"),
            ("partdisco.e", "partdisco.e"),  # a module importing itself
            ("partdisco.f", "partdisco.d"),
        }
        assert import_cycles(edges) == [["partdisco.a", "partdisco.b", "partdisco.c"], ["partdisco.e"]]
        assert import_cycles({("partdisco.a", "partdisco.b"), ("partdisco.b", "partdisco.c")}) == []

    def test_scan_sees_the_package(self) -> None:
        assert ("partdisco.engine.train.setup", "partdisco.losses") in EDGES  # build_run builds the Objective
        assert len(EDGES) > 50
