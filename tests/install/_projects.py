"""Plugin projects for the installer tests, written from a compact table.

Each row becomes a real hatchling project that ``p2phost registry seed`` builds and
publishes, so the installer is tested against exactly what authors upload.
"""

from __future__ import annotations

import random
import textwrap
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Spec:
    """One plugin version to publish."""

    name: str
    version: str
    kind: str = "app"
    host_api: str = ">=1.0,<2"
    requires: dict[str, str] = field(default_factory=dict)
    #: Python requirements (Requires-Dist), installed from the user's package index.
    dependencies: tuple[str, ...] = ()
    capabilities: tuple[str, ...] = ()
    #: Bytes of incompressible data shipped in the package (slow downloads, big unpacks).
    payload: int = 0
    summary: str = ""
    #: Modules the plugin imports when loaded (its dependencies must be installed).
    imports: tuple[str, ...] = ()


PLUGINS = (
    Spec("alpha", "1.0.0", kind="transport", capabilities=("listen", "connect")),
    Spec("alpha", "1.1.0", kind="transport", capabilities=("listen", "connect")),
    Spec("alpha", "1.2.0", kind="transport", capabilities=("listen", "connect")),  # yanked
    Spec("alpha", "2.0.0", kind="transport", host_api=">=2"),
    Spec("beta", "1.0.0", kind="codec", requires={"alpha": ">=1.1"},
         summary="a codec that needs alpha"),
    Spec("gamma", "1.0.0", requires={"alpha": "<1.1"}),
    Spec("cyc-a", "1.0.0", requires={"cyc-b": ">=1"}),
    Spec("cyc-b", "1.0.0", requires={"cyc-a": ">=1"}),
    Spec("pydep", "1.0.0", dependencies=("six>=1", "msgpack>=1", "p2phost-sdk>=0.1")),
    # tinycbor is built by tests/install/test_lock_travels.py, never published here.
    Spec("cbor-codec", "1.0.0", kind="codec", dependencies=("tinycbor>=1",),
         imports=("tinycbor",)),
    Spec("bulky", "1.0.0", capabilities=("filesystem",), payload=3 << 20),
    Spec("bulky", "1.1.0", capabilities=("filesystem",), payload=3 << 20),
)
#: (name, version, reason) yanked after publishing.
YANKED = (("alpha", "1.2.0", "breaks framing"),)


def write_projects(root: Path, specs: tuple[Spec, ...] = PLUGINS) -> list[Path]:
    """A hatchling project directory per spec under ``root``."""
    out = []
    for spec in specs:
        module = spec.name.replace("-", "_")
        project = root / f"{spec.name}-{spec.version}"
        package = project / module
        package.mkdir(parents=True)
        (package / "__init__.py").write_text(
            f'"""{spec.name} {spec.version}: a test plugin."""\n\n'
            + "".join(f"import {m}  # noqa: F401\n" for m in spec.imports)
            + 'from p2phost_sdk import hookimpl'
            f'\n\nVERSION = "{spec.version}"\n\n\n@hookimpl\ndef p2phost_apps(context):\n'
            '    return []\n')
        if spec.payload:
            data = random.Random(f"{spec.name}{spec.version}").randbytes(spec.payload)
            (package / "payload.bin").write_bytes(data)
        requires = "".join(f'{n} = "{s}"\n' for n, s in spec.requires.items())
        deps = ", ".join(f'"{d}"' for d in spec.dependencies)
        caps = ", ".join(f'"{c}"' for c in spec.capabilities)
        (project / "pyproject.toml").write_text(textwrap.dedent(f"""\
            [build-system]
            requires = ["hatchling"]
            build-backend = "hatchling.build"

            [project]
            name = "{spec.name}"
            version = "{spec.version}"
            description = "{spec.summary or f'test plugin {spec.name}'}"
            requires-python = ">=3.11"
            dependencies = [{deps}]

            [project.entry-points."p2phost.plugins"]
            {spec.name} = "{module}"

            [tool.hatch.build.targets.wheel]
            packages = ["{module}"]

            [tool.hatch.build.targets.wheel.extra-metadata]
            "pyproject.toml" = "p2phost-plugin.toml"

            [tool.p2phost.plugin]
            kinds = ["{spec.kind}"]
            host-api = "{spec.host_api}"
            capabilities = [{caps}]

            [tool.p2phost.plugin.requires]
            """) + requires)
        out.append(project)
    return out
