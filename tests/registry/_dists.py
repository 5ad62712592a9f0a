"""Plugin projects and hand-made distributions for the registry tests.

Good files come from real projects built with the ``build`` front end; bad files (path
traversal, symlinks, lies in METADATA) cannot be built, so they are written here.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
import stat
import tarfile
import textwrap
import warnings
import zipfile
from pathlib import Path

PLUGIN_TOML = """\
[tool.p2phost.plugin]
kinds = ["{kind}"]
host-api = "{host_api}"
capabilities = ["connect"]

[tool.p2phost.plugin.provides]
schemes = ["demo"]
"""


def write_project(
    root: Path, name: str, version: str, *, kind: str = "transport",
    host_api: str = ">=1.0,<2", readme: str = "", summary: str = "",
) -> Path:
    """A plugin project directory built by hatchling, like `p2phost plugin new` makes."""
    module = name.replace("-", "_")
    project = root / f"{name}-{version}"
    (project / "src" / module).mkdir(parents=True)
    (project / "src" / module / "__init__.py").write_text(f'"""{name}."""\nVERSION = "{version}"\n')
    (project / "README.md").write_text(readme or f"# {name}\n\nA demo {kind} plugin.\n")
    (project / "pyproject.toml").write_text(textwrap.dedent(f"""\
        [build-system]
        requires = ["hatchling"]
        build-backend = "hatchling.build"

        [project]
        name = "{name}"
        version = "{version}"
        description = "{summary or f'Demo {kind} plugin {name}'}"
        readme = "README.md"
        requires-python = ">=3.8"

        [project.entry-points."p2phost.plugins"]
        {name} = "{module}"

        [tool.hatch.build.targets.wheel]
        packages = ["src/{module}"]

        [tool.hatch.build.targets.wheel.extra-metadata]
        "pyproject.toml" = "p2phost-plugin.toml"

        """) + PLUGIN_TOML.format(kind=kind, host_api=host_api))
    return project


def _b64_sha256(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()


def make_wheel(
    out: Path, name: str, version: str, *, meta_name: str | None = None,
    meta_version: str | None = None, readme: str = "# hi\n", plugin_toml: str | None = None,
    extra: dict[str, bytes] | None = None, symlink: str | None = None,
    filename: str | None = None, record: bytes | None = None,
    twice: dict[str, bytes] | None = None, compression: int = zipfile.ZIP_STORED,
    metadata_extra: str = "",
) -> Path:
    """A wheel written by hand, valid unless told otherwise.

    ``record`` replaces the correct RECORD; ``twice`` adds a second member under a name
    already there (the ZIP-confusion pattern); ``metadata_extra`` adds METADATA headers.
    """
    dist = re.sub(r"[-_.]+", "_", name).lower()
    info = f"{dist}-{version}.dist-info"
    metadata = (
        f"Metadata-Version: 2.1\nName: {meta_name or name}\nVersion: {meta_version or version}\n"
        f"Summary: hand-made {name}\nDescription-Content-Type: text/markdown\n"
        f"{metadata_extra}\n{readme}"
    )
    toml = plugin_toml
    if toml is None:
        toml = PLUGIN_TOML.format(kind="app", host_api=">=1.0,<2")
    members: dict[str, bytes] = {
        f"{dist}/__init__.py": b"",
        f"{info}/METADATA": metadata.encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\n"
        b"Tag: py3-none-any\n",
        **({f"{info}/extra_metadata/p2phost-plugin.toml": toml.encode()} if toml else {}),
        **(extra or {}),
    }
    if record is None:
        lines = [f"{m},sha256={_b64_sha256(d)},{len(d)}" for m, d in members.items()]
        record = ("\n".join([*lines, f"{info}/RECORD,,"]) + "\n").encode()
    members[f"{info}/RECORD"] = record
    path = out / (filename or f"{dist}-{version}-py3-none-any.whl")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate on purpose
        with zipfile.ZipFile(path, "w", compression) as zf:
            for member, data in members.items():
                zf.writestr(member, data)
            for member, data in (twice or {}).items():
                zf.writestr(member, data)
            if symlink:
                link = zipfile.ZipInfo(f"{dist}/{symlink}")
                link.external_attr = (stat.S_IFLNK | 0o777) << 16
                zf.writestr(link, "/etc/passwd")
    return path


def make_sdist(
    out: Path, name: str, version: str, *, link: bool = False,
    extra: dict[str, bytes] | None = None,
) -> Path:
    """An sdist written by hand; with ``link`` it carries a symlink."""
    root = f"{name.replace('-', '_')}-{version}"
    path = out / f"{root}.tar.gz"
    files = {
        "PKG-INFO": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n\nreadme\n",
        "pyproject.toml": f'[project]\nname = "{name}"\nversion = "{version}"\n\n'
        + PLUGIN_TOML.format(kind="codec", host_api=">=1.0,<2"),
    }
    with tarfile.open(path, "w:gz") as tar:
        for rel, text in files.items():
            data = text.encode()
            member = tarfile.TarInfo(f"{root}/{rel}")
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
        for rel, data in (extra or {}).items():
            member = tarfile.TarInfo(f"{root}/{rel}")
            member.size = len(data)
            tar.addfile(member, io.BytesIO(data))
        if link:
            member = tarfile.TarInfo(f"{root}/evil")
            member.type = tarfile.SYMTYPE
            member.linkname = "/etc/passwd"
            tar.addfile(member)
    return path
