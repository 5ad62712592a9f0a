"""No distribution reaches into another's private modules.

Each package shows what others may use in its ``__init__`` (or a public submodule such as
``p2phost_sdk.signing``) and keeps the rest in ``_`` modules, so it can change them freely.
The host, the registry, the official plugins and the code ``plugin new`` generates import
the SDK (and each other) only through those faces; the SDK and plugins import no module of
the host at all (a plugin's environment need not have it).
Read from the source with ``ast`` (an import inside a function or under ``TYPE_CHECKING``
counts; a module name in a string or a comment does not).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import OFFICIAL, REPO

#: Each distribution's own top-level packages, by the directory holding them.
ROOTS: dict[str, Path] = {
    "sdk": REPO / "sdk",
    "host": REPO / "host",
    "registry": REPO / "registry",
    **{project.name: project / "src" for project in sorted(OFFICIAL.iterdir())
       if (project / "src").is_dir()},
}

#: Known exceptions: a file, and the private modules it may import (and why). The test
#: below fails if one of them no longer imports them, so the list cannot outlive its reason.
ALLOWED: dict[str, frozenset[str]] = {
    # dask-comm opens a node inside Dask's processes with an identity of its own, which
    # the host's public library API (p2phost.open_node) cannot do yet (see its docstring).
    "official-plugins/dask-comm/src/p2phost_dask_comm/_node.py": frozenset({
        "p2phost._errors", "p2phost._plugins", "p2phost._project", "p2phost._runtime",
        "p2phost._trust"}),
}


def imports(tree: ast.AST) -> Iterator[tuple[int, str]]:
    """``(line, module)`` of every absolute import in ``tree``: ``from M import N`` is
    ``M``, or ``M.N`` where ``N`` is private (``from p2phost_sdk import _names``)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            named = [f"{node.module}.{alias.name}" for alias in node.names
                     if _private(alias.name)]
            yield from ((node.lineno, module) for module in named or [node.module])


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def trespasses(source: str, own: set[str], *, no_host: bool = False
               ) -> Iterator[tuple[int, str]]:
    """``(line, module)`` of each import in ``source`` of another p2phost distribution's
    private module (``own`` names the file's own top-level packages); with ``no_host``
    (the SDK's and plugins' files), of any module of the host as well."""
    for line, module in imports(ast.parse(source)):
        top, *rest = module.split(".")
        if not top.startswith("p2phost") or top in own:
            continue
        if any(map(_private, rest)) or (no_host and top == "p2phost"):
            yield line, module


def _packages(root: Path) -> set[str]:
    return {p.name for p in root.iterdir() if (p / "__init__.py").is_file()}


def _found(distribution: str) -> dict[str, list[tuple[int, str]]]:
    root = ROOTS[distribution]
    own = _packages(root)
    assert own, f"no package under {root}"
    found: dict[str, list[tuple[int, str]]] = {}
    for package in sorted(own):
        for path in sorted((root / package).rglob("*.py")):
            hits = sorted(trespasses(path.read_text(encoding="utf-8"), own,
                                     no_host=distribution not in ("host", "registry")))
            if hits:
                found[path.relative_to(REPO).as_posix()] = hits
    return found


def _report(found: dict[str, list[tuple[int, str]]]) -> str:
    return "\n".join(f"  {path}:{line}: imports {module}"
                     for path, hits in found.items() for line, module in hits)


FIX = ("fix: import the name from the package's public face (its __init__ or a public "
       "submodule with __all__, e.g. p2phost_sdk.signing); export it there if it is missing. "
       "The SDK and plugins import no module of the host.")


@pytest.mark.parametrize("distribution", sorted(ROOTS))
def test_a_distribution_imports_no_private_module_of_another(distribution: str) -> None:
    found = _found(distribution)
    unexpected = {path: [(line, module) for line, module in hits
                         if module not in ALLOWED.get(path, frozenset())]
                  for path, hits in found.items()}
    unexpected = {path: hits for path, hits in unexpected.items() if hits}
    assert not unexpected, f"private modules of another distribution (or the host) " \
        f"imported:\n{_report(unexpected)}\n{FIX}"


def test_every_allowed_exception_is_still_needed() -> None:
    for path, modules in ALLOWED.items():
        distribution = Path(path).parts[1] if path.startswith("official-plugins/") \
            else Path(path).parts[0]
        imported = {m for _, m in _found(distribution).get(path, [])}
        stale = sorted(modules - imported)
        assert not stale, f"{path} no longer imports {stale}: take them out of ALLOWED"


def test_generated_plugin_projects_import_only_the_sdks_public_names() -> None:
    from p2phost._authoring import Template, render, resolve_answers
    from p2phost_sdk import KINDS

    found: dict[str, list[tuple[int, str]]] = {}
    for kind in KINDS:
        template = Template.load(kind)
        answers = resolve_answers(template, {"name": f"shout-{kind}", "author": "Ada"}, None)
        files = render(template, answers)
        own = {rel.split("/")[1] for rel in files if rel.startswith("src/") and
               rel.endswith("/__init__.py")}
        assert own, f"the {kind} template makes no package"
        for rel, text in sorted(files.items()):
            hits = sorted(trespasses(text, own, no_host=True)) if rel.endswith(".py") else []
            if hits:
                found[f"{kind} template: {rel}"] = hits
    assert not found, f"generated code imports private or host modules:\n{_report(found)}\n{FIX}"


@pytest.mark.parametrize(("source", "expected"), [
    ("from p2phost_sdk._names import PROJECT_NAME", ["p2phost_sdk._names"]),
    ("from p2phost_sdk import _names", ["p2phost_sdk._names"]),
    ("import p2phost_sdk.inbox._connection as c", ["p2phost_sdk.inbox._connection"]),
    ("def f():\n    from p2phost._plugins import PluginManager", ["p2phost._plugins"]),
    ("from p2phost_sdk import normalize_name\nfrom p2phost import __version__", []),
    ("from p2phost_sdk.signing import PluginSignature\nfrom ._x import y\nimport _thread", []),
    ("from p2phost_tcp_transport._transport import TcpTransport",
     ["p2phost_tcp_transport._transport"]),
])
def test_what_counts_as_a_private_import(source: str, expected: list[str]) -> None:
    assert [m for _, m in trespasses(source, {"p2phost_echo"})] == expected


def test_the_sdk_and_plugins_may_import_no_module_of_the_host() -> None:
    source = "import p2phost\nfrom p2phost import open_node"
    assert [m for _, m in trespasses(source, {"p2phost_echo"}, no_host=True)] == ["p2phost"] * 2
    assert list(trespasses(source, {"p2phost_registry"})) == []
