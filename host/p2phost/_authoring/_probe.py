"""Run in a child process by ``plugin check``: import a plugin and ask its hooks for objects.

The plugin's code runs here, not in the CLI: an import that hangs, crashes or pollutes
``sys.modules`` cannot take ``p2phost`` down. Prints one JSON object::

    {"problems": ["..."], "objects": {"codec": ["ShoutCodec"], ...}}
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pluggy

from p2phost_sdk import (
    PLUGGY_PROJECT_NAME,
    App,
    Codec,
    Discovery,
    HookSpecs,
    Security,
    Transport,
)
from p2phost_sdk.testing import KITS, PluginUnderTest

#: The base class of each kind, and the ``provides`` key listing what its objects serve.
_KINDS: dict[str, tuple[type, str | None]] = {
    "transport": (Transport, "schemes"),
    "codec": (Codec, "content-types"),
    "discovery": (Discovery, None),
    "security": (Security, "protocols"),
    "app": (App, "topics"),
}


def _serves(kind: str, obj: Any) -> set[str]:
    if kind == "transport":
        return set(type(obj).schemes)
    if kind == "codec":
        return {type(obj).content_type}
    if kind == "security":
        return {type(obj).protocol}
    if kind == "app":
        return set(obj.handlers())
    return set()


def probe(root: Path) -> dict[str, Any]:
    """Every problem with the plugin's code, and the objects each of its kinds makes."""
    problems: list[str] = []
    objects: dict[str, list[str]] = {}
    try:
        plugin = PluginUnderTest.from_project(root)
    except Exception as exc:  # anything the plugin's import raises is the finding
        hint = " (are its dependencies installed here? pip install -e .)" \
            if isinstance(exc, ModuleNotFoundError) else ""
        return {"problems": [f"entry point: cannot load it: {type(exc).__name__}: {exc}{hint}"],
                "objects": objects}
    manager = pluggy.PluginManager(PLUGGY_PROJECT_NAME)
    manager.add_hookspecs(HookSpecs)
    try:
        manager.register(plugin.hooks, name=plugin.metadata.name)
        manager.check_pending()
    except pluggy.PluginValidationError as exc:
        problems.append(f"hooks: {exc}")
    meta = plugin.metadata
    for kind, kit in KITS.items():
        implemented = getattr(plugin.hooks, kit.hook, None) is not None
        if kind not in meta.kinds:
            if implemented:
                problems.append(f"hooks: {kit.hook} is implemented but kinds does not list "
                                f"{kind!r}")
            continue
        try:
            made = plugin.make(kind)
        except Exception as exc:
            problems.append(f"{kit.hook}: raised {type(exc).__name__}: {exc}")
            continue
        if not made:
            problems.append(f"kinds lists {kind!r} but {plugin.reference} has no {kit.hook} "
                            "hook, or it returns nothing")
            continue
        base, key = _KINDS[kind]
        wrong = [type(o).__name__ for o in made if not isinstance(o, base)]
        if wrong:
            problems.append(f"{kit.hook}: {', '.join(wrong)} is not a {base.__name__}")
            continue
        objects[kind] = [type(o).__name__ for o in made]
        if key is not None:
            served = set().union(*(_serves(kind, o) for o in made))
            declared = set(meta.provides.get(key, ()))
            if served != declared:
                problems.append(f"provides.{key}: declares {sorted(declared)}, the "
                                f"{kind} objects serve {sorted(served)}")
    return {"problems": problems, "objects": objects}


def main() -> None:
    """``python -m p2phost._authoring._probe PROJECT SOURCE_ROOT``."""
    root, source = Path(sys.argv[1]), sys.argv[2]
    sys.path.insert(0, source)
    print(json.dumps(probe(root)))


if __name__ == "__main__":
    main()
