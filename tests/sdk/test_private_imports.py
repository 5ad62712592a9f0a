"""No distribution reaches into another's private modules.

Each package shows what others may use in its ``__init__`` (or a public submodule such as
``p2phost_sdk.signing``) and keeps the rest in ``_`` modules, so it can change them freely.
The host, the registry, the official plugins and the code ``plugin new`` generates import
the SDK (and each other) only through those faces; the SDK and plugins import no module of
the host at all (a plugin's environment need not have it), but for a bridge that runs a
node as a library user does (:data:`HOST_USERS`): it imports the host's public names only.
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
ALLOWED: dict[str, frozenset[str]] = {}

#: Plugin files that may import the host's public face (``p2phost`` and the names of its
#: ``__all__``; never a private module), and why. A plugin runs inside a host and needs
#: only the SDK; a bridge runs in another system's processes, where no ``p2phost run``
#: built a node, and opens one as any program does (``p2phost.open_node``). The tests
#: below fail if one of them no longer imports the host, or uses a name outside __all__.
HOST_USERS: dict[str, str] = {
    "official-plugins/dask-comm/src/p2phost_dask_comm/_node.py":
        "each Dask process opens its own node (p2phost.open_node, with an identity of its own)",
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
            rel = path.relative_to(REPO).as_posix()
            no_host = distribution not in ("host", "registry") and rel not in HOST_USERS
            hits = sorted(trespasses(path.read_text(encoding="utf-8"), own, no_host=no_host))
            if hits:
                found[rel] = hits
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


def host_names(source: str) -> set[str]:
    """The names ``source`` takes from the host's face: ``from p2phost import N`` and
    ``p2phost.N``."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module == "p2phost":
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id == "p2phost":
            names.add(node.attr)
    return names


@pytest.mark.parametrize("path", sorted(HOST_USERS))
def test_a_host_user_imports_the_hosts_public_names_only(path: str) -> None:
    import p2phost

    source = (REPO / path).read_text(encoding="utf-8")
    assert any(m == "p2phost" for _, m in imports(ast.parse(source))), \
        f"{path} no longer imports p2phost: take it out of HOST_USERS"
    outside = sorted(host_names(source) - set(p2phost.__all__))
    assert not outside, f"{path} uses {outside}, which p2phost does not export " \
        "(fix: use its public names, p2phost.__all__, or export the name there)"


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
