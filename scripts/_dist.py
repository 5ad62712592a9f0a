"""Build every distribution into one folder (``scripts/dist`` runs this in the dev venv).

    OUT/p2phost_sdk-*.whl  OUT/p2phost-*.whl  OUT/p2phost_registry-*.whl  (each with WHEEL.sig)
                           (p2phost-registry's holds p2phost's wheel, for `registry seed`)
    OUT/plugins/           the built-in source: each official plugin's wheel and p2phost-sdk's,
                           each with its signature (WHEEL.sig, made with the release key), and
                           release-key.pub

p2phost is built with OUT/plugins inside it as ``p2phost/_builtin``, then p2phost-registry
with p2phost's signed wheel inside it as ``p2phost_registry/_host``. Builds run
hatchling in this process (no isolated build environments, no network).

The release key is ``$P2PHOST_RELEASE_KEY`` (a key file, as ``p2phost key new`` writes
them), else ``~/.local/share/p2phost/release.key``, created on first use; it is never
written inside the repository.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import sys
import tomllib
import zipfile
from pathlib import Path

from hatchling.build import build_wheel

from p2phost._keys import create_key, load_key, public_key_of, sign_file
from p2phost_sdk import Identity

ROOT = Path(__file__).resolve().parent.parent
OFFICIAL = ROOT / "official-plugins"
RELEASE_KEY_ENV = "P2PHOST_RELEASE_KEY"


def release_key() -> tuple[Identity, Path]:
    """The release key, from $P2PHOST_RELEASE_KEY or the local one (made once)."""
    explicit = os.environ.get(RELEASE_KEY_ENV)
    if explicit:
        path = Path(explicit).expanduser()
        return load_key(path), path
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    path = base / "p2phost" / "release.key"
    if not path.exists():
        print(f"== no ${RELEASE_KEY_ENV}: creating a local release key at {path}")
        create_key(path)
    return load_key(path), path


def build(project: Path, out: Path) -> Path:
    """One wheel of ``project`` into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    with contextlib.chdir(project):
        return out / build_wheel(str(out))


def sign(identity: Identity, wheel: Path) -> None:
    """Write ``WHEEL.sig``, the release key's signature of ``wheel``."""
    wheel.with_name(wheel.name + ".sig").write_bytes(sign_file(identity, wheel).to_bytes())


def official_projects() -> list[Path]:
    """The official plugin projects, by directory name."""
    return sorted(p.parent for p in OFFICIAL.glob("*/pyproject.toml"))


def distribution_name(project: Path) -> str:
    """The ``[project] name`` of a project."""
    with (project / "pyproject.toml").open("rb") as fh:
        return str(tomllib.load(fh)["project"]["name"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/dist", description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "dist",
                        help="where to build (default: dist/; emptied first)")
    args = parser.parse_args(argv)
    out: Path = args.out.resolve()
    if out.exists():
        shutil.rmtree(out)
    plugins = out / "plugins"
    identity, key_path = release_key()
    public = public_key_of(identity)
    print(f"== release key {public} ({key_path})")

    print("== p2phost-sdk")
    sdk = build(ROOT / "sdk", out)
    print(f"== the official plugins, signed, into {plugins}")
    for project in official_projects():
        wheel = build(project, plugins)
        sign(identity, wheel)
        print(f"   {wheel.name}")
    # With the SDK beside them, `registry seed` serves plugin authors all a plugin needs.
    sign(identity, Path(shutil.copy2(sdk, plugins / sdk.name)))
    (plugins / "release-key.pub").write_text(public + "\n", encoding="utf-8")

    print("== p2phost, with the built-in source")
    os.environ["P2PHOST_BUILTIN_DIR"] = str(plugins)
    host = build(ROOT / "host", out)
    check_host_wheel(host, plugins)
    sign(identity, host)
    # A wheel cannot hold itself: p2phost-registry carries p2phost's, for `registry seed`.
    print("== p2phost-registry, with the p2phost wheel")
    os.environ["P2PHOST_HOST_WHEEL"] = str(host)
    registry = build(ROOT / "registry", out)
    check_registry_wheel(registry, host)
    for wheel in (sdk, registry):
        sign(identity, wheel)  # `registry seed --data D dist/` publishes them signed
    for wheel in (sdk, host, registry):
        print(f"   {wheel.name}")
    print(f"== built into {out}")
    return 0


def check_host_wheel(host: Path, plugins: Path) -> None:
    """Refuse a p2phost wheel that lacks a built-in wheel, signature or its templates."""
    with zipfile.ZipFile(host) as archive:
        names = set(archive.namelist())
    wanted = [f"p2phost/_builtin/{p.name}" for p in plugins.iterdir()]
    missing = [n for n in wanted if n not in names]
    if not any(n.startswith("p2phost/_templates/") for n in names):
        missing.append("p2phost/_templates/")
    if missing:
        sys.exit(f"scripts/dist: {host.name} lacks {', '.join(missing)}")


def check_registry_wheel(registry: Path, host: Path) -> None:
    """Refuse a p2phost-registry wheel that lacks the p2phost wheel or its signature."""
    with zipfile.ZipFile(registry) as archive:
        names = set(archive.namelist())
    wanted = [f"p2phost_registry/_host/{host.name}{end}" for end in ("", ".sig")]
    if missing := [n for n in wanted if n not in names]:
        sys.exit(f"scripts/dist: {registry.name} lacks {', '.join(missing)}")


if __name__ == "__main__":
    sys.exit(main())
